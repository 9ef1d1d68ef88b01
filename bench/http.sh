#!/usr/bin/env bash
# End-to-end HTTP benchmark of `arbiter serve`: POST /access/v1/evaluation under wrk.
#
# usage: bench/http.sh            (knobs: DURATION=10s CONNS=16 THREADS=2 ROUNDS=3 PORT=,
#                                  ARBITER_BIN=path to run that binary instead of building,
#                                  POLICIES=policy directory (default the fixture),
#                                  SESSIONS=N to send `Arbiter-Session: s1`…`sN` round-robin)
#
# Builds the release binary, starts `arbiter serve` on bench/fixtures/bench-cedar (the same
# fixture as the Cerbos comparison), checks every request of the load mix gets its expected
# decision, then runs wrk ROUNDS times with the mix round-robin and prints requests/s, p50,
# p99 and the server's CPU use (cores busy, from /proc) per round, and the medians.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10s} CONNS=${CONNS:-16} THREADS=${THREADS:-2} ROUNDS=${ROUNDS:-3}
. "$ROOT/bench/lib.sh"
scratch bench
need_wrk

BIN=$(arbiter_bin)
PORT=${PORT:-$(free_port)}
URL=http://127.0.0.1:$PORT
POLICIES=${POLICIES:-$ROOT/bench/fixtures/bench-cedar} SESSIONS=${SESSIONS:-0}
"$BIN" serve --policies "$POLICIES" --data "$WORK/data" --listen "127.0.0.1:$PORT" \
  --log-level warn ${ARBITER_EXTRA_ARGS:-} >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "$URL/healthz" && break; sleep 0.1; done
curl -s -o /dev/null "$URL/healthz" || { echo "server did not start: $(cat "$WORK/server.log")"; exit 1; }

python3 - "$ROOT/bench/fixtures/bench-requests.jsonl" "$WORK/bodies.txt" "$URL/access/v1/evaluation" <<'PY'
import json, sys, urllib.request
src, bodies, url = sys.argv[1:4]
cases = [json.loads(l) for l in open(src) if l.strip()]
for c in cases:
    body = json.dumps(c["request"], separators=(",", ":")).encode()
    got = json.load(urllib.request.urlopen(urllib.request.Request(url, body, {"Content-Type": "application/json"})))["decision"]
    assert got is c["expect"], f"{c['name']}: expected {c['expect']}, got {got}"
open(bodies, "w").write("".join(json.dumps(c["request"], separators=(",", ":")) + "\n" for c in cases))
print(f"decisions ok: {len(cases)} requests match their expected decisions")
PY

cat >"$WORK/mix.lua" <<LUA
local reqs, i, threads, sessions = {}, 0, 0, $SESSIONS
function setup(thread) threads = threads + 1; thread:set("offset", threads * 5) end
function init(args)
  local n = 0
  for line in io.lines(args[1]) do
    n = n + 1
    local headers = { ["Content-Type"] = "application/json" }
    if sessions > 0 then headers["Arbiter-Session"] = "s" .. (n % sessions + 1) end
    reqs[#reqs + 1] = wrk.format("POST", nil, headers, line)
  end
  i = offset or 0
end
function request() i = i % #reqs + 1; return reqs[i] end
LUA

ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"; }
HZ=$(getconf CLK_TCK)
secs() { case "$1" in *ms) awk -v v="${1%ms}" 'BEGIN { print v / 1000 }';; *s) echo "${1%s}";; *m) awk -v v="${1%m}" 'BEGIN { print v * 60 }';; esac; }
DSECS=$(secs "$DURATION")
wrk -t"$THREADS" -c"$CONNS" -d2s -s "$WORK/mix.lua" "$URL/access/v1/evaluation" -- "$WORK/bodies.txt" >/dev/null
echo "wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS rounds; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
RPS=() P50=() P99=() CPU=()
for r in $(seq 1 "$ROUNDS"); do
  t0=$(ticks)
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$WORK/mix.lua" "$URL/access/v1/evaluation" -- "$WORK/bodies.txt" >"$WORK/wrk.out"
  t1=$(ticks)
  read -r rps p50 p99 err < <(awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /m$/) return v * 60000; return v * 1000 }
    $1 == "Requests/sec:" { rps = $2 } $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
    /Non-2xx or 3xx/ { err += $NF } /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
    END { printf "%.0f %.3f %.3f %d\n", rps, p50, p99, err }' "$WORK/wrk.out")
  cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" -v d="$DSECS" 'BEGIN { printf "%.2f", (b - a) / hz / d }')
  printf 'round %d: %8s req/s  p50 %7s ms  p99 %7s ms  server CPU %s cores%s\n' "$r" "$rps" "$p50" "$p99" "$cpu" "$([ "$err" = 0 ] || echo "  ERRORS: $err")"
  RPS+=("$rps") P50+=("$p50") P99+=("$p99") CPU+=("$cpu")
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "median: rps=$(median "${RPS[@]}") p50_ms=$(median "${P50[@]}") p99_ms=$(median "${P99[@]}") server_cpu_cores=$(median "${CPU[@]}")"
