#!/usr/bin/env bash
# Soak: SIP calls (bench/soakcalls: INVITE, ACK, BYE over UDP, each from one
# of SOURCES distinct addresses on 127.0.0.0/8) at SIP_RATE calls/s to three
# SIPp UAS, and HTTP requests (wrk, 10,000 sessions, HTTP_CONNS connections,
# as fast as it goes) to three Go back ends, both through one clb for
# DURATION seconds. Every 10 s it prints clb's resident memory (VmRSS), its
# goroutines and Go heap (from /metrics), and the calls so far; at the end
# the calls and requests completed and failed, and the memory and goroutine
# growth after the first minute (the target: flat, and 0 failed). Each line
# also has what the Go runtime holds from the system (all it mapped, less
# the heap it gave back: at most the part of RSS that is Go's), the
# interval's HTTP requests a second (clb's counters) and the machine's
# steal time (CPU a VM's host gave to others), for reading a slow interval.
# RSS is split into its anonymous part (heap, stacks) and its file-backed
# part (the binary's pages, faulted in as code first runs), beside clb's
# OS threads: a rise in RSS shows in one of them.
#
#   DURATION=1800 SIP_RATE=2800 SOURCES=100000 HTTP_CONNS=16 HTTP_PIPELINE=1 bench/soak.sh
#
# HTTP_PIPELINE=N has wrk pipeline N requests a connection (bench/sessions.lua):
# clb still parses, routes and forwards each request on its own (its reads
# and writes to the client are batched), and wrk spends less CPU a request,
# which on a 2-core machine goes to the load under test.
# HTTP_BACKEND=nginx serves the three back ends from one nginx worker
# (a fixed answer) instead of three Go net/http servers, for the same reason.
#
# 30 minutes at 2,800 calls/s is the issue's 5 million calls; HTTP then gets
# what CPU is left. A measurement, not a test: run it under
# flock /tmp/clb-bench.lock on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-1800}
rate=${SIP_RATE:-2800}
sources=${SOURCES:-100000}
conns=${HTTP_CONNS:-16}
pipeline=${HTTP_PIPELINE:-1}
backend=${HTTP_BACKEND:-go}
root=$(pwd)
# shellcheck source=bench/lib.sh
. bench/lib.sh
need wrk:wrk sipp:sip-tester curl:curl
ulimit -n "$(ulimit -Hn)"

go build -o "$tmp/clb" ./cmd/clb
go build -o "$tmp/backend" ./bench/httpbackend
go build -o "$tmp/soakcalls" ./bench/soakcalls

http_ports=(22081 22082 22083)
if [ "$backend" = nginx ]; then
	need nginx:nginx
	{
		echo "worker_processes 1; pid $tmp/nginx.pid; error_log $tmp/nginx-error.log;"
		echo "events { worker_connections 1024; }"
		echo "http { access_log off; keepalive_requests 100000000; keepalive_timeout 60s;"
		for i in 0 1 2; do
			printf '  server { listen 127.0.0.1:%s; location / { default_type text/plain; return 200 "served by app%d\\n"; } }\n' "${http_ports[$i]}" "$((i + 1))"
		done
		echo "}"
	} >"$tmp/nginx.conf"
	nginx -c "$tmp/nginx.conf" -g 'daemon off;' &
	pids+=("$!")
else
	for i in 0 1 2; do
		"$tmp/backend" -addr "127.0.0.1:${http_ports[$i]}" -name "app$((i + 1))" &
		pids+=("$!")
	done
fi
# the back ends answer before clb sends them anything
for port in "${http_ports[@]}"; do
	for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done
uas_ports=(21071 21072 21073)
for i in 0 1 2; do
	mkdir -p "$tmp/uas$i"
	(cd "$tmp/uas$i" && exec sipp -sf "$root/testdata/sipp/uas.xml" -i 127.0.0.1 -p "${uas_ports[$i]}" \
		-nostdin -buff_size 2097152 -trace_stat -stf stats.csv -fd 10 -trace_err -error_file errors.log \
		>/dev/null 2>&1) &
	pids+=("$!")
done
cat >"$tmp/clb.yaml" <<EOF2
listen:
  sip: udp://127.0.0.1:21060
  http: 127.0.0.1:22080
  admin: 127.0.0.1:22099
