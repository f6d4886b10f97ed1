#!/bin/bash
# The bulk rig of benches/profiles/hbone-bulk-*.txt: iperf3 through `fipstun proxy` -> HBONE ->
# `fipstun node` (configs and PKI copied from a scorecard output folder into /work/runsH/rig).
# usage: run.sh BIN MODE(plain|perf|strace) SECS TAG
BIN=$1; MODE=$2; SECS=${3:-10}; TAG=${4:-x}
cd /work/runsH/rig
iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
IP=$!
$BIN node --config node.toml > node-$TAG.log 2>&1 &
N=$!
sleep 0.5
$BIN proxy --config proxy.toml > proxy-$TAG.log 2>&1 &
P=$!
sleep 1
T0=$(awk '{print $14+$15}' /proc/$N/stat); T1=$(awk '{print $14+$15}' /proc/$P/stat)
case $MODE in
 perf) perf record -e cpu-clock -g -F 999 -o perf-$TAG.data -p $N,$P -- sleep $((SECS-2)) > /dev/null 2>&1 & MP=$! ;;
 strace) strace -c -f -o strace-$TAG.txt -p $N -p $P & MP=$! ;;
 *) MP= ;;
esac
iperf3 -c 127.0.0.1 -p 25201 -t $SECS -J > iperf-$TAG.json 2>/dev/null
U0=$(awk '{print $14+$15}' /proc/$N/stat); U1=$(awk '{print $14+$15}' /proc/$P/stat)
if [ "$MODE" = strace ]; then kill -INT $MP; fi
[ -n "$MP" ] && wait $MP
kill $P $N 2>/dev/null; wait $P $N 2>/dev/null; kill $IP 2>/dev/null
python3 - "$TAG" $((U0-T0)) $((U1-T1)) $SECS <<'PY'
import json,sys
tag,cn,cp,secs=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),int(sys.argv[4])
j=json.load(open(f"iperf-{tag}.json"))
e=j["end"]["sum_received"]; b=e["bytes"]; s=e["seconds"]
cpu=(cn+cp)/100
print(f"{tag}: {b*8/s/1e9:.2f} Gbit/s, {b/2**20:.0f} MiB, tunnel CPU node {cn/100:.2f}s proxy {cp/100:.2f}s, MB per tunnel CPU-s {b/1e6/cpu:.0f}")
PY
