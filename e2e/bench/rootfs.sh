#!/usr/bin/env bash
# rootfs.sh: root filesystem trees for the benchmarks, assembled from the host's own files
# (the same recipe as the end-to-end tests' e2e/src/rootfs.rs).
#
#   rootfs.sh busybox DIR   static /bin/busybox (package busybox-static) + applet links
#   rootfs.sh python DIR    busybox + /usr/bin/python3.11 with its ldd closure and standard
#                           library (minus tests, GUI and installers), ~60 MB
#
# Extra files can be dropped in afterwards (run.sh adds its static workload programs to /opt).
# Both trees have a startscript that execs its arguments (`rctr instance start IMG NAME CMD...`
# runs CMD), and empty mount points for what the hand-made containers of the baselines
# bind-mount on the read-only image (rctr makes its own mount points on an overlay).
set -euo pipefail

die() { echo "rootfs.sh: error: $*" >&2; exit 1; }

HOST_BUSYBOX=/bin/busybox
HOST_PYTHON=/usr/bin/python3
APPLETS="sh ash echo cat sleep ls true false test [ mkdir rm cp mv ln chmod env id ps kill grep sed
tr date printf hostname mount umount stat readlink dd expr uname pwd find sort head tail wc timeout
usleep nproc chroot pivot_root"

busybox_rootfs() {
    local dir d
    dir=$(realpath -m "$1")
    [ -x "$HOST_BUSYBOX" ] || die "$HOST_BUSYBOX missing: apt-get install busybox-static"
    mkdir -p "$dir"
    for d in bin etc tmp var/tmp proc sys dev root home opt .rctr-engine .checkpoint .singularity.d; do
        mkdir -p "$dir/$d"
    done
    chmod 1777 "$dir/tmp" "$dir/var/tmp"
    chmod 0700 "$dir/root"
    cp "$HOST_BUSYBOX" "$dir/bin/busybox"
    for a in $APPLETS; do
        [ -e "$dir/bin/$a" ] || ln -s busybox "$dir/bin/$a"
    done
    echo "root:x:0:0:root:/root:/bin/sh" >"$dir/etc/passwd"
    echo "root:x:0:" >"$dir/etc/group"
    printf '#!/bin/sh\nexec "$@"\n' >"$dir/.singularity.d/startscript"
    chmod 0755 "$dir/.singularity.d/startscript"
}

# Copies host path $2 (absolute) under root $1: every directory on the way, symlinks as
# symlinks (then their targets too), so the loader finds libraries where binaries expect them.
install_host_path() {
    local root=$1 path=$2 sofar="" part target
    local IFS=/
    for part in ${path#/}; do
        sofar="$sofar/$part"
        if [ -L "$sofar" ]; then
            target=$(readlink "$sofar")
            [ -e "$root$sofar" ] || [ -L "$root$sofar" ] || ln -s "$target" "$root$sofar"
            case "$target" in
                /*) install_host_path "$root" "$target" ;;
                *) install_host_path "$root" "$(dirname "$sofar")/$target" ;;
            esac
            # The rest of the path is resolved through the link's target, now installed.
            local rest=${path#"$sofar"}
            [ -n "$rest" ] && install_host_path "$root" "$(readlink -f "$sofar")$rest"
            return 0
        elif [ -d "$sofar" ]; then
            mkdir -p "$root$sofar"
        else
            [ -e "$root$sofar" ] || cp -p "$sofar" "$root$sofar"
        fi
    done
}

python_rootfs() {
    local dir stdlib lib
    dir=$(realpath -m "$1")
    busybox_rootfs "$dir"
    [ -x "$HOST_PYTHON" ] || die "$HOST_PYTHON missing: apt-get install python3"
    stdlib=$("$HOST_PYTHON" -I -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
    install_host_path "$dir" "$HOST_PYTHON"
    # The standard library without tests, GUI toolkits, installers and third-party packages.
    mkdir -p "$dir$stdlib"
    tar -C "$stdlib" -cf - --exclude=./idlelib --exclude=./tkinter --exclude=./turtledemo \
        --exclude=./ensurepip --exclude=./lib2to3 --exclude=./site-packages \
        --exclude=./dist-packages --exclude='./config-*' \
        --exclude=test --exclude=tests --exclude=idle_test . | tar -C "$dir$stdlib" -xf -
    # The interpreter's and the extension modules' shared libraries, and the loader.
    for lib in $(ldd "$HOST_PYTHON" "$stdlib"/lib-dynload/*.so 2>/dev/null |
        awk '/=> \// { print $3 } /^\t\// { print $1 }' | sort -u); do
        install_host_path "$dir" "$lib"
    done
}

case "${1:-}" in
    busybox) [ $# -eq 2 ] || die "usage: rootfs.sh busybox DIR"; busybox_rootfs "$2" ;;
    python) [ $# -eq 2 ] || die "usage: rootfs.sh python DIR"; python_rootfs "$2" ;;
    *) die "usage: rootfs.sh busybox|python DIR" ;;
esac
