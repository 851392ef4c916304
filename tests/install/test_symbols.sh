#!/usr/bin/env bash
# test_symbols.sh - the installed libraries, shared and static, define no
# global symbol but the public API: the TAKT_API functions of
# include/takt/*.h (each library exactly those of its header), and in a
# -DTAKT_FAULTS=ON build (TAKT_FAULTS=1) the tests' fault hook. The shared ones carry their soname and every export a
# version of the version script; the static ones hold machine code, not
# LTO bytecode, so any compiler links them.
#   test_symbols.sh BUILD_DIR TESTS_INSTALL_DIR
source "$(dirname "$0")/lib.sh"
[ -z "${TAKT_SANITIZER:-}" ] ||
	skip "a $TAKT_SANITIZER build: its libraries need the sanitizer's runtime and define its symbols (run on a normal build)"
need nm objdump readelf
install_tree
headers=$src/../../include/takt

# The TAKT_API functions of one header, one per line, sorted.
api_of() {
	sed -n 's/^TAKT_API[^(]*[^A-Za-z0-9_]\(takt_[A-Za-z0-9_]*\)[[:space:]]*(.*/\1/p' "$headers/$1" | sort -u
}
# Global symbols a file defines, one per line, sorted: the dynamic table of
# a shared library (without the version nodes), the symbol table of an
# archive. Version suffixes (@@TAKT_IPC_0.1) are cut.
globals_of() {
	case $1 in
	*.a) nm -g --defined-only "$1" | awk 'NF == 3 { print $3 }' ;;
	*) nm -D --defined-only "$1" | awk 'NF == 3 && $2 != "A" { print $3 }' ;;
	esac | sed 's/@.*//' | sort -u
}

# Not API: the hook a -DTAKT_FAULTS=ON build calls (libipc/fault.h), which
# only that build exports (libtakt-ipc-faults.map, its own version node)
# and leaves global in the archive; in the archives, the SDT probes'
# anchor, weak and hidden as the compiler makes it (takt_public_archive,
# libipc/CMakeLists.txt).
extra_ipc=""
[ "${TAKT_FAULTS:-0}" = 1 ] && extra_ipc=takt__fault_hook
sdt=_.stapsdt.base
checked=0
for lib in ipc exec; do
	want=$(api_of $lib.h)
	[ "$(wc -l <<<"$want")" -ge 20 ] || fail "found only $(wc -l <<<"$want") TAKT_API functions in $headers/$lib.h"
	if [ $lib = ipc ] && [ -n "$extra_ipc" ]; then want=$(printf '%s\n%s\n' "$want" "$extra_ipc" | sort -u); fi
	for f in "$libdir/libtakt-$lib.a" "$libdir/libtakt-$lib.so"; do
		[ -e "$f" ] || fail "$f is not installed"
		have=$(globals_of "$f")
		if [[ $f == *.a ]]; then
			[ "$(nm "$f" | awk '$3 == "'$sdt'" { print $2 }')" = W ] || fail "$f: $sdt is not weak as compiled"
			have=$(grep -vxF $sdt <<<"$have")
		fi
		extra=$(comm -13 <(echo "$want") <(echo "$have"))
		missing=$(comm -23 <(echo "$want") <(echo "$have"))
		[ -z "$extra" ] || fail "$f defines global symbols outside the public API: $(echo $extra)"
		[ -z "$missing" ] || fail "$f does not export public functions of $lib.h: $(echo $missing)"
		echo "ok: $(basename "$f"): $(wc -l <<<"$have") global symbols, all public"
		checked=$((checked + 1))
	done

	# the shared library: soname with the major version, every export versioned
	so=$(readlink -f "$libdir/libtakt-$lib.so")
	soname=$(readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
	[[ $soname =~ ^libtakt-$lib\.so\.[0-9]+$ ]] || fail "$so has soname '$soname'"
	[ -e "$libdir/$soname" ] || fail "$libdir/$soname (the soname's link) is not installed"
	node=TAKT_${lib^^}_
	unversioned=$(objdump -T "$so" | awk '$2 == "g" && $NF ~ /^takt_/ && $(NF-1) !~ /^'"$node"'/ { print $NF }')
	[ -z "$unversioned" ] || fail "$so exports without a $node* version: $(echo $unversioned)"
	echo "ok: $(basename "$so"): soname $soname, every export versioned $node*"

	# the archive: plain objects (no .gnu.lto_ sections), with the SDT
	# probes of the shared library (takt-trace attaches to static programs)
	if objdump -h "$libdir/libtakt-$lib.a" | grep -q '\.gnu\.lto_'; then
		fail "libtakt-$lib.a holds LTO bytecode: only the compiler that made it could link it"
	fi
	probes_a=$(readelf -n "$libdir/libtakt-$lib.a" | grep -c NT_STAPSDT || true)
	probes_so=$(readelf -n "$so" | grep -c NT_STAPSDT || true)
	[ "$probes_a" = "$probes_so" ] || fail "libtakt-$lib.a has $probes_a SDT probes, $(basename "$so") $probes_so"
	echo "ok: libtakt-$lib.a: plain objects, $probes_a SDT probes as the shared library"
done
[ $checked = 4 ] || fail "checked $checked libraries, expected 4"
echo "ok: the installed libraries export only the public API"
