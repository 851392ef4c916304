# lib.sh - what the install tests share (sourced; bash):
#   install_tree     cmake --install of the build tree into $tree, a fresh
#                    temporary prefix; sets $libdir
#   fail MSG, skip MSG (exit 77), need TOOL..., wait_for SECONDS COMMAND...
# $build is the build tree and $src this directory (the tests' first two
# arguments); everything goes under $work, removed at exit with every
# process in $pids.
set -euo pipefail
build=$(cd "$1" && pwd) src=$(cd "$2" && pwd)
work=$(mktemp -d /tmp/takt-install-XXXXXX)
tree=$work/prefix
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
fail() {
	echo "FAIL: $*" >&2
	for f in "$work"/*.log; do [ -e "$f" ] && { echo "---- $f"; cat "$f"; } >&2; done
	exit 1
}
skip() {
	echo "skipped: $*"
	exit 77
}
need() {
	local t
	for t; do command -v "$t" >/dev/null || skip "$t is not installed (scripts/bootstrap)"; done
}
# wait_for SECONDS COMMAND...: polls every 0.1 s
wait_for() {
	local n=$(($1 * 10)) i
	shift
	for ((i = 0; i < n; i++)); do "$@" && return 0; sleep 0.1; done
	return 1
}
install_tree() {
	cmake --install "$build" --prefix "$tree" >"$work/install.log" 2>&1 || fail "cmake --install $build --prefix $tree"
	libdir=$(dirname "$(find "$tree" -name libtakt-ipc.so -print -quit)")
	[ -d "$libdir" ] || fail "no libtakt-ipc.so installed under $tree"
	rm "$work/install.log"
}
