#!/usr/bin/env bash
# Resident memory of clb per idle SIP-over-WebSocket client (issue 12): N
# clients (default 9000) each open a wss:// connection to clb, REGISTER
# once through it (to clb-instance over UDP) and then stay idle, answering
# clb's pings. Prints clb's VmRSS before and after, and the difference per
# client, in bytes.
#
#   N=9000 TRANSPORT=wss bench/wss-idle.sh     # TRANSPORT=ws for plain WebSocket
#   CLB=/tmp/clb-other bench/wss-idle.sh       # another clb binary
#
# The clients live in one process of their own (bench/wsclients), so their
# memory is not clb's. Needs openssl for the self-signed certificate and an
# open-file limit above N (the hard limit is raised to for the run).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
n=${N:-9000}
transport=${TRANSPORT:-wss}
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -le "$((n + 100))" ]; then
	echo "the open-file limit $(ulimit -n) is too low for N=$n" >&2
	exit 1
fi
# CLB=path measures that clb binary instead of this tree's (to compare
# builds side by side in one run).
clbbin=${CLB:-$tmp/clb}
[ -n "${CLB:-}" ] || go build -o "$clbbin" ./cmd/clb
go build -o "$tmp/clb-instance" ./cmd/clb-instance
go build -o "$tmp/wsclients" ./bench/wsclients
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=clb \
	-addext subjectAltName=IP:127.0.0.1 -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null

"$tmp/clb-instance" -name a -sip 127.0.0.1:25071 -http 127.0.0.1:28081 -log warn >"$tmp/instance.out" 2>&1 &
pids+=("$!")
cat >"$tmp/clb.yaml" <<YAML
listen:
  sip: [udp://127.0.0.1:25060, $transport://127.0.0.1:27443/sip]
tls: {cert: $tmp/cert.pem, key: $tmp/key.pem}
ws: {max_connections: $((n + 100))}
instances:
  - {name: a, sip: udp://127.0.0.1:25071, http: http://127.0.0.1:28081}
YAML
"$clbbin" run -config "$tmp/clb.yaml" 2>"$tmp/clb.log" &
clb=$!
pids+=("$clb")
until grep -q '"clb started"' "$tmp/clb.log"; do
	kill -0 "$clb" 2>/dev/null || { cat "$tmp/clb.log"; exit 1; }
	sleep 0.1
done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
sleep 1
before=$(rss "$clb")
"$tmp/wsclients" -url "$transport://127.0.0.1:27443/sip" -n "$n" >"$tmp/clients.out" &
clients=$!
pids+=("$clients")
until grep -q '^ready' "$tmp/clients.out"; do
	kill -0 "$clients" 2>/dev/null || { echo "wsclients ended before it was ready" >&2; exit 1; }
	sleep 0.2
done
ready=$(awk '/^ready/ {print $2}' "$tmp/clients.out")
# Let the handshakes' garbage be collected and the heap settle.
sleep 5
after=$(rss "$clb")
echo "transport=$transport clients=$ready $(cat "$tmp/clients.out" | tr '\n' ' ')"
echo "clb VmRSS before ${before} kB, with the idle clients ${after} kB: $(( (after - before) * 1024 / ready )) B per client"
