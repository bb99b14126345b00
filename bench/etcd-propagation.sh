#!/usr/bin/env bash
# How fast clb nodes sharing etcd take up a change (issue 11, SPEC 11):
#   - propagation: an admin action posted to one node, to every node routing
#     by it (long polls of each node's status): median and max over ACTIONS
#     actions (target ≤ 100 ms on loopback);
#   - watch load: admin actions written straight into etcd at each rate of
#     RATES (0: as fast as etcd takes them), BATCH per transaction, then a
#     marker: how soon every node had applied them all, and the rate it
#     applied them at. A node that keeps up applies them within milliseconds
#     of the last write.
# A measurement, not a test: run it on a quiet machine, under the bench lock:
#   flock /tmp/clb-bench.lock bench/etcd-propagation.sh
#   NODES=3 INSTANCES=20 ACTIONS=100 RATES=500,1000,2000,0 BATCH=1 D=3s (defaults)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
need etcd:etcd-server

go build -o "$tmp/clb" ./cmd/clb
go build -o "$tmp/etcdprop" ./bench/etcdprop
echo "$(nproc) CPUs; $(etcd --version | head -1)"
"$tmp/etcdprop" -clb "$tmp/clb" -nodes "${NODES:-3}" -instances "${INSTANCES:-20}" -actions "${ACTIONS:-100}" \
	-rates "${RATES:-500,1000,2000,0}" -batch "${BATCH:-1}" -d "${D:-3s}"
