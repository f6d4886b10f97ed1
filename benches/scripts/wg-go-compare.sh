#!/usr/bin/env bash
# Like with like on one path: two network namespaces this script creates, joined by one veth
# pair. The server namespace holds a wireguard-go server (TUN device, the kernel's TCP) with
# a discard sink and an echo server behind it (benches/examples/wg_pair.rs `sink`). The
# client namespace runs, in turn:
#   (a) wireguard-go as the client, the load over the kernel's TCP through its TUN device;
#   (b) our backend as the client (WgNode, userspace TCP) against the SAME wireguard-go server;
#   (c) our pair: our client against our node (wg_pair `node`, serving the same discard and
#       echo in-process) in the server namespace, on the same veth.
# Each: bulk over one stream (MiB, default 256) and request/response (1 KiB, 64 connections,
# SECS seconds, default 10), with the CPU of every process on each side from /proc.
# Needs root. Writes $CARGO_TARGET_DIR/wg-go-compare.json (target/ by default), which
# bench-report folds into BENCHMARKS.md. All addresses exist only inside the namespaces.
#
#   benches/scripts/wg-go-compare.sh [MiB] [SECS]     (./x bench-wg runs it)
set -euo pipefail
cd "$(dirname "$0")/../.."
MIB=${1:-256}
SECS=${2:-10}
CONNS=64
tag="fwg$$"
nss="${tag}s" nsc="${tag}c"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  ip netns del "$nss" 2>/dev/null || true
  ip netns del "$nsc" 2>/dev/null || true
}
trap cleanup EXIT

# WG_PAIR_BIN: another build of wg_pair (a before/after comparison); PERF=DIR: perf profiles
# (cpu-clock, call graphs) of each bulk phase's client and server processes into DIR.
if [ -z "${WG_PAIR_BIN:-}" ]; then
  cargo build --release --locked -q -p fipstun-benches --example wg_pair
fi
bin=${WG_PAIR_BIN:-"${CARGO_TARGET_DIR:-target}/release/examples/wg_pair"}

ip netns add "$nss"
ip netns add "$nsc"
ip link add "${tag}vs" netns "$nss" type veth peer name "${tag}vc" netns "$nsc"
ip -n "$nss" addr add 10.99.50.2/24 dev "${tag}vs"
ip -n "$nsc" addr add 10.99.50.1/24 dev "${tag}vc"
for ns in "$nss" "$nsc"; do ip -n "$ns" link set lo up; done
ip -n "$nss" link set "${tag}vs" up
ip -n "$nsc" link set "${tag}vc" up

keys=$(wg genkey) keyc=$(wg genkey) keyo=$(wg genkey) keyn=$(wg genkey)
pubs=$(printf '%s' "$keys" | wg pubkey) pubc=$(printf '%s' "$keyc" | wg pubkey)
pubo=$(printf '%s' "$keyo" | wg pubkey) pubn=$(printf '%s' "$keyn" | wg pubkey)

start_wg_go() { # ns iface -> pid in $started
  ip netns exec "$1" wireguard-go -f "$2" >/dev/null 2>&1 &
  started=$!
  pids+=("$started")
  for _ in $(seq 50); do ip -n "$1" link show "$2" >/dev/null 2>&1 && break; sleep 0.1; done
}
# The wireguard-go server: peers are the wireguard-go client (.2) and our client (.3).
start_wg_go "$nss" wgs; srv_wg=$started
ip netns exec "$nss" wg set wgs private-key <(printf '%s' "$keys") listen-port 51820 \
  peer "$pubc" allowed-ips 10.99.60.2/32 peer "$pubo" allowed-ips 10.99.60.3/32
ip -n "$nss" addr add 10.99.60.1/24 dev wgs
ip -n "$nss" link set wgs mtu 1420 up
# The wireguard-go client.
start_wg_go "$nsc" wgc; cli_wg=$started
ip netns exec "$nsc" wg set wgc private-key <(printf '%s' "$keyc") \
  peer "$pubs" allowed-ips 10.99.60.1/32 endpoint 10.99.50.2:51820
ip -n "$nsc" addr add 10.99.60.2/24 dev wgc
ip -n "$nsc" link set wgc mtu 1420 up

wait_ready() { # fifo-less: poll the log for "ready"
  for _ in $(seq 100); do grep -q ready "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "not ready: $1" >&2; exit 1
}
log=$(mktemp -d)
ip netns exec "$nss" "$bin" sink 10.99.60.1 >"$log/sink" 2>&1 &
sink=$!; pids+=("$sink"); wait_ready "$log/sink"
ip netns exec "$nss" "$bin" node "$keyn" 10.99.50.2:51821 10.99.70.1 "$pubo" >"$log/node" 2>&1 &
node=$!; pids+=("$node"); wait_ready "$log/node"

