#!/usr/bin/env bash
# clb's listen.https against HAProxy 2.6 (bind ... ssl crt, alpn
# h2,http/1.1, nbthread 2, balance hash req.cook(CLBKEY), hash-type
# consistent) with the same ECDSA P-256 certificate, made here with openssl,
# in front of the three Go back ends of bench/http-vs-haproxy-nginx.sh, side
# by side in one run. Three loads, each against a fresh balancer process:
#
#   h1  wrk -t2 -c64 over https, keep-alive, the CLBKEY cookie of one of
#       10,000 sessions per request (bench/sessions.lua)
#   h2  h2load -t2 -c64 -m$H2STREAMS (default 1 stream in flight per
#       connection, the concurrency of h1), keep-alive; h2load sends one
#       fixed header set, so every request has the cookie CLBKEY=session1
#   hs  wrk as h1 with Connection: close: one full TLS handshake per request
#       (wrk does not resume sessions), the request proxied on it
#
# For each: requests (or handshakes) per second, p99 (h2load gives no
# percentiles: its mean is shown instead, marked "mean"), the balancer's
# CPU-seconds per 1,000 requests (utime + stime from /proc before and after),
# for hs also handshakes per CPU-second of the balancer (per core), and the
# peak resident memory of the process (VmHWM). The two balancers alternate
# within each load and their order swaps every round. A summary of the
# means over the rounds and the ratios clb/HAProxy ends the output.
#
#   bench/https-vs-haproxy.sh [SECONDS] [ROUNDS]
#   PROFILE=1 bench/https-vs-haproxy.sh   # also clb -cpuprofile, top functions
#   HAPROXY_HEADERS=1 bench/https-vs-haproxy.sh   # HAProxy does clb's header
#       work too (bench/lib.sh haproxy_cfg): the same requests at the back ends
#
# A measurement, not a test (CI does not run it): run it on a quiet machine,
# under flock /tmp/clb-bench.lock. Installs wrk, haproxy and h2load
# (nghttp2-client) with apt-get if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
rounds=${2:-2}
streams=${H2STREAMS:-1}
root=$(pwd)
# shellcheck source=bench/lib.sh
. bench/lib.sh
need wrk:wrk haproxy:haproxy h2load:nghttp2-client openssl:openssl bc:bc

go build -o "$tmp/clb" ./cmd/clb
start_backends
lb=18443
url=https://127.0.0.1:$lb/

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=clb-bench \
	-addext subjectAltName=IP:127.0.0.1 -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
cat "$tmp/cert.pem" "$tmp/key.pem" >"$tmp/haproxy.pem"

{
	echo "listen:"
	echo "  https: 127.0.0.1:$lb"
	echo "tls: {cert: $tmp/cert.pem, key: $tmp/key.pem}"
	clb_instances
} >"$tmp/clb.yaml"
# shellcheck disable=SC2046 # "headers" or no word
haproxy_cfg "bind 127.0.0.1:$lb ssl crt $tmp/haproxy.pem alpn h2,http/1.1" $([ -z "${HAPROXY_HEADERS:-}" ] || echo headers) >"$tmp/haproxy.cfg"

# start LB TEST: start a fresh balancer; sets p.
start() {
	case $1 in
	clb)
		local prof=()
		[ -z "${PROFILE:-}" ] || prof=(-cpuprofile "$tmp/clb-$2.prof")
		"$tmp/clb" run -config "$tmp/clb.yaml" "${prof[@]}" 2>"$tmp/clb.log" &
		;;
	haproxy) haproxy -f "$tmp/haproxy.cfg" -db 2>"$tmp/haproxy.log" & ;;
	esac
	p=$!
	pids+=("$p")
	wait_port "$lb" "$p"
}

# load TEST SECONDS: the client of TEST for SECONDS; prints its output.
load() {
	case $1 in
	h1) wrk -t2 -c64 -d"$2s" --latency -s "$root/bench/sessions.lua" "$url" ;;
	hs) wrk -t2 -c64 -d"$2s" --latency -H 'Connection: close' -s "$root/bench/sessions.lua" "$url" ;;
	h2) h2load -t2 -c64 -m"$streams" -D"$2" -H 'Cookie: CLBKEY=session1' "$url" ;;
	esac
}

