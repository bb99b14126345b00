#!/usr/bin/env bash
# wrk (64 connections, 2 threads) with the CLBKEY cookie of one of 10,000
# sessions per request, through clb, HAProxy 2.6 (balance hash
# req.cook(CLBKEY), hash-type consistent, nbthread 2) and nginx 1.22 (hash
# $cookie_CLBKEY consistent, upstream keepalive, 2 workers), against the same
# three Go back ends, side by side in one run. Prints req/s, p50, p99 and the
# balancer's CPU-seconds per 1,000 requests (utime + stime of all its
# processes, from /proc), the back ends' and the whole machine's (steal
# left out) per 1,000 requests, the machine's idle share, the balancer's
# peak resident memory (VmHWM, summed over its processes) and, per round,
# clb's ratios to HAProxy and nginx; at the end each ratio's median and
# range over the rounds.
#
#   bench/http-vs-haproxy-nginx.sh [SECONDS] [ROUNDS]
#   BASE=main bench/http-vs-haproxy-nginx.sh   # also clb as of git rev main
#   BASE=main PEERS=0 bench/http-vs-haproxy-nginx.sh 10 6   # clb and clb@main only
#   BASE=HEAD BASE_ENV=GOMAXPROCS=2 bench/http-vs-haproxy-nginx.sh   # clb@HEAD run with that environment
#
# With BASE, clb built from that revision is measured in the same rounds
# (clb@REV), so that a change is compared with what it changes side by side.
# "haproxy+h" is HAProxy doing clb's header work as well (bench/lib.sh
# haproxy_cfg): the same requests at the back ends, so the same work for
# them and the same CPU left for the rest of the machine; "haproxy" is it
# as a plain hash balancer, the cheaper one.
# "floor" is bench/floor/goroutine, the least a goroutine-per-connection Go
# proxy does per request: clb's distance to it is its own work, the floor's
# to HAProxy the I/O model's; "floorgnet" is the same on gnet v2's event
# loops (bench/floor/gnet; bench/floor is a module of its own, so that clb
# does not depend on gnet), the event-loop model's floor; "flooruring" the
# same on io_uring (bench/floor/uring: each loop's receives, sends,
# accepts and connects submitted and reaped in one io_uring_enter a pass),
# what a ring would spare of an epoll proxy's kernel time, measured where
# the kernel gives rings.
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
	[ -z "${BASE_ENV:-}" ] || echo "clb@$base runs with $BASE_ENV"
	mkdir "$tmp/base"
	git archive "$base" | tar -x -C "$tmp/base"
	(cd "$tmp/base" && go build -o "$tmp/clb-base" ./cmd/clb)
fi
(cd bench/floor && go build -o "$tmp/floor" ./goroutine)
(cd bench/floor && go build -o "$tmp/floorgnet" ./gnet) || echo "bench/floor/gnet did not build (gnet not reachable?): not measured"
if ! (cd bench/floor && go build -o "$tmp/flooruring" ./uring) || ! "$tmp/flooruring" -probe 2>/dev/null; then
	echo "bench/floor/uring: not built, or no io_uring here: not measured"
	rm -f "$tmp/flooruring"
fi
start_backends
lb=18080

# measure NAME PIDS...: one wrk run against the balancer on $lb; sets
# cpu_of[NAME], rps_of[NAME], p99_of[NAME] for the ratios.
declare -A cpu_of rps_of p99_of
measure() {
	local name=$1
	shift
	wrk -t2 -c64 -d2s -s "$root/bench/sessions.lua" "http://127.0.0.1:$lb/" >/dev/null # warm up
	local before after be_before be_after m_before m_after out
	before=$(ticks_all "$@")
	be_before=$(ticks_all "${backend_pids[@]}")
	read -ra m_before < <(machine_ticks)
	out=$(wrk -t2 -c64 -d"${seconds}s" --latency -s "$root/bench/sessions.lua" "http://127.0.0.1:$lb/")
	after=$(ticks_all "$@")
	be_after=$(ticks_all "${backend_pids[@]}")
	read -ra m_after < <(machine_ticks)
	wrk_stats "$out"
	rps_of[$name]=$rps
	p99_of[$name]=$p99
	cpu_of[$name]=$(per_1k "$((after - before))" "$reqs")
	# The back ends' CPU and the whole machine's: a balancer can be cheap
	# itself and dear to its neighbours (more reads a request at the back
	# ends); idle says whether the run was short of CPU at all.
	printf '%-12s %10s req/s  p50 %8s  p99 %8s  CPU-s/1k req %s  back ends %s  machine %s  idle %s%%  peak RSS %4s MB  %s\n' "$name" "${rps_of[$name]}" "$p50" "${p99_of[$name]}" \
		"${cpu_of[$name]}" "$(per_1k "$((be_after - be_before))" "$reqs")" "$(per_1k "$((m_after[0] - m_before[0]))" "$reqs")" \
		"$(((m_after[1] - m_before[1]) * 100 / (m_after[0] - m_before[0] + m_after[1] - m_before[1])))" \
		"$(($(peak_rss "$@") / 1024))" "$errors"
}

