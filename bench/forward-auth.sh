#!/usr/bin/env bash
# Forward-auth through nginx: decisions/s and p99 of nginx with `auth_request` pointing at
# `arbiter serve`, side by side with the same nginx proxying without `auth_request`.
#
# usage: bench/forward-auth.sh   (knobs: DURATION=10s CONNS=16 THREADS=2 ROUNDS=3 LOG=sync|async|off)
#
# One nginx (Debian's nginx-light, installed if missing) serves three blocks: the upstream
# (`return 200`), a proxy with auth_request, and a proxy without. Rounds alternate between
# the two proxies so that both see the same machine state; the medians and their ratio are
# printed. Every request is an allowed `GET /tickets/{id}` with a registered agent's key, so
# each one is a full decision: authenticate, match the route, evaluate, record (durably with
# LOG=sync, the default).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10s} CONNS=${CONNS:-16} THREADS=${THREADS:-2} ROUNDS=${ROUNDS:-3} LOG=${LOG:-sync}
WORK=$(mktemp -d /tmp/arbiter-fa-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
need() {
  command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] && return 0
  echo "installing $2 (apt)"
  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null; $SUDO chmod +x /usr/sbin/policy-rc.d; RM_PRC=1; }
  { $SUDO apt-get install -y -q "$2" || { $SUDO apt-get update -q && $SUDO apt-get install -y -q "$2"; }; } >"$WORK/apt.log" 2>&1 \
    || { echo "apt-get install $2 failed: $(tail -3 "$WORK/apt.log")"; exit 1; }
  [ -n "${RM_PRC:-}" ] && $SUDO rm -f /usr/sbin/policy-rc.d
  return 0
}
need wrk wrk
need nginx nginx-light
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

(cd "$ROOT" && cargo build --release -q -p arbiter-cli)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/arbiter
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
APORT=$(port) UPORT=$(port) WITH=$(port) WITHOUT=$(port)

mkdir -p "$WORK/policies" "$WORK/tmp"
cat >"$WORK/policies/tickets.cedar" <<'CEDAR'
permit (principal is Agent, action == Action::"http_request", resource is Route)
when { resource.service == "tickets" && resource.method == "GET" };
forbid (principal, action == Action::"http_request", resource is Route) when { resource.method == "DELETE" };
CEDAR
printf '@service tickets proxy=nginx\ntickets GET /tickets/{id}\ntickets DELETE /tickets/{id}\n' >"$WORK/routes.txt"
"$BIN" agent register bench-bot --owner bench@example.com --data "$WORK/data" >/dev/null
KEY=$("$BIN" agent key issue bench-bot --data "$WORK/data" --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["key"])')

"$BIN" serve --policies "$WORK/policies" --data "$WORK/data" --routes "$WORK/routes.txt" \
  --listen "127.0.0.1:$APORT" --decision-log "$LOG" --log-level warn >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
SERVER_PID=$!

cat >"$WORK/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/tmp/body; proxy_temp_path $WORK/tmp/proxy;
  fastcgi_temp_path $WORK/tmp/fcgi; uwsgi_temp_path $WORK/tmp/uwsgi; scgi_temp_path $WORK/tmp/scgi;
  upstream arbiter { server 127.0.0.1:$APORT; keepalive 32; }
  upstream app { server 127.0.0.1:$UPORT; keepalive 32; }
  server { listen 127.0.0.1:$UPORT; location / { return 200 "ok"; } }
  server {
    listen 127.0.0.1:$WITH;
    location = /_arbiter {
      internal;
      proxy_pass http://arbiter/v1/forward-auth/tickets;
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-Method \$request_method;
      proxy_set_header X-Original-URI \$request_uri;
      proxy_set_header X-Original-Host \$host;
    }
    location / {
      auth_request /_arbiter;
      auth_request_set \$arbiter_decision \$upstream_http_x_arbiter_decision_id;
      proxy_set_header Authorization "";
      proxy_set_header X-Arbiter-Decision-Id \$arbiter_decision;
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_pass http://app;
    }
  }
  server {
    listen 127.0.0.1:$WITHOUT;
    location / {
      proxy_set_header Authorization "";
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_pass http://app;
    }
  }
}
NGINX
"$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;' 2>"$WORK/nginx.err" &
PIDS+=($!)
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$APORT/healthz" && curl -s -o /dev/null "http://127.0.0.1:$WITHOUT/" && break; sleep 0.1; done

check() { curl -s -o /dev/null -w '%{http_code}' -X "$1" -H "Authorization: Bearer $KEY" "http://127.0.0.1:$WITH/tickets/42"; }
[ "$(check GET)" = 200 ] && [ "$(check DELETE)" = 403 ] \
  && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$WITH/tickets/42")" = 401 ] \
  || { echo "forward-auth does not answer as expected: $(cat "$WORK/serve.log" "$WORK/nginx.err")"; exit 1; }
echo "decisions ok: GET allowed (200), DELETE denied (403), no key (401)"

run() { # port -> "rps p50 p99 errors"
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "Authorization: Bearer $KEY" "http://127.0.0.1:$1/tickets/42" >"$WORK/wrk.out"
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /m$/) return v * 60000; return v * 1000 }
    $1 == "Requests/sec:" { rps = $2 } $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
    /Non-2xx or 3xx/ { err += $NF } /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
    END { printf "%.0f %.3f %.3f %d\n", rps, p50, p99, err }' "$WORK/wrk.out"
}
wrk -t"$THREADS" -c"$CONNS" -d2s -H "Authorization: Bearer $KEY" "http://127.0.0.1:$WITH/tickets/42" >/dev/null
echo "wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS rounds each, alternating; decision log $LOG; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
A_RPS=() A_P99=() B_RPS=() B_P99=()
for r in $(seq 1 "$ROUNDS"); do
  read -r rps p50 p99 err < <(run "$WITH")
  printf 'round %d  with auth_request:    %8s req/s  p50 %7s ms  p99 %7s ms%s\n' "$r" "$rps" "$p50" "$p99" "$([ "$err" = 0 ] || echo "  ERRORS: $err")"
  A_RPS+=("$rps") A_P99+=("$p99")
  read -r rps p50 p99 err < <(run "$WITHOUT")
  printf 'round %d  without auth_request: %8s req/s  p50 %7s ms  p99 %7s ms%s\n' "$r" "$rps" "$p50" "$p99" "$([ "$err" = 0 ] || echo "  ERRORS: $err")"
  B_RPS+=("$rps") B_P99+=("$p99")
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
a=$(median "${A_RPS[@]}") b=$(median "${B_RPS[@]}")
echo "median with auth_request: rps=$a p99_ms=$(median "${A_P99[@]}")"
echo "median without:           rps=$b p99_ms=$(median "${B_P99[@]}")"
awk -v a="$a" -v b="$b" 'BEGIN { printf "ratio with/without: %.2f\n", a / b }'
echo "records in the decision log: $("$BIN" log verify --data "$WORK/data" 2>/dev/null | head -1)"
