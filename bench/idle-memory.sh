#!/usr/bin/env bash
# Memory held by idle connections: N keep-alive HTTP clients (each sends one
# GET with a CLBKEY cookie of its own, reads the answer, then holds the
# connection) against clb and HAProxy 2.6 (nbthread 2), and N SIP TCP clients
# (one OPTIONS each, answered by a back end, then held) against clb and
# Kamailio 5.6 (tcp_children 2, stateless forward through dispatcher), side
# by side in one run. For each: the balancer's resident memory before the
# clients, its peak (VmHWM), when all are answered, and settled (SETTLE
# seconds later), as RSS and as PSS summed over its processes (Kamailio has
# several, sharing memory), and the settled growth per connection.
#
#   N=9000 SETTLE=20 bench/idle-memory.sh [ROUNDS]
#   CLB_BIN=/path/to/clb bench/idle-memory.sh   # measure another build
#
# A measurement, not a test: run it on a quiet machine, under
# flock /tmp/clb-bench.lock. 9,000 is about the most HAProxy holds with this
# machine's hard limit of 20,000 open files (it needs two per maxconn).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-1}
n=${N:-9000}
settle=${SETTLE:-20}
# shellcheck source=bench/lib.sh
. bench/lib.sh
need haproxy:haproxy kamailio:kamailio
ulimit -n "$(ulimit -Hn)"

if [ -n "${CLB_BIN:-}" ]; then
	cp "$CLB_BIN" "$tmp/clb"
else
	go build -o "$tmp/clb" ./cmd/clb
fi
go build -o "$tmp/backend" ./bench/httpbackend
go build -o "$tmp/instance" ./cmd/clb-instance
go build -o "$tmp/idleclients" ./bench/idleclients

http_ports=(22081 22082 22083)
for i in 0 1 2; do
	"$tmp/backend" -addr "127.0.0.1:${http_ports[$i]}" -name "app$((i + 1))" &
	pids+=("$!")
done
sip_ports=(21071 21072 21073)
for i in 0 1 2; do
	"$tmp/instance" -name "uas$((i + 1))" -sip "127.0.0.1:${sip_ports[$i]}" -http "127.0.0.1:$((22091 + i))" 2>/dev/null &
	pids+=("$!")
done
lb_http=22080
lb_sip=21060

