#!/usr/bin/env bash
# on-private-tmpfs.sh CMD [ARGS...]: runs CMD with /tmp on a private, empty tmpfs.
#
# Tests must not depend on the order in which a file system lists directory entries; tmpfs
# (Debian 13's /tmp, most compute nodes) orders them differently from ext4. As root, CMD runs in
# a new mount namespace with a fresh tmpfs on /tmp, which the host never sees. Without root,
# TMPDIR points at a fresh directory on /dev/shm when that is a tmpfs. Otherwise the run is
# skipped with the reason printed.
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }

if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null; then
    echo "on-private-tmpfs: running with /tmp on a private tmpfs: $*"
    # The outer mount namespace's propagation must not carry this mount back to the host.
    exec unshare --mount --propagation private -- bash -c \
        'mount -t tmpfs -o mode=1777 rctr-test-tmp /tmp && export TMPDIR=/tmp && exec "$@"' bash "$@"
fi
if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ]; then
    dir=$(mktemp -d /dev/shm/rctr-test-tmp.XXXXXX)
    trap 'rm -rf "$dir"' EXIT
    echo "on-private-tmpfs: not root; running with TMPDIR=$dir (tmpfs): $*"
    TMPDIR=$dir "$@"
    exit $?
fi
echo "on-private-tmpfs: skipped: not root and /dev/shm is not a tmpfs, so no tmpfs to run on"
