#!/usr/bin/env bash
# What `arbiter policy replay` costs on a log of recorded decisions.
#
# usage: bench/replay.sh          (knobs: RECORDS=100000 minimum log size, CONNS=16 THREADS=2,
#                                  ARBITER_BIN=path to run that binary instead of building)
#
# Builds the release binary, starts `arbiter serve` on bench/fixtures/bench-cedar (durable
# log), fills its decision log with the fixture's request mix under wrk until it holds at least
# RECORDS decisions, stops it, then times `arbiter policy replay` twice over the whole log:
# against the same policies (nothing may change) and against a copy without the `locked`
# forbid (every recorded deny of a locked document must flip to allow). Prints the log size,
# the seconds each replay took, decisions replayed per second and the changes found.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RECORDS=${RECORDS:-100000} CONNS=${CONNS:-16} THREADS=${THREADS:-2}
. "$ROOT/bench/lib.sh"
scratch replay
need_wrk
BIN=$(arbiter_bin)
FIXTURE=$ROOT/bench/fixtures/bench-cedar
PORT=$(free_port)
URL=http://127.0.0.1:$PORT
DATA=$WORK/data
"$BIN" serve --policies "$FIXTURE" --data "$DATA" --listen "127.0.0.1:$PORT" --log-level warn \
  >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
wait_up "$URL" "$WORK/server.log"

request_mix
fill_log "$DATA" "$URL" "$RECORDS"
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=

drop_policy "$FIXTURE" "$WORK/unlocked" policies.cedar locked
run() {
  local label=$1 dir=$2 t0 t1 status=0
  t0=$(date +%s.%N)
  "$BIN" policy replay "$dir" --data "$DATA" --json >"$WORK/$label.json" || status=$?
  t1=$(date +%s.%N)
  python3 - "$WORK/$label.json" "$label" "$t0" "$t1" "$status" <<'PY'
import json, sys
path, label, t0, t1, status = sys.argv[1:6]
r = json.load(open(path)); secs = float(t1) - float(t0)
kinds = {}
for c in r["changes"]:
    kinds[c["change"]] = kinds.get(c["change"], 0) + 1
# The check: the same policies change nothing; without `locked`, only denies that `locked`
# decided turn into allows, and some do.
if label == "same":
    assert not r["changes"] and status == "0", f"the same policies changed {kinds}"
else:
    wrong = [c for c in r["changes"] if c["change"] != "deny->allow" or c["recorded_policies"] != ["locked"]]
    assert r["changes"] and not wrong and status == "4", f"unexpected changes: {wrong[:3]}"
print(f"{label:>9}: {r['considered']} decisions read, {r['replayed']} replayed in {secs:.2f} s "
      f"({r['replayed'] / secs:,.0f} decisions/s); changes {kinds or 'none'}; exit {status}")
PY
}
echo "replay on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
run same "$FIXTURE"
run unlocked "$WORK/unlocked"