# up PID PORT LOG: waits (10 s at most) for the balancer PID to accept TCP
# on PORT; false, with its log's end, if it died or never did.
up() {
	local _
	for _ in $(seq 100); do
		kill -0 "$1" 2>/dev/null || break
		(exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "balancer $1 is not listening on $2:" >&2
	tail -5 "$3" >&2
	return 1
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# hold NAME PROTO ADDR PIDS...: opens the clients, waits for their answers,
# prints the balancer's memory, and lets them go.
hold() {
	local name=$1 proto=$2 addr=$3
	shift 3
	local before before_pss
	before=$(kb VmRSS "$@")
	before_pss=$(pss "$@")
	rm -f "$tmp/hold" "$tmp/ready"
	mkfifo "$tmp/hold"
	"$tmp/idleclients" -proto "$proto" -addr "$addr" -n "$n" <"$tmp/hold" >"$tmp/ready" 2>"$tmp/clients.err" &
	local cpid=$!
	exec 3>"$tmp/hold"
	for _ in $(seq 1200); do
		grep -q ready "$tmp/ready" && break
		sleep 0.25
	done
	local opened failed at at_pss peak
	read -r _ opened failed <"$tmp/ready"
	[ "${opened:-0}" -gt 0 ] || opened=1 # for the division: all failed
	at=$(kb VmRSS "$@")
	at_pss=$(pss "$@")
	sleep "$settle"
	local settled settled_pss
	peak=$(kb VmHWM "$@")
	settled=$(kb VmRSS "$@")
	settled_pss=$(pss "$@")
	exec 3>&-
	wait "$cpid" || true
	printf '%-9s %-4s %5s open %3s failed  RSS MB: before %6s peak %6s answered %6s settled %6s  PSS MB: before %6s answered %6s settled %6s  settled growth %5s KB/conn\n' \
		"$name" "$proto" "$opened" "$failed" "$(mb "$before")" "$(mb "$peak")" "$(mb "$at")" "$(mb "$settled")" \
		"$(mb "$before_pss")" "$(mb "$at_pss")" "$(mb "$settled_pss")" \
		"$(echo "scale=2; ($settled_pss - $before_pss) / $opened" | bc)"
	[ -s "$tmp/clients.err" ] && head -3 "$tmp/clients.err" >&2
	return 0
}

cat >"$tmp/clb.yaml" <<EOF2
listen:
  http: 127.0.0.1:$lb_http
  sip: [tcp://127.0.0.1:$lb_sip, udp://127.0.0.1:$lb_sip]
http: {idle_timeout: 300s, max_connections: 20000}
instances:
  - {name: app1, http: http://127.0.0.1:${http_ports[0]}}
  - {name: app2, http: http://127.0.0.1:${http_ports[1]}}
  - {name: app3, http: http://127.0.0.1:${http_ports[2]}}
  - {name: uas1, sip: udp://127.0.0.1:${sip_ports[0]}}
  - {name: uas2, sip: udp://127.0.0.1:${sip_ports[1]}}
  - {name: uas3, sip: udp://127.0.0.1:${sip_ports[2]}}
health: {active: false}
EOF2
cat >"$tmp/haproxy.cfg" <<EOF2
global
  nbthread 2
  maxconn 9900
defaults
  mode http
  timeout connect 2s
  timeout client 300s
  timeout server 30s
  timeout http-keep-alive 300s
  http-reuse always
frontend fe
  bind 127.0.0.1:$lb_http
  default_backend be
backend be
  balance hash req.cook(CLBKEY)
  hash-type consistent
  server app1 127.0.0.1:${http_ports[0]}
  server app2 127.0.0.1:${http_ports[1]}
  server app3 127.0.0.1:${http_ports[2]}
EOF2
cat >"$tmp/dispatcher.list" <<EOF2
1 sip:127.0.0.1:${sip_ports[0]}
1 sip:127.0.0.1:${sip_ports[1]}
1 sip:127.0.0.1:${sip_ports[2]}
EOF2
cat >"$tmp/kamailio.cfg" <<EOF2
#!KAMAILIO
debug=0
log_stderror=yes
children=2
tcp_children=2
tcp_max_connections=20000
tcp_connection_lifetime=3600
listen=udp:127.0.0.1:$lb_sip
listen=tcp:127.0.0.1:$lb_sip
$(kamailio_modules "$tmp/dispatcher.list")
request_route {
	if (!mf_process_maxfwd_header("10")) {
		sl_send_reply("483", "Too Many Hops");
		exit;
	}
	if (!ds_select_dst("1", "0")) {
		sl_send_reply("503", "Service Unavailable");
		exit;
	}
	forward();
	exit;
}
EOF2
sleep 1

for round in $(seq "$rounds"); do
	echo "round $round ($n clients, settled after ${settle}s)"
	for proto in http sip; do # a fresh clb each: the Go heap keeps what it grew to
		"$tmp/clb" run -config "$tmp/clb.yaml" 2>"$tmp/clb.log" &
		p=$!
		if [ "$proto" = http ]; then
			up "$p" "$lb_http" "$tmp/clb.log" && sleep 1 && hold clb http "127.0.0.1:$lb_http" "$p"
		else
			up "$p" "$lb_sip" "$tmp/clb.log" && sleep 1 && hold clb sip "127.0.0.1:$lb_sip" "$p"
		fi
		stop "$p"
	done

	haproxy -f "$tmp/haproxy.cfg" -db 2>"$tmp/haproxy.log" &
	p=$!
	up "$p" "$lb_http" "$tmp/haproxy.log" && sleep 1 && hold haproxy http "127.0.0.1:$lb_http" "$p"
	stop "$p"

	kamailio -f "$tmp/kamailio.cfg" -DD -E -m 512 2>"$tmp/kamailio.log" &
	p=$!
	# shellcheck disable=SC2046
	up "$p" "$lb_sip" "$tmp/kamailio.log" && sleep 2 &&
		hold kamailio sip "127.0.0.1:$lb_sip" $(pgrep -d ' ' -f "kamailio -f $tmp/kamailio.cfg")
	stop "$p"
done
