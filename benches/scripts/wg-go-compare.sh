#!/usr/bin/env bash
# Our WireGuard backend (loopback, userspace TCP/IP) beside wireguard-go <-> wireguard-go
# (two network namespaces this script creates, joined by a veth pair), one bulk TCP stream
# each, in one run. Needs root (namespaces). Writes target/wg-go-compare.json, which
# bench-report folds into BENCHMARKS.md. All addresses exist only inside the namespaces.
#
#   benches/scripts/wg-go-compare.sh [MiB]     (./x bench-wg runs it)
set -euo pipefail
cd "$(dirname "$0")/../.."
MIB=${1:-256}
tag="fwg$$"
nsa="${tag}a" nsb="${tag}b"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  ip netns del "$nsa" 2>/dev/null || true
  ip netns del "$nsb" 2>/dev/null || true
}
trap cleanup EXIT

ip netns add "$nsa"
ip netns add "$nsb"
ip link add "${tag}va" netns "$nsa" type veth peer name "${tag}vb" netns "$nsb"
ip -n "$nsa" addr add 10.99.50.1/24 dev "${tag}va"
ip -n "$nsb" addr add 10.99.50.2/24 dev "${tag}vb"
for ns in "$nsa" "$nsb"; do ip -n "$ns" link set lo up; done
ip -n "$nsa" link set "${tag}va" up
ip -n "$nsb" link set "${tag}vb" up

keya=$(wg genkey) keyb=$(wg genkey)
puba=$(printf '%s' "$keya" | wg pubkey) pubb=$(printf '%s' "$keyb" | wg pubkey)
start_wg() { # ns iface key peer_pub peer_endpoint my_tunnel_ip peer_tunnel_ip
  ip netns exec "$1" wireguard-go -f "$2" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do ip -n "$1" link show "$2" >/dev/null 2>&1 && break; sleep 0.1; done
  ip netns exec "$1" wg set "$2" private-key <(printf '%s' "$3") listen-port 51820 \
    peer "$4" allowed-ips "$7/32" endpoint "$5:51820"
  ip -n "$1" addr add "$6/24" dev "$2"
  ip -n "$1" link set "$2" mtu 1420 up
}
start_wg "$nsa" wga "$keya" "$pubb" 10.99.50.2 10.99.60.1 10.99.60.2
start_wg "$nsb" wgb "$keyb" "$puba" 10.99.50.1 10.99.60.2 10.99.60.1

# Receiver in B: reads to EOF, answers one byte.
ip netns exec "$nsb" python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.99.60.2", 5001)); s.listen(1)
for _ in range(2):
    c, _ = s.accept()
    while c.recv(1 << 20): pass
    c.sendall(b"k"); c.close()
' &
pids+=($!)
sleep 0.5
# Sender in A: a warm-up, then MIB MiB timed until the receiver acknowledged it all.
go_json=$(ip netns exec "$nsa" python3 -c '
import socket, sys, time
mib = int(sys.argv[1]); buf = bytes(1 << 18)
def send(n):
    c = socket.create_connection(("10.99.60.2", 5001)); t = time.monotonic(); left = n
    while left > 0:
        k = min(left, len(buf)); c.sendall(buf[:k]); left -= k
    c.shutdown(socket.SHUT_WR); c.recv(1); c.close(); return time.monotonic() - t
send(16 << 20)
secs = send(mib << 20)
print("{\"backend\":\"wireguard-go\",\"bytes\":%d,\"seconds\":%.4f,\"gbit_per_s\":%.3f}" % (mib << 20, secs, (mib << 20) * 8 / secs / 1e9))
' "$MIB")
echo "wireguard-go <-> wireguard-go: $go_json"

ours_json=$(cargo run --release --locked -q -p fipstun-benches --example bulk -- wireguard "$MIB")
echo "fipstun wireguard backend:     $ours_json"

mkdir -p "${CARGO_TARGET_DIR:-target}"
printf '{"wireguard_go":%s,"ours":%s}\n' "$go_json" "$ours_json" > "${CARGO_TARGET_DIR:-target}/wg-go-compare.json"
echo "wrote ${CARGO_TARGET_DIR:-target}/wg-go-compare.json"
