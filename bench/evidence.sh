#!/usr/bin/env bash
# What witnesses and evidence bundles cost.
#
# usage: bench/evidence.sh     (knobs: RECORDS=100000 minimum log size, SECS=10 per throughput
#                               run, CONNS=16 THREADS=2, ARBITER_BIN=path instead of building)
#
# 1. Throughput side by side: `arbiter serve` (durable log) on bench/fixtures/bench-cedar under
#    wrk for SECS seconds without a witness, with `--witness` to an `arbiter witness serve` on
#    the same machine, and without again; the ratio is to the mean of the runs without.
# 2. With the witness, fills the log to RECORDS decisions, waits until all are witnessed, stops
#    `serve`, then times `arbiter evidence` for the first and the last decision (each reads the
#    log from its start), `evidence verify`, and `log verify` alone, with `--witness-key`, and
#    with `--witness URL` (each checks the log; the witness checks add one pass).
# 3. Times `arbiter policy compare` (cvc5) on examples/quickstart: against itself
#    (--equivalent, proved) and against a copy without its `git-no-push` forbid (--narrows,
#    refused with a counterexample).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RECORDS=${RECORDS:-100000} SECS=${SECS:-10} CONNS=${CONNS:-16} THREADS=${THREADS:-2}
. "$ROOT/bench/lib.sh"
scratch evidence
need_wrk
BIN=$(arbiter_bin)
FIXTURE=$ROOT/bench/fixtures/bench-cedar
DATA=$WORK/data
request_mix

start_serve() {
  PORT=$(free_port) URL=
  URL=http://127.0.0.1:$PORT
  "$BIN" serve --policies "$FIXTURE" --data "$DATA" --listen "127.0.0.1:$PORT" --log-level warn \
    "$@" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  wait_up "$URL" "$WORK/server.log"
}
stop_serve() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=; }
rate() {
  wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" -s "$WORK/mix.lua" "$URL/access/v1/evaluation" \
    -- "$WORK/bodies.txt" | awk '/Requests\/sec/ {print $2}'
}
# timed LABEL COMMAND…: runs it, prints the seconds it took; it must exit ${EXPECT:-0}.
timed() {
  local label=$1 t0 t1 status=0; shift
  t0=$(date +%s.%N)
  "$@" >"$WORK/out.txt" 2>&1 || status=$?
  t1=$(date +%s.%N)
  printf '%-44s %6.2f s  exit %s\n' "$label" "$(python3 -c "print($t1 - $t0)")" "$status"
  [ "$status" = "${EXPECT:-0}" ] || { cat "$WORK/out.txt"; exit 1; }
}

echo "evidence on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
start_serve
plain=$(rate)
stop_serve
WPORT=$(free_port)
WURL=http://127.0.0.1:$WPORT
"$BIN" witness serve --data "$WORK/witness" --listen "127.0.0.1:$WPORT" \
  --log-key "$DATA/log/log-signing.pub" --log-level warn >"$WORK/witness.log" 2>&1 &
WITNESS_PID=$!
wait_up "$WURL" "$WORK/witness.log"
start_serve --witness "$WURL"
witnessed=$(rate)
stop_serve
start_serve
again=$(rate)
stop_serve
python3 -c "import sys; p, w, a = map(float, sys.argv[1:]); print(f'throughput: {p:,.0f}/s and {a:,.0f}/s without a witness (before and after), {w:,.0f}/s with one ({2 * w / (p + a):.2f}x their mean)')" "$plain" "$witnessed" "$again"

start_serve --witness "$WURL"
fill_log "$DATA" "$URL" "$RECORDS"
for _ in $(seq 1 100); do
  curl -s "$URL/readyz" | grep -q '"status":"witnessed"' && break
  sleep 0.2
done
curl -s "$URL/readyz" | python3 -c 'import json,sys; w=json.load(sys.stdin)["witness"]; print("witness: %s, %s records cosigned" % (w["status"], w["witnessed_size"]))'
stop_serve

"$BIN" log pubkey --data "$DATA" >"$WORK/log.pub"
"$BIN" witness pubkey --data "$WORK/witness" >"$WORK/witness.pub"
"$BIN" log export --data "$DATA" --format jsonl >"$WORK/records.jsonl"
first=$(head -1 "$WORK/records.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["decision_id"])')
last=$(tail -1 "$WORK/records.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["decision_id"])')
echo "log: $(wc -l <"$WORK/records.jsonl") records"
timed "evidence (first decision)" "$BIN" evidence "$first" --data "$DATA" --policies "$FIXTURE" --out "$WORK/first.json"
timed "evidence (last decision)" "$BIN" evidence "$last" --data "$DATA" --policies "$FIXTURE" --out "$WORK/last.json"
timed "evidence verify" "$BIN" evidence verify "$WORK/last.json" --pubkey "$WORK/log.pub" --witness-key "$WORK/witness.pub"
timed "log verify" "$BIN" log verify --data "$DATA" --pubkey "$WORK/log.pub"
timed "log verify --witness-key" "$BIN" log verify --data "$DATA" --pubkey "$WORK/log.pub" --witness-key "$WORK/witness.pub"
timed "log verify --witness-key --witness" "$BIN" log verify --data "$DATA" --pubkey "$WORK/log.pub" --witness-key "$WORK/witness.pub" --witness "$WURL"

QS=$ROOT/examples/quickstart
drop_policy "$QS" "$WORK/qs-wide" exec.cedar git-no-push
timed "policy compare quickstart --equivalent" "$BIN" policy compare "$QS" "$QS" --equivalent --data "$WORK/cmp"
EXPECT=4 timed "policy compare quickstart widened --narrows" "$BIN" policy compare "$QS" "$WORK/qs-wide" --data "$WORK/cmp"
