#!/usr/bin/env bash
# SIPp UAC → load balancer → three SIPp UAS, with clb and with Kamailio 5.6
# (dispatcher algorithm 0, record_route(), stateless forward()), same
# scenario, same machine, one run. The balancers all run at once on their
# own ports and take turns: for each sweep and each rate, one UAC run
# through each, so that a change in the machine's load hits them alike. For
# each run it prints the calls completed and failed (UAC and every UAS) and
# the balancer's CPU-seconds per 1,000 calls (utime + stime of all its
# processes, from /proc); at the end, per rate, every sweep's CPU per 1k
# calls, their median, the ratio of each clb to Kamailio, and the highest
# rate each balancer carried with 0 failed calls in every sweep. Over UDP a
# run that lost datagrams says how many the kernel dropped, and where.
#
#   bench/sip-vs-kamailio.sh [RATES] [SECONDS]
#   e.g. SWEEPS=3 bench/sip-vs-kamailio.sh "2000 4000 8000 10000" 10
#
#   TRANSPORT=tcp   SIP over TCP (SIPp -t t1: one connection per UAC and
#                   UAS; Kamailio with tcp_children); default udp
#   SWEEPS=N        sweeps over the rates (default 1)
#   CLB=PATH        the clb binary to measure (default: built from this tree)
#   CLB_BASE=PATH   a second clb binary measured alongside, as "clb-base"
#                   (a commit before a change, say), or as CLB_BASE_NAME
#   KAMAILIO=0      leave Kamailio out
#   PERF=1          also count, per call, each balancer's context switches,
#                   migrations and system calls of the kinds either makes
#                   (perf stat on its processes; PERF_EVENTS=LIST for other
#                   events). Its tracepoints put every process's system
#                   calls on a slower path while on: CPU figures of such a
#                   run are not those of one without
#
# A measurement, not a test: run it on a quiet machine, under
# `flock /tmp/clb-bench.lock`, and repeat. Needs sipp (sip-tester) and
# kamailio; installs them with apt-get if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
rates=${1:-"2000 4000 6000 8000 10000 12000"}
seconds=${2:-10}
transport=${TRANSPORT:-udp}
sweeps=${SWEEPS:-1}
root=$(pwd)

# shellcheck source=bench/lib.sh
. bench/lib.sh
need sipp:sip-tester
[ "${KAMAILIO:-1}" = 0 ] || need kamailio:kamailio
perf_events=""
if [ "${PERF:-0}" = 1 ]; then
	need perf:linux-perf
	perf_events=${PERF_EVENTS:-task-clock,context-switches,cpu-migrations}
	if [ -z "${PERF_EVENTS:-}" ]; then
		for sc in recvmmsg sendmmsg recvfrom sendto read write epoll_pwait epoll_wait futex; do
			perf_events+=,syscalls:sys_enter_$sc
		done
	fi
fi

case $transport in
udp) sipp_t=u1 ;;
tcp) sipp_t=t1 ;;
*)
	echo "TRANSPORT must be udp or tcp" >&2
	exit 2
	;;
esac

clb_bin=${CLB:-}
if [ -z "$clb_bin" ]; then
	go build -o "$tmp/clb" ./cmd/clb
	clb_bin=$tmp/clb
fi
uas_ports=(15071 15072 15073)

# CPU ticks (utime + stime) of a process and its threads.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks_all() { local t=0; for p in "$@"; do t=$((t + $(ticks "$p"))); done; echo "$t"; }
hz=$(getconf CLK_TCK)

