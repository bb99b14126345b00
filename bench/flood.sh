#!/usr/bin/env bash
# The proof of flood control (issue 14, SPEC section 12): while one source
# floods clb with SIP requests and another with HTTP requests, and a third
# sends one OPTIONS from each of 1,000,000 spoofed addresses, legitimate
# SIPp calls (from 127.0.0.2) and HTTP sessions (from 127.0.0.3) must
# succeed >= 99.9%, clb's memory must stay bounded, and the flooders must be
# answered as SPEC 12 says (503 with Retry-After, 429 with Retry-After,
# connections past the cap closed at once). Prints the figures and a
# PASS/FAIL line per target.
#
#   DURATION=30 bench/flood.sh
#   CLB=PATH bench/flood.sh      a clb binary instead of one built from this tree
#
# Everything runs at once for DURATION seconds (default 30):
#   SIP flood     127.0.0.1 -> clb   OPTIONS at SIP_FLOOD_RATE (20000/s)
#   HTTP flood    127.0.0.4 -> clb   GETs at HTTP_FLOOD_RATE (20000/s), 64 connections
#   spoofed flood 127.1.0.0 and up   one OPTIONS from each of SPOOF_SOURCES (1000000),
#                 at SPOOF_RATE (all within 80% of the duration), on a raw socket
#   SIPp UAC      127.0.0.2 -> clb -> 3 SIPp UAS, SIPP_RATE (200) calls/s
#   HTTP legit    127.0.0.3 -> clb -> 3 Go back ends, HTTP_RATE (500) req/s,
#                 8 keep-alive connections, 10,000 CLBKEY sessions
# then the HTTP connection cap is checked alone: 300 connections at once
# from 127.0.0.4.
#
# clb's limits (override with the environment):
#   limits: {sip: {rate: SIP_LIMIT (1000), burst: SIP_BURST (2000)},
#            http: {rate: HTTP_LIMIT (500), burst: HTTP_BURST (1000), connections: HTTP_CONNS (256)}}
# Not SPEC 12's example sip rate of 200: a call is three requests from the
# caller (INVITE, ACK, BYE), all counted against its source's rate (the
# in-dialog ones first take the tokens new requests need, then pass on
# their own allowance of twice the rate), so a source making 200 calls/s
# sends 600 requests/s, and with rate 200 about 40% of its INVITEs get 503
# even with no flood at all (measured: 1,181 of 2,000 calls). Rate 1000
# leaves that source headroom and still refuses 95% of a 20,000/s flood.
# Memory target: peak RSS <= MAX_RSS_MB (128) with all spoofed sources sent.
#
# A load test, not a unit test: the load generators, SIPp and clb share the
# machine's cores, so run it on a quiet machine and note the load average.
# Needs sipp (sip-tester); installs it with apt-get if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
duration=${DURATION:-30}
sip_flood_rate=${SIP_FLOOD_RATE:-20000}
http_flood_rate=${HTTP_FLOOD_RATE:-20000}
spoof_sources=${SPOOF_SOURCES:-1000000}
# all spoofed sources within 80% of the duration (about 41,700/s for 30 s)
spoof_rate=${SPOOF_RATE:-$((spoof_sources * 10 / (duration * 8) + 1))}
sipp_rate=${SIPP_RATE:-200}
http_rate=${HTTP_RATE:-500}
sip_limit=${SIP_LIMIT:-1000}
sip_burst=${SIP_BURST:-2000}
http_limit=${HTTP_LIMIT:-500}
http_burst=${HTTP_BURST:-1000}
http_conns=${HTTP_CONNS:-256}
max_rss_mb=${MAX_RSS_MB:-128}
# The flooders run at this nice level: on a real network their CPU is not
# clb's; here they share two cores with it (0: no change).
flood_nice=${FLOOD_NICE:-10}
cores=$(nproc)
# PIN=1: clb alone on the last CPU, everything else on the others (taskset),
# to see what clb does with a core of its own when the load generators
# cannot all fit in the rest.
if [ "${PIN:-0}" = 1 ]; then
	last=$(($(nproc) - 1))
	rest=0-$((last - 1))
	[ "$last" = 1 ] && rest=0
	taskset -pc "$rest" $$ >/dev/null # inherited by all but clb
	clb_pin=(taskset -c "$last")
