#!/usr/bin/env bash
# install-deps.sh: install everything rctr needs to build, run its demo and its tests on a
# Debian 12 ("bookworm") host. Run as root from the repository (the Makefile's `make deps` does).
#
# What it installs:
#   - build and test packages from Debian (compiler, libsquashfs headers, libclang for bindgen,
#     busybox-static and python3 for the test images, util-linux/iproute2 for the checks);
#   - a Rust toolchain, only when no `cargo` new enough for the workspace's rust-version is found
#     (on PATH or in ~/.cargo/bin). Bookworm has no `rustup` package and its `cargo`/`rustc`
#     (1.63) are too old, so Debian's `cargo-web`/`rustc-web` are used: current Rust toolchains
#     Debian keeps in bookworm (and bookworm-security) for building browsers, installed as
#     /usr/bin/cargo and /usr/bin/rustc. They conflict with Debian's old `cargo`/`rustc`, which
#     apt removes. A rustup toolchain that is too old is not touched: run `rustup update`.
#   - CRIU 4.2 into /opt/rctr/criu, through etc/setup/install-criu.sh, and the source of the
#     same version (for CRIU's zdtm tests, `make zdtm`) through etc/setup/fetch-criu-source.sh.
#
# Idempotent: packages already installed are not looked up again, an adequate toolchain is kept,
# and install-criu.sh does nothing when CRIU is current.
#
# Usage (as root):  bash etc/setup/install-deps.sh
# Environment:
#   RCTR_SKIP_CRIU=1   do not install CRIU (build and unit tests only)
set -euo pipefail
umask 022

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOG_DIR=/var/cache/rctr
LOG=$LOG_DIR/install-deps.log

say() { echo "install-deps: $*"; }
die() { echo "install-deps: error: $*" >&2; exit 1; }

# Debian packages, one job each:
PKGS=(
    build-essential pkg-config      # C toolchain, linker, make; pkg-config finds libsquashfs
    libsquashfs-dev libclang-dev    # squashfs-tools-ng headers and static library (with its
                                    # compressors' -dev packages); libclang for bindgen
    ca-certificates git             # cargo fetches crates over https; cargo may need git
    squashfs-tools                  # unsquashfs/mksquashfs for inspecting images by hand
    xz-utils                        # unpacks the CRIU source tarball (make zdtm)
    busybox-static                  # /bin/busybox: the e2e test images' shell and tools
    python3                         # /usr/bin/python3 + stdlib: the e2e counter-server image
    util-linux mount                # losetup, mount, nsenter: leak checks in the e2e tests
    iproute2 procps attr file       # ss (demo readiness), ps, xattrs, file types
    nftables                        # nft: rctr removes network locks a killed CRIU left
    debootstrap                     # the e2e tests' Debian image; `Bootstrap: debootstrap` builds
    umoci skopeo                    # the e2e tests make real OCI layouts and docker/OCI archives
    docker-registry openssl         # the e2e tests' registry on loopback for docker:// pulls;
                                    # openssl makes its test CA and signs its auth tokens
    debian-archive-keyring          # install-criu.sh verifies the Debian archive with it
    slurm-wlm munge                 # Slurm 22.05 and munge: the e2e tests' one-node cluster
    squashfuse                      # users who are not root mount their images with it (FUSE)
)
TOOLCHAIN_PKGS=(cargo-web rustc-web rust-web-clippy rustfmt-web)

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages); try: sudo make deps"
if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
    die "apt-get and dpkg-query not found: this script is for Debian 12 hosts"
fi
if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ "$codename" = bookworm ] || say "warning: this is '${codename:-unknown}', not Debian 12 (bookworm); continuing"
fi
mkdir -p "$LOG_DIR"

is_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# munge, slurmctld, slurmd and docker-registry come as services that their packages start on install. The e2e
# tests run daemons of their own (own key, socket, ports, slurm.conf), and a stock slurmctld
# without /etc/slurm/slurm.conf only fails; a root shell without systemd (CI) cannot run them
# anyway. So while apt runs, a policy-rc.d denies every service start (invoke-rc.d and
# deb-systemd-invoke obey it), unless the host has a policy-rc.d of its own (containers often do).
POLICY_RC_D=/usr/sbin/policy-rc.d
OWN_POLICY=0
deny_service_starts() {
    [ -e "$POLICY_RC_D" ] && return 0
    printf '#!/bin/sh\n# Written by rctr install-deps.sh while apt-get runs: start no services.\nexit 101\n' >"$POLICY_RC_D"
    chmod 755 "$POLICY_RC_D"
    OWN_POLICY=1
}
allow_service_starts() {
    if [ "$OWN_POLICY" = 1 ]; then rm -f "$POLICY_RC_D"; OWN_POLICY=0; fi
}
trap allow_service_starts EXIT

