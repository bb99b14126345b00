#!/usr/bin/env bash
# Memory per idle SIP client over WebSocket (issue 12), clb against
# Kamailio 5.6 side by side in one run: N clients (default 9000) each open
# a connection, REGISTER once through the balancer (to clb-instance over
# UDP; Kamailio: dispatcher, stateless forward(), X-CLB-Key added for the
# instance) and then stay idle. The same client program (bench/wsclients)
# for every case: clb over ws:// and wss://, Kamailio over tcp://, tls://,
# ws:// and wss:// (its websocket and tls modules, OpenSSL's defaults;
# one TCP worker: with two, Kamailio 5.6.3's TLS workers fail handshakes
# with OpenSSL 3, "BIO routines::unsupported method", and die within a few
# thousand clients).
# For each case, a fresh balancer: its resident memory (VmRSS) and PSS
# summed over its processes (Kamailio forks; its shared memory counts once
# in PSS, in every process in RSS) before the clients and SETTLE seconds
# after the last one registered, and the growth per client.
#
#   N=9000 SETTLE=20 bench/wss-idle.sh [ROUNDS]
#   CASES="clb:wss kamailio:wss" bench/wss-idle.sh   # some cases only
#   CLB=/tmp/clb-other bench/wss-idle.sh             # another clb binary
#
# A measurement, not a test: run it under flock /tmp/clb-bench.lock. Needs
# openssl for the self-signed certificate, the open-file limit above N (the
# hard limit is raised to for the run) and the Kamailio packages
# kamailio-tls-modules and kamailio-websocket-modules (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
rounds=${1:-1}
n=${N:-9000}
settle=${SETTLE:-20}
cases=${CASES:-clb:ws clb:wss kamailio:tcp kamailio:tls kamailio:ws kamailio:wss}
need kamailio:kamailio
[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/websocket.so ] ||
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kamailio-tls-modules kamailio-websocket-modules >/dev/null
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -le "$((n + 100))" ]; then
	echo "the open-file limit $(ulimit -n) is too low for N=$n" >&2
	exit 1
fi
clbbin=${CLB:-$tmp/clb}
[ -n "${CLB:-}" ] || go build -o "$clbbin" ./cmd/clb
go build -o "$tmp/clb-instance" ./cmd/clb-instance
go build -o "$tmp/wsclients" ./bench/wsclients
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=clb \
	-addext subjectAltName=IP:127.0.0.1 -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null

"$tmp/clb-instance" -name a -sip 127.0.0.1:26071 -http 127.0.0.1:26081 -log warn >"$tmp/instance.out" 2>&1 &
pids+=("$!")

