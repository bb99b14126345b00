#!/usr/bin/env bash
# Times `clb route` over 1,000,000 keys read from a pipe (issue 2's figure).
# A measurement, not a test: run it by hand on a quiet machine.
#   bench/route-1m.sh [CONFIG]     (default clb.yaml.example)
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-clb.yaml.example}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

go build -o "$tmp/clb" ./cmd/clb
# SIP-like default keys: from-tag + call-id.
awk 'BEGIN { srand(7); for (i = 0; i < 1000000; i++)
	printf "%08x%08x%06x@10.0.%d.%d\n", rand() * 4294967295, rand() * 4294967295, i, i % 256, int(i / 256) % 256 }' > "$tmp/keys"

for run in 1 2 3; do
	start=$(date +%s.%N)
	cat "$tmp/keys" | "$tmp/clb" route -config "$config" > "$tmp/out"
	end=$(date +%s.%N)
	printf 'run %d: %.3f s for %d keys\n' "$run" "$(echo "$end - $start" | bc)" "$(wc -l < "$tmp/out")"
done
