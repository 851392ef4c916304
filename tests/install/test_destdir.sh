#!/usr/bin/env bash
# test_destdir.sh - a staged install (DESTDIR, as packages are built) puts
# everything under DESTDIR + prefix, and what it writes names the prefix,
# never DESTDIR.
#   test_destdir.sh BUILD_DIR TESTS_INSTALL_DIR
source "$(dirname "$0")/lib.sh"
stage=$work/stage prefix=/opt/takt-test
DESTDIR=$stage cmake --install "$build" --prefix $prefix >"$work/install.log" 2>&1 || fail "DESTDIR=$stage cmake --install"
rm "$work/install.log"
outside=$(cd "$stage" && find . -mindepth 1 -not -path ".$prefix" -not -path ".$prefix/*" -not -type d)
[ -z "$outside" ] || fail "installed outside $prefix: $outside"
if grep -rlF "$stage" "$stage"; then fail "the files above name DESTDIR ($stage)"; fi
for f in $(find "$stage" -name '*.pc'); do
	grep -qx "prefix=$prefix" "$f" || fail "$f: $(grep '^prefix=' "$f"), expected $prefix"
done
grep -rqx "ExecStart=$prefix/bin/takt-broker --foreground" "$stage$prefix/lib/systemd" ||
	fail "the units do not start $prefix/bin/takt-broker"
echo "ok: DESTDIR install under $prefix, files name $prefix only ($(find "$stage" -type f | wc -l) files)"
