#!/usr/bin/env bash
# install-bench-deps.sh: what `make bench` needs beyond `make deps` to measure a peer runtime
# next to rctr: Podman and runc from Debian, and a `criu` on PATH that runs the CRIU 4.2 rctr
# uses (/opt/rctr/criu, installed by install-criu.sh), so that both sides dump and restore with
# the same engine. Run as root (`make bench-deps`).
#
# Why runc and not Debian's default crun: bookworm's crun links libcriu 3.17, which fails on
# current kernels; runc runs the `criu` binary it finds on PATH, which is the wrapper below.
#
# Idempotent: installed packages are not looked up again; the wrapper is rewritten only when
# it differs.
#
# Environment:
#   RCTR_CRIU_PREFIX   CRIU prefix (default /opt/rctr/criu)
#   RCTR_BENCH_CRIU    the wrapper's path (default /usr/local/bin/criu)
set -euo pipefail
umask 022

PREFIX=${RCTR_CRIU_PREFIX:-/opt/rctr/criu}
WRAPPER=${RCTR_BENCH_CRIU:-/usr/local/bin/criu}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

say() { echo "install-bench-deps: $*"; }
die() { echo "install-bench-deps: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages): sudo make bench-deps"
command -v apt-get >/dev/null || die "apt-get not found: this script is for Debian 12 hosts"

# podman: the peer; runc: its OCI runtime here; conmon: podman's container monitor;
# strace: the restore profile in the report.
PKGS=(podman runc conmon strace)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    # No recommends: crun (whose libcriu fails here), buildah, slirp4netns and the rest are not
    # what the benchmark runs.
    apt-get install -y -q --no-install-recommends "${PKGS[@]}" >/dev/null
fi

# The engine: CRIU 4.2 in its private prefix, run through that prefix's own loader.
if [ ! -x "$PREFIX/bin/criu" ]; then
    say "CRIU not found in $PREFIX; installing it (etc/setup/install-criu.sh)"
    RCTR_CRIU_PREFIX=$PREFIX bash "$REPO/etc/setup/install-criu.sh"
fi
want=$(cat <<WRAP
#!/bin/sh
# Written by rctr's etc/setup/install-bench-deps.sh: the CRIU in $PREFIX, for runc (make bench).
exec "$PREFIX/lib/ld-linux-x86-64.so.2" --library-path "$PREFIX/lib:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu" --argv0 criu "$PREFIX/bin/criu" "\$@"
WRAP
)
if [ "$(cat "$WRAPPER" 2>/dev/null)" != "$want" ]; then
    if [ -e "$WRAPPER" ] && ! grep -q "install-bench-deps.sh" "$WRAPPER"; then
        die "$WRAPPER exists and is not this script's wrapper; set RCTR_BENCH_CRIU to another path on PATH"
    fi
    mkdir -p "$(dirname "$WRAPPER")"
    printf '%s\n' "$want" >"$WRAPPER.tmp"
    chmod 0755 "$WRAPPER.tmp"
    mv "$WRAPPER.tmp" "$WRAPPER"
fi
found=$(command -v criu || true)
[ "$found" = "$WRAPPER" ] || say "warning: 'criu' on PATH is ${found:-nothing}, not $WRAPPER; runc would not use CRIU 4.2"
criu --version | grep -q "Version: 4\." || die "$WRAPPER does not run CRIU 4.x: $(criu --version 2>&1 | head -n1)"
say "podman $(podman --version | awk '{ print $3 }'), runc $(runc --version | awk 'NR == 1 { print $3 }'), $(criu --version | head -n1)"
