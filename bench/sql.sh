#!/usr/bin/env bash
# pgbench -S (select-only) through `arbiter sql proxy` against the same database directly,
# side by side, same client counts.
#
# usage: bench/sql.sh     (knobs: PGURL=postgres://postgres@127.0.0.1:5432 SCALE=5 DURATION=8
#                          CLIENTS="1 8")
#
# Needs a PostgreSQL server reachable at PGURL whose user may create databases, and pgbench
# (Debian's postgresql-client). Builds the release binary (into $CARGO_TARGET_DIR, default
# ./target), creates the database arbiter_bench (dropped at the end), registers agents whose
# policies allow `select` on it (one of them only on the rows of its branch), starts the guard
# with an embedded decision point three times (durable decision log, the default: a plain read
# is sent at once and its rows held back until its record is durable; the same with
# `--strict-order`: sent only once its record is durable; `--decision-log async`), starts
# pgbouncer (Debian's, installed if missing) in transaction mode in front of the same database,
# and runs pgbench -S for each client count: guard, guard with a row filter, strict-order guard,
# guard with the async log, pgbouncer, then direct — so the guard is compared with a relay-only pooler in the
# same run.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432} SCALE=${SCALE:-5} DURATION=${DURATION:-8}
CLIENTS=${CLIENTS:-"1 8"}
WORK=$(mktemp -d /tmp/arbiter-sql-bench.XXXXXX)
PROXY_PID=
cleanup() {
  [ -n "$PROXY_PID" ] && kill $PROXY_PID 2>/dev/null
  [ -f "$WORK/pgbouncer.pid" ] && kill "$(cat "$WORK/pgbouncer.pid")" 2>/dev/null
  wait 2>/dev/null
  psql "$PGURL/postgres" -qc "drop database if exists arbiter_bench" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
command -v pgbench >/dev/null || { echo "pgbench is required (Debian: postgresql-client)"; exit 1; }
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
if [ ! -x "$PGBOUNCER" ]; then
  echo "installing pgbouncer (apt)"
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  { DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q pgbouncer \
      || { $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q pgbouncer; }; } \
    >"$WORK/apt.log" 2>&1 || { echo "apt-get install pgbouncer failed: $(tail -3 "$WORK/apt.log")"; exit 1; }
fi

(cd "$ROOT" && cargo build --release -q -p arbiter-cli)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/arbiter

psql "$PGURL/postgres" -qc "drop database if exists arbiter_bench" -c "create database arbiter_bench" >/dev/null
pgbench -i -q -s "$SCALE" "$PGURL/arbiter_bench" >/dev/null 2>&1
mkdir -p "$WORK/policies"
cat >"$WORK/policies/bench.cedar" <<'CEDAR'
@id("bench-select")
permit (principal == Agent::"bench", action == Action::"select", resource is Table)
when { resource.database == "arbiter_bench" };
// bench-rows reads pgbench_accounts through a row filter derived from this policy.
@id("bench-rows")
permit (principal == Agent::"bench-rows", action == Action::"select",
        resource is Row in Table::"arbiter_bench.public.pgbench_accounts")
when { resource.bid == principal.branch };
@id("bench-rows-tables")
permit (principal == Agent::"bench-rows", action == Action::"select", resource is Table)
when { resource.database == "arbiter_bench" && resource.name != "pgbench_accounts" };
CEDAR
key() {  # key DATA AGENT ATTRIBUTES
  "$BIN" agent register "$2" --owner bench@example.com --attributes "$3" --data "$1" >/dev/null
  "$BIN" agent key issue "$2" --data "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'
}
KEY=$(key "$WORK/data" bench '{}')
ROWS_KEY=$(key "$WORK/data" bench-rows '{"branch": 1}')
ASYNC_KEY=$(key "$WORK/data-async" bench '{}')
STRICT_KEY=$(key "$WORK/data-strict" bench '{}')
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
start_proxy() {  # start_proxy PORT DATA LOG_MODE [FLAGS]
  "$BIN" sql proxy --upstream "$PGURL/arbiter_bench" --listen "127.0.0.1:$1" \
    --policies "$WORK/policies" --data "$2" --decision-log "$3" ${4:-} --log-level warn >>"$WORK/proxy.log" 2>&1 &
  PROXY_PID="$PROXY_PID $!"
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && break; sleep 0.1; done
}
PORT=$(free_port); start_proxy "$PORT" "$WORK/data" sync
ASYNC_PORT=$(free_port); start_proxy "$ASYNC_PORT" "$WORK/data-async" async
STRICT_PORT=$(free_port); start_proxy "$STRICT_PORT" "$WORK/data-strict" sync --strict-order
# pgbouncer in transaction mode in front of the same database (it refuses to run as root:
# `-u nobody` then, with its files readable).
PB_PORT=$(free_port)
PGHOSTPORT=${PGURL#*@}
cat >"$WORK/pgbouncer.ini" <<INI
[databases]
arbiter_bench = host=${PGHOSTPORT%:*} port=${PGHOSTPORT##*:} dbname=arbiter_bench user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $WORK/userlist.txt
pool_mode = transaction
max_client_conn = 200
default_pool_size = 20
logfile = $WORK/pgbouncer.log
pidfile = $WORK/pgbouncer.pid
INI
echo '"postgres" ""' >"$WORK/userlist.txt"
chmod 755 "$WORK"; chmod 644 "$WORK/pgbouncer.ini" "$WORK/userlist.txt"
as_user=(); [ "$(id -u)" = 0 ] && { touch "$WORK/pgbouncer.log"; chown nobody "$WORK/pgbouncer.log"; chmod 777 "$WORK"; as_user=(-u nobody); }
"$PGBOUNCER" -d "${as_user[@]}" "$WORK/pgbouncer.ini" >"$WORK/pgbouncer.out" 2>&1 \
  || { echo "pgbouncer did not start: $(cat "$WORK/pgbouncer.out" "$WORK/pgbouncer.log" 2>/dev/null | tail -5)"; exit 1; }
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PB_PORT") 2>/dev/null && break; sleep 0.1; done

tps() { grep -E '^tps' | sed -E 's/tps = ([0-9.]+).*/\1/'; }
through() {  # through PORT AGENT KEY CLIENTS
  PGPASSWORD=$3 pgbench -n -S -c "$4" -j 2 -T "$DURATION" -h 127.0.0.1 -p "$1" -U "$2" arbiter_bench 2>&1 | tps
}
pct() { python3 -c "print(f'{100*$1/$2:.1f}%')"; }
# guard: durable decision log (the default); rows: the same, every statement narrowed by a row
# filter; strict: every statement sent only once its record is durable (`--strict-order`);
# async: decision log written behind (`--decision-log async`); pgbouncer: a relay-only pooler
# in transaction mode; direct: no proxy.
printf '%-8s %11s %11s %11s %11s %11s %11s %8s %8s %8s %8s %8s\n' clients guard rows strict async pgbouncer direct guard% rows% strict% async% pgb%
for c in $CLIENTS; do
  g=$(through "$PORT" bench "$KEY" "$c")
  r=$(through "$PORT" bench-rows "$ROWS_KEY" "$c")
  t=$(through "$STRICT_PORT" bench "$STRICT_KEY" "$c")
  a=$(through "$ASYNC_PORT" bench "$ASYNC_KEY" "$c")
  b=$(pgbench -n -S -c "$c" -j 2 -T "$DURATION" -h 127.0.0.1 -p "$PB_PORT" -U postgres arbiter_bench 2>&1 | tps)
  d=$(pgbench -n -S -c "$c" -j 2 -T "$DURATION" "$PGURL/arbiter_bench" 2>/dev/null | tps)
  printf '%-8s %11.0f %11.0f %11.0f %11.0f %11.0f %11.0f %8s %8s %8s %8s %8s\n' "$c" "$g" "$r" "$t" "$a" "$b" "$d" \
    "$(pct "$g" "$d")" "$(pct "$r" "$d")" "$(pct "$t" "$d")" "$(pct "$a" "$d")" "$(pct "$b" "$d")"
done
