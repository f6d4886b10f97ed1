#!/bin/bash
# The WireGuard bulk rig of wg-3-rounds.txt: iperf3 -P STREAMS -> `fipstun proxy` -> WireGuard over
# loopback UDP -> `fipstun node` -> iperf3 -s (configs from a scorecard folder's wireguard/, node
# listening on 127.0.0.1:51820, one proxy listener 127.0.0.1:25201 -> 127.0.0.1:5201, in /work/runsW/rig;
# CONFSUFFIX picks node$SUF.toml / proxy$SUF.toml, e.g. -1m with tcp_buffer_bytes = 1048576).
# usage: wg-rig.sh BIN MODE(plain|perf) SECS TAG STREAMS [CONFSUFFIX]
BIN=$1; MODE=$2; SECS=${3:-10}; TAG=${4:-x}; P=${5:-1}; SUF=${6:-}
cd /work/runsW/rig
iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
IP=$!
$BIN node --config node$SUF.toml > node-$TAG.log 2>&1 &
N=$!
sleep 0.5
$BIN proxy --config proxy$SUF.toml > proxy-$TAG.log 2>&1 &
PX=$!
sleep 1
T0=$(awk '{print $14+$15}' /proc/$N/stat); T1=$(awk '{print $14+$15}' /proc/$PX/stat)
case $MODE in
 perf) perf record -e cpu-clock -g -F 999 -o perf-$TAG.data -p $N,$PX -- sleep $((SECS-2)) > /dev/null 2>&1 & MP=$! ;;
 *) MP= ;;
esac
iperf3 -c 127.0.0.1 -p 25201 -t $SECS -P $P -J > iperf-$TAG.json 2>/dev/null
U0=$(awk '{print $14+$15}' /proc/$N/stat); U1=$(awk '{print $14+$15}' /proc/$PX/stat)
RN=$(awk '/VmHWM/{print $2}' /proc/$N/status); RP=$(awk '/VmHWM/{print $2}' /proc/$PX/status)
[ -n "$MP" ] && wait $MP
kill $PX $N 2>/dev/null; wait $PX $N 2>/dev/null; kill $IP 2>/dev/null; wait $IP 2>/dev/null
python3 - "$TAG" $((U0-T0)) $((U1-T1)) $SECS $RN $RP <<'PY'
import json,sys
tag,cn,cp,secs,rn,rp=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),int(sys.argv[4]),int(sys.argv[5]),int(sys.argv[6])
j=json.load(open(f"iperf-{tag}.json"))
e=j["end"]["sum_received"]; b=e["bytes"]; s=e["seconds"]
cpu=(cn+cp)/100
print(f"{tag}: {b*8/s/1e9:.2f} Gbit/s, tunnel CPU node {cn/100:.2f}s proxy {cp/100:.2f}s, MB/tunnel-CPU-s {b/1e6/cpu:.0f}, peak RSS node {rn/1024:.1f} proxy {rp/1024:.1f} MiB", flush=True)
PY