# measure LB TEST ROUND: one row of $tmp/rows:
# round lb test rate latency cpu-s/1k per-core peak-kB errors
measure() {
	local lb_name=$1 test=$2 round=$3 before after out ticks rss percore=-
	start "$lb_name" "$test"
	load "$test" 2 >/dev/null # warm up
	before=$(ticks_all "$p")
	out=$(load "$test" "$seconds")
	after=$(ticks_all "$p")
	rss=$(peak_rss "$p")
	stop "$p"
	ticks=$((after - before))
	if [ "$test" = h2 ]; then
		reqs=$(echo "$out" | awk '/^requests:/ {print $8}')
		rps=$(echo "$out" | awk '/^finished in/ {print $4}')
		p99="$(echo "$out" | awk '/^time for request:/ {print $6}')(mean)"
		errors=$(echo "$out" | awk '/^requests:/ {if ($10 + $12 + $14) printf "failed %d errored %d timeout %d ", $10, $12, $14}
			/^status codes:/ {if ($5 + $7 + $9) printf "3xx %d 4xx %d 5xx %d", $5, $7, $9}')
	else
		wrk_stats "$out"
	fi
	cpu=$(per_1k "$ticks" "$reqs")
	[ "$test" != hs ] || percore=$(echo "scale=0; $reqs * $hz / $ticks" | bc)
	printf '%s %s %s %s %s %s %s %s %s\n' "$round" "$lb_name" "$test" "$rps" "$p99" "$cpu" \
		"$percore" "$rss" "${errors:-}" >>"$tmp/rows"
	printf '  %-3s %-8s %10s/s  p99 %-14s CPU-s/1k %-8s per core %-6s/s  peak RSS %6s MB  %s\n' \
		"$test" "$lb_name" "$rps" "$p99" "$cpu" "$percore" "$((rss / 1024))" "${errors:-}"
	if [ -n "${PROFILE:-}" ] && [ "$lb_name" = clb ]; then
		go tool pprof -top -nodecount=25 "$tmp/clb" "$tmp/clb-$test.prof" 2>&1 | sed 's/^/    /' || true
	fi
}

# What each balancer negotiates with an OpenSSL 3 client (wrk and h2load
# link the same libssl).
for lb_name in clb haproxy; do
	start "$lb_name" tls
	printf '%-8s ' "$lb_name"
	openssl s_client -connect "127.0.0.1:$lb" -alpn h2,http/1.1 </dev/null 2>/dev/null |
		awk '/^New,/ {printf "%s %s ", $2, $5} /Server Temp Key/ {printf "kx %s ", $4} /Peer signature type/ {printf "sig %s ", $4} /^ALPN protocol/ {printf "alpn %s", $3}'
	echo
	stop "$p"
done
echo "load: $(uptime)"

: >"$tmp/rows"
order=(clb haproxy)
for round in $(seq "$rounds"); do
	echo "round $round"
	for test in h1 h2 hs; do
		for lb_name in "${order[@]}"; do measure "$lb_name" "$test" "$round"; done
	done
	order=("${order[1]}" "${order[0]}")
done
echo "load: $(uptime)"

echo
echo "means over $rounds rounds of ${seconds}s (ratio = clb / HAProxy)"
awk '
	{ k = $3 SUBSEP $2; n[k]++; rate[k] += $4; cpu[k] += $6; rss[k] += $8
	  if ($7 != "-") core[k] += $7
	  l = $5; sub(/\(mean\)/, "", l)
	  if (l ~ /us$/) v = l / 1000; else if (l ~ /ms$/) v = l + 0; else if (l ~ /s$/) v = l * 1000; else v = l
	  lat[k] += v; mean[k] = ($5 ~ /mean/) }
	END {
		printf "%-4s %-8s %10s %12s %10s %12s %9s\n", "load", "lb", "per s", "p99 ms", "CPU-s/1k", "per core/s", "peak MB"
		split("h1 h2 hs", tests, " ")
		for (t = 1; t <= 3; t++) {
			c = tests[t] SUBSEP "clb"; h = tests[t] SUBSEP "haproxy"
			if (!n[c] || !n[h]) continue
			for (i = 0; i < 2; i++) {
				k = i ? h : c
				printf "%-4s %-8s %10.0f %12s %10.5f %12s %9.1f\n", tests[t], i ? "haproxy" : "clb",
					rate[k] / n[k], sprintf("%.2f%s", lat[k] / n[k], mean[k] ? " mean" : ""),
					cpu[k] / n[k], tests[t] == "hs" ? sprintf("%.0f", core[k] / n[k]) : "-", rss[k] / n[k] / 1024
			}
			printf "%-4s %-8s %10.2f %12.2f %10.2f %12s %9.2f\n", tests[t], "ratio",
				rate[c] / rate[h], lat[c] / lat[h], cpu[c] / cpu[h],
				tests[t] == "hs" ? sprintf("%.2f", core[c] / core[h]) : "-", rss[c] / rss[h]
		}
	}' "$tmp/rows"