else
	clb_pin=()
fi

# shellcheck source=bench/lib.sh
. bench/lib.sh
need sipp:sip-tester curl:curl

if [ -n "${CLB:-}" ]; then
	cp "$CLB" "$tmp/clb" # CLB=PATH: that clb binary instead of this tree's
else
	go build -o "$tmp/clb" ./cmd/clb
fi
go build -o "$tmp/backend" ./bench/httpbackend
go build -o "$tmp/ft" ./bench/floodtools
sip_port=25060
uas_ports=(25071 25072 25073)
http_port=28080
app_ports=(28081 28082 28083)
admin=127.0.0.1:29090
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
udp_snmp() { awk '/^Udp:/ && $2 ~ /^[0-9]/ {print "in=" $2 " noports=" $3 " inerrors=" $4 " out=" $5 " rcvbuf_errors=" $6 " sndbuf_errors=" $7}' /proc/net/snmp; }
# last value of a column of a SIPp statistics file
stat() { awk -F';' -v col="$2" 'NR==1{for(i=1;i<=NF;i++) if($i==col) c=i} END{print $c+0}' "$1"; }
# field K of a floodtools line
field() { tr ' ' '\n' <"$1" | awk -F= -v k="$2" '$1 == k {print $2}'; }
# count of status S in a floodtools answers=... field
answers() { field "$1" answers | tr ',' '\n' | awk -F: -v s="$2" '$1 == s {n = $2} END {print n + 0}'; }
verdict() { if [ "$1" = 1 ]; then echo PASS; else echo FAIL; fi; }

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)  ($cores cores)"

for i in 0 1 2; do
	"$tmp/backend" -addr "127.0.0.1:${app_ports[$i]}" -name "app$((i + 1))" &
	pids+=("$!")
done
uas_pids=()
for i in 0 1 2; do
	mkdir -p "$tmp/uas$i"
	# The UAS see the flooders' admitted OPTIONS too (each an unexpected
	# message to SIPp): no error file, it would hold a million lines.
	(cd "$tmp/uas$i" && exec sipp -sf "$root/testdata/sipp/uas.xml" -i 127.0.0.1 -p "${uas_ports[$i]}" \
		-nostdin -buff_size 2097152 -trace_stat -stf stats.csv -fd 1 >/dev/null 2>&1) &
	uas_pids+=("$!")
	pids+=("$!")
done

cat >"$tmp/clb.yaml" <<EOF
listen:
  sip: udp://127.0.0.1:$sip_port
  http: 127.0.0.1:$http_port
  admin: $admin
