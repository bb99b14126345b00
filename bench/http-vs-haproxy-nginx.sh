#!/usr/bin/env bash
# wrk (64 connections, 2 threads) with the CLBKEY cookie of one of 10,000
# sessions per request, through clb, HAProxy 2.6 (balance hash
# req.cook(CLBKEY), hash-type consistent, nbthread 2) and nginx 1.22 (hash
# $cookie_CLBKEY consistent, upstream keepalive, 2 workers), against the same
# three Go back ends, side by side in one run. Prints req/s, p99 and the
# balancer's CPU-seconds per 1,000 requests (utime + stime of all its
# processes, from /proc), its peak resident memory (VmHWM, summed over its
# processes) and, per round, clb's ratios to HAProxy and nginx.
#
#   bench/http-vs-haproxy-nginx.sh [SECONDS] [ROUNDS]
#   BASE=main bench/http-vs-haproxy-nginx.sh   # also clb as of git rev main
#
# With BASE, clb built from that revision is measured in the same rounds
# (clb@REV), so that a change is compared with what it changes side by side.
# "floor" is bench/floor/goroutine, the least a goroutine-per-connection Go
# proxy does per request: clb's distance to it is its own work, the floor's
# to HAProxy the I/O model's; "floorgnet" is the same on gnet v2's event
# loops (bench/floor/gnet; bench/floor is a module of its own, so that clb
# does not depend on gnet), the event-loop model's floor.
#
# A measurement, not a test: run it on a quiet machine. Installs wrk,
# haproxy and nginx with apt-get if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
rounds=${2:-2}
root=$(pwd)
# shellcheck source=bench/lib.sh
. bench/lib.sh
need wrk:wrk haproxy:haproxy nginx:nginx

go build -o "$tmp/clb" ./cmd/clb
base=${BASE:-}
if [ -n "$base" ]; then
	mkdir "$tmp/base"
	git archive "$base" | tar -x -C "$tmp/base"
	(cd "$tmp/base" && go build -o "$tmp/clb-base" ./cmd/clb)
fi
go build -o "$tmp/backend" ./bench/httpbackend
(cd bench/floor && go build -o "$tmp/floor" ./goroutine)
(cd bench/floor && go build -o "$tmp/floorgnet" ./gnet) || echo "bench/floor/gnet did not build (gnet not reachable?): not measured"
ports=(18081 18082 18083)
for i in 0 1 2; do
	"$tmp/backend" -addr "127.0.0.1:${ports[$i]}" -name "app$((i + 1))" &
	pids+=("$!")
done
lb=18080
hz=$(getconf CLK_TCK)
ticks_all() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
# peak resident memory in MB, summed over the processes
hwm_all() { local k=0; for p in "$@"; do k=$((k + $(awk '/^VmHWM/ {print $2}' "/proc/$p/status"))); done; echo $((k / 1024)); }

# wait_listen PID: until something accepts on $lb, 10 s at the most (gnet
# took over a second to listen on a loaded machine), or PID has ended.
wait_listen() {
	local _
	for _ in $(seq 100); do
		(echo >"/dev/tcp/127.0.0.1/$lb") 2>/dev/null && return 0
		kill -0 "$1" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# measure NAME PIDS...: one wrk run against the balancer on $lb; sets
# cpu[NAME], rps[NAME], p99[NAME] for the ratios.
declare -A cpu rps p99
measure() {
	local name=$1
	shift
	wrk -t2 -c64 -d2s -s "$root/bench/sessions.lua" "http://127.0.0.1:$lb/" >/dev/null # warm up
	local before after out
	before=$(ticks_all "$@")
	out=$(wrk -t2 -c64 -d"${seconds}s" --latency -s "$root/bench/sessions.lua" "http://127.0.0.1:$lb/")
	after=$(ticks_all "$@")
	local reqs errors
	reqs=$(echo "$out" | awk '/requests in/ {print $1}')
	rps[$name]=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
	p99[$name]=$(echo "$out" | awk '$1 == "99%" {print $2}')
	cpu[$name]=$(echo "scale=5; ($after - $before) / $hz / ($reqs / 1000)" | bc)
	errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
	printf '%-12s %10s req/s  p99 %8s  CPU-s/1k req %s  peak RSS %4s MB  %s\n' "$name" "${rps[$name]}" "${p99[$name]}" \
		"${cpu[$name]}" "$(hwm_all "$@")" "$errors"
}

# ratio NAME PEER: NAME's CPU per request, req/s and p99 over PEER's.
ratio() {
	printf '%-12s / %-8s CPU %s  req/s %s  p99 %s\n' "$1" "$2" \
		"$(echo "scale=2; ${cpu[$1]} / ${cpu[$2]}" | bc)" \
		"$(echo "scale=2; ${rps[$1]} / ${rps[$2]}" | bc)" \
		"$(echo "scale=2; $(ms "${p99[$1]}") / $(ms "${p99[$2]}")" | bc)"
}
# ms: a wrk latency (850.00us, 4.90ms, 1.02s) in milliseconds
ms() { awk -v v="$1" 'BEGIN { u = v; sub(/[0-9.]+/, "", u); n = v + 0; if (u == "us") n /= 1000; else if (u == "s") n *= 1000; print n }'; }

# run_clb NAME BINARY: one clb run, measured.
run_clb() {
	"$2" run -config "$tmp/clb.yaml" 2>/dev/null &
	local p=$!
	wait_listen "$p"
	measure "$1" "$p"
	kill "$p"
	wait "$p" 2>/dev/null || true
}

cat >"$tmp/clb.yaml" <<EOF2
listen:
  http: 127.0.0.1:$lb
instances:
  - {name: app1, http: http://127.0.0.1:${ports[0]}}
  - {name: app2, http: http://127.0.0.1:${ports[1]}}
  - {name: app3, http: http://127.0.0.1:${ports[2]}}
EOF2
cat >"$tmp/haproxy.cfg" <<EOF2
global
  nbthread 2
  maxconn 8000
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:$lb
  default_backend be
backend be
  balance hash req.cook(CLBKEY)
  hash-type consistent
  server app1 127.0.0.1:${ports[0]}
  server app2 127.0.0.1:${ports[1]}
  server app3 127.0.0.1:${ports[2]}
EOF2
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
	run_clb clb "$tmp/clb"
	if [ -n "$base" ]; then
		run_clb "clb@$base" "$tmp/clb-base"
	fi

	for floor in floor floorgnet; do
		[ -x "$tmp/$floor" ] || continue
		"$tmp/$floor" -addr "127.0.0.1:$lb" -backends "127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}" 2>/dev/null &
		p=$!
		wait_listen "$p"
		measure "$floor" "$p"
		kill "$p"
		wait "$p" 2>/dev/null || true
	done

	haproxy -f "$tmp/haproxy.cfg" -db 2>/dev/null &
	p=$!
	wait_listen "$p"
	measure haproxy "$p"
	kill "$p"
	wait "$p" 2>/dev/null || true

	nginx -c "$tmp/nginx.conf" -g 'daemon off;' 2>/dev/null &
	p=$!
	wait_listen "$p"
	# shellcheck disable=SC2046
	measure nginx "$p" $(pgrep -P "$p")
	kill "$p"
	wait "$p" 2>/dev/null || true
	ratio clb haproxy
	ratio clb nginx
	ratio floor haproxy
	ratio clb floor
	if [ -x "$tmp/floorgnet" ]; then
		ratio floorgnet haproxy
	fi
	if [ -n "$base" ]; then
		ratio "clb@$base" haproxy
		ratio clb "clb@$base"
	fi
done
