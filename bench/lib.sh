# Shared by the bench scripts; source it once ROOT (the repository) and WORK (a scratch
# directory) are set.

# Installs wrk from Debian's packages unless it is on PATH.
need_wrk() {
  command -v wrk >/dev/null && return 0
  echo "installing wrk (apt)"
  local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  { $sudo apt-get install -y -q wrk || { $sudo apt-get update -q && $sudo apt-get install -y -q wrk; }; } >"$WORK/apt.log" 2>&1 \
    || { echo "apt-get install wrk failed: $(tail -3 "$WORK/apt.log")"; exit 1; }
}

# Prints the arbiter binary to run: ARBITER_BIN, or the release build (built first).
arbiter_bin() {
  if [ -n "${ARBITER_BIN:-}" ]; then
    echo "$ARBITER_BIN"
  else
    (cd "$ROOT" && cargo build --release -q -p arbiter-cli) >&2
    echo "${CARGO_TARGET_DIR:-$ROOT/target}/release/arbiter"
  fi
}

# Sets WORK to a fresh scratch directory (`/tmp/arbiter-NAME.XXXXXX`) and, on exit, stops the
# server whose pid is in SERVER_PID and removes WORK.
scratch() {
  WORK=$(mktemp -d "/tmp/arbiter-$1.XXXXXX")
  SERVER_PID=
  trap 'bench_cleanup' EXIT
}
bench_cleanup() {
  for pid in "$SERVER_PID" "${WITNESS_PID:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null; done
  wait 2>/dev/null; rm -rf "$WORK"
}

# Waits until URL $1 answers /healthz, or fails with the log file $2.
wait_up() {
  for _ in $(seq 1 100); do curl -s -o /dev/null "$1/healthz" && return 0; sleep 0.1; done
  echo "$1 did not start: $(cat "$2")"; exit 1
}

# Prints a TCP port free on 127.0.0.1.
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# drop_policy SRC DEST FILE ID: copies policy directory SRC to DEST without the policy whose
# `@id` is ID in FILE (with its annotations).
drop_policy() {
  cp -r "$1" "$2"
  python3 - "$2/$3" "$4" <<'PY'
import re, sys
p, pid = sys.argv[1:3]; s = open(p).read()
s2 = re.sub(r'@id\("' + re.escape(pid) + r'"\).*?;\n', '', s, flags=re.S)
assert s2 != s, f"{p} has no policy `{pid}`"
open(p, "w").write(s2)
PY
}

# Writes the fixture's request mix for wrk: $WORK/bodies.txt (one AuthZEN request a line, from
# bench/fixtures/bench-requests.jsonl) and $WORK/mix.lua (each wrk request the next line).
request_mix() {
  python3 - "$ROOT/bench/fixtures/bench-requests.jsonl" "$WORK/bodies.txt" <<'PY'
import json, sys
src, bodies = sys.argv[1:3]
cases = [json.loads(l) for l in open(src) if l.strip()]
open(bodies, "w").write("".join(json.dumps(c["request"], separators=(",", ":")) + "\n" for c in cases))
PY
  cat >"$WORK/mix.lua" <<'LUA'
local reqs, i = {}, 0
function init(args)
  for line in io.lines(args[1]) do
    reqs[#reqs + 1] = wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, line)
  end
end
function request() i = i % #reqs + 1; return reqs[i] end
LUA
}

# Records in the decision log of data directory $1.
log_records() { "$BIN" log verify --data "$1" 2>/dev/null | sed -E 's/^log ok: ([0-9]+) records.*/\1/'; }

# Sends the request mix (request_mix) to the server at URL $2 under wrk until the decision log
# in data directory $1 holds at least $3 records (CONNS, THREADS).
fill_log() {
  local n=0
  while [ "$n" -lt "$3" ]; do
    wrk -t"$THREADS" -c"$CONNS" -d5s -s "$WORK/mix.lua" "$2/access/v1/evaluation" -- "$WORK/bodies.txt" >/dev/null
    n=$(log_records "$1")
    echo "log: $n decisions"
  done
}
