#!/usr/bin/env bash
# Latency at a fixed request rate, decision log on vs off: POST /access/v1/evaluation under
# h2load with a set rate per connection, so that the figures are the service's latency at that
# load rather than the queueing of a saturated machine (which bench/http.sh measures).
#
# usage: bench/http-rate.sh      (knobs: RATE=20000 total requests/s, CLIENTS=16 connections,
#                                 DURATION=10 seconds per round, ROUNDS=3,
#                                 ARBITER_BIN=path to run that binary instead of building)
#
# Starts two servers on bench/fixtures/bench-cedar, one with `--decision-log sync` (the
# default: every decision durable before it is answered) and one with `--decision-log off`,
# checks both answer the mix as expected, then runs the rounds alternately against the two
# (each keeps its log across rounds, so the log grows as it would in service) and prints, per
# round, the rate reached and p50/p99/p99.9/max of every request's latency (h2load's per-request
# log), then the medians. The body is the mix's first request (an allow); h2load sends one body.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RATE=${RATE:-20000} CLIENTS=${CLIENTS:-16} DURATION=${DURATION:-10} ROUNDS=${ROUNDS:-3}
WORK=$(mktemp -d /tmp/arbiter-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

if ! command -v h2load >/dev/null; then
  echo "installing h2load (apt: nghttp2-client)"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  { $SUDO apt-get install -y -q nghttp2-client || { $SUDO apt-get update -q && $SUDO apt-get install -y -q nghttp2-client; }; } \
    >"$WORK/apt.log" 2>&1 || { echo "apt-get install nghttp2-client failed: $(tail -3 "$WORK/apt.log")"; exit 1; }
fi
if [ -n "${ARBITER_BIN:-}" ]; then
  BIN=$ARBITER_BIN
else
  (cd "$ROOT" && cargo build --release -q -p arbiter-cli)
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/arbiter
fi
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

declare -A URL
for mode in sync off; do
  port=$(free_port)
  URL[$mode]=http://127.0.0.1:$port
  "$BIN" serve --policies "$ROOT/bench/fixtures/bench-cedar" --data "$WORK/data-$mode" \
    --listen "127.0.0.1:$port" --decision-log "$mode" --log-level warn >"$WORK/server-$mode.log" 2>&1 &
  PIDS+=($!)
done
for mode in sync off; do
  for _ in $(seq 1 100); do curl -s -o /dev/null "${URL[$mode]}/healthz" && break; sleep 0.1; done
  curl -s -o /dev/null "${URL[$mode]}/healthz" || { echo "server ($mode) did not start: $(cat "$WORK/server-$mode.log")"; exit 1; }
done

python3 - "$ROOT/bench/fixtures/bench-requests.jsonl" "$WORK/body.json" "${URL[sync]}" "${URL[off]}" <<'PY'
import json, sys, urllib.request
src, body_out, *urls = sys.argv[1:]
cases = [json.loads(l) for l in open(src) if l.strip()]
for url in urls:
    for c in cases:
        body = json.dumps(c["request"], separators=(",", ":")).encode()
        req = urllib.request.Request(url + "/access/v1/evaluation", body, {"Content-Type": "application/json"})
        got = json.load(urllib.request.urlopen(req))["decision"]
        assert got is c["expect"], f"{url} {c['name']}: expected {c['expect']}, got {got}"
open(body_out, "w").write(json.dumps(cases[0]["request"], separators=(",", ":")))
print(f"decisions ok: {len(cases)} requests match their expected decisions on both servers")
PY

PER=$(( (RATE + CLIENTS - 1) / CLIENTS ))
h2() { # URL REQUESTS [LOGFILE]
  h2load --h1 -c"$CLIENTS" --rps="$PER" -n "$2" -H 'content-type: application/json' -d "$WORK/body.json" \
    ${3:+--log-file="$3"} "$1/access/v1/evaluation"
}
for mode in sync off; do h2 "${URL[$mode]}" $((PER * CLIENTS)) >/dev/null; done
echo "h2load --h1 -c$CLIENTS --rps=$PER per connection (target $((PER * CLIENTS)) req/s), ${DURATION}s x $ROUNDS rounds; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
  for mode in sync off; do
    rm -f "$WORK/lat.log"
    h2 "${URL[$mode]}" $((PER * CLIENTS * DURATION)) "$WORK/lat.log" >"$WORK/h2.out"
    python3 - "$mode" "$r" "$WORK/lat.log" "$WORK/h2.out" "$((PER * CLIENTS))" >>"$WORK/rounds.txt" <<'PY'
import re, sys
mode, r, log, out, target = sys.argv[1:6]
lat = sorted(int(l.split()[2]) for l in open(log) if l.strip())
text = open(out).read()
rps = float(re.search(r"finished in [0-9.]+m?s, ([0-9.]+) req/s", text).group(1))
m = re.search(r"status codes: (\d+) 2xx", text)
bad = len(lat) - int(m.group(1)) if m else len(lat)
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] / 1000
note = "" if rps >= 0.95 * int(target) else "  (rate not reached)"
note += f"  ({bad} not 2xx)" if bad else ""
print(f"{mode} {r} {rps:.0f} {q(.5):.3f} {q(.99):.3f} {q(.999):.3f} {lat[-1] / 1000:.1f}{note}")
PY
    tail -1 "$WORK/rounds.txt" | awk '{ printf "round %s  decision log %-4s %6s req/s  p50 %s ms  p99 %s ms  p99.9 %s ms  max %s ms", $2, $1, $3, $4, $5, $6, $7; for (i = 8; i <= NF; i++) printf " %s", $i; print "" }'
  done
done
for mode in sync off; do
  awk -v m="$mode" '$1 == m { print }' "$WORK/rounds.txt" | python3 -c '
import sys, statistics as s
rows = [l.split() for l in sys.stdin]
med = lambda i: s.median(float(r[i]) for r in rows)
print(f"median: decision log {rows[0][0]:<4} {med(2):.0f} req/s  p50 {med(3):.3f} ms  p99 {med(4):.3f} ms  p99.9 {med(5):.3f} ms  max {med(6):.1f} ms")'
done
