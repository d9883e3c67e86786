#!/usr/bin/env bash
# Run objstore's tests on 64-bit ARM (aarch64) Linux, emulated on an x86-64 Debian machine:
# a Debian trixie arm64 tree, run through qemu-user, with the aarch64 wheels of objstore's
# engine dependencies from PyPI. This is how lockwake's aarch64 lock layout was checked; CI
# does not run it (building the tree takes about six minutes, the tests ten times as long).
#
#   sudo bash scripts/check-aarch64.sh [PYTEST ARGS]    # default: tests/engine/test_lockwake.py
#
# Needs root (apt, chroot, mounts) and Debian's and PyPI's package servers. The tree stays in
# $OBJSTORE_ARM_ROOT (default /tmp/objstore-arm64) for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${OBJSTORE_ARM_ROOT:-/tmp/objstore-arm64}
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

if ! command -v qemu-aarch64-static >/dev/null || ! command -v mmdebstrap >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq qemu-user-static binfmt-support mmdebstrap >/dev/null
fi
# the tests start subprocesses: aarch64 binaries must run through qemu on exec
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
if [ ! -x "$root/usr/bin/python3" ]; then
    mmdebstrap --arch=arm64 --variant=apt --include=python3,python3-pytest,python3-hypothesis \
        trixie "$root" http://deb.debian.org/debian
fi
if [ ! -d "$root/opt/site/lmdb" ]; then
    wheels=$(mktemp -d)
    "$python" -m pip download -q --only-binary=:all: --no-deps --python-version 3.13 \
        --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
        --platform manylinux_2_28_aarch64 -d "$wheels" \
        "lmdb>=2.3" "xxhash>=3.4" "zstandard>=0.22" "msgspec>=0.18"
    mkdir -p "$root/opt/site"
    for wheel in "$wheels"/*.whl; do "$python" -m zipfile -e "$wheel" "$root/opt/site"; done
    rm -rf "$wheels"
fi
rm -rf "$root/opt/src" && mkdir -p "$root/opt/src"
cp -r objstore tests pyproject.toml "$root/opt/src/"
if ! mountpoint -q "$root/proc"; then  # lockwake reads /proc/self/maps
    mount -t proc proc "$root/proc"
    trap 'umount "$root/proc" 2>/dev/null || true' EXIT
fi
[ $# -gt 0 ] || set -- tests/engine/test_lockwake.py
cd / && chroot "$root" /usr/bin/env PYTHONPATH=/opt/site:/opt/src HOME=/tmp \
    sh -c 'cd /opt/src && exec python3 -m pytest -p no:cacheprovider -o addopts= "$@"' pytest "$@"
