#!/bin/bash
# Checks lib/chroot-bin/pkg-map against a fixture: the layer order
# default <- family <- distro <- release, empty mappings, --missing-ok,
# --prefix, a missing map file (exit 2), an unmapped name (exit 1), the
# --element lookup through DIB_PKG_MAP_DIR, and bad JSON.
set -eu -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
pkgmap=$here/../../lib/chroot-bin/pkg-map
fixture=$here/fixtures/pkg-map.json
fail() { echo "FAIL: $*" >&2; exit 1; }

# check EXPECTED ARGS...: EXPECTED is the output with newlines turned into spaces
check() {
    local expected=$1 got
    shift
    got=$("$pkgmap" "$@" | tr '\n' ' ' | sed 's/ $//') || fail "pkg-map $* exited $?"
    [ "$got" = "$expected" ] || fail "pkg-map $*: expected '$expected', got '$got'"
}

check "nginx vim" --pkg-map "$fixture" --distro debian --release bookworm web editor
check "nginx-old vim" --pkg-map "$fixture" --distro debian --release bullseye web editor
check "nginx-light vim ubuntu-thing" --pkg-map "$fixture" --distro ubuntu --release noble web editor only-ubuntu
check "nginx-core vim-enhanced" --pkg-map "$fixture" --distro fedora --release 40 web editor
check "vim-enhanced" --pkg-map "$fixture" --distro centos --release 9 web editor
check "vim-eight" --pkg-map "$fixture" --distro centos --release 8-stream web editor
check "vim-small" --pkg-map "$fixture" --distro opensuse editor
check "" --pkg-map "$fixture" --distro debian dropped-everywhere
check "curl wget" --pkg-map "$fixture" --distro debian tools
check 'a"b' --pkg-map "$fixture" --distro debian --release bullseye escaped
check "vim unknown" --pkg-map "$fixture" --distro debian --missing-ok editor unknown
check "+vim" --pkg-map="$fixture" --distro=debian --prefix=+ editor
DISTRO_NAME=ubuntu DIB_RELEASE=noble check "nginx-light" --pkg-map "$fixture" web

set +e
"$pkgmap" --pkg-map "$fixture" --distro debian unknown >/dev/null 2>&1; rc=$?
[ "$rc" = 1 ] || fail "an unmapped name should exit 1, got $rc"
"$pkgmap" --element no-such-element --distro debian x >/dev/null 2>&1; rc=$?
[ "$rc" = 2 ] || fail "a missing map file should exit 2, got $rc"
"$pkgmap" --distro debian x >/dev/null 2>&1; rc=$?
[ "$rc" = 1 ] || fail "no --element should exit 1, got $rc"
set -e
check "x" --element no-such-element --distro debian --missing-ok x

# --element finds <dir>/<element>.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$fixture" "$work/myelement"
DIB_PKG_MAP_DIR=$work check "nginx-light" --element myelement --distro ubuntu web

# Invalid JSON is an error, not a silent empty map.
printf '{ "default": { "a": "b", }' > "$work/broken"
set +e
"$pkgmap" --pkg-map "$work/broken" --distro debian a >/dev/null 2>&1; rc=$?
set -e
[ "$rc" = 1 ] || fail "broken JSON should exit 1, got $rc"

echo "ok: pkg-map lookups"
