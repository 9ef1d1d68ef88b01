#!/usr/bin/env bash
# Start-up overhead of `arbiter exec` (the command guard) against running the program directly.
#
# usage: bench/exec.sh            (knobs: RUNS=200 WARMUP=20 PROGRAM=/bin/true PORT=,
#                                  NO_HYPERFINE=1 to time with the shell loop)
#
# Builds the release binary (into $CARGO_TARGET_DIR, default ./target), registers an agent and
# issues its key, starts `arbiter serve` for remote mode, then measures side by side in one run:
#   direct   PROGRAM
#   local    arbiter exec --policies P --data D1 -- PROGRAM   (decides and records in-process)
#   remote   arbiter exec --pdp URL -- PROGRAM                (asks the served decision point)
#   binary   arbiter --version                                (the binary's own start-up, for scale)
# with hyperfine (installed from the distribution if missing) or, failing that, a loop timing
# each run with `date +%s%N`. Prints median and mean per mode and the overhead over direct.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-200} WARMUP=${WARMUP:-20} PROGRAM=${PROGRAM:-/bin/true}
WORK=$(mktemp -d /tmp/arbiter-exec-bench.XXXXXX)
SERVER_PID=
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

if [ -z "${NO_HYPERFINE:-}" ] && ! command -v hyperfine >/dev/null; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  { $SUDO apt-get install -y -q hyperfine || { $SUDO apt-get update -q && $SUDO apt-get install -y -q hyperfine; }; } \
    >"$WORK/apt.log" 2>&1 || echo "hyperfine not available; timing with a shell loop"
fi

(cd "$ROOT" && cargo build --release -q -p arbiter-cli)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/arbiter
"$BIN" --version

# Policies: the program may run.
mkdir -p "$WORK/policies"
cat >"$WORK/policies/exec.cedar" <<CEDAR
@id("bench-program")
permit (principal is Agent, action == Action::"exec", resource == Command::"$(basename "$PROGRAM")")
when { context.subcommand == "" };
CEDAR

# One registry, copied so that the same key works in both modes; separate decision logs
# (local mode must not share a data directory with a running serve).
"$BIN" agent register bench-agent --owner bench@example.com --data "$WORK/remote" >/dev/null
ARBITER_AGENT_KEY=$("$BIN" agent key issue bench-agent --data "$WORK/remote" --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
export ARBITER_AGENT_KEY
cp -a "$WORK/remote" "$WORK/local"

PORT=${PORT:-$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')}
URL=http://127.0.0.1:$PORT
"$BIN" serve --policies "$WORK/policies" --data "$WORK/remote" --listen "127.0.0.1:$PORT" \
  --log-level warn >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "$URL/healthz" && break; sleep 0.1; done
curl -s -o /dev/null "$URL/healthz" || { echo "server did not start: $(cat "$WORK/server.log")"; exit 1; }

DIRECT=("$PROGRAM")
LOCAL=("$BIN" exec --policies "$WORK/policies" --data "$WORK/local" -- "$PROGRAM")
REMOTE=("$BIN" exec --pdp "$URL" -- "$PROGRAM")
BINARY=("$BIN" --version)
for mode in LOCAL REMOTE; do
  declare -n cmd=$mode
  "${cmd[@]}" || { echo "$mode: arbiter exec did not allow $PROGRAM (exit $?)"; exit 1; }
done
echo "decisions ok: local and remote allow $PROGRAM; $RUNS runs per mode, $WARMUP warm-up"

q() { printf '%q ' "$@"; }
if [ -z "${NO_HYPERFINE:-}" ] && command -v hyperfine >/dev/null; then
  hyperfine -N --style none --warmup "$WARMUP" --runs "$RUNS" --export-json "$WORK/h.json" \
    -n direct "$(q "${DIRECT[@]}")" -n local "$(q "${LOCAL[@]}")" -n remote "$(q "${REMOTE[@]}")" \
    -n binary "$(q "${BINARY[@]}")" \
    >"$WORK/hyperfine.log"
  python3 - "$WORK/h.json" <<'PY'
import json, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
ms = lambda s: s * 1000
d = res["direct"]
print(f"{'mode':8} {'median ms':>10} {'mean ms':>9} {'± sd':>7} {'overhead (median)':>18}")
for name in ("direct", "local", "remote", "binary"):
    r = res[name]
    over = "" if name == "direct" else f"+{ms(r['median'] - d['median']):.2f} ms"
    print(f"{name:8} {ms(r['median']):10.2f} {ms(r['mean']):9.2f} {ms(r['stddev']):7.2f} {over:>18}")
PY
else
  # Interleaved: each round runs every mode once, so drift hits all of them alike.
  : >"$WORK/direct.t"; : >"$WORK/local.t"; : >"$WORK/remote.t"; : >"$WORK/binary.t"
  for i in $(seq 1 $((WARMUP + RUNS))); do
    for mode in DIRECT LOCAL REMOTE BINARY; do
      declare -n cmd=$mode
      t0=$(date +%s%N); "${cmd[@]}" >/dev/null; t1=$(date +%s%N)
      [ "$i" -gt "$WARMUP" ] && echo $((t1 - t0)) >>"$WORK/${mode,,}.t"
    done
  done
  python3 - "$WORK" <<'PY'
import statistics, sys
t = {m: [int(x) / 1e6 for x in open(f"{sys.argv[1]}/{m}.t")] for m in ("direct", "local", "remote", "binary")}
d = statistics.median(t["direct"])
print(f"{'mode':8} {'median ms':>10} {'mean ms':>9} {'overhead (median)':>18}")
for m, xs in t.items():
    over = "" if m == "direct" else f"+{statistics.median(xs) - d:.2f} ms"
    print(f"{m:8} {statistics.median(xs):10.2f} {statistics.mean(xs):9.2f} {over:>18}")
PY
fi
records=$("$BIN" log query --data "$WORK/local" | wc -l)
echo "local decision log after the run: $records records"