APT_UPDATED=0
apt_install() { # packages...
    if [ "$APT_UPDATED" = 0 ]; then
        apt-get -q update >"$LOG" 2>&1 || { cat "$LOG" >&2; die "apt-get update failed (log above, also in $LOG)"; }
        APT_UPDATED=1
    fi
    say "installing: $*"
    deny_service_starts
    DEBIAN_FRONTEND=noninteractive apt-get -q -y --no-install-recommends install "$@" >"$LOG" 2>&1 ||
        { cat "$LOG" >&2; die "apt-get install $* failed (log above, also in $LOG)"; }
    allow_service_starts
}

# --- Debian packages ----------------------------------------------------------------------------
missing=()
for p in "${PKGS[@]}"; do
    is_installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
else
    say "build and test packages already installed"
fi
[ -x /bin/busybox ] || die "/bin/busybox missing although busybox-static is installed"
[ -x /usr/bin/python3 ] || die "/usr/bin/python3 missing although python3 is installed"
for prog in /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch; do
    [ -x "$prog" ] || die "$prog missing although slurm-wlm and munge are installed"
done

# Users who are not root mount images through FUSE. Debian's udev rule makes /dev/fuse 0666;
# a machine without udev (a container, a minimal VM) leaves the kernel's 0600, root only.
if [ -c /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != 666 ]; then
    chmod 0666 /dev/fuse && say "/dev/fuse made 0666 (as Debian's udev rule does)"
fi

# --- Rust toolchain -----------------------------------------------------------------------------
# The workspace's minimum Rust version, from Cargo.toml (`rust-version = "1.80"`).
MIN_RUST=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$REPO/Cargo.toml" | head -n1)
[ -n "$MIN_RUST" ] || die "cannot read rust-version from $REPO/Cargo.toml"

# rustup installs into ~/.cargo/bin, which a root shell started by CI may not have on PATH.
[ -x "${HOME:-/root}/.cargo/bin/cargo" ] && PATH="${HOME:-/root}/.cargo/bin:$PATH"

version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
rustc_version() { rustc --version 2>/dev/null | awk '{ print $2 }'; }

if command -v cargo >/dev/null && command -v rustc >/dev/null; then
    have=$(rustc_version)
    if [ -n "$have" ] && version_ge "$have" "$MIN_RUST"; then
        say "Rust $have found ($(command -v cargo)), workspace needs >= $MIN_RUST"
    elif [ "$(command -v cargo)" = /usr/bin/cargo ]; then
        # Debian's own old cargo/rustc: replace them with the -web toolchain.
        apt_install "${TOOLCHAIN_PKGS[@]}"
    else
        die "Rust ${have:-of unknown version} at $(command -v cargo) is older than $MIN_RUST: update it (rustup update) or remove it from PATH"
    fi
else
    apt_install "${TOOLCHAIN_PKGS[@]}"
fi
command -v cargo >/dev/null || die "cargo still not found after installing ${TOOLCHAIN_PKGS[*]}"
have=$(rustc_version)
version_ge "${have:-0}" "$MIN_RUST" || die "rustc ${have:-?} is older than $MIN_RUST even after installing ${TOOLCHAIN_PKGS[*]}"
# Only `make lint` needs these; say so instead of failing the install.
cargo fmt --version >/dev/null 2>&1 || say "warning: 'cargo fmt' is not available: make lint will fail (rustup component add rustfmt)"
cargo clippy --version >/dev/null 2>&1 || say "warning: 'cargo clippy' is not available: make lint will fail (rustup component add clippy)"

# --- kernel facilities the runtime needs ------------------------------------------------------
[ -e /dev/loop-control ] || say "warning: /dev/loop-control missing: load the loop module (modprobe loop) before running images"

# --- CRIU ---------------------------------------------------------------------------------------
if [ "${RCTR_SKIP_CRIU:-0}" = 1 ]; then
    say "skipping CRIU (RCTR_SKIP_CRIU=1): checkpoint tests will be skipped"
else
    bash "$REPO/etc/setup/install-criu.sh" || die "installing CRIU failed (see above)"
    # The same CRIU version's source: `make zdtm` builds CRIU's own zdtm tests from it.
    bash "$REPO/etc/setup/fetch-criu-source.sh" || die "fetching the CRIU source failed (see above)"
fi
say "done"