instances:
  - {name: app1, http: http://127.0.0.1:${http_ports[0]}}
  - {name: app2, http: http://127.0.0.1:${http_ports[1]}}
  - {name: app3, http: http://127.0.0.1:${http_ports[2]}}
  - {name: uas1, sip: udp://127.0.0.1:${uas_ports[0]}}
  - {name: uas2, sip: udp://127.0.0.1:${uas_ports[1]}}
  - {name: uas3, sip: udp://127.0.0.1:${uas_ports[2]}}
# SIPp's UAS does not answer OPTIONS: passive checks only.
health: {active: false}
EOF2
"$tmp/clb" run -config "$tmp/clb.yaml" 2>"$tmp/clb.log" &
clb=$!
pids+=("$clb")
for _ in $(seq 50); do curl -sf "http://127.0.0.1:22099/metrics" >/dev/null && break; sleep 0.1; done

# metric NAME: its value in $scrape, clb's /metrics read once a sample
# (one failed read leaves the sample's columns at 0 rather than ending the soak)
scrape() { scrape=$(curl -sf --max-time 5 "http://127.0.0.1:22099/metrics") || scrape=; }
metric() { awk -v m="$1" '$1 == m {printf "%d", $2}' <<<"$scrape"; }
# HTTP requests clb has answered
http_reqs() { awk '/^clb_requests_total\{.*protocol="http"/ {n += $NF} END {printf "%d", n}' <<<"$scrape"; }
# clb's VmRSS, RssAnon and RssFile (kB) and its threads
proc_status() { awk '$1 == "VmRSS:" {r = $2} $1 == "RssAnon:" {a = $2} $1 == "RssFile:" {f = $2} $1 == "Threads:" {n = $2} END {print r, a, f, n}' "/proc/$clb/status"; }
# the machine's steal and total CPU ticks (user..steal: guest time is
# inside user already)
cpu_ticks() { awk '$1 == "cpu" {t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t}' /proc/stat; }

"$tmp/soakcalls" -lb 127.0.0.1:21060 -rate "$rate" -sources "$sources" -d "${duration}s" \
	>"$tmp/calls.out" 2>"$tmp/calls.err" &
calls=$!
pids+=("$calls")
if [ "$conns" -gt 0 ]; then # HTTP_CONNS=0: SIP alone
	wrk -t1 -c"$conns" -d"${duration}s" -s "$root/bench/sessions.lua" "http://127.0.0.1:22080/" -- "$pipeline" >"$tmp/wrk.out" 2>&1 &
else
	: >"$tmp/wrk.out"
	sleep 0 &
fi
wrkp=$!
pids+=("$wrkp")

echo "soak: $duration s, SIP $rate calls/s from $sources sources, HTTP wrk -c$conns, $pipeline a connection at once, $backend back ends"
printf '%6s %8s %7s %7s %7s %10s %11s %7s %9s %6s %s\n' "t(s)" "RSS MB" anon file threads goroutines "heap MB" "Go MB" "HTTP/s" steal% "calls (ok/failed so far)"
start=$(date +%s)
last_t=0 last_reqs=0
read -r last_steal last_total < <(cpu_ticks)
: >"$tmp/samples"
while kill -0 "$calls" 2>/dev/null || kill -0 "$wrkp" 2>/dev/null; do
	sleep 10
	t=$(($(date +%s) - start))
	read -r rss anon file threads < <(proc_status)
	scrape
	g=$(metric go_goroutines)
	heap=$(metric go_memstats_heap_inuse_bytes)
	sys=$(metric go_memstats_sys_bytes) released=$(metric go_memstats_heap_released_bytes)
	gomem=$((${sys:-0} - ${released:-0}))
	progress=$(tail -1 "$tmp/calls.err" 2>/dev/null | sed -n 's/^progress //p')
	reqs=$(http_reqs)
	read -r steal total < <(cpu_ticks)
	echo "$t $rss ${g:-0} $anon $file $threads" >>"$tmp/samples"
	printf '%6d %8.1f %7.1f %7.1f %7s %10s %11.1f %7.1f %9d %6.1f %s\n' "$t" "$(echo "$rss / 1024" | bc -l)" "$(echo "${anon:-0} / 1024" | bc -l)" "$(echo "${file:-0} / 1024" | bc -l)" "$threads" "$g" "$(echo "${heap:-0} / 1048576" | bc -l)" "$(echo "$gomem / 1048576" | bc -l)" \
		"$(((${reqs:-0} - last_reqs) / (t > last_t ? t - last_t : 1)))" "$(echo "100 * ($steal - $last_steal) / ($total - $last_total + 1)" | bc -l)" "$progress"
	last_t=$t last_reqs=${reqs:-0} last_steal=$steal last_total=$total
done
wait "$calls" "$wrkp" || true

echo "SIP:  $(cat "$tmp/calls.out")"
grep -v '^progress' "$tmp/calls.err" | head -3 || true
# SIPp's error log: an event is a line stamped "date<TAB>time<TAB>epoch:",
# followed by the message it was about (many lines)
events=$({ cat "$tmp"/uas?/errors.log 2>/dev/null || true; } | awk -F'\t' -v s="$start" '/^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]\t/ {n++; t = t sprintf(" %d", $3 - s)} END {printf "%d", n; if (n) printf " (at%s s)", t}')
echo "SIPp UAS: $events unexpected messages or errors"
for i in 0 1 2; do [ -s "$tmp/uas$i/errors.log" ] && grep -v '^$' "$tmp/uas$i/errors.log" | head -4 && break; done
reqs=$(awk '/requests in/ {print $1}' "$tmp/wrk.out")
echo "HTTP: $reqs requests, $(awk '/Requests\/sec/ {print $2}' "$tmp/wrk.out") req/s; $(grep -E 'Non-2xx|Socket errors' "$tmp/wrk.out" | tr '\n' ' ' || true)"
# from the first sample at 60 s or later
awk '!bt && $1 >= 60 {base = $2; gbase = $3; abase = $4; fbase = $5; tbase = $6; bt = $1; next}
	bt {if ($2 > max) max = $2; if ($3 > gmax) gmax = $3; if ($6 > tmax) tmax = $6; last = $2; glast = $3; alast = $4; flast = $5; tlast = $6}
	END {if (max) {printf "after the first minute: RSS %.1f MB at %d s, max %.1f MB, last %.1f MB (growth %+.1f MB: anonymous %+.1f, file %+.1f); goroutines %d at %d s, max %d, last %d\n",
		base / 1024, bt, max / 1024, last / 1024, (last - base) / 1024, (alast - abase) / 1024, (flast - fbase) / 1024, gbase, bt, gmax, glast
		printf "threads %d at %d s, max %d, last %d\n", tbase, bt, tmax, tlast}}' "$tmp/samples"
