#!/usr/bin/env bash
# pgbench -S (select-only) through `arbiter sql proxy` against the same database directly,
# side by side, same client counts.
#
# usage: bench/sql.sh     (knobs: PGURL=postgres://postgres@127.0.0.1:5432 SCALE=5 DURATION=8
#                          CLIENTS="1 8")
#
# Needs a PostgreSQL server reachable at PGURL whose user may create databases, and pgbench
# (Debian's postgresql-client). Builds the release binary (into $CARGO_TARGET_DIR, default
# ./target), creates the database arbiter_bench (dropped at the end), registers an agent whose
# policy allows `select` on it, starts the guard with an embedded decision point (durable
# decision log), and runs pgbench -S for each client count, guard then direct.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432} SCALE=${SCALE:-5} DURATION=${DURATION:-8}
CLIENTS=${CLIENTS:-"1 8"}
WORK=$(mktemp -d /tmp/arbiter-sql-bench.XXXXXX)
PROXY_PID=
cleanup() {
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null
  wait 2>/dev/null
  psql "$PGURL/postgres" -qc "drop database if exists arbiter_bench" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
command -v pgbench >/dev/null || { echo "pgbench is required (Debian: postgresql-client)"; exit 1; }

(cd "$ROOT" && cargo build --release -q -p arbiter-cli)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/arbiter

psql "$PGURL/postgres" -qc "drop database if exists arbiter_bench" -c "create database arbiter_bench" >/dev/null
pgbench -i -q -s "$SCALE" "$PGURL/arbiter_bench" >/dev/null 2>&1
mkdir -p "$WORK/policies"
cat >"$WORK/policies/bench.cedar" <<'CEDAR'
@id("bench-select")
permit (principal == Agent::"bench", action == Action::"select", resource is Table)
when { resource.database == "arbiter_bench" };
CEDAR
"$BIN" agent register bench --owner bench@example.com --data "$WORK/data" >/dev/null
KEY=$("$BIN" agent key issue bench --data "$WORK/data" --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
"$BIN" sql proxy --upstream "$PGURL/arbiter_bench" --listen "127.0.0.1:$PORT" \
  --policies "$WORK/policies" --data "$WORK/data" --log-level warn >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

tps() { grep -E '^tps' | sed -E 's/tps = ([0-9.]+).*/\1/'; }
printf '%-8s %14s %14s %8s\n' clients guard_tps direct_tps ratio
for c in $CLIENTS; do
  g=$(PGPASSWORD=$KEY pgbench -n -S -c "$c" -j 2 -T "$DURATION" -h 127.0.0.1 -p "$PORT" -U bench arbiter_bench 2>&1 | tps)
  d=$(pgbench -n -S -c "$c" -j 2 -T "$DURATION" "$PGURL/arbiter_bench" 2>/dev/null | tps)
  printf '%-8s %14.0f %14.0f %7.1f%%\n' "$c" "$g" "$d" "$(python3 -c "print(100*$g/$d)")"
done
