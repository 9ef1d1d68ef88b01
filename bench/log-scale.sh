#!/usr/bin/env bash
# The decision log at scale: resident memory as the log grows, lookup and proof latency, reopen
# time, `arbiter log prove` from the files, verify speed and bytes on disk per record.
#
# usage: bench/log-scale.sh   (knobs: RECORDS=10000000 AT=1000000,5000000,10000000
#                              BASE=<git rev> also runs the same bench on that revision's log,
#                              side by side; HTTP_RECORDS=1000000 decisions through
#                              `arbiter serve` with its RSS sampled (0 skips); CONNS=16 THREADS=2;
#                              HTTP_LOOKUPS=2000 `GET /v1/decisions/{id}` of random records of the
#                              RECORDS-record log, served by `arbiter serve` (0 skips))
#
# 1. Direct: `cargo bench -p arbiter-log --bench scale` appends RECORDS durable records through
#    the library (16 384 in flight, group commit) and reports at each size in AT. With BASE, the
#    same bench file is built against BASE's arbiter-log in a git worktree and run first.
# 2. Through HTTP: `arbiter serve` on the bench fixture under wrk until its log holds
#    HTTP_RECORDS decisions, printing the server's RSS and the log's size every 10 s.
# The logs are written under the temporary directory (about 140 bytes a record, 1.4 GB at 10 M;
# a BASE log from before compression takes about 930 bytes a record) and removed afterwards.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RECORDS=${RECORDS:-10000000} AT=${AT:-1000000,5000000,10000000}
HTTP_RECORDS=${HTTP_RECORDS:-1000000} CONNS=${CONNS:-16} THREADS=${THREADS:-2}
. "$ROOT/bench/lib.sh"
scratch log-scale

run_scale() { # $1: label, $2: crate directory
  echo "== $1: direct appends through the library"
  (cd "$2" && SCALE_RECORDS=$RECORDS SCALE_AT=$AT CARGO_TARGET_DIR=${3:-$ROOT/target} \
    cargo bench -q -p arbiter-log --bench scale 2>/dev/null)
}

if [ -n "${BASE:-}" ]; then
  git -C "$ROOT" worktree add -q --detach "$WORK/base" "$BASE"
  trap 'git -C "$ROOT" worktree remove --force "$WORK/base" 2>/dev/null; bench_cleanup' EXIT
  cp "$ROOT/crates/arbiter-log/benches/scale.rs" "$WORK/base/crates/arbiter-log/benches/"
  grep -q 'name = "scale"' "$WORK/base/crates/arbiter-log/Cargo.toml" ||
    printf '\n[[bench]]\nname = "scale"\nharness = false\n' >>"$WORK/base/crates/arbiter-log/Cargo.toml"
  run_scale "$(git -C "$ROOT" rev-parse --short "$BASE") (base)" "$WORK/base" "$ROOT/target/log-scale-base"
fi
HTTP_LOOKUPS=${HTTP_LOOKUPS:-2000}
[ "$HTTP_LOOKUPS" -gt 0 ] && export SCALE_KEEP="$WORK/kept"
run_scale "$(git -C "$ROOT" rev-parse --short HEAD) (this tree)" "$ROOT"

if [ "$HTTP_LOOKUPS" -gt 0 ]; then
  # The log just written, served: decision lookups over HTTP as an auditor makes them.
  BIN=$(arbiter_bin)
  PORT=$(free_port)
  TOKEN=$("$BIN" admin token create --name bench --role auditor --json --data "$SCALE_KEEP" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  start_lookup_server() { # $1: what this start is
    "$BIN" serve --policies "$ROOT/bench/fixtures/bench-cedar" --data "$SCALE_KEEP" --node-id bench \
      --listen "127.0.0.1:$PORT" --log-level info >"$WORK/lookup-server.log" 2>&1 &
    SERVER_PID=$!
    # A first start reads back the runtime effects of the window's records: allow it minutes.
    local t0
    t0=$(date +%s.%N)
    until curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz"; do
      kill -0 "$SERVER_PID" 2>/dev/null || { echo "serve stopped: $(cat "$WORK/lookup-server.log")"; exit 1; }
      sleep 0.05
    done
    echo "serve on the $RECORDS-record log, $1: answered after $(python3 -c "import sys,time; print('%.2f' % (time.time() - float(sys.argv[1])))" "$t0") s"
    grep 'runtime context taken back' "$WORK/lookup-server.log" | head -1 || true
  }
  stop_lookup_server() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=; }
  start_lookup_server "first start (no runtime-context snapshot)"
  stop_lookup_server
  start_lookup_server "restart (from the snapshot written at the first start and at its shutdown)"
  echo "== through HTTP: $HTTP_LOOKUPS GET /v1/decisions/{id} of random records of $RECORDS"
  python3 - "$PORT" "$TOKEN" "$RECORDS" "$HTTP_LOOKUPS" <<'PY'
