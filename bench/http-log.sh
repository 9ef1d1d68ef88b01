#!/usr/bin/env bash
# Decision logging on vs off over HTTP, side by side: alternates `bench/http.sh` runs with
# `--decision-log sync` (durable, group commit: the default) and `--decision-log off`, and
# prints the medians and the ratio.   knobs: ROUNDS=3 DURATION=10s CONNS=16 THREADS=2
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3}
declare -A RPS P99
for r in $(seq 1 "$ROUNDS"); do
  for mode in sync off; do
    line=$(ARBITER_EXTRA_ARGS="--decision-log $mode ${EXTRA:-}" ROUNDS=1 "$ROOT/bench/http.sh" | grep '^median:')
    rps=$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$line"); p99=$(sed -E 's/.*p99_ms=([0-9.]+).*/\1/' <<<"$line")
    printf 'round %d  decision log %-4s %8s req/s  p99 %6s ms\n' "$r" "$mode" "$rps" "$p99"
    RPS[$mode]+="$rps "; P99[$mode]+="$p99 "
  done
done
median() { printf '%s\n' $1 | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
on=$(median "${RPS[sync]}") off=$(median "${RPS[off]}")
awk -v on="$on" -v off="$off" -v p_on="$(median "${P99[sync]}")" -v p_off="$(median "${P99[off]}")" \
  'BEGIN { printf "logging on: %.0f req/s p99 %.2f ms; off: %.0f req/s p99 %.2f ms; on/off = %.2f\n", on, p_on, off, p_off, on / off }'
