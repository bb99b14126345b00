# Shared by the bench scripts: source it after `set -euo pipefail`.
#
#   need CMD:PACKAGE ...   apt-get install the packages whose command is missing
#   $tmp                   a scratch folder, removed on exit
#   pids+=("$!")           processes to end on exit (only ones the script started)

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
