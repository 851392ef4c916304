#!/usr/bin/env bash
# test_trace_scripts.sh - the ops scripts read a running takt-trace's pinned
# maps and programs through bpftool, fail clearly without one (or without
# root), and the bpftrace fallback measures one subscriber thread.
#
#   test_trace_scripts.sh TAKT_TRACE TAKT_BROKER SENSOR CONTROLLER SCRIPTS_DIR SERVER CLIENT
#
# A real broker on a private domain; the executor example (controller) on
# the 1 kHz sensor, traced. The tracer pins at the default /sys/fs/bpf/takt,
# so the scripts run with their defaults. Every wait is bounded.
set -euo pipefail
trace=$1 broker=$2 sensor=$3 controller=$4 scripts=$5 server=$6 client=$7
pin=/sys/fs/bpf/takt

if [ "$(id -u)" -ne 0 ]; then
	echo "skipped: needs root (takt-trace and bpftool need BPF privileges)"
	exit 77
fi
for t in bpftool jq column; do
	command -v $t >/dev/null || { echo "skipped: $t is not installed (scripts/bootstrap)"; exit 77; }
done
if [ -e $pin/info ]; then
	other=$(bpftool map dump pinned $pin/info -j 2>/dev/null | jq -r '.[0].formatted.value.tracer_pid' || echo 0)
	if kill -0 "$other" 2>/dev/null; then
		echo "skipped: takt-trace pid $other already pins its maps at $pin"
		exit 77
	fi
fi