start_uas() {
	for i in 0 1 2; do
		mkdir -p "$tmp/uas$i"
		(cd "$tmp/uas$i" && exec sipp -sf "$root/testdata/sipp/uas.xml" -t "$sipp_t" -i 127.0.0.1 -p "${uas_ports[$i]}" \
			-nostdin -buff_size 2097152 -trace_stat -stf stats.csv -fd 1 -trace_err -error_file errors.log \
			>/dev/null 2>&1) &
		uas_pids[$i]=$!
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

# UDP datagrams the kernel dropped for a full receive buffer: on the
# sockets bound to port $1 (the balancer's, which outlive a run), and on
# all sockets (SIPp's go with their processes, so theirs are the rest).
udp_drops_port() { awk -v p=":$(printf '%04X' "$1")" 'NR > 1 && substr($2, length($2) - 4) == p {n += $NF} END {print n + 0}' /proc/net/udp; }
udp_drops_all() { awk '/^Udp:/ && $2 ~ /^[0-9]/ {print $6}' /proc/net/snmp; }

# last value of a column of a SIPp statistics file
stat() { awk -F';' -v col="$2" 'NR==1{for(i=1;i<=NF;i++) if($i==col) c=i} END{print $c}' "$1"; }

# run_one NAME PORT RATE SWEEP PIDS...: one UAC run at RATE through the
# balancer at PORT; appends "NAME RATE SWEEP CPU FAILED" to $tmp/results.
run_one() {
	local name=$1 port=$2 rate=$3 sweep=$4
	shift 4
	start_uas
	local calls=$((rate * seconds))
	local before lb_drops all_drops
	lb_drops=$(udp_drops_port "$port") all_drops=$(udp_drops_all)
	before=$(ticks_all "$@")
	mkdir -p "$tmp/uac"
	local perf=""
	if [ -n "$perf_events" ]; then
		perf stat -x, -e "$perf_events" -p "$(echo "$@" | tr ' ' ,)" -o "$tmp/perf.out" &
		perf=$!
	fi
	(cd "$tmp/uac" && timeout -s KILL $((seconds * 4 + 15)) sipp -sf "$root/testdata/sipp/uac.xml" -t "$sipp_t" -i 127.0.0.1 -p 15090 -m "$calls" -r "$rate" \
		-l $((rate * 2)) -nostdin -buff_size 2097152 -trace_stat -stf stats.csv -fd 1 \
		-timeout $((seconds * 4))s "127.0.0.1:$port" >/dev/null 2>&1) || true
	local after
	after=$(ticks_all "$@")
	if [ -n "$perf" ]; then
		kill -INT "$perf" 2>/dev/null || true # perf may have failed at start
		wait "$perf" || true
	fi
	stop_uas
	lb_drops=$(($(udp_drops_port "$port") - lb_drops)) all_drops=$(($(udp_drops_all) - all_drops))
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
	printf '%-9s %s sweep %d rate %6d/s  calls %6d  failed UAC %5d  UAS ok %6d failed %4d  CPU-s/1k calls %s\n' \
		"$name" "$transport" "$sweep" "$rate" "$ok" "$failed" "$uas_ok" "$uas_failed" "$cpu"
	echo "$name $rate $sweep ${cpu:--} $((failed + uas_failed + calls - ok))" >>"$tmp/results"
	if [ "$transport" = udp ] && [ "$all_drops" != 0 ]; then
		echo "  UDP datagrams dropped (receive buffer full): $lb_drops at the balancer's sockets, $((all_drops - lb_drops)) elsewhere (SIPp's, or others')"
	fi
	if [ -s "$tmp/perf.out" ] && [ "$ok" -gt 0 ]; then
		# per completed call, as the CPU figure; task-clock is in ms: µs
		awk -F, -v c="$ok" '!/^#/ && NF > 2 && $1 + 0 > 0 {
			v = $1 / c; if ($3 == "task-clock") { v *= 1000; $3 = "task-clock-us" }
			sub(/^syscalls:sys_enter_/, "", $3); line = line sprintf(" %s %.2f", $3, v) }
			END { print "  per call:" line }' "$tmp/perf.out" || true
	fi
	rm -f "$tmp/perf.out"
	rm -rf "$tmp/uac" "$tmp"/uas?
}