instances:
  - {name: i1, sip: udp://127.0.0.1:${uas_ports[0]}, http: http://127.0.0.1:${app_ports[0]}}
  - {name: i2, sip: udp://127.0.0.1:${uas_ports[1]}, http: http://127.0.0.1:${app_ports[1]}}
  - {name: i3, sip: udp://127.0.0.1:${uas_ports[2]}, http: http://127.0.0.1:${app_ports[2]}}
# SIPp's UAS scenario does not answer OPTIONS: passive checks only, as in
# bench/sip-vs-kamailio.sh.
health: {active: false}
limits:
  sip: {rate: $sip_limit, burst: $sip_burst}
  http: {rate: $http_limit, burst: $http_burst, connections: $http_conns}
EOF
echo "flooders at nice $flood_nice${clb_pin:+; clb pinned to CPU ${clb_pin[2]}, the rest to the other CPUs}"
echo "clb limits: sip {rate: $sip_limit, burst: $sip_burst}, http {rate: $http_limit, burst: $http_burst, connections: $http_conns}"
# CLB_PROFILE=FILE: clb's CPU profile of the run, written when it stops.
"${clb_pin[@]}" "$tmp/clb" run -config "$tmp/clb.yaml" ${CLB_PROFILE:+-cpuprofile "$CLB_PROFILE"} 2>"$tmp/clb.log" &
clb_pid=$!
pids+=("$clb_pid")
for _ in $(seq 50); do curl -fs "http://$admin/metrics" >/dev/null && break; sleep 0.1; done
sleep 1
rss_start=$(rss_kb "$clb_pid")

# RSS every second, in kB
(while kill -0 "$clb_pid" 2>/dev/null; do rss_kb "$clb_pid" || true; sleep 1; done >"$tmp/rss") &
sampler=$!
pids+=("$sampler")

udp_before=$(udp_snmp)
cpu_before=$(ticks "$clb_pid")
t0=$(date +%s.%N)

mkdir -p "$tmp/uac"
(cd "$tmp/uac" && exec timeout -s KILL $((duration * 2 + 20)) sipp -sf "$root/testdata/sipp/uac.xml" \
	-i 127.0.0.2 -p 25090 -m $((sipp_rate * duration)) -r "$sipp_rate" -l $((sipp_rate * 20)) \
	-nostdin -buff_size 2097152 -trace_stat -stf stats.csv -fd 1 -trace_err -error_file errors.log \
	-timeout $((duration * 2))s "127.0.0.1:$sip_port" >/dev/null 2>&1) &
uac=$!
pids+=("$uac")
"$tmp/ft" http -src 127.0.0.3 -addr "127.0.0.1:$http_port" -rate "$http_rate" -c 8 -d "${duration}s" >"$tmp/legit-http" &
legit=$!
pids+=("$legit")
nice -n "$flood_nice" "$tmp/ft" sipflood -src 127.0.0.1 -dst "127.0.0.1:$sip_port" -rate "$sip_flood_rate" -d "${duration}s" >"$tmp/sip-flood" &
sipflood=$!
pids+=("$sipflood")
nice -n "$flood_nice" "$tmp/ft" http -src 127.0.0.4 -addr "127.0.0.1:$http_port" -rate "$http_flood_rate" -c 64 -d "${duration}s" >"$tmp/http-flood" &
httpflood=$!
pids+=("$httpflood")
nice -n "$flood_nice" "$tmp/ft" spoof -dst "127.0.0.1:$sip_port" -n "$spoof_sources" -rate "$spoof_rate" -d "${duration}s" >"$tmp/spoof" &
spoofer=$!
pids+=("$spoofer")

# One second before the end, while every process still runs: the CPU each
# took so far, and the datagrams the kernel dropped on each UDP socket.
procs="clb:$clb_pid uas:$(echo "${uas_pids[*]}" | tr ' ' ,) uac:$uac legit-http:$legit sip-flood:$sipflood http-flood:$httpflood spoof:$spoofer"
procs="$procs backends:$(pgrep -d , -f "$tmp/backend")"
(
	sleep $((duration - 1))
	for pp in $procs; do
		t=0
		for p in $(echo "${pp#*:}" | tr , ' '); do
			p=$(pgrep -P "$p" sipp || echo "$p") # the UAC runs under timeout
			for q in $p; do t=$((t + $(ticks "$q" 2>/dev/null || echo 0))); done
		done
		echo "${pp%%:*} $t"
	done >"$tmp/cpu-mid"
	cat /proc/net/udp >"$tmp/udp-mid"
) &
pids+=("$!")

for p in "$legit" "$sipflood" "$httpflood" "$spoofer"; do wait "$p" || true; done
t_load=$(date +%s.%N)
cpu_load=$(ticks "$clb_pid")
wait "$uac" || true
cpu_after=$(ticks "$clb_pid")
t1=$(date +%s.%N)
udp_after=$(udp_snmp)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
metrics=$(curl -fs "http://$admin/metrics" | grep '^clb_errors_total' || true)

# The connection cap, alone: the flooding source opens 300 at once.
kill -0 "$clb_pid" # clb must have survived
"$tmp/ft" conncap -src 127.0.0.4 -addr "127.0.0.1:$http_port" -n $((http_conns + 44)) >"$tmp/conncap"
sleep 1
rss_end=$(rss_kb "$clb_pid")

for p in "${uas_pids[@]}"; do kill -USR1 "$p" 2>/dev/null || true; done
sleep 1
for p in "${uas_pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
{ for p in "${uas_pids[@]}"; do wait "$p"; done; } 2>/dev/null || true

kill -INT "$clb_pid"
wait "$clb_pid" 2>/dev/null || true
# FLOOD_KEEP=DIR: keep the logs and counts (SIPp's UAC error log, clb's log).
[ -n "${FLOOD_KEEP:-}" ] && mkdir -p "$FLOOD_KEEP" && cp -r "$tmp"/* "$FLOOD_KEEP"/ && rm -f "$FLOOD_KEEP"/{clb,ft,backend}

# --- figures
echo "load average after:  $load_after"
elapsed=$(echo "$t1 - $t0" | bc)
load_s=$(echo "$t_load - $t0" | bc)
cpu=$(echo "scale=2; ($cpu_after - $cpu_before) / $hz" | bc)
cpu_l=$(echo "scale=2; ($cpu_load - $cpu_before) / $hz" | bc)
printf 'clb CPU: %s CPU-s over the %.1f s of the floods (%.2f cores), %s CPU-s until SIPp ended (%.1f s)\n' \
	"$cpu_l" "$load_s" "$(echo "$cpu_l / $load_s" | bc -l)" "$cpu" "$elapsed"
echo "UDP (all sockets) before: $udp_before"
echo "UDP (all sockets) after:  $udp_after"
printf 'CPU over the first %d s, in cores (the box has %d):' $((duration - 1)) "$cores"
while read -r name t; do
	printf ' %s %.2f' "$name" "$(echo "$t / $hz / $((duration - 1))" | bc -l)"
done <"$tmp/cpu-mid"
echo
# drops of the sockets bound to PORTs (the last column of /proc/net/udp)
drops() { awk -v ports="$*" 'BEGIN {n = split(ports, p, " "); for (i = 1; i <= n; i++) want[sprintf("%04X", p[i])] = 1}
	NR > 1 {split($2, a, ":"); if (a[2] in want) d += $NF} END {print d + 0}' "$tmp/udp-mid"; }
echo "kernel drops one second before the end: clb $(drops $sip_port), UAS $(drops "${uas_ports[@]}"), UAC $(drops 25090)"

calls=$((sipp_rate * duration))
sip_ok=$(stat "$tmp/uac/stats.csv" "SuccessfulCall(C)")
sip_failed=$(stat "$tmp/uac/stats.csv" "FailedCall(C)")
sip_503=$(grep -c ' 503 ' "$tmp/uac/errors.log" 2>/dev/null || true)
sip_ratio=$(echo "scale=5; $sip_ok / $calls" | bc)
printf 'SIPp legit (127.0.0.2, %d calls/s): %d of %d calls succeeded, %d failed (UAC error log lines with a 503: %s): %s\n' \
	"$sipp_rate" "$sip_ok" "$calls" "$sip_failed" "${sip_503:-0}" "$sip_ratio"
printf '  failed calls by cause: max UDP retransmissions %d, rejected %d, unexpected message %d; retransmissions %d\n' \
	"$(stat "$tmp/uac/stats.csv" "FailedMaxUDPRetrans(C)")" "$(stat "$tmp/uac/stats.csv" "FailedCallRejected(C)")" \
	"$(stat "$tmp/uac/stats.csv" "FailedUnexpectedMessage(C)")" "$(stat "$tmp/uac/stats.csv" "Retransmissions(C)")"

http_req=$(field "$tmp/legit-http" requests)
http_ok=$(field "$tmp/legit-http" ok)
http_ratio=$(echo "scale=5; $http_ok / $http_req" | bc)
printf 'HTTP legit (127.0.0.3, %d req/s): %s\n' "$http_rate" "$(cat "$tmp/legit-http")"
printf '  %d ok of %d sent (%d planned), %d other: %s\n' "$http_ok" "$http_req" $((http_rate * duration)) $((http_req - http_ok)) "$http_ratio"

echo "SIP flood (127.0.0.1): $(cat "$tmp/sip-flood")"
sf_sent=$(field "$tmp/sip-flood" sent)
sf_ra=$(field "$tmp/sip-flood" retry_after_503)
sf_503=$(answers "$tmp/sip-flood" 503)
# At most the burst plus the rate over the flood may pass; all the rest must
# be answered 503 with Retry-After.
sf_allow=$(echo "$sip_burst + $sip_limit * $load_s" | bc | cut -d. -f1)
sf_want=$((sf_sent - sf_allow))
printf '  503 with Retry-After: %d (503 in all %d); at least %d wanted (sent - burst - rate x %.1f s)\n' \
	"$sf_ra" "$sf_503" "$sf_want" "$load_s"
sip_refused=$(echo "$metrics" | awk '/kind="rate_limited"/ && /protocol="sip"/ {print $2}')
printf '  clb refused %s SIP requests (all sources); the datagrams the kernel dropped before clb read them are on the drops line above\n' "${sip_refused:-0}"

echo "HTTP flood (127.0.0.4): $(cat "$tmp/http-flood")"
hf_req=$(field "$tmp/http-flood" requests)
hf_ra=$(field "$tmp/http-flood" retry_after_429)
hf_429=$(answers "$tmp/http-flood" 429)
hf_allow=$(echo "$http_burst + $http_limit * $load_s" | bc | cut -d. -f1)
hf_want=$((hf_req - hf_allow))
printf '  429 with Retry-After: %d (429 in all %d); at least %d wanted\n' "$hf_ra" "$hf_429" "$hf_want"
echo "HTTP connection cap (127.0.0.4, $((http_conns + 44)) at once): $(cat "$tmp/conncap")"
cc_held=$(field "$tmp/conncap" held)
cc_closed=$(field "$tmp/conncap" closed_at_once)

echo "spoofed sources: $(cat "$tmp/spoof")"
sp_sent=$(field "$tmp/spoof" sources)
rss_max=$(sort -n "$tmp/rss" | tail -1)
printf 'clb RSS: %d MB at start, peak %d MB, %d MB at the end; every 5 s (MB): %s\n' \
	$((rss_start / 1024)) $((rss_max / 1024)) $((rss_end / 1024)) \
	"$(awk 'NR % 5 == 1 {printf "%d ", $1 / 1024}' "$tmp/rss")"
echo "clb /metrics:"
echo "$metrics" | sed 's/^/  /'
grep -c 'over its' "$tmp/clb.log" | sed 's/^/clb log lines "source over its ... rate": /'

echo
printf 'load achieved: SIP flood %s/s of %d, HTTP flood %s/s of %d, spoofed %s sources at %s/s, SIPp %d calls launched of %d\n' \
	"$(field "$tmp/sip-flood" rate | tr -d /s)" "$sip_flood_rate" "$(field "$tmp/http-flood" rate | tr -d /s)" "$http_flood_rate" \
	"$sp_sent" "$(field "$tmp/spoof" rate | tr -d /s)" $((sip_ok + sip_failed)) "$calls"
echo "$(verdict "$(echo "$sip_ratio >= 0.999" | bc)") legit SIP calls >= 99.9% ($sip_ok/$calls)"
echo "$(verdict "$(echo "$http_ratio >= 0.999" | bc)") legit HTTP requests ok >= 99.9% ($http_ok/$http_req)"
echo "$(verdict $((sp_sent == spoof_sources && rss_max <= max_rss_mb * 1024))) memory bounded: peak RSS $((rss_max / 1024)) MB <= $max_rss_mb MB with $sp_sent of $spoof_sources spoofed sources"
echo "$(verdict $((sf_ra >= sf_want && sf_ra == sf_503))) SIP flooder answered 503 with Retry-After ($sf_ra, >= $sf_want wanted)"
echo "$(verdict $((hf_ra >= hf_want && hf_ra == hf_429))) HTTP flooder answered 429 with Retry-After ($hf_ra, >= $hf_want wanted)"
echo "$(verdict $((cc_held == http_conns && cc_closed == 44))) HTTP connections past $http_conns closed at once (held $cc_held, closed $cc_closed)"
