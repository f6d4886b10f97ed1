#!/usr/bin/env bash
# Transparent capture into fipstun, as in ztunnel's slot, on one machine: two network
# namespaces joined by a veth pair (10.77.X.1 client, 10.77.X.2 server; the addresses exist only
# there). In the client namespace iptables REDIRECTs every TCP connection to 10.77.X.0/24 into
# `fipstun proxy` (mode = "redirect", port 15001) -- except the proxy's own, by owner match on
# its uid -- and the proxy carries each one over HBONE (FIPS mTLS, the destination's IP, port
# 15008) to `fipstun node` in the server namespace, which forwards it to the server. curl and
# iperf3 in the client namespace know nothing of it.
#
#   sudo examples/scripts/capture.sh          # fipstun on PATH, or FIPSTUN=/path/to/fipstun
#
# Needs root, ip (iproute2), iptables, setpriv (util-linux), curl, iperf3 and python3. It
# checks what it shows (exit status non-zero on any failure) and removes everything it made.
set -euo pipefail

FIPSTUN=$(command -v "${FIPSTUN:-fipstun}") || { echo "capture: fipstun not found (PATH or FIPSTUN=)" >&2; exit 1; }
ID=${CAPTURE_ID:-$$}
X=$((ID % 200 + 1))
C=fcapc$ID                   # the client namespace: curl, iperf3, the proxy, the capture rule
S=fcaps$ID                   # the server namespace: the node, an HTTP server, an iperf3 server
CLIENT=10.77.$X.1
SERVER=10.77.$X.2
PROXY_UID=1337               # the uid the capture rule exempts (Istio's proxies use 1337 too)
WORK=$(mktemp -d)
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$C" 2>/dev/null || true
  ip netns del "$S" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "capture: FAILED: $*" >&2; for f in "$WORK"/*.log; do echo "--- $f" >&2; tail -n 30 "$f" >&2; done; exit 1; }

# Wait until `log` has a line starting with `fipstun <what>: ready`.
wait_ready() {
  for _ in $(seq 1 300); do grep -q "^fipstun $2: ready" "$1" 2>/dev/null && return 0; sleep 0.1; done
  fail "$2 printed no ready line"
}

# The two namespaces and the wire between them.
ip netns add "$C"
ip netns add "$S"
ip link add "fcv${ID}c" netns "$C" type veth peer name "fcv${ID}s" netns "$S"
ip -n "$C" addr add "$CLIENT/24" dev "fcv${ID}c"
ip -n "$S" addr add "$SERVER/24" dev "fcv${ID}s"
for ns in "$C" "$S"; do ip -n "$ns" link set lo up; done
ip -n "$C" link set "fcv${ID}c" up
ip -n "$S" link set "fcv${ID}s" up

# Identities: one CA, an SVID for the node and one for the proxy (readable by its uid).
cd "$WORK"
"$FIPSTUN" ca init --trust-domain example.org --out ca >/dev/null
"$FIPSTUN" ca issue --ca ca --id spiffe://example.org/node --out node >/dev/null
"$FIPSTUN" ca issue --ca ca --id spiffe://example.org/proxy --out proxy >/dev/null
chmod 755 "$WORK"
chown -R "$PROXY_UID:$PROXY_UID" proxy

# The server side: a 4 MiB file over HTTP, an iperf3 server, and the node (HBONE on 15008;
# only the proxy's ID may connect, only the server's two ports may be dialled).
mkdir www
head -c 4194304 /dev/urandom > www/blob
(cd www && exec ip netns exec "$S" python3 -m http.server 8080 --bind "$SERVER" 2>"$WORK/http.log" >/dev/null) &
PIDS+=($!)
ip netns exec "$S" iperf3 -s -B "$SERVER" -p 5201 >"$WORK/iperf3-server.log" 2>&1 &
PIDS+=($!)
ip netns exec "$S" "$FIPSTUN" node --hbone-listen "$SERVER:15008" --identity-dir node \
  --allow spiffe://example.org/proxy --allow-target "$SERVER/32:8080,5201" 2>"$WORK/node.log" &
PIDS+=($!)
wait_ready "$WORK/node.log" node

# The client side: the proxy as uid 1337, capturing on 0.0.0.0:15001 and routing the server's
# subnet to "the same IP, port 15008" (where each destination's node answers HBONE).
cat > proxy.toml <<TOML
[identity]
dir = "proxy"

[[listener]]
mode = "redirect"            # listen = "0.0.0.0:15001"

[[route]]
cidr = "10.77.$X.0/24"
node = "same-ip"
node_id = "spiffe://example.org/node"
TOML
ip netns exec "$C" setpriv --reuid "$PROXY_UID" --regid "$PROXY_UID" --clear-groups \
  "$FIPSTUN" proxy --config proxy.toml 2>"$WORK/proxy.log" &
PIDS+=($!)
wait_ready "$WORK/proxy.log" proxy

# The capture rule: every TCP connection to the subnet, except the proxy's own, goes to 15001.
ip netns exec "$C" iptables -t nat -A OUTPUT -p tcp -d "10.77.$X.0/24" \
  -m owner ! --uid-owner "$PROXY_UID" -j REDIRECT --to-ports 15001

# curl: the file arrives whole, and the server saw the node connect, not the client.
for _ in $(seq 1 100); do
  ip netns exec "$S" python3 -c "import socket; socket.create_connection(('$SERVER', 8080), 1)" \
    2>/dev/null && break
  sleep 0.1
done
for _ in $(seq 1 100); do grep -q "listening" "$WORK/iperf3-server.log" && break; sleep 0.1; done
code=$(ip netns exec "$C" curl -sS --max-time 30 -o got -w '%{http_code}' "http://$SERVER:8080/blob") ||
  fail "curl through the capture"
[ "$code" = 200 ] || fail "HTTP $code"
cmp -s got www/blob || fail "the file arrived changed"
grep -q "^$SERVER - -" "$WORK/http.log" || fail "the server did not see the node ($SERVER) as its client"
if grep -q "^$CLIENT - -" "$WORK/http.log"; then fail "the client reached the server directly"; fi
echo "capture: curl http://$SERVER:8080/blob -> 200, 4 MiB intact, served to $SERVER (the node)"

# iperf3, 3 s: its control and data connections are both captured.
ip netns exec "$C" iperf3 -c "$SERVER" -p 5201 -t 3 -J > iperf3.json || fail "iperf3 through the capture"
python3 - iperf3.json <<'PY' || fail "iperf3 moved nothing"
import json, sys
end = json.load(open(sys.argv[1]))["end"]["sum_received"]
assert end["bytes"] > 1e6, end
print("capture: iperf3 -t 3 -> %.2f Gbit/s through capture -> HBONE -> node" % (end["bits_per_second"] / 1e9))
PY

# A connection whose original destination is the capture port itself is refused: a loop.
if ip netns exec "$C" curl -sS --max-time 5 -o /dev/null "http://$CLIENT:15001/" 2>/dev/null; then
  fail "a connection to the capture port itself was served"
fi
echo "capture: a connection to the capture port itself is refused"
echo "capture: OK"