run=$(mktemp -d /tmp/takt-trace-scripts-XXXXXX)
export TAKT_RUNTIME_DIR=$run TAKT_DOMAIN=t-scripts-$$
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$run"
}
trap cleanup EXIT
fail() {
	echo "FAIL: $*" >&2
	for f in "$run"/*.log; do [ -e "$f" ] && { echo "---- $f"; cat "$f"; } >&2; done
	exit 1
}
# wait_for SECONDS COMMAND...: polls every 0.1 s
wait_for() {
	local n=$(($1 * 10))
	shift
	for ((i = 0; i < n; i++)); do "$@" && return 0; sleep 0.1; done
	return 1
}
expect_fail() { # expect_fail PATTERN COMMAND...: exit status 1, message matching
	local out rc=0
	out=$("${@:2}" 2>&1) || rc=$?
	[ "$rc" = 1 ] || fail "'${*:2}' exited $rc, expected 1: $out"
	grep -q "$1" <<<"$out" || fail "'${*:2}' said '$out', expected /$1/"
	echo "ok: ${*:2} -> $out"
}

"$broker" --foreground --domain "$TAKT_DOMAIN" >"$run/broker.log" 2>&1 &
pids+=($!)
wait_for 10 test -S "$run/takt-$TAKT_DOMAIN.sock" || fail "takt-broker did not start"

# No tracer yet: the scripts say so.
expect_fail "no takt-trace runs" "$scripts/trace-maps"
expect_fail "no takt-trace runs" "$scripts/trace-progs"
if id nobody >/dev/null 2>&1 && command -v setpriv >/dev/null; then
	# A copy nobody can read: the checkout may sit in a private directory.
	nb=$(mktemp -d /tmp/takt-trace-nobody-XXXXXX)
	cp "$scripts/trace-maps" "$scripts/trace-common.sh" "$nb/"
	chmod 755 "$nb" "$nb/trace-maps" && chmod 644 "$nb/trace-common.sh"
	expect_fail "needs root" setpriv --reuid=nobody --regid=nogroup --clear-groups "$nb/trace-maps"
	rm -rf "$nb"
fi

"$trace" wakeups --json --domain "$TAKT_DOMAIN" >"$run/trace.out" 2>"$run/trace.log" &
tracer=$!
pids+=($tracer)
wait_for 15 grep -q "^Tracing " "$run/trace.log" || fail "takt-trace did not start tracing"
for m in counters hists info; do [ -e $pin/$m ] || fail "$pin/$m is not pinned"; done

"$controller" 4 >"$run/controller.log" 2>&1 &
pids+=($!)
sleep 0.3
"$sensor" 3 >"$run/sensor.log" 2>&1 &
sensor_pid=$!
pids+=($sensor_pid)
sleep 1

# Programs: the take program ran while the sensor publishes.
progs=$("$scripts/trace-progs" --json --sample 1) || fail "trace-progs failed"
jq -e '.programs | length >= 10' <<<"$progs" >/dev/null || fail "trace-progs lists too few programs: $progs"
jq -e '[.programs[] | select(.name == "on_take" and .run_cnt > 0 and .run_time_ns > 0)] | length == 1' \
	<<<"$progs" >/dev/null || fail "on_take did not run: $progs"
"$scripts/trace-progs" --sample 1 | grep -q "on_sched_switch" || fail "trace-progs table lacks on_sched_switch"
echo "ok: trace-progs"

wait "$sensor_pid" || fail "the sensor failed"
sleep 0.5
maps=$("$scripts/trace-maps" --json) || fail "trace-maps failed"
jq -e '.counters.publish > 0 and .counters.take >= .counters.publish and .counters.notify <= .counters.take' \
	<<<"$maps" >/dev/null || fail "counters do not add up: $(jq -c .counters <<<"$maps")"
# every take whose publish was seen (a subscriber already awake may take a
# sample before the publisher's probe fires: take_no_publish)
jq -e '[.hists[] | select(.by == "topic" and .name == "sensor/imu" and .stage == "publish_to_take")][0].count
	== (.counters.take - .counters.take_no_publish)' <<<"$maps" >/dev/null ||
	fail "publish_to_take histogram does not count every take: $(jq -c .counters <<<"$maps")"
jq -e '[.hists[] | select(.by == "task" and .stage == "callback")] | length > 0' <<<"$maps" >/dev/null ||
	fail "no per-task histogram"
table=$("$scripts/trace-maps") || fail "trace-maps (table) failed"
grep -q "^publish " <<<"$table" && grep -q "sensor/imu" <<<"$table" || fail "trace-maps table: $table"
echo "ok: trace-maps ($(jq -c '.counters | {publish, notify, take, wakeups}' <<<"$maps"))"

kill -INT "$tracer"
wait_for 10 sh -c "! kill -0 $tracer 2>/dev/null" || fail "takt-trace ignored SIGINT"
for m in counters hists info; do [ ! -e $pin/$m ] || fail "$pin/$m still pinned after exit"; done
[ ! -e $pin ] || fail "$pin still exists after exit"
expect_fail "no takt-trace runs" "$scripts/trace-maps" --json

# The bpftrace fallback on one subscriber thread (the controller's dispatch
# thread is its main thread).
if command -v bpftrace >/dev/null; then
	"$controller" 6 >"$run/controller2.log" 2>&1 &
	ctl=$!
	pids+=($ctl)
	sleep 0.3
	"$scripts/trace-wakeup-bt" --tid "$ctl" --duration 5 >"$run/bt.log" 2>&1 &
	pids+=($!)
	wait_for 15 grep -q "Attaching" "$run/bt.log" || fail "bpftrace did not attach"
	"$sensor" 1 >"$run/sensor2.log" 2>&1 || fail "the sensor failed"
	wait_for 15 grep -q "@wakeup_to_oncpu_us" "$run/bt.log" || fail "no histogram from trace-wakeup-bt"
	grep -q "@notify_to_wakeup_us" "$run/bt.log" || fail "no notify_to_wakeup histogram"
	echo "ok: trace-wakeup-bt"
	# A request/response round trip, hop by hop (the service probes).
	"$server" 20 >"$run/server.log" 2>&1 &
	srv=$!
	pids+=($srv)
	sleep 0.3
	"$scripts/trace-service-bt" --pid "$srv" --duration 4 >"$run/svc-bt.log" 2>&1 &
	pids+=($!)
	wait_for 15 grep -q "Attaching" "$run/svc-bt.log" || fail "bpftrace did not attach to the service probes"
	for i in 1 2 3 4 5; do "$client" a b c d >"$run/client.log" 2>&1 || fail "the service client failed"; done
	wait_for 15 grep -q "@round_trip_us" "$run/svc-bt.log" || fail "no round-trip histogram from trace-service-bt"
	for h in send_to_take_us take_to_respond_us respond_to_take_us; do
		grep -q "@$h" "$run/svc-bt.log" || fail "no $h histogram from trace-service-bt"
	done
	echo "ok: trace-service-bt"
else
	echo "bpftrace is not installed: trace-wakeup-bt not run"
fi
echo "PASS"
