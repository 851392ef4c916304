#!/usr/bin/env bash
# test_man.sh - the man pages of the programs are installed, made from
# what each prints for --help and --version (help2man).
#   test_man.sh BUILD_DIR TESTS_INSTALL_DIR
source "$(dirname "$0")/lib.sh"
[ -d "$build/man" ] || skip "no man pages built: help2man was not found when $build was configured"
install_tree
for p in takt-broker takt takt-trace; do
	bin=$tree/bin/$p
	if [ ! -x "$bin" ]; then
		[ $p = takt-trace ] && { echo "ok: takt-trace is not built here, nor its page"; continue; }
		fail "$bin is not installed"
	fi
	page=$tree/share/man/man1/$p.1
	[ -f "$page" ] || fail "$page is not installed"
	version=$("$bin" --version) || fail "$p --version failed"
	grep -q "^\.TH \"\?${p^^}\"\? \"\?1\"\?" "$page" || fail "$page has no .TH ${p^^} 1 header"
	grep -qF "$version" "$page" || fail "$page does not carry '$version' ($p --version)"
	grep -q '^\.SH "\?SEE ALSO' "$page" || fail "$page has no SEE ALSO (docs/takt.h2m)"
	# every long option of --help made it into the page (help2man escapes '-')
	for opt in $("$bin" --help | grep -o -- '--[a-z][a-z-]*' | sort -u); do
		grep -qF -- "${opt//-/\\-}" "$page" || fail "$page lacks $opt of '$p --help'"
	done
	echo "ok: $p.1 ($version)"
done
