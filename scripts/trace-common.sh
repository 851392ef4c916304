# trace-common.sh - sourced by the scripts/trace-* ops scripts (not run).
#
# What they share: the pin directory takt-trace uses, and the checks every
# one makes before touching BPF objects, each failing with a clear message:
# root, bpftool (and jq), and a live takt-trace that pinned its maps.
TRACE_PIN_DIR=${TAKT_TRACE_PIN_DIR:-/sys/fs/bpf/takt}

trace_die() {
	echo "$TRACE_PROG: $*" >&2
	exit 1
}

trace_need_root() {
	[ "$(id -u)" -eq 0 ] || trace_die "needs root: bpftool reads BPF programs and pinned maps (try: sudo $0 $*)"
}

trace_need_tools() {
	for t in "$@"; do
		command -v "$t" >/dev/null 2>&1 || trace_die "needs $t (scripts/bootstrap installs it)"
	done
}

# A takt-trace runs and pinned its maps in TRACE_PIN_DIR; sets TRACER_PID.
trace_need_tracer() {
	local info
	if [ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" != "bpf_fs" ] && [ ! -e "$TRACE_PIN_DIR/counters" ]; then
		trace_die "no takt-trace runs: /sys/fs/bpf is not even a bpf filesystem yet (start one: takt-trace wakeups --domain D)"
	fi
	[ -e "$TRACE_PIN_DIR/counters" ] && [ -e "$TRACE_PIN_DIR/info" ] ||
		trace_die "no takt-trace runs: nothing pinned at $TRACE_PIN_DIR (start one: takt-trace wakeups --domain D; or --pin-dir DIR)"
	info=$(bpftool map dump pinned "$TRACE_PIN_DIR/info" -j 2>/dev/null) ||
		trace_die "cannot read $TRACE_PIN_DIR/info with bpftool"
	TRACER_PID=$(jq -r '.[0].formatted.value.tracer_pid' <<<"$info")
	TRACER_DOMAIN=$(jq -r '.[0].formatted.value.domain' <<<"$info")
	kill -0 "$TRACER_PID" 2>/dev/null ||
		trace_die "stale pins at $TRACE_PIN_DIR: takt-trace pid $TRACER_PID is gone (the next takt-trace removes them)"
}
