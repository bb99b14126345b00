#!/usr/bin/env bash
# wrk (64 connections, 2 threads) with the CLBKEY cookie of one of 10,000
# sessions per request, through clb, HAProxy 2.6 (balance hash
# req.cook(CLBKEY), hash-type consistent, nbthread 2) and nginx 1.22 (hash
# $cookie_CLBKEY consistent, upstream keepalive, 2 workers), against the same
# three Go back ends, side by side in one run. Prints req/s, p99 and the
# balancer's CPU-seconds per 1,000 requests (utime + stime of all its
# processes, from /proc).
#
#   bench/http-vs-haproxy-nginx.sh [SECONDS] [ROUNDS]
#
# A measurement, not a test: run it on a quiet machine. Installs wrk,
# haproxy and nginx with apt-get if missing. bench/https-vs-haproxy.sh is
# the same over TLS.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
rounds=${2:-2}
root=$(pwd)
# shellcheck source=bench/lib.sh
. bench/lib.sh
need wrk:wrk haproxy:haproxy nginx:nginx

go build -o "$tmp/clb" ./cmd/clb
start_backends
lb=18080

# measure NAME PIDS...: one wrk run against the balancer on $lb.
measure() {
	local name=$1
	shift
	wrk -t2 -c64 -d2s -s "$root/bench/sessions.lua" "http://127.0.0.1:$lb/" >/dev/null # warm up
	local before after out
	before=$(ticks_all "$@")
	out=$(wrk -t2 -c64 -d"${seconds}s" --latency -s "$root/bench/sessions.lua" "http://127.0.0.1:$lb/")
	after=$(ticks_all "$@")
	wrk_stats "$out"
	printf '%-8s %10s req/s  p99 %8s  CPU-s/1k req %s  %s\n' "$name" "$rps" "$p99" \
		"$(per_1k "$((after - before))" "$reqs")" "$errors"
}

{
	echo "listen:"
	echo "  http: 127.0.0.1:$lb"
	clb_instances
} >"$tmp/clb.yaml"
haproxy_cfg "bind 127.0.0.1:$lb" >"$tmp/haproxy.cfg"
cat >"$tmp/nginx.conf" <<EOF2
worker_processes 2;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream be {
    hash \$cookie_CLBKEY consistent;
    server 127.0.0.1:${ports[0]};
    server 127.0.0.1:${ports[1]};
    server 127.0.0.1:${ports[2]};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$lb;
    location / {
      proxy_pass http://be;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF2

for round in $(seq "$rounds"); do
	echo "round $round"
	"$tmp/clb" run -config "$tmp/clb.yaml" 2>/dev/null &
	p=$!
	pids+=("$p")
	wait_port "$lb" "$p"
	measure clb "$p"
	stop "$p"

	haproxy -f "$tmp/haproxy.cfg" -db 2>/dev/null &
	p=$!
	pids+=("$p")
	wait_port "$lb" "$p"
	measure haproxy "$p"
	stop "$p"

	nginx -c "$tmp/nginx.conf" -g 'daemon off;' 2>/dev/null &
	p=$!
	pids+=("$p")
	wait_port "$lb" "$p"
	sleep 0.5 # the workers
	# shellcheck disable=SC2046
	measure nginx "$p" $(pgrep -P "$p")
	stop "$p"
done
