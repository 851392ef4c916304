#!/usr/bin/env bash
# test_units.sh - the installed systemd units pass `systemd-analyze verify`
# (offline: no systemd needs to run; it checks every key, that ExecStart is
# an executable of the installed tree and that the Documentation= man page
# is installed) and say what docs/operations.md promises.
#   test_units.sh BUILD_DIR TESTS_INSTALL_DIR
source "$(dirname "$0")/lib.sh"
need systemd-analyze readelf
install_tree
system=$(find "$tree" -path '*/systemd/system/takt-broker.service')
user=$(find "$tree" -path '*/systemd/user/takt-broker.service')
[ -f "$system" ] || fail "no systemd/system/takt-broker.service under $tree"
[ -f "$user" ] || fail "no systemd/user/takt-broker.service under $tree"

# verify prints what it finds wrong (an unknown key, a bad value, a
# missing program or man page) and may still exit 0: any output fails.
export MANPATH=$tree/share/man
out=$(systemd-analyze verify "$system" 2>&1) || fail "systemd-analyze verify $system: $out"
[ -z "$out" ] || fail "systemd-analyze verify $system: $out"
echo "ok: systemd-analyze verify system/takt-broker.service"
mkdir -m 0700 "$work/xdg" # a user manager's runtime directory (%t)
out=$(XDG_RUNTIME_DIR=$work/xdg systemd-analyze --user verify "$user" 2>&1) || fail "systemd-analyze --user verify $user: $out"
[ -z "$out" ] || fail "systemd-analyze --user verify $user: $out"
echo "ok: systemd-analyze --user verify user/takt-broker.service"

# key=value as the unit must say it
expect() {
	grep -qxF "$2" "$1" || fail "$1 does not say $2"
}
# Type=notify when the broker can notify (built with libsystemd), else exec
if readelf -d "$tree/bin/takt-broker" | grep -q 'NEEDED.*\[libsystemd\.so'; then
	type=notify
else
	type=exec
fi
for u in "$system" "$user"; do
	expect "$u" "Type=$type"
	expect "$u" "ExecStart=$tree/bin/takt-broker --foreground"
	expect "$u" "RuntimeDirectory=takt"
	expect "$u" "RuntimeDirectoryPreserve=restart"
	expect "$u" "Restart=on-failure"
done
expect "$system" "RuntimeDirectoryMode=0755"
expect "$user" "RuntimeDirectoryMode=0700"
echo "ok: both units are Type=$type, keep the runtime directory across restarts, restart on failure"