import http.client, random, sys, time
port, token, n, lookups = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def uid(i):  # the bench's ids (benches/scale.rs `id`)
    ms = 1_765_000_000_000 + i // 20
    return "%08x-%04x-7%03x-8%03x-%012x" % (ms >> 16, ms & 0xffff, (i * 7919) & 0xfff, (i * 104729) & 0xfff, i)
conn = http.client.HTTPConnection("127.0.0.1", port)
rng, times = random.Random(7), []
for _ in range(lookups):
    i = rng.randrange(n)
    t = time.perf_counter()
    conn.request("GET", "/v1/decisions/" + uid(i), headers={"Authorization": "Bearer " + token})
    r = conn.getresponse(); body = r.read()
    times.append(time.perf_counter() - t)
    assert r.status == 200 and uid(i).encode() in body, (r.status, body[:200])
times.sort()
pct = lambda p: times[min(len(times) - 1, int(len(times) * p))] * 1e3
print("http_get_ms_p50=%.2f http_get_ms_p99=%.2f (%d lookups, one connection)" % (pct(0.5), pct(0.99), lookups))
PY
  stop_lookup_server
  rm -rf "$SCALE_KEEP"
fi

[ "$HTTP_RECORDS" -gt 0 ] || exit 0
need_wrk
BIN=$(arbiter_bin)
PORT=$(free_port)
URL=http://127.0.0.1:$PORT
"$BIN" serve --policies "$ROOT/bench/fixtures/bench-cedar" --data "$WORK/data" \
  --listen "127.0.0.1:$PORT" --log-level warn >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
wait_up "$URL" "$WORK/server.log"
request_mix
rss() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$SERVER_PID/status"; }
size() { curl -s "$URL/metrics" | awk '$1 == "arbiter_log_records" { print $2 }'; }
mem() { curl -s "$URL/metrics" | awk '$1 == "arbiter_log_memory_bytes" { printf "%.1f", $2 / 1048576 }'; }
echo "== through HTTP: wrk -t$THREADS -c$CONNS until $HTTP_RECORDS decisions"
echo "records=$(size) rss_mib=$(rss) log_memory_mib=$(mem) (empty log)"
# The first decision, proved at the end from the files (it is in the oldest segment).
ID=$(curl -s -X POST "$URL/access/v1/evaluation" -H 'Content-Type: application/json' -d "$(head -1 "$WORK/bodies.txt")" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["context"]["decision_id"])')
n=0
while [ "$n" -lt "$HTTP_RECORDS" ]; do
  wrk -t"$THREADS" -c"$CONNS" -d10s -s "$WORK/mix.lua" "$URL/access/v1/evaluation" -- "$WORK/bodies.txt" >"$WORK/wrk.out"
  n=$(size)
  echo "records=$n rss_mib=$(rss) log_memory_mib=$(mem) req_per_s=$(awk '$1 == "Requests/sec:" { printf "%.0f", $2 }' "$WORK/wrk.out")"
done
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
t0=$(date +%s%N)
"$BIN" log prove "$ID" --data "$WORK/data" >/dev/null
echo "arbiter log prove of the first decision (from the files, $n records): $(( ($(date +%s%N) - t0) / 1000000 )) ms"