# start_clb NAME BIN PORT: a clb before the UAS, on PORT.
lbs=()
start_clb() {
	local name=$1 bin=$2 port=$3
	cat >"$tmp/$name.yaml" <<EOF
listen:
  sip: $transport://127.0.0.1:$port
instances:
  - {name: uas1, sip: $transport://127.0.0.1:${uas_ports[0]}}
  - {name: uas2, sip: $transport://127.0.0.1:${uas_ports[1]}}
  - {name: uas3, sip: $transport://127.0.0.1:${uas_ports[2]}}
# SIPp's UAS scenario does not answer OPTIONS, and the Kamailio set-up below
# does not probe either: passive checks only, as there.
health: {active: false}
EOF
	"$bin" run -config "$tmp/$name.yaml" 2>"$tmp/$name.log" &
	pids+=("$!")
	lbs+=("$name:$port:$!")
}

start_clb clb "$clb_bin" 15060
[ -n "${CLB_BASE:-}" ] && start_clb "${CLB_BASE_NAME:-clb-base}" "$CLB_BASE" 15061

if [ "${KAMAILIO:-1}" != 0 ]; then
	kam_port=15062
	tparam=""
	[ "$transport" = tcp ] && tparam=";transport=tcp"
	cat >"$tmp/dispatcher.list" <<EOF
1 sip:127.0.0.1:${uas_ports[0]}$tparam
1 sip:127.0.0.1:${uas_ports[1]}$tparam
1 sip:127.0.0.1:${uas_ports[2]}$tparam
EOF
	cat >"$tmp/kamailio.cfg" <<EOF
#!KAMAILIO
debug=0
log_stderror=yes
memdbg=5
memlog=5
children=2
tcp_children=2
listen=$transport:127.0.0.1:$kam_port
$(kamailio_modules "$tmp/dispatcher.list")

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
	# every Kamailio process, for their CPU
	lbs+=("kamailio:$kam_port:$(pgrep -d ' ' -f "kamailio -f $tmp/kamailio.cfg")")
fi
sleep 1

for sweep in $(seq "$sweeps"); do
	for rate in $rates; do
		for lb in "${lbs[@]}"; do
			IFS=: read -r name port lbpids <<<"$lb"
			# shellcheck disable=SC2086
			run_one "$name" "$port" "$rate" "$sweep" $lbpids
		done
	done
done

# Summary: per rate and balancer, each sweep's CPU per 1k calls and their
# median; each clb's median against Kamailio's; the highest rate with 0
# failed calls in every sweep.
echo
echo "summary ($transport, $sweeps sweep(s), ${seconds} s a run): CPU-s per 1k calls, median over sweeps, ratio to Kamailio"
awk -v rates="$rates" '
	{ key = $1 " " $2; if ($4 != "-") cpu[key] = cpu[key] " " $4; if ($5 > 0 || $4 == "-") bad[key] = 1; names[$1] = 1 }
	function median(s,   a, n, i, j, t) {
		n = split(s, a, " ")
		if (n == 0) return "-"
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	END {
		nr = split(rates, r, " ")
		for (i = 1; i <= nr; i++) {
			kam = ("kamailio " r[i] in cpu) ? median(cpu["kamailio " r[i]]) : ""
			for (n in names) {
				k = n " " r[i]
				m = median(cpu[k])
				line = sprintf("%-9s rate %6d  CPU/1k:%s  median %s", n, r[i], cpu[k], m)
				if (kam != "" && kam != "-" && m != "-" && n != "kamailio" && kam > 0) line = line sprintf("  ratio %.2f", m / kam)
				if (bad[k]) line = line "  (failed calls)"
				print line
			}
		}
		for (n in names) {
			best = 0
			for (i = 1; i <= nr; i++) if (!bad[n " " r[i]] && r[i] + 0 > best) best = r[i] + 0
			printf "%-9s highest rate with 0 failed calls in every sweep: %d/s\n", n, best
		}
	}' "$tmp/results"
