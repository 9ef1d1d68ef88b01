#!/usr/bin/env bash
# What the runtime context costs `arbiter serve`: bench/http.sh's load (same requests, same
# decisions) against the fixture's policies, then against the same policies using the runtime
# context (bench/fixtures/bench-cedar-session: every request gets `context.session`, every
# allowed read adds a session label and so writes its effects into its record, every allowed
# write is counted against a limit), with requests spread over 8 sessions. Alternates the two
# PAIRS times and prints each run's median requests/s and the ratio of the medians.
#
# usage: bench/session.sh        (knobs: PAIRS=2 and bench/http.sh's DURATION, CONNS, THREADS,
#                                 ROUNDS, ARBITER_BIN)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PAIRS=${PAIRS:-2}
if [ -z "${ARBITER_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p arbiter-cli)
  export ARBITER_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/arbiter
fi
run() {
  local out
  out=$("$ROOT/bench/http.sh")
  printf '%s\n' "$out" >&2
  printf '%s\n' "$out" | awk -F'rps=' '/^median:/ { split($2, a, " "); print a[1] }'
}
PLAIN=() SESSION=()
for _ in $(seq 1 "$PAIRS"); do
  echo "== without the runtime context" >&2
  PLAIN+=("$(run)")
  echo "== with the runtime context (8 sessions)" >&2
  SESSION+=("$(POLICIES="$ROOT/bench/fixtures/bench-cedar-session" SESSIONS=8 run)")
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
p=$(median "${PLAIN[@]}") s=$(median "${SESSION[@]}")
echo "without: ${PLAIN[*]} req/s (median $p); with: ${SESSION[*]} req/s (median $s)"
awk -v p="$p" -v s="$s" 'BEGIN { printf "runtime context keeps %.1f%% of the throughput\n", 100 * s / p }'
