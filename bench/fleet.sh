#!/usr/bin/env bash
# A fleet on PostgreSQL, side by side in one run: decisions/s of one `arbiter serve` on the
# embedded SQLite store, of one on a PostgreSQL store (`--store`), and of three sharing that
# PostgreSQL (aggregate, same machine), each with a durable decision log; then the same with
# a rate-limited permit (`@limit`), whose counter a shared store keeps in PostgreSQL.
#
# usage: bench/fleet.sh     (knobs: DURATION=10s CONNS=16 ROUNDS=3,
#                            PGURL=postgres://postgres@127.0.0.1:5432/postgres (an administrator),
#                            ARBITER_BIN=path to run that binary instead of building)
#
# Every request carries an agent key (the registry is on the path: a cached credential, checked
# against the store's change counter on every decision). Needs PostgreSQL and psql.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10s} CONNS=${CONNS:-16} ROUNDS=${ROUNDS:-3}
PGURL=${PGURL:-${ARBITER_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}}
. "$ROOT/bench/lib.sh"
scratch fleet
need_wrk
BIN=$(arbiter_bin)
DB=arbiter_bench_fleet
STORE="${PGURL%/*}/$DB"
psql -X -q -d "$PGURL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
PIDS=()
cleanup_fleet() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  psql -X -q -d "$PGURL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup_fleet EXIT

mkdir -p "$WORK/policies"
cat >"$WORK/policies/policies.cedar" <<'CEDAR'
@id("read")
permit (principal is Agent, action == Action::"call_tool", resource == Tool::"helpdesk/read_ticket");

@id("limited")
@limit("1000000/1m")
permit (principal is Agent, action == Action::"call_tool", resource == Tool::"helpdesk/limited");
CEDAR

# One agent and key in each registry.
key_in() { "$BIN" agent register bench-bot --owner ops "$@" >/dev/null
           "$BIN" agent key issue bench-bot --json "$@" | python3 -c 'import json,sys;print(json.load(sys.stdin)["key"])'; }
SQLITE_KEY=$(key_in --data "$WORK/sqlite")
PG_KEY=$(key_in --store "$STORE" --data "$WORK/cli")

start() { # NAME STORE-ARGS… ; sets PORT
  local name=$1; shift
  PORT=$(free_port)
  "$BIN" serve --policies "$WORK/policies" --data "$WORK/$name" --listen "127.0.0.1:$PORT" \
    --log-level warn "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  wait_up "http://127.0.0.1:$PORT" "$WORK/$name.log"
}
stop_all() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); }

write_lua() { # KEY TOOL FILE
  cat >"$3" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $1"
wrk.body = '{"action":{"name":"call_tool"},"resource":{"type":"Tool","id":"$2"}}'
function response(status, headers, body)
  if not body:find('"decision":true', 1, true) then error("not allowed: " .. body) end
end
LUA
}

# run_wrk PORT LUA CONNS -> "rps p99_ms errors"
run_wrk() {
  wrk -t1 -c"$3" -d"$DURATION" --latency -s "$2" "http://127.0.0.1:$1/access/v1/evaluation" >"$WORK/wrk.$1.out" 2>&1 || true
  awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /m$/) return v * 60000; return v * 1000 }
    $1 == "Requests/sec:" { rps = $2 } $1 == "99%" { p99 = ms($2) }
    /Non-2xx or 3xx/ { err += $NF } /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
    END { printf "%.0f %.3f %d\n", rps, p99, err }' "$WORK/wrk.$1.out"
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "wrk, $DURATION per round, $ROUNDS rounds, $CONNS connections in all; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for tool in helpdesk/read_ticket helpdesk/limited; do
  write_lua "$SQLITE_KEY" "$tool" "$WORK/sqlite.lua"
  write_lua "$PG_KEY" "$tool" "$WORK/pg.lua"
  declare -A R=()
  for r in $(seq 1 "$ROUNDS"); do
    # One node, SQLite.
    start "sqlite"
    read -r rps p99 err < <(run_wrk "$PORT" "$WORK/sqlite.lua" "$CONNS"); stop_all
    R[sqlite]+="$rps "; printf '%-22s round %d: %8s req/s  p99 %7s ms%s\n' "$tool sqlite x1" "$r" "$rps" "$p99" "$([ "$err" = 0 ] || echo "  ERRORS: $err")"
    # One node, PostgreSQL.
    start "pg1" --store "$STORE"
    read -r rps p99 err < <(run_wrk "$PORT" "$WORK/pg.lua" "$CONNS"); stop_all
    R[pg1]+="$rps "; printf '%-22s round %d: %8s req/s  p99 %7s ms%s\n' "$tool postgres x1" "$r" "$rps" "$p99" "$([ "$err" = 0 ] || echo "  ERRORS: $err")"
    # Three nodes, PostgreSQL, loaded together (the connections split between them).
    ports=()
    for n in a b c; do start "pg3$n" --store "$STORE"; ports+=("$PORT"); done
    per=$(( (CONNS + 2) / 3 ))
    WPIDS=()
    for p in "${ports[@]}"; do run_wrk "$p" "$WORK/pg.lua" "$per" >"$WORK/agg.$p" & WPIDS+=($!); done
    for j in "${WPIDS[@]}"; do wait "$j"; done
    total=0; errs=0; worst=0
    for p in "${ports[@]}"; do read -r rps p99 err <"$WORK/agg.$p"; total=$((total + rps)); errs=$((errs + err)); worst=$(awk -v a="$worst" -v b="$p99" 'BEGIN { print (b > a) ? b : a }'); done
    stop_all
    R[pg3]+="$total "; printf '%-22s round %d: %8s req/s  p99 %7s ms (worst node)%s\n' "$tool postgres x3" "$r" "$total" "$worst" "$([ "$errs" = 0 ] || echo "  ERRORS: $errs")"
  done
  s=$(median ${R[sqlite]}) p1=$(median ${R[pg1]}) p3=$(median ${R[pg3]})
  echo "median $tool: sqlite x1 $s req/s, postgres x1 $p1 req/s ($(awk -v a="$p1" -v b="$s" 'BEGIN { printf "%.2f", a / b }')x), postgres x3 $p3 req/s aggregate ($(awk -v a="$p3" -v b="$p1" 'BEGIN { printf "%.2f", a / b }')x one postgres node)"
  unset R
done