# One port per transport, the same for both balancers.
declare -A port=([tcp]=27440 [tls]=27441 [ws]=27442 [wss]=27443)
cat >"$tmp/clb.yaml" <<YAML
listen:
  sip: [udp://127.0.0.1:26060, ws://127.0.0.1:${port[ws]}/sip, wss://127.0.0.1:${port[wss]}/sip]
tls: {cert: $tmp/cert.pem, key: $tmp/key.pem}
ws: {max_connections: $((n + 100))}
instances:
  - {name: a, sip: udp://127.0.0.1:26071, http: http://127.0.0.1:26081}
YAML
echo "1 sip:127.0.0.1:26071" >"$tmp/dispatcher.list"
cat >"$tmp/kamailio.cfg" <<EOF
#!KAMAILIO
debug=0
log_stderror=yes
children=2
tcp_children=1
tcp_max_connections=$((n + 1000))
tls_max_connections=$((n + 1000))
tcp_connection_lifetime=3600
tcp_accept_no_cl=yes
enable_tls=yes
listen=udp:127.0.0.1:26060
listen=tcp:127.0.0.1:${port[tcp]}
listen=tls:127.0.0.1:${port[tls]}
listen=tcp:127.0.0.1:${port[ws]}
listen=tls:127.0.0.1:${port[wss]}
$(kamailio_modules "$tmp/dispatcher.list")
loadmodule "tls.so"
modparam("tls", "certificate", "$tmp/cert.pem")
modparam("tls", "private_key", "$tmp/key.pem")
modparam("tls", "tls_method", "TLSv1.2+")
modparam("tls", "verify_certificate", 0)
modparam("tls", "require_certificate", 0)
loadmodule "xhttp.so"
loadmodule "websocket.so"
request_route {
	if (!mf_process_maxfwd_header("10")) {
		sl_send_reply("483", "Too Many Hops");
		exit;
	}
	force_rport(); # the answer goes back over the client's connection
	append_hf("X-CLB-Key: \$ci\r\n");
	if (!ds_select_dst("1", "0")) {
		sl_send_reply("503", "Service Unavailable");
		exit;
	}
	forward();
	exit;
}
event_route[xhttp:request] {
	set_reply_close();
	set_reply_no_connect();
	if (\$Rp != ${port[ws]} && \$Rp != ${port[wss]}) {
		xhttp_reply("403", "Forbidden", "", "");
		exit;
	}
	if (\$hdr(Upgrade) =~ "websocket" && \$hdr(Connection) =~ "Upgrade" && \$rm =~ "GET") {
		if (ws_handle_handshake()) {
			exit;
		}
	}
	xhttp_reply("404", "Not Found", "", "");
}
EOF

# measure NAME TRANSPORT PID...: the clients on TRANSPORT held against the
# balancer PIDs; prints its line and sets per (settled PSS growth per
# client, B).
measure() {
	local name=$1 tr=$2 url
	shift 2
	url=$tr://127.0.0.1:${port[$tr]}
	case $tr in ws | wss) url=$url/sip ;; esac
	local before before_pss
	before=$(kb VmRSS "$@")
	before_pss=$(pss "$@")
	: >"$tmp/clients.out" # before the loop below reads it
	"$tmp/wsclients" -url "$url" -n "$n" >"$tmp/clients.out" 2>"$tmp/clients.err" &
	local clients=$!
	pids+=("$clients")
	until grep -q '^ready' "$tmp/clients.out"; do
		kill -0 "$clients" 2>/dev/null || { echo "wsclients ended before it was ready" >&2; cat "$tmp/clients.err" >&2; return 1; }
		sleep 0.2
	done
	local ready failed
	read -r _ ready _ failed <"$tmp/clients.out"
	[ "$ready" -gt 0 ] || { echo "$name $tr: no client registered" >&2; head -3 "$tmp/clients.err" >&2; return 1; }
	sleep "$settle"
	local after after_pss
	after=$(kb VmRSS "$@")
	after_pss=$(pss "$@")
	stop "$clients"
	per=$(((after_pss - before_pss) * 1024 / ready))
	printf '%-8s %-3s %5d clients %3d failed  RSS MB %6s -> %6s (%6d B/client)  PSS MB %6s -> %6s (%6d B/client)  load %s\n' \
		"$name" "$tr" "$ready" "$failed" "$(mb "$before")" "$(mb "$after")" $(((after - before) * 1024 / ready)) \
		"$(mb "$before_pss")" "$(mb "$after_pss")" "$per" "$(cut -d' ' -f1-3 /proc/loadavg)"
	[ -s "$tmp/clients.err" ] && head -3 "$tmp/clients.err" >&2
	return 0
}

declare -A sum=()
for round in $(seq "$rounds"); do
	echo "round $round: $n idle clients each, settled ${settle}s"
	for c in $cases; do
		lb=${c%%:*} tr=${c##*:}
		if [ "$lb" = clb ]; then
			"$clbbin" run -config "$tmp/clb.yaml" 2>"$tmp/lb.log" &
		else
			kamailio -f "$tmp/kamailio.cfg" -DD -E -m 2048 >"$tmp/lb.log" 2>&1 &
		fi
		p=$!
		pids+=("$p")
		wait_port "${port[$tr]}" "$p" || { tail -5 "$tmp/lb.log" >&2; exit 1; }
		sleep 2
		procs=$p
		[ "$lb" = clb ] || procs=$(pgrep -d ' ' -f "kamailio -f $tmp/kamailio.cfg")
		# shellcheck disable=SC2086 # procs is a list of PIDs
		measure "$lb" "$tr" $procs || { echo "$c: no figure (its processes: $procs; now: $(pgrep -d ' ' -f "$tmp/" || true))" >&2; tail -5 "$tmp/lb.log" >&2; exit 1; }
		sum[$c]=$((${sum[$c]:-0} + per))
		stop "$p"
	done
done

# The mean over the rounds, per client (PSS), and clb's against
# Kamailio's and against the flat 4.5 kB of issue 12.
kib() { echo "scale=1; $1 / 1024" | bc; }
ratio() { echo "scale=2; $1 / $2" | bc; }
echo "mean over $rounds round(s), PSS growth per idle client:"
for c in $cases; do
	echo "  $c $(kib $((sum[$c] / rounds))) kB"
done
for c in clb:ws clb:wss; do
	[ -n "${sum[$c]:-}" ] || continue
	line="  $c / 4.5 kB = $(ratio "${sum[$c]}" $((4608 * rounds)))"
	for k in kamailio:tcp kamailio:tls kamailio:ws kamailio:wss; do
		[ -n "${sum[$k]:-}" ] && [ "${sum[$k]}" -gt 0 ] && line="$line, / $k = $(ratio "${sum[$c]}" "${sum[$k]}")"
	done
	echo "$line"
done
