# shellcheck shell=bash
# Shared by the bench scripts: source it after `set -euo pipefail`.
#
#   need CMD:PACKAGE ...   apt-get install the packages whose command is missing
#   $tmp                   a scratch folder, removed on exit
#   pids+=("$!")           processes to end on exit (only ones the script started)
#
# For the HTTP balancer comparisons (bench/http-vs-haproxy-nginx.sh,
# bench/https-vs-haproxy.sh):
#
#   start_backends         build bench/httpbackend, start three on ${ports[@]}
#                          (their PIDs in ${backend_pids[@]})
#   clb_instances          the instances: section of clb.yaml for them
#   haproxy_cfg BIND [headers]  haproxy.cfg: BIND is the frontend's bind
#                          line; "headers": with clb's header work too
#   wait_port PORT PID     until 127.0.0.1:PORT accepts (PID must stay alive)
#   stop PID               end one process this script started
#   ticks_all PID...       utime + stime of the processes, in clock ticks
#   peak_rss PID...        the sum of their VmHWM, kB
#   per_1k TICKS N         CPU-seconds per 1,000 of N
#   machine_ticks          busy and idle clock ticks of the whole machine
#                          (/proc/stat: busy without steal, idle with iowait)
#
# For the memory benches (bench/idle-memory.sh, bench/wss-idle.sh):
#
#   kb FIELD PID...        a /proc/PID/status field (VmRSS, VmHWM) summed, kB
#   pss PID...             proportional set size summed, kB (a forking
#                          server's shared memory counted once)
#   mb KB                  KB in MB, one decimal
#
# For the Kamailio comparisons:
#
#   kamailio_modules LIST  kamailio.cfg's module path and the modules of a
#                          dispatcher front end (tm, sl, rr, maxfwd, textops,
#                          pv, siputils, dispatcher on the list file LIST,
#                          its OPTIONS pings off)
#   wrk_stats OUTPUT       sets reqs, rps, p50, p99, errors from wrk --latency output

need() {
	local pkg
	for pkg in "$@"; do
		command -v "${pkg%%:*}" >/dev/null ||
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkg##*:}" >/dev/null
	done
}

tmp=$(mktemp -d)
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

ports=(18081 18082 18083)
hz=$(getconf CLK_TCK)

start_backends() {
	local i b=()
	go build -o "$tmp/backend" ./bench/httpbackend
	for i in 0 1 2; do
		"$tmp/backend" -addr "127.0.0.1:${ports[$i]}" -name "app$((i + 1))" &
		pids+=("$!")
		b+=("$!")
	done
	for i in 0 1 2; do wait_port "${ports[$i]}" "${b[$i]}"; done
	# shellcheck disable=SC2034 # read by the scripts that source this
	backend_pids=("${b[@]}")
}

clb_instances() {
	cat <<EOF
instances:
  - {name: app1, http: http://127.0.0.1:${ports[0]}}
  - {name: app2, http: http://127.0.0.1:${ports[1]}}
  - {name: app3, http: http://127.0.0.1:${ports[2]}}
EOF
}

# HAProxy 2.6, balance hash req.cook(CLBKEY), hash-type consistent, 2
# threads, server connections reused. With a second argument "headers" it
# also does the header work clb does on every request (SPEC sections 4 and
# 7): removes the client's X-CLB-* fields; adds X-Forwarded-For, -Proto and
# -Host, a Via, X-CLB-Key, -Cluster, -Instance and a replica's name of the
# same length as clb's; and answers with a CLBROUTE cookie. The back ends
# parse every one of those fields: without them HAProxy's requests are
# cheaper for the back ends than clb's, and on a shared machine that is CPU
# the balancer's own figures do not show.
haproxy_cfg() {
	local fe="" be=""
	if [ "${2:-}" = headers ]; then
		fe='
  option forwardfor
  http-request del-header ^X-CLB- -m reg
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request add-header Via "1.1 clb-0123456789abcdef"
  http-request set-header X-CLB-Key %[req.cook(CLBKEY)]
  http-request set-header X-CLB-Cluster default'
		be='
  http-send-name-header X-CLB-Instance
  http-request set-header X-CLB-Replica app2
  http-response add-header Set-Cookie "CLBROUTE=%[srv_name]; Path=/; HttpOnly; SameSite=Lax"'
	fi
	cat <<EOF
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
  $1$fe
  default_backend be
backend be
  balance hash req.cook(CLBKEY)
  hash-type consistent$be
  server app1 127.0.0.1:${ports[0]}
  server app2 127.0.0.1:${ports[1]}
  server app3 127.0.0.1:${ports[2]}
EOF
}

wait_port() {
	local i
	for i in $(seq 100); do
		kill -0 "$2" 2>/dev/null || { echo "process $2 ended before it listened on $1" >&2; return 1; }
		(: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "nothing listens on $1 after 10 s" >&2
	return 1
}

stop() {
	local q rest=()
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	for q in "${pids[@]}"; do [ "$q" = "$1" ] || rest+=("$q"); done
	pids=("${rest[@]}")
}

ticks_all() {
	local t=0 p
	for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
	echo "$t"
}

machine_ticks() {
	awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8, $5 + $6 }' /proc/stat
}

peak_rss() {
	local kb=0 p
	for p in "$@"; do kb=$((kb + $(awk '/^VmHWM/ {print $2}' "/proc/$p/status"))); done
	echo "$kb"
}

kb() {
	local f=$1 t=0 p
	shift
	for p in "$@"; do t=$((t + $(awk -v f="$f:" '$1 == f {print $2}' "/proc/$p/status"))); done
	echo "$t"
}

pss() {
	local t=0 p
	for p in "$@"; do t=$((t + $(awk '$1 == "Pss:" {print $2}' "/proc/$p/smaps_rollup"))); done
	echo "$t"
}

mb() { echo "scale=1; $1 / 1024" | bc; }

kamailio_modules() {
	cat <<EOF
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "pv.so"
loadmodule "siputils.so"
loadmodule "dispatcher.so"
modparam("dispatcher", "list_file", "$1")
modparam("dispatcher", "ds_ping_interval", 0)
EOF
}

per_1k() {
	echo "scale=5; $1 / $hz / ($2 / 1000)" | bc
}

# shellcheck disable=SC2034 # the variables are its output
wrk_stats() {
	reqs=$(echo "$1" | awk '/requests in/ {print $1}')
	rps=$(echo "$1" | awk '/Requests\/sec/ {print $2}')
	p50=$(echo "$1" | awk '$1 == "50%" {print $2}')
	p99=$(echo "$1" | awk '$1 == "99%" {print $2}')
	errors=$(echo "$1" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
}
