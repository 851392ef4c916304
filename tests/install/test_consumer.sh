#!/usr/bin/env bash
# test_consumer.sh - a program built out of the tree against the installed
# takt, four ways: pkg-config shared and --static (fully static), CMake
# find_package(takt) with takt::exec and takt::exec-static; each run
# against a takt-broker started from the installed tree (consumer/consumer.c
# publishes, subscribes and runs an executor task).
#   test_consumer.sh BUILD_DIR TESTS_INSTALL_DIR
source "$(dirname "$0")/lib.sh"
[ -z "${TAKT_SANITIZER:-}" ] ||
	skip "a $TAKT_SANITIZER build: its libraries need the sanitizer's runtime and define its symbols (run on a normal build)"
need cc pkg-config cmake readelf
install_tree
cd "$work"

# needed LIB: the shared libraries a program needs (DT_NEEDED), one line
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' '; }

# pkg-config
export PKG_CONFIG_PATH=$libdir/pkgconfig
version=$(pkg-config --modversion takt-exec) || fail "pkg-config does not find takt-exec.pc in $PKG_CONFIG_PATH"
[ "$version" = "$(pkg-config --modversion takt-ipc)" ] || fail "takt-exec $version, takt-ipc $(pkg-config --modversion takt-ipc)"
# shellcheck disable=SC2046 # pkg-config's words are the compiler's arguments
cc -Wall -Werror -o pc-shared "$src/consumer/consumer.c" $(pkg-config --cflags --libs takt-exec) 2>cc.log ||
	fail "cc with pkg-config --libs takt-exec"
# shellcheck disable=SC2046
cc -static -Wall -Werror -o pc-static "$src/consumer/consumer.c" $(pkg-config --static --cflags --libs takt-exec) 2>cc.log ||
	fail "cc -static with pkg-config --static --libs takt-exec"
rm -f cc.log
[[ $(needed pc-shared) == *libtakt-exec.so.0* && $(needed pc-shared) == *libtakt-ipc.so.0* ]] ||
	fail "pc-shared needs $(needed pc-shared), not libtakt-exec.so.0 and libtakt-ipc.so.0"
[ -z "$(needed pc-static)" ] || fail "pc-static (cc -static) needs $(needed pc-static)"
echo "ok: built with pkg-config takt-exec $version (shared and --static)"

# CMake
cmake -S "$src/consumer" -B cmake -DCMAKE_PREFIX_PATH="$tree" -DCMAKE_BUILD_TYPE=Release >cmake.log 2>&1 ||
	fail "cmake configure with find_package(takt)"
cmake --build cmake >>cmake.log 2>&1 || fail "cmake --build"
rm -f cmake.log
[[ $(needed cmake/consumer) == *libtakt-exec.so.0* ]] || fail "consumer needs $(needed cmake/consumer), not libtakt-exec.so.0"
[[ $(needed cmake/consumer-static) != *libtakt* ]] || fail "consumer-static needs $(needed cmake/consumer-static)"
echo "ok: built with find_package(takt) (takt::exec and takt::exec-static)"

# a broker from the installed tree, on a private domain and directory
export TAKT_RUNTIME_DIR=$work/run TAKT_DOMAIN=t-install-$$
mkdir -m 0700 "$TAKT_RUNTIME_DIR"
"$tree/bin/takt-broker" --foreground >broker.log 2>&1 &
pids+=($!)
wait_for 10 grep -q "domain '$TAKT_DOMAIN' ready" broker.log || fail "the installed takt-broker did not get ready"

# the shared builds must load the installed libraries (pc-shared has no
# rpath: LD_LIBRARY_PATH; CMake's build gets one)
[[ $(LD_LIBRARY_PATH=$libdir ldd pc-shared) == *"$libdir/libtakt-ipc.so.0"* ]] || fail "pc-shared does not load $libdir/libtakt-ipc.so.0"
[[ $(ldd cmake/consumer) == *"$libdir/libtakt-exec.so.0"* ]] || fail "consumer does not load $libdir/libtakt-exec.so.0"
for p in pc-shared pc-static cmake/consumer cmake/consumer-static; do
	out=$(LD_LIBRARY_PATH=$libdir timeout 30 "./$p" 2>&1) || fail "$p against the installed broker: $out"
	[ "$out" = "consumer: ok" ] || fail "$p said: $out"
	echo "ok: $p ran against the installed broker"
done
