#!/bin/bash
# Checks elements/debootstrap/root.d/08-debootstrap's root cache without root
# or network: a fake mmdebstrap on PATH makes a tiny root and records its
# calls. The cache is saved, used instead of bootstrapping, and a damaged
# entry is replaced by a fresh bootstrap, and SOURCE_DATE_EPOCH keys the
# entry. Our dpkg option does not stay in
# the root; a user's own option does.
set -eu -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
hook=$here/../../elements/debootstrap/root.d/08-debootstrap
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

mkdir -p "$work/fake"
printf '#!/bin/bash\nexec "$@"\n' > "$work/fake/sudo"
cat > "$work/fake/mmdebstrap" <<'FAKE'
#!/bin/bash
echo "mmdebstrap $*" >> "$FAKE_CALLS"
mkdir -p "$TARGET_ROOT/etc/dpkg/dpkg.cfg.d"
echo fake > "$TARGET_ROOT/etc/os-release"
printf 'force-unsafe-io\n%s' "${FAKE_USER_OPT:+$FAKE_USER_OPT
}" > "$TARGET_ROOT/etc/dpkg/dpkg.cfg.d/99mmdebstrap"
FAKE
chmod +x "$work/fake/sudo" "$work/fake/mmdebstrap"

export PATH=$work/fake:$PATH FAKE_CALLS=$work/calls
export DISTRO_NAME=debian DIB_RELEASE=bookworm ARCH=amd64 DIB_DEBOOTSTRAP_TOOL=mmdebstrap
export DIB_DISTRIBUTION_MIRROR=http://mirror.invalid/debian DIB_IMAGE_CACHE=$work/cache
export DIB_DEBOOTSTRAP_CACHE=1 DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE=1
unset DIB_APT_SOURCES_CONF DIB_APT_KEYRING DIB_DEBIAN_KEYRING DIB_OFFLINE DIB_CREATE_LOCK_REPO

# run N: the hook on a new empty root; its output in $work/out.N
run() {
    export TARGET_ROOT=$work/root$1
    mkdir -p "$TARGET_ROOT"
    "$hook" > "$work/out.$1" 2>&1 || fail "run $1 exited $?: $(cat "$work/out.$1")"
    [ "$(cat "$TARGET_ROOT/etc/os-release")" = fake ] || fail "run $1: no root"
}
calls() { wc -l < "$work/calls" 2>/dev/null || echo 0; }

run 1
[ "$(calls)" = 1 ] || fail "the first run must bootstrap"
grep -q -- '--dpkgopt=force-unsafe-io' "$work/calls" || fail "dpkg runs without force-unsafe-io"
[ ! -e "$work/root1/etc/dpkg/dpkg.cfg.d/99mmdebstrap" ] || fail "our dpkg option stayed in the root"
tarball=$(ls "$work"/cache/debootstrap/debian-bookworm-amd64-*)
[ -s "$tarball" ] || fail "no cached root saved"

run 2
[ "$(calls)" = 1 ] || fail "the second run must use the cache, not bootstrap"
grep -q "unpacking cached root" "$work/out.2" || fail "run 2 did not say it used the cache"

# Cut the entry short, as a killed writer or a full disk would.
head -c 100 "$tarball" > "$tarball.cut" && mv "$tarball.cut" "$tarball"
run 3
[ "$(calls)" = 2 ] || fail "a damaged cache entry must lead to a fresh bootstrap"
grep -q "damaged" "$work/out.3" || fail "run 3 did not report the damaged entry"
case $tarball in
    *.zst) zstd -t -q "$tarball" ;;
    *) gzip -t "$tarball" ;;
esac || fail "the damaged entry was not replaced by a good one"

# Another epoch is another tree (pwconv writes its day into /etc/shadow): a
# root cached under one SOURCE_DATE_EPOCH must not serve another.
SOURCE_DATE_EPOCH=1700000000 run 5
[ "$(calls)" = 3 ] || fail "a root cached without SOURCE_DATE_EPOCH served a build with it"
SOURCE_DATE_EPOCH=1700000000 run 6
[ "$(calls)" = 3 ] || fail "the root cached under SOURCE_DATE_EPOCH was not used again"

FAKE_USER_OPT='path-exclude=/usr/share/man/*' DIB_DEBOOTSTRAP_CACHE=0 DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE=0 run 4
[ "$(cat "$work/root4/etc/dpkg/dpkg.cfg.d/99mmdebstrap")" = 'path-exclude=/usr/share/man/*' ] \
    || fail "a user's own dpkg option must stay: $(cat "$work/root4/etc/dpkg/dpkg.cfg.d/99mmdebstrap")"

echo "ok: debootstrap root cache (save, use, repair, keyed by the epoch) and dpkg options"
