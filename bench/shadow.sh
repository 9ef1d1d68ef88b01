#!/usr/bin/env bash
# What a shadow evaluation costs (`arbiter policy shadow`): decisions/s and latency of
# `arbiter serve` (durable log) on bench/fixtures/bench-cedar under wrk, without and then with
# a stored candidate version (the fixture without its `locked` forbid) evaluated in shadow,
# side by side in one run.
#
# usage: bench/shadow.sh     (knobs: SECS=10 per run, CONNS=16 THREADS=2,
#                             ARBITER_BIN=path instead of building)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECS=${SECS:-10} CONNS=${CONNS:-16} THREADS=${THREADS:-2}
. "$ROOT/bench/lib.sh"
scratch shadow
need_wrk
BIN=$(arbiter_bin)
FIXTURE=$ROOT/bench/fixtures/bench-cedar
DATA=$WORK/data
request_mix

# The candidate: the fixture without `locked`, each policy owned (governed versions need owners).
drop_policy "$FIXTURE" "$WORK/candidate" policies.cedar locked
sed -i 's/^@id(/@owner("bench")\n@id(/' "$WORK/candidate/policies.cedar"
export ARBITER_ADMIN_TOKEN
ARBITER_ADMIN_TOKEN=$("$BIN" admin token create --name alice --quiet --data "$DATA")
V=$("$BIN" policy propose "$WORK/candidate" -m "without locked" --quiet --data "$DATA")

PORT=$(free_port)
URL=http://127.0.0.1:$PORT
"$BIN" serve --policies "$FIXTURE" --data "$DATA" --listen "127.0.0.1:$PORT" --log-level warn \
  >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
wait_up "$URL" "$WORK/server.log"
run() {
  wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency -s "$WORK/mix.lua" "$URL/access/v1/evaluation" \
    -- "$WORK/bodies.txt" >"$WORK/$1.out"
  awk -v l="$1" '/Requests\/sec/ {r=$2} / 50%/ {p50=$2} / 99%/ {p99=$2} END {printf "%-14s %10s decisions/s  p50 %s  p99 %s\n", l, r, p50, p99}' "$WORK/$1.out"
}
echo "shadow on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
wrk -t"$THREADS" -c"$CONNS" -d2s -s "$WORK/mix.lua" "$URL/access/v1/evaluation" -- "$WORK/bodies.txt" >/dev/null
run "no shadow"
"$BIN" policy shadow "$V" --data "$DATA" >/dev/null
for _ in $(seq 1 50); do
  curl -s "$URL/readyz" | grep -q "\"shadow_version\":\"$V\"" && break
  sleep 0.1
done
curl -s "$URL/readyz" | grep -q "\"shadow_version\":\"$V\"" || { echo "the shadow version was not picked up"; exit 1; }
run "shadow"
"$BIN" policy shadow stop --data "$DATA" >/dev/null
sleep 1.5
run "no shadow again"
python3 - "$WORK" <<'PY'
import re, sys
w = sys.argv[1]
rate = lambda l: float(re.search(r"Requests/sec:\s+([\d.]+)", open(f"{w}/{l}.out").read()).group(1))
base = (rate("no shadow") + rate("no shadow again")) / 2
print(f"with shadow: {rate('shadow') / base:.2f}x the throughput without (mean of the runs before and after)")
PY
curl -s "$URL/metrics" | grep '^arbiter_shadow_decisions_total'
