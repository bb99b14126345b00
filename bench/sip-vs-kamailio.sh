#!/usr/bin/env bash
# SIPp UAC → load balancer → three SIPp UAS, with clb and with Kamailio 5.6
# (dispatcher algorithm 0, record_route(), stateless forward()), same
# scenario, same machine, one run. For each call rate it prints the calls
# completed and failed (UAC and every UAS) and the balancer's CPU-seconds per
# 1,000 calls (utime + stime of all its processes, from /proc).
#
#   bench/sip-vs-kamailio.sh [RATES] [SECONDS]
#   e.g. bench/sip-vs-kamailio.sh "2000 4000 6000 8000 10000" 10
#
# A measurement, not a test: run it on a quiet machine, and repeat. Needs
# sipp (sip-tester) and kamailio; installs them with apt-get if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
rates=${1:-"2000 4000 6000 8000 10000 12000"}
seconds=${2:-10}
root=$(pwd)

# shellcheck source=bench/lib.sh
. bench/lib.sh
need sipp:sip-tester kamailio:kamailio

go build -o "$tmp/clb" ./cmd/clb
lb_port=15060
uas_ports=(15071 15072 15073)

# CPU ticks (utime + stime) of a process and its threads.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks_all() { local t=0; for p in "$@"; do t=$((t + $(ticks "$p"))); done; echo "$t"; }
hz=$(getconf CLK_TCK)

start_uas() {
	for i in 0 1 2; do
		mkdir -p "$tmp/uas$i"
		(cd "$tmp/uas$i" && exec sipp -sf "$root/testdata/sipp/uas.xml" -i 127.0.0.1 -p "${uas_ports[$i]}" \
			-nostdin -buff_size 2097152 -trace_stat -stf stats.csv -fd 1 -trace_err -error_file errors.log \
			>/dev/null 2>&1) &
		uas_pids[$i]=$!
		pids+=("$!")
	done
	sleep 1
}

# stop_uas lets the UAS finish their calls (SIGUSR1), killing those that
# still have some after 10 s (calls the UAC gave up on never end).
stop_uas() {
	for p in "${uas_pids[@]}"; do kill -USR1 "$p" 2>/dev/null || true; done
	for _ in $(seq 100); do
		alive=0
		for p in "${uas_pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
		[ "$alive" = 0 ] && break
		sleep 0.1
	done
	for p in "${uas_pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}

# last value of a column of a SIPp statistics file
stat() { awk -F';' -v col="$2" 'NR==1{for(i=1;i<=NF;i++) if($i==col) c=i} END{print $c}' "$1"; }

# run_load NAME PIDS...: one UAC run per rate against the balancer.
run_load() {
	local name=$1
	shift
	for rate in $rates; do
		start_uas
		local calls=$((rate * seconds))
		local before
		before=$(ticks_all "$@")
		mkdir -p "$tmp/uac"
		(cd "$tmp/uac" && timeout -s KILL $((seconds * 4 + 15)) sipp -sf "$root/testdata/sipp/uac.xml" -i 127.0.0.1 -p 15090 -m "$calls" -r "$rate" \
			-l $((rate * 2)) -nostdin -buff_size 2097152 -trace_stat -stf stats.csv -fd 1 \
			-timeout $((seconds * 4))s "127.0.0.1:$lb_port" >/dev/null 2>&1) || true
		local after
		after=$(ticks_all "$@")
		stop_uas
		local ok failed uas_failed=0 uas_ok=0
		ok=$(stat "$tmp/uac/stats.csv" "SuccessfulCall(C)")
		failed=$(stat "$tmp/uac/stats.csv" "FailedCall(C)")
		for i in 0 1 2; do
			uas_ok=$((uas_ok + $(stat "$tmp/uas$i/stats.csv" "SuccessfulCall(C)")))
			uas_failed=$((uas_failed + $(stat "$tmp/uas$i/stats.csv" "FailedCall(C)")))
			[ -s "$tmp/uas$i/errors.log" ] && uas_failed=$((uas_failed + 1))
		done
		local cpu
		cpu=$(echo "scale=4; ($after - $before) / $hz / ($ok / 1000)" | bc 2>/dev/null || echo "-")
		printf '%-9s rate %6d/s  calls %6d  failed UAC %5d  UAS ok %6d failed %4d  CPU-s/1k calls %s\n' \
			"$name" "$rate" "$ok" "$failed" "$uas_ok" "$uas_failed" "$cpu"
		rm -rf "$tmp/uac" "$tmp"/uas?
	done
}

# clb
cat >"$tmp/clb.yaml" <<EOF
listen:
  sip: udp://127.0.0.1:$lb_port
instances:
  - {name: uas1, sip: udp://127.0.0.1:${uas_ports[0]}}
  - {name: uas2, sip: udp://127.0.0.1:${uas_ports[1]}}
  - {name: uas3, sip: udp://127.0.0.1:${uas_ports[2]}}
# SIPp's UAS scenario does not answer OPTIONS, and the Kamailio set-up below
# does not probe either: passive checks only, as there.
health: {active: false}
EOF
"$tmp/clb" run -config "$tmp/clb.yaml" 2>"$tmp/clb.log" &
clb_pid=$!
pids+=("$clb_pid")
sleep 1
run_load clb "$clb_pid"
kill "$clb_pid"
wait "$clb_pid" 2>/dev/null || true

# Kamailio
cat >"$tmp/dispatcher.list" <<EOF
1 sip:127.0.0.1:${uas_ports[0]}
1 sip:127.0.0.1:${uas_ports[1]}
1 sip:127.0.0.1:${uas_ports[2]}
EOF
cat >"$tmp/kamailio.cfg" <<EOF
#!KAMAILIO
debug=0
log_stderror=yes
memdbg=5
memlog=5
children=2
listen=udp:127.0.0.1:$lb_port
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "pv.so"
loadmodule "siputils.so"
loadmodule "dispatcher.so"
modparam("dispatcher", "list_file", "$tmp/dispatcher.list")
modparam("dispatcher", "ds_ping_interval", 0)

request_route {
	if (!mf_process_maxfwd_header("10")) {
		sl_send_reply("483", "Too Many Hops");
		exit;
	}
	if (has_totag()) {
		loose_route();
		forward();
		exit;
	}
	if (is_method("ACK|CANCEL")) {
		if (!ds_select_dst("1", "0")) exit;
		forward();
		exit;
	}
	record_route();
	if (!ds_select_dst("1", "0")) {
		sl_send_reply("503", "Service Unavailable");
		exit;
	}
	forward();
	exit;
}
EOF
kamailio -f "$tmp/kamailio.cfg" -DD -E -m 1024 -n 2 2>"$tmp/kamailio.log" &
kam_pid=$!
pids+=("$kam_pid")
sleep 2
kam_pids=$(pgrep -d ' ' -f "kamailio -f $tmp/kamailio.cfg")
# shellcheck disable=SC2086
run_load kamailio $kam_pids
