#!/bin/bash
# shellcheck disable=SC2016  # the quoted $VARs are for the child shells
# Checks lib/host-bin/sudo (the stand-in used when building as root).
set -eu -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
sudo_shim=$here/../../lib/host-bin/sudo
fail() { echo "FAIL: $*" >&2; exit 1; }
if [ "$(id -u)" != 0 ]; then
    echo "skip: the sudo stand-in only works as root"
    exit 0
fi

[ "$("$sudo_shim" echo hi)" = hi ] || fail "plain command"
[ "$(KEEP=1 "$sudo_shim" -E sh -c 'echo $KEEP')" = 1 ] || fail "-E keeps the environment"
[ "$(HOME=/tmp "$sudo_shim" -H sh -c 'echo $HOME')" = /root ] || fail "-H sets HOME"
[ "$("$sudo_shim" -nEu root FOO=bar -- sh -c 'echo $FOO')" = bar ] || fail "clustered options, assignment, --"
[ "$("$sudo_shim" --preserve-env=PATH --user=root -s echo 'a b')" = "a b" ] || fail "-s quoting"
set +e
"$sudo_shim" sh -c 'exit 4'; rc=$?
[ "$rc" = 4 ] || fail "exit status must pass through, got $rc"
msg=$("$sudo_shim" -u nobody true 2>&1); rc=$?
set -e
[ "$rc" != 0 ] || fail "-u nobody must fail"
case $msg in *nobody*) ;; *) fail "the error must name the user: $msg" ;; esac
echo "ok: sudo stand-in"