tck=$(getconf CLK_TCK)
cpu() { # pids... -> their user+system CPU seconds so far
  local t=0 p
  for p in "$@"; do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  python3 -c "print($t / $tck)"
}
# run NAME "server pids" "client pids" client-command... -> one JSON object on stdout
run() {
  local name=$1 spids=$2 cpids=$3; shift 3
  local s0 c0 s1 c1 out
  s0=$(cpu $spids) c0=$(cpu $cpids)
  out=$("$@")
  s1=$(cpu $spids) c1=$(cpu $cpids)
  local rss=0 p
  for p in $spids; do rss=$((rss + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status"))); done
  python3 -c '
import json, sys
o = json.loads(sys.argv[1]); s0, s1, c0, c1 = map(float, sys.argv[2:6])
o["server_cpu_seconds"] = round(s1 - s0, 3)
o["client_cpu_seconds"] = round(o["cpu_seconds"] + c1 - c0, 3)
o["server_rss_kib"] = int(sys.argv[6])
print(json.dumps(o))' "$out" "$s0" "$s1" "$c0" "$c1" "$rss"
}
phases() { # name "server pids" "client pids" client-command...
  local name=$1 spids=$2 cpids=$3; shift 3
  local b r p perfs=()
  if [ -n "${PERF:-}" ]; then
    mkdir -p "$PERF"
    for p in $spids; do
      perf record -q -e cpu-clock -g -p "$p" -o "$PERF/$name-server-$p.data" >/dev/null 2>&1 &
      perfs+=($!)
    done
    set -- "${@:1:4}" perf record -q -e cpu-clock -g -o "$PERF/$name-client.data" -- "${@:5}"
  fi
  b=$(run "$name" "$spids" "$cpids" "$@" bulk "$MIB")
  if [ -n "${PERF:-}" ]; then
    for p in "${perfs[@]}"; do kill -INT "$p"; wait "$p" || true; done
    set -- "${@:1:4}" "${@:14}"
  fi
  echo "$name bulk: $b" >&2
  r=$(run "$name" "$spids" "$cpids" "$@" rr "$SECS" "$CONNS")
  echo "$name rr:   $r" >&2
  printf '{"bulk":%s,"rr":%s}' "$b" "$r"
}

# ONLY=abc (default) picks the cases to run, for development.
ONLY=${ONLY:-abc}
a=null b=null c=null
[[ $ONLY == *a* ]] && a=$(phases wireguard-go "$srv_wg $sink" "$cli_wg" \
  ip netns exec "$nsc" "$bin" kernel 10.99.60.1)
[[ $ONLY == *b* ]] && b=$(phases ours-vs-wireguard-go "$srv_wg $sink" "" \
  ip netns exec "$nsc" "$bin" ours "$keyo" 10.99.50.1:0 10.99.60.3 "$pubs" 10.99.50.2:51820 10.99.60.1)
[[ $ONLY == *c* ]] && c=$(phases our-pair "$node" "" \
  ip netns exec "$nsc" "$bin" ours "$keyo" 10.99.50.1:0 10.99.70.2 "$pubn" 10.99.50.2:51821 10.99.70.1)

if [ -n "${DEBUG:-}" ]; then
  for ns in "$nss" "$nsc"; do echo "== $ns" >&2; ip netns exec "$ns" nstat -az 2>/dev/null | grep -E 'Udp|TcpExt(TCPSACK|TCPLoss|TCPOFO|TCPDSACK|TCPFastRetrans|TCPTimeouts|TCPRcvQDrop|TCPBacklog|TCPZeroWindow|PruneCalled|RcvPruned)|TcpRetrans' | awk '$2 != 0' >&2; ip -n "$ns" -s link >&2; done
fi
mkdir -p "${CARGO_TARGET_DIR:-target}"
out="${CARGO_TARGET_DIR:-target}/wg-go-compare.json"
printf '{"path":"two network namespaces, one veth pair, MTU 1420 tunnels","bulk_mib":%s,"rr_seconds":%s,"rr_connections":%s,"wireguard_go_client":%s,"our_client":%s,"our_pair":%s}\n' \
  "$MIB" "$SECS" "$CONNS" "$a" "$b" "$c" > "$out"
rm -rf "$log"
echo "wrote $out"
