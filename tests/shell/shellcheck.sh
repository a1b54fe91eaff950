#!/bin/bash
# Runs shellcheck over every shell file we ship (elements, helpers, $_LIB, tests).
set -eu -o pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
if ! command -v shellcheck >/dev/null; then
    echo "skip: shellcheck is not installed (apt-get install shellcheck)"
    exit 0
fi
cd "$top"
files=()
for f in elements/*/*.d/* lib/chroot-bin/* lib/host-bin/* tests/shell/*.sh; do
    [ -f "$f" ] && files+=("$f")
done
shellcheck -x "${files[@]}"
(cd lib/dib && shellcheck -x -s bash die common-defaults img-defaults ramdisk-defaults common-functions img-functions ramdisk-functions)
echo "ok: shellcheck clean (${#files[@]} files + \$_LIB)"
