#!/usr/bin/env bash
# handmade-ctr.sh: the hand-made container of the restore baseline, the smallest one in
# which the bundled CRIU can restore what it dumped inside an rctr instance.
#
#   handmade-ctr.sh IMAGE OFFSET SIZE BUNDLE CKPT_DIR MOUNTPOINT -- CMD [ARG...]
#
# IMAGE        squashfs file or SIF; OFFSET/SIZE locate the squashfs partition (0 0: whole file)
# BUNDLE       rctr's engine bundle directory (bin/criu + lib/), bound read-only at /.rctr-engine
# CKPT_DIR     host directory bound read-write at /.checkpoint
# MOUNTPOINT   an empty host directory to assemble the root on (private to the new namespace)
# CMD          run as pid 1 of the container (exec'd: its pid 1 stays the container's init)
# $PIDFILE     if set, receives the pid of the process to SIGKILL to tear the container down
# $DEV_MODE    mode of the /dev nodes (default 0666); CRIU refuses to restore an fd on a device
#              node whose mode differs from the dumped one, so run.sh passes the mode the dumped
#              container had
#
# What it does, with util-linux and nothing else: unshare a mount and a pid namespace, loop-mount
# the image read-only, mount /proc, a tmpfs /dev with null/zero/urandom, bind /tmp and /var/tmp
# and the two directories, pivot_root, exec CMD. No overlay, no /sys, no $HOME/cwd/passwd binds,
# no init supervising the application, no checksums: only what a restore needs, so its cost is
# the floor rctr's own container setup is compared against. The image must contain the mount
# points (the benchmark's rootfs.sh creates them).
set -euo pipefail

die() { echo "handmade-ctr: error: $*" >&2; exit 1; }

if [ "${1:-}" != --inside ]; then
    { [ $# -ge 8 ] && [ "$7" = -- ]; } ||
        die "usage: handmade-ctr.sh IMAGE OFFSET SIZE BUNDLE CKPT_DIR MOUNTPOINT -- CMD [ARG...]"
    # --kill-child: SIGKILL to this unshare process (same pid after exec) tears the whole
    # container down; it ignores SIGTERM.
    [ -n "${PIDFILE:-}" ] && echo $$ >"$PIDFILE"
    exec unshare --mount --pid --fork --kill-child --propagation private -- "$BASH" "$0" --inside "$@"
fi
shift
img=$1 offset=$2 size=$3 bundle=$4 ckpt=$5 root=$6
shift 7

opts=ro,loop,offset=$offset
[ "$size" != 0 ] && opts=$opts,sizelimit=$size
mount -t squashfs -o "$opts" "$img" "$root"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t tmpfs -o nosuid,mode=0755,size=64k tmpfs "$root/dev"
mode=${DEV_MODE:-0666}
mknod -m "$mode" "$root/dev/null" c 1 3
mknod -m "$mode" "$root/dev/zero" c 1 5
mknod -m "$mode" "$root/dev/urandom" c 1 9
mount --bind /tmp "$root/tmp"
mount --bind /var/tmp "$root/var/tmp"
mount --bind "$bundle" "$root/.rctr-engine"
mount -o remount,bind,ro "$root/.rctr-engine"
mount --bind "$ckpt" "$root/.checkpoint"
cd "$root"
pivot_root . .
umount -l .
cd /
exec "$@"
