#!/usr/bin/env bash
# Added latency per A2A `SendMessage` through `arbiter a2a proxy`, against sending the same
# message to the same agent directly with the same client.
#
# usage: bench/a2a.sh          (knobs: COUNT=1000 WARMUP=100 ROUNDS=3)
#
# Installs the test dependencies (scripts/test-deps: the official A2A Python SDK, a2a-sdk
# 1.3.0), builds the release binary (into $CARGO_TARGET_DIR, default ./target), registers an
# agent and issues its key, starts the SDK server agent (tests/a2a/server_agent.py) and, in
# front of it, the gateway deciding in-process with --policies, each decision durably recorded
# (--decision-log sync) before the message goes on. Then, ROUNDS times, alternating:
#   direct    SDK client → server_agent.py
#   gateway   SDK client → arbiter a2a proxy --policies P --data D → server_agent.py
#   async     the same through a second gateway with --decision-log async (what the durable
#             record costs)
# Each run is one SDK client (tests/a2a/client_agent.py, op time_send: SendMessage, not
# streamed, on one keep-alive connection): WARMUP untimed calls, then COUNT timed calls one after
# the other, each a task the agent completes at once (text `quick`, skill `summarize`; wall time
# per call in the client). Prints the median and p99 of every run and, per round, what the
# gateway adds to each. Then the three targets once more, call by call in turn
# (bench/a2a_interleaved.py), which is steadier: the agent's drift falls on all three alike.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COUNT=${COUNT:-1000} WARMUP=${WARMUP:-100} ROUNDS=${ROUNDS:-3}
WORK=$(mktemp -d /tmp/arbiter-a2a-bench.XXXXXX)
AGENT_PID= GATEWAY_PID= ASYNC_PID=
cleanup() {
  for pid in "$GATEWAY_PID" "$ASYNC_PID" "$AGENT_PID"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null; done
  wait 2>/dev/null; rm -rf "$WORK"
}
trap cleanup EXIT

"$ROOT/scripts/test-deps"
PY=$ROOT/.test-env/venv/bin/python
(cd "$ROOT" && cargo build --release -q -p arbiter-cli)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/arbiter
"$BIN" --version

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
# Waits until something answers HTTP at URL $1, or fails showing the log file $2.
wait_http() {
  for _ in $(seq 1 150); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "$1 did not start: $(cat "$2")"; exit 1
}

mkdir -p "$WORK/policies"
cat >"$WORK/policies/a2a.cedar" <<'CEDAR'
@id("bench-send")
permit (principal == Agent::"bench-agent", action == Action::"send_message", resource == Agent::"bench")
when { context has skill && context.skill == "summarize" };

@id("bench-no-delete")
forbid (principal, action == Action::"send_message", resource == Agent::"bench")
when { context has skill && context.skill == "delete_records" };
CEDAR
"$BIN" agent register bench-agent --owner bench@example.com --data "$WORK/data" >/dev/null
KEY=$("$BIN" agent key issue bench-agent --data "$WORK/data" --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
# A second gateway with the asynchronous log (its own data directory: a log has one writer),
# to show what the durable record costs.
"$BIN" agent register bench-agent --owner bench@example.com --data "$WORK/data-async" >/dev/null
KEY_ASYNC=$("$BIN" agent key issue bench-agent --data "$WORK/data-async" --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

AGENT_PORT=$(free_port)
# The agent answers with its result only (--plain-result), not the test report of every header
# and metadata member it received: the report would make the agent's own work grow with what
# the gateway adds (AGENT_ARGS= to run it with the report).
# shellcheck disable=SC2086
"$PY" "$ROOT/tests/a2a/server_agent.py" "$AGENT_PORT" --quiet ${AGENT_ARGS---plain-result} >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
wait_http "http://127.0.0.1:$AGENT_PORT/.well-known/agent-card.json" "$WORK/agent.log"

GATEWAY_PORT=$(free_port)
"$BIN" a2a proxy --name bench --upstream "http://127.0.0.1:$AGENT_PORT/" \
  --listen "127.0.0.1:$GATEWAY_PORT" --policies "$WORK/policies" --data "$WORK/data" \
  --decision-log sync >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
wait_http "http://127.0.0.1:$GATEWAY_PORT/.well-known/agent-card.json" "$WORK/gateway.log"
ASYNC_PORT=$(free_port)
"$BIN" a2a proxy --name bench --upstream "http://127.0.0.1:$AGENT_PORT/" \
  --listen "127.0.0.1:$ASYNC_PORT" --policies "$WORK/policies" --data "$WORK/data-async" \
  --decision-log async >"$WORK/gateway-async.log" 2>&1 &
ASYNC_PID=$!
wait_http "http://127.0.0.1:$ASYNC_PORT/.well-known/agent-card.json" "$WORK/gateway-async.log"

# One client run of COUNT timed calls against base URL $2 with token $3; the report in $WORK/$1.json.
run() {
  local steps
  steps=$(printf '[{"op":"time_send","text":"quick","message_metadata":{"skill":"summarize"},"count":%d,"warmup":%d}]' "$COUNT" "$WARMUP")
  "$PY" "$ROOT/tests/a2a/client_agent.py" "$2" --token "$3" --auth-mode header --steps "$steps" >"$WORK/$1.json"
}

stats() { # report → "median p99 errors" (µs)
  python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert "error" not in r, r["error"]
step = r["steps"][0]
assert "error" not in step, step["error"]
s = sorted(step["result"]["samples_us"])
print(s[len(s) // 2], s[min(len(s) - 1, int(len(s) * 0.99))], step["result"]["errors"])
PY
}

printf '%-6s %-8s %10s %10s %7s %13s %10s\n' round mode median_us p99_us errors added_median added_p99
for round in $(seq 1 "$ROUNDS"); do
  run direct "http://127.0.0.1:$AGENT_PORT" bench-not-checked
  run gateway "http://127.0.0.1:$GATEWAY_PORT" "$KEY"
  run async "http://127.0.0.1:$ASYNC_PORT" "$KEY_ASYNC"
  read -r d_med d_p99 d_err < <(stats "$WORK/direct.json")
  read -r g_med g_p99 g_err < <(stats "$WORK/gateway.json")
  read -r a_med a_p99 a_err < <(stats "$WORK/async.json")
  printf '%-6s %-8s %10s %10s %7s %13s %10s\n' "$round" direct "$d_med" "$d_p99" "$d_err" - -
  printf '%-6s %-8s %10s %10s %7s %13s %10s\n' "$round" gateway "$g_med" "$g_p99" "$g_err" "$((g_med - d_med))" "$((g_p99 - d_p99))"
  printf '%-6s %-8s %10s %10s %7s %13s %10s\n' "$round" async "$a_med" "$a_p99" "$a_err" "$((a_med - d_med))" "$((a_p99 - d_p99))"
done
# The same three targets call by call in turn (raw JSON-RPC on keep-alive httpx clients), so the
# agent's drift between runs falls on all three alike: the per-call difference's median.
echo "== interleaved, call by call ($COUNT calls each after $WARMUP)"
"$PY" "$ROOT/bench/a2a_interleaved.py" "$COUNT" "$WARMUP" \
  "direct=http://127.0.0.1:$AGENT_PORT/=bench-not-checked" \
  "durable=http://127.0.0.1:$GATEWAY_PORT/=$KEY" \
  "async=http://127.0.0.1:$ASYNC_PORT/=$KEY_ASYNC"
echo "decision records: $("$BIN" log verify --data "$WORK/data" 2>/dev/null | head -1)"