# ratio NAME PEER: NAME's CPU per request, req/s and p99 over PEER's; each
# is kept in ratios[NAME / PEER] for the summary.
declare -A ratios
ratio() {
	local c r l
	c=$(echo "scale=2; ${cpu_of[$1]} / ${cpu_of[$2]}" | bc)
	r=$(echo "scale=2; ${rps_of[$1]} / ${rps_of[$2]}" | bc)
	l=$(echo "scale=2; $(ms "${p99_of[$1]}") / $(ms "${p99_of[$2]}")" | bc)
	printf '%-12s / %-8s CPU %s  req/s %s  p99 %s\n' "$1" "$2" "$c" "$r" "$l"
	ratios["$1 / $2"]+="$c $r $l;"
}

# summary: per pair, each ratio's median over the rounds and its range (a
# shared machine swings a round by a third: read the median).
summary() {
	local k
	echo "summary ($rounds round(s), ${seconds} s each): ratio medians over rounds [min-max]"
	for k in "${!ratios[@]}"; do
		awk -v name="$k" -v all="${ratios[$k]}" '
			function stat(col,   n, i, a, j, t) {
				n = 0
				for (i = 1; i <= rows; i++) a[++n] = v[i, col] + 0
				for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
				return sprintf("%.2f [%.2f-%.2f]", (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2, a[1], a[n])
			}
			BEGIN {
				rows = split(all, r, ";") - 1
				for (i = 1; i <= rows; i++) { split(r[i], f, " "); for (c = 1; c <= 3; c++) v[i, c] = f[c] }
				printf "%-24s CPU %s  req/s %s  p99 %s\n", name, stat(1), stat(2), stat(3)
			}'
	done | sort
}
# ms: a wrk latency (850.00us, 4.90ms, 1.02s) in milliseconds
ms() { awk -v v="$1" 'BEGIN { u = v; sub(/[0-9.]+/, "", u); n = v + 0; if (u == "us") n /= 1000; else if (u == "s") n *= 1000; print n }'; }

# run_clb NAME BINARY [VAR=VALUE...]: one clb run, measured, with those
# variables in its environment.
run_clb() {
	env "${@:3}" "$2" run -config "$tmp/clb.yaml" 2>/dev/null &
	local p=$!
	pids+=("$p")
	wait_port "$lb" "$p"
	measure "$1" "$p"
	stop "$p"
}

{
	echo "listen:"
	echo "  http: 127.0.0.1:$lb"
	clb_instances
} >"$tmp/clb.yaml"
haproxy_cfg "bind 127.0.0.1:$lb" >"$tmp/haproxy.cfg"
haproxy_cfg "bind 127.0.0.1:$lb" headers >"$tmp/haproxy+h.cfg"
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
		# shellcheck disable=SC2086 # BASE_ENV is words VAR=VALUE
		run_clb "clb@$base" "$tmp/clb-base" ${BASE_ENV:-}
	fi

	if [ "${PEERS:-1}" = 0 ]; then
		ratio clb "clb@$base"
		continue
	fi
	for floor in floor floorgnet flooruring; do
		[ -x "$tmp/$floor" ] || continue
		"$tmp/$floor" -addr "127.0.0.1:$lb" -backends "127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}" 2>/dev/null &
		p=$!
		pids+=("$p")
		wait_port "$lb" "$p"
		measure "$floor" "$p"
		stop "$p"
	done

	for h in haproxy haproxy+h; do
		haproxy -f "$tmp/$h.cfg" -db 2>/dev/null &
		p=$!
		pids+=("$p")
		wait_port "$lb" "$p"
		measure "$h" "$p"
		stop "$p"
	done

	nginx -c "$tmp/nginx.conf" -g 'daemon off;' 2>/dev/null &
	p=$!
	pids+=("$p")
	wait_port "$lb" "$p"
	# shellcheck disable=SC2046
	measure nginx "$p" $(pgrep -P "$p")
	stop "$p"
	ratio clb haproxy
	ratio clb haproxy+h
	ratio clb nginx
	ratio floor haproxy
	ratio clb floor
	if [ -x "$tmp/floorgnet" ]; then
		ratio floorgnet haproxy
	fi
	if [ -x "$tmp/flooruring" ]; then
		ratio flooruring haproxy
		[ -x "$tmp/floorgnet" ] && ratio flooruring floorgnet
	fi
	if [ -n "$base" ]; then
		ratio "clb@$base" haproxy
		ratio clb "clb@$base"
	fi
done
summary
