#!/usr/bin/env bash
# fetch-criu-source.sh: download the upstream source of the CRIU that install-criu.sh installed
# (same Debian version), for `make zdtm`: CRIU's own zdtm test programs are built from it.
#
# Like install-criu.sh, it uses a private apt configuration ("deb-src" for the same suite, its
# own lists and cache under /var/cache/rctr), so the host's apt sources and state are not
# touched. Only the upstream tarball (criu_<version>.orig.tar.*) is kept: the zdtm tests are
# upstream code, and apt has checked its hash against the signed Sources index.
#
# Usage (as root):  bash etc/setup/fetch-criu-source.sh
# Environment:
#   RCTR_CRIU_PREFIX    where CRIU is installed        (default /opt/rctr/criu; its PACKAGES
#                       file names the version and suite)
#   RCTR_CRIU_SOURCE_DIR  where the tarball goes         (default /var/cache/rctr/criu-source)
#   RCTR_DEBIAN_MIRROR  mirror URL (default: the one install-criu.sh used)
#
# Idempotent: nothing is downloaded when the tarball of the installed version is there.
set -euo pipefail
umask 022

PREFIX=${RCTR_CRIU_PREFIX:-/opt/rctr/criu}
DEST=${RCTR_CRIU_SOURCE_DIR:-/var/cache/rctr/criu-source}
WORK=/var/cache/rctr/criu-source-apt
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

say() { echo "fetch-criu-source: $*"; }
die() { echo "fetch-criu-source: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
[ -r "$PREFIX/PACKAGES" ] || die "$PREFIX/PACKAGES missing: install CRIU first (bash etc/setup/install-criu.sh)"
VERSION=$(sed -n 's/^criu=//p' "$PREFIX/PACKAGES")
SUITE=$(sed -n 's/^suite=//p' "$PREFIX/PACKAGES")
[ -n "$VERSION" ] && [ -n "$SUITE" ] || die "$PREFIX/PACKAGES names no criu version or suite"
UPSTREAM=${VERSION%-*}
UPSTREAM=${UPSTREAM#*:}

shopt -s nullglob
have=("$DEST"/criu_"$UPSTREAM".orig.tar.*)
shopt -u nullglob
if [ ${#have[@]} -gt 0 ]; then
    say "CRIU $UPSTREAM source already in ${have[0]}"
    exit 0
fi

# The mirror install-criu.sh used (its private sources list), unless one is given.
if [ -z "${RCTR_DEBIAN_MIRROR:-}" ]; then
    MIRROR=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
        /var/cache/rctr/install-criu/sources.list 2>/dev/null || true)
    [ -n "$MIRROR" ] || die "no mirror known: run install-criu.sh first or set RCTR_DEBIAN_MIRROR"
else
    MIRROR=$RCTR_DEBIAN_MIRROR
fi
MIRROR=${MIRROR%/}

mkdir -p "$WORK/sources.list.d" "$WORK/lists/partial" "$WORK/cache/archives/partial" "$WORK/dl"
echo "deb-src [signed-by=$KEYRING] $MIRROR $SUITE main" >"$WORK/sources.list"
APT_PRIVATE=(
    -o "Dir::Etc::SourceList=$WORK/sources.list"
    -o "Dir::Etc::SourceParts=$WORK/sources.list.d"
    -o "Dir::State::Lists=$WORK/lists"
    -o "Dir::Cache=$WORK/cache"
    -o "Dir::State::status=/dev/null"
    -o "Acquire::Languages=none"
)
if id _apt >/dev/null 2>&1; then
    chown -R _apt:root "$WORK/lists" "$WORK/cache" "$WORK/dl"
fi

say "updating the private '$SUITE' source lists from $MIRROR"
apt-get -q "${APT_PRIVATE[@]}" update >"$WORK/update.log" 2>&1 ||
    { cat "$WORK/update.log" >&2; die "apt-get update of '$SUITE' sources failed (log above)"; }

rm -f "$WORK"/dl/*
say "downloading the source of criu $VERSION"
# Only the upstream tarball is needed; apt verifies each file it gets against the signed index,
# and a missing Debian packaging tarball on the mirror does not matter here.
(cd "$WORK/dl" && apt-get -q "${APT_PRIVATE[@]}" source --download-only "criu=$VERSION") >"$WORK/download.log" 2>&1 || true
shopt -s nullglob
got=("$WORK"/dl/criu_"$UPSTREAM".orig.tar.*)
shopt -u nullglob
[ ${#got[@]} -gt 0 ] || { cat "$WORK/download.log" >&2; die "the source of criu $VERSION could not be downloaded (log above)"; }

mkdir -p "$DEST"
install -m 0644 "${got[0]}" "$DEST/"
say "CRIU $UPSTREAM source in $DEST/$(basename "${got[0]}")"
