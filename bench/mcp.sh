#!/usr/bin/env bash
# Added latency per `tools/call` through `arbiter mcp stdio`, against calling the same server
# directly with the same client.
#
# usage: bench/mcp.sh          (knobs: COUNT=2000 WARMUP=200 ROUNDS=3)
#
# Installs the test dependencies (scripts/test-deps: the reference filesystem server from npm and
# the official MCP Python SDK), builds the release binary (into $CARGO_TARGET_DIR, default
# ./target), registers an agent and issues its key, and then, ROUNDS times, alternating:
#   direct    client → mcp-server-filesystem
#   local     client → arbiter mcp stdio --policies P --data D → mcp-server-filesystem
#             (decides in-process; each decision durably recorded before the call goes on)
#   async     the same with --decision-log async (records written in the background: what the
#             gateway itself adds, without waiting for the disk)
#   remote    client → arbiter mcp stdio --pdp URL → mcp-server-filesystem
#             (asks a running `arbiter serve`, which records durably)
#   relay     client → socat → mcp-server-filesystem (Debian's socat, installed if missing:
#             a process that only copies bytes both ways, the floor for anything in the path)
# Each run is one session: WARMUP untimed calls, then COUNT timed `read_text_file` calls of a
# small file (tests/mcp/client.py's time_call_tool: wall time per call in the client). Prints the
# median and p90 of every run and, per round, the median added over direct.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COUNT=${COUNT:-2000} WARMUP=${WARMUP:-200} ROUNDS=${ROUNDS:-3}
WORK=$(mktemp -d /tmp/arbiter-mcp-bench.XXXXXX)
SERVER_PID=
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

"$ROOT/scripts/test-deps"
if ! command -v socat >/dev/null; then
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  { DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q socat \
      || { $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q socat; }; } \
    >"$WORK/apt.log" 2>&1 || { echo "apt-get install socat failed: $(tail -3 "$WORK/apt.log")"; exit 1; }
fi
PY=$ROOT/.test-env/venv/bin/python
FS=$ROOT/.test-env/node/node_modules/.bin/mcp-server-filesystem
(cd "$ROOT" && cargo build --release -q -p arbiter-cli)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/arbiter
"$BIN" --version

mkdir -p "$WORK/docs" "$WORK/policies"
echo "hello from the benchmark" >"$WORK/docs/a.txt"
cat >"$WORK/policies/mcp.cedar" <<CEDAR
@id("bench-read")
permit (principal == Agent::"bench-agent", action in [Action::"call_tool", Action::"list_tools"], resource is Tool)
when { resource.server == "fs" && resource.name == "read_text_file" };

@id("bench-docs-only")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { context has arguments && context.arguments has path }
unless { context.arguments.path like "$WORK/docs/*" && !(context.arguments.path like "*..*") };
CEDAR

"$BIN" agent register bench-agent --owner bench@example.com --data "$WORK/remote" >/dev/null
KEY=$("$BIN" agent key issue bench-agent --data "$WORK/remote" --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
cp -a "$WORK/remote" "$WORK/local"
cp -a "$WORK/remote" "$WORK/async"

PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
"$BIN" serve --policies "$WORK/policies" --data "$WORK/remote" --listen "127.0.0.1:$PORT" \
  --log-level warn >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "$URL/healthz" && break; sleep 0.1; done
curl -s -o /dev/null "$URL/healthz" || { echo "server did not start: $(cat "$WORK/server.log")"; exit 1; }

# One session of COUNT timed calls; prints the samples file.
run() { # name command args...
  local name=$1; shift
  python3 - "$@" >"$WORK/script.json" <<PY
import json, sys
cmd = sys.argv[1:]
print(json.dumps({"transport": "stdio", "command": cmd[0], "args": cmd[1:],
  "env": {"ARBITER_AGENT_KEY": "$KEY", "ARBITER_LOG": "warn"},
  "steps": [{"op": "list_tools"},
            {"op": "time_call_tool", "name": "read_text_file",
             "arguments": {"path": "$WORK/docs/a.txt"}, "count": $COUNT, "warmup": $WARMUP}]}))
PY
  "$PY" "$ROOT/tests/mcp/client.py" "$WORK/script.json" >"$WORK/$name.json"
}

stats() { # file → "median p90 errors"
  python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"][1]
assert r["ok"], r
s = sorted(r["value"]["samples_us"])
print(s[len(s) // 2], s[int(len(s) * 0.9)], r["value"]["tool_errors"])
PY
}

printf '%-6s %-7s %10s %10s %8s %12s\n' round mode median_us p90_us errors added_median
for round in $(seq 1 "$ROUNDS"); do
  run direct "$FS" "$WORK/docs"
  run local "$BIN" mcp stdio --server-name fs --policies "$WORK/policies" --data "$WORK/local" -- "$FS" "$WORK/docs"
  run async "$BIN" mcp stdio --server-name fs --policies "$WORK/policies" --data "$WORK/async" --decision-log async -- "$FS" "$WORK/docs"
  run remote "$BIN" mcp stdio --server-name fs --pdp "$URL" --data "$WORK/remote" -- "$FS" "$WORK/docs"
  run relay socat STDIO "EXEC:$FS $WORK/docs,pipes"
  read -r d_med d_p90 d_err < <(stats "$WORK/direct.json")
  for mode in direct relay local async remote; do
    read -r med p90 err < <(stats "$WORK/$mode.json")
    printf '%-6s %-7s %10s %10s %8s %12s\n' "$round" "$mode" "$med" "$p90" "$err" "$((med - d_med))"
  done
done
echo "decision records: local $("$BIN" log verify --data "$WORK/local" 2>/dev/null | head -1)"
