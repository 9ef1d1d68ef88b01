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
bench_cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }

# Prints a TCP port free on 127.0.0.1.
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
