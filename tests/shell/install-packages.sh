#!/bin/bash
# Checks lib/chroot-bin/install-packages without root or a chroot: a fake
# apt-get / dnf / zypper on PATH records the calls; pkg-map is the real one.
set -eu -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$here/../../lib/chroot-bin
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

mkdir -p "$work/fake" "$work/maps"
for tool in apt-get dnf zypper; do
    printf '#!/bin/bash\necho "%s $*" >> "%s"\n' "$tool" "$work/calls" > "$work/fake/$tool"
    chmod +x "$work/fake/$tool"
done
cp "$here/fixtures/pkg-map.json" "$work/maps/web-element"
export PATH=$work/fake:$bin:$PATH DIB_PKG_MAP_DIR=$work/maps
unset DISTRO_FAMILY

run() { : > "$work/calls"; "$bin/install-packages" "$@" >/dev/null 2>&1 || fail "install-packages $* exited $?"; }
# last_call: the final recorded command, without the apt-get -o options
last_call() { tail -n 1 "$work/calls" | sed -e 's/ -o [^ ]*//g'; }
expect() { local got; got=$(last_call); [ "$got" = "$1" ] || fail "expected '$1', got '$got'"; }

export DISTRO_NAME=debian DIB_RELEASE=bookworm
run vim curl;            expect "apt-get -y --no-install-recommends install vim curl"
run -e vim;              expect "apt-get -y --no-install-recommends purge vim"
run -u;                  expect "apt-get -y --no-install-recommends dist-upgrade"
run -m web-element web tools; expect "apt-get -y --no-install-recommends install nginx curl wget"
run -d vim;              expect "apt-get -y --no-install-recommends install --download-only vim"
run -m web-element dropped-everywhere
[ ! -s "$work/calls" ] || fail "an empty mapped list must not call apt-get: $(cat "$work/calls")"

export DISTRO_NAME=fedora DIB_RELEASE=40
run -m web-element web;  expect "dnf -y install nginx-core"
run -e vim;              expect "dnf -y remove vim"
export DISTRO_NAME=opensuse DIB_RELEASE=15.5
run -m web-element editor; expect "zypper --non-interactive install --no-recommends vim-small"

set +e
"$bin/install-packages" -m web-element no-mapping >/dev/null 2>&1; rc=$?
set -e
[ "$rc" != 0 ] || fail "a pkg-map failure must fail install-packages"

echo "ok: install-packages command lines"
