#!/bin/bash
# shellcheck disable=SC2016  # the quoted $VARs are for the child shells
# Checks lib/chroot-bin/dib-run-parts without root: DIB's hook order, the name
# filter, non-executable files skipped, environment.d sourced first, failure
# propagation and --list.
set -eu -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
runner=$here/../../lib/chroot-bin/dib-run-parts
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

mkdir -p "$work/install.d" "$work/environment.d"
echo 'export ORDER_TEST_VALUE=from-env' > "$work/environment.d/10-value"
echo 'export ORDER_TEST_VALUE=${ORDER_TEST_VALUE}-later' > "$work/environment.d/20-later.bash"
for name in 100-y 50-b 10-z 10-a 9-x 05-c foo foo.sh 20-not-executable; do
    printf '#!/bin/bash\necho "%s $ORDER_TEST_VALUE" >> "%s"\n' "$name" "$work/log" > "$work/install.d/$name"
    chmod +x "$work/install.d/$name"
done
chmod -x "$work/install.d/20-not-executable"

"$runner" "$work/install.d" 2>/dev/null
expected="foo 05-c 9-x 10-a 10-z 50-b 100-y"
got=$(awk '{ print $1 }' "$work/log" | tr '\n' ' ' | sed 's/ $//')
[ "$got" = "$expected" ] || fail "order: expected '$expected', got '$got'"
grep -qv ' from-env-later$' "$work/log" && fail "environment.d was not sourced in order: $(cat "$work/log")"

listed=$("$runner" --list "$work/install.d" | sed 's|.*/||' | tr '\n' ' ' | sed 's/ $//')
[ "$listed" = "$expected" ] || fail "--list: expected '$expected', got '$listed'"

# A failing hook stops the run with its status.
printf '#!/bin/bash\nexit 7\n' > "$work/install.d/60-fails"
chmod +x "$work/install.d/60-fails"
rm -f "$work/log"
set +e
"$runner" "$work/install.d" 2>/dev/null
rc=$?
set -e
[ "$rc" = 7 ] || fail "a failing hook should give status 7, got $rc"
grep -q '^100-y' "$work/log" && fail "hooks after a failure must not run"

echo "ok: dib-run-parts order, filter, environment, failure, --list"
