#!/usr/bin/env bash
# install-criu.sh: install CRIU 4.2.x for rctr on a Debian 12 ("bookworm") host.
#
# Why this script exists: bookworm's CRIU (3.17) fails `criu check` on current kernels and
# trixie's (4.1) cannot dump TCP sockets; 4.2.x works but is only in Debian testing ("forky"),
# and it needs a newer glibc, libnet9 and libnl-3 than bookworm has. Upgrading the host's libc
# is out of the question, so the newer packages are downloaded with a private apt
# configuration and unpacked into a private prefix; CRIU then runs through that prefix's own
# dynamic loader:
#
#   <prefix>/lib/ld-linux-x86-64.so.2 --library-path <prefix>/lib:/lib/x86_64-linux-gnu <prefix>/bin/criu
#
# The remaining libraries CRIU needs exist in bookworm and are installed normally with apt-get.
# Nothing in the host's package state changes except those bookworm library packages.
#
# Usage (as root):  bash etc/setup/install-criu.sh [--force]
#   --force   reinstall even if the prefix already holds the current package versions
# Environment:
#   RCTR_CRIU_PREFIX   install prefix                     (default /opt/rctr/criu)
#   RCTR_CRIU_SUITE    Debian suite to take CRIU from     (default forky)
#   RCTR_CRIU_VERSION  accepted CRIU versions, a glob      (default 4.2.*)
#   RCTR_DEBIAN_MIRROR mirror URL (default: the one the host's apt sources use for its release)
#   RCTR_CRIU_WRAPPER  convenience wrapper path, "" for none (default /usr/local/sbin/criu-rctr)
#
# Idempotent: re-running it refreshes the private package lists and does nothing else when
# the installed versions are current and `criu check` still passes.
set -euo pipefail
umask 022

PREFIX=${RCTR_CRIU_PREFIX:-/opt/rctr/criu}
SUITE=${RCTR_CRIU_SUITE:-forky}
VERSION_GLOB=${RCTR_CRIU_VERSION:-4.2.*}
WRAPPER=${RCTR_CRIU_WRAPPER-/usr/local/sbin/criu-rctr}
WORK=/var/cache/rctr/install-criu
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

# Packages taken from $SUITE: CRIU itself and the libraries whose bookworm versions are too old.
# (libcompel1 is not needed: criu links compel statically.)
NEW_PKGS=(criu libc6 libnet9 libnl-3-200)
# Libraries CRIU needs that bookworm provides in a sufficient version.
HOST_PKGS=(libbsd0 libgnutls30 libnftables1 libprotobuf-c1 libuuid1)

FORCE=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-criu: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

say() { echo "install-criu: $*"; }
die() { echo "install-criu: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (the prefix $PREFIX must be root-owned)"
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    die "apt-get and dpkg-deb are required (Debian host)"
fi
[ -r "$KEYRING" ] || die "$KEYRING missing: apt-get install debian-archive-keyring"
case "$PREFIX" in /*) ;; *) die "RCTR_CRIU_PREFIX must be an absolute path, got '$PREFIX'" ;; esac
PREFIX=${PREFIX%/}

ARCH=$(dpkg --print-architecture)
case "$ARCH" in
    amd64) TRIPLET=x86_64-linux-gnu; LOADER=ld-linux-x86-64.so.2 ;;
    arm64) TRIPLET=aarch64-linux-gnu; LOADER=ld-linux-aarch64.so.1 ;;
    *) die "unsupported architecture '$ARCH' (amd64 and arm64 are supported)" ;;
esac
HOST_LIBDIRS="/lib/$TRIPLET:/usr/lib/$TRIPLET"

# --- the mirror -------------------------------------------------------------------------------
# The host's own mirror for its release (the only network the machine may reach), from deb822
# .sources files first, then one-line .list files.
host_codename() { (
    # shellcheck source=/dev/null
    . /etc/os-release && echo "${VERSION_CODENAME:-}"
); }

mirror_from_deb822() { # $1 = codename; prints the first URI of a stanza listing that suite
    awk -v want="$1" '
        function flush() { if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " want " ") && uri != "" && found == "") found = uri; types = suites = uri = "" }
        /^[[:space:]]*$/ { flush(); next }
        /^[[:space:]]*#/ { next }
        tolower($1) == "types:"  { $1 = ""; types = $0 }
        tolower($1) == "suites:" { $1 = ""; suites = $0 }
        tolower($1) == "uris:"   { uri = $2 }
        END { flush(); if (found != "") print found }
    ' "${@:2}" 2>/dev/null | head -n1
}

mirror_from_list() { # $1 = codename
    sed -e 's/\[[^]]*\]//' "${@:2}" 2>/dev/null |
        awk -v want="$1" '$1 == "deb" && $3 == want { print $2; exit }'
}

find_mirror() {
    local codename sources lists m
    codename=$(host_codename)
    [ -n "$codename" ] || die "cannot read VERSION_CODENAME from /etc/os-release; set RCTR_DEBIAN_MIRROR"
    shopt -s nullglob
    sources=(/etc/apt/sources.list.d/*.sources)
    lists=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
    shopt -u nullglob
    m=""
    [ ${#sources[@]} -gt 0 ] && m=$(mirror_from_deb822 "$codename" "${sources[@]}")
    [ -z "$m" ] && m=$(mirror_from_list "$codename" "${lists[@]}")
    [ -n "$m" ] || die "no '$codename' mirror found in /etc/apt/sources.list{,.d}; set RCTR_DEBIAN_MIRROR"
    echo "${m%/}"
}

MIRROR=${RCTR_DEBIAN_MIRROR:-$(find_mirror)}
MIRROR=${MIRROR%/}

# --- private apt configuration ----------------------------------------------------------------
mkdir -p "$WORK"
chmod 0755 /var/cache/rctr "$WORK"
exec 9>"$WORK/lock"
flock -n 9 || die "another install-criu.sh is running (lock $WORK/lock)"

mkdir -p "$WORK/sources.list.d" "$WORK/lists/partial" "$WORK/cache/archives/partial"
echo "deb [signed-by=$KEYRING] $MIRROR $SUITE main" >"$WORK/sources.list"
APT_PRIVATE=(
    -o "Dir::Etc::SourceList=$WORK/sources.list"
    -o "Dir::Etc::SourceParts=$WORK/sources.list.d"
    -o "Dir::State::Lists=$WORK/lists"
    -o "Dir::Cache=$WORK/cache"
    -o "Dir::State::status=/dev/null"
    -o "APT::Architecture=$ARCH"
    -o "APT::Architectures=$ARCH"
    -o "Acquire::Languages=none"
    -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"
)
# apt drops privileges to _apt for downloads; let it write where the lists and .debs go.
if id _apt >/dev/null 2>&1; then
    chown -R _apt:root "$WORK/lists" "$WORK/cache"
fi

say "updating the private '$SUITE' package lists from $MIRROR"
apt-get -q "${APT_PRIVATE[@]}" update >"$WORK/update.log" 2>&1 ||
    { cat "$WORK/update.log" >&2; die "apt-get update of '$SUITE' from $MIRROR failed (log above)"; }

candidate() { # $1 = package; prints the candidate version from the private lists
    apt-cache "${APT_PRIVATE[@]}" show --no-all-versions "$1" 2>/dev/null | awk '/^Version:/ { print $2; exit }'
}

declare -A WANT
for p in "${NEW_PKGS[@]}"; do
    v=$(candidate "$p")
    [ -n "$v" ] || die "package '$p' not found in $SUITE at $MIRROR"
    WANT[$p]=$v
done
# shellcheck disable=SC2053 # the glob is intended
[[ ${WANT[criu]%%-*} == $VERSION_GLOB ]] ||
    die "$SUITE offers criu ${WANT[criu]}, which does not match '$VERSION_GLOB' (set RCTR_CRIU_VERSION to accept it)"

MANIFEST_TEXT=$(for p in "${NEW_PKGS[@]}"; do echo "$p=${WANT[$p]}"; done; echo "suite=$SUITE")

# --- host libraries from bookworm -------------------------------------------------------------
missing=()
for p in "${HOST_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing host libraries: ${missing[*]}"
    { apt-get -q update && DEBIAN_FRONTEND=noninteractive apt-get -q -y --no-install-recommends install "${missing[@]}"; } \
        >"$WORK/host-install.log" 2>&1 ||
        { cat "$WORK/host-install.log" >&2; die "apt-get install ${missing[*]} failed (log above)"; }
fi

# --- verification -----------------------------------------------------------------------------
# Runs `criu check` in prefix $1 through that prefix's loader; CRIU may also log a harmless
# "Can't setup RLIMIT_NOFILE" error when the hard limit cannot be raised.
verify() {
    local p=$1 out
    [ -x "$p/lib/$LOADER" ] && [ -x "$p/bin/criu" ] || return 1
    # ld.so --list is ldd through the prefix's own loader: it names any library not found.
    out=$("$p/lib/$LOADER" --library-path "$p/lib:$HOST_LIBDIRS" --list "$p/bin/criu" 2>&1) || true
    if [ -z "$out" ] || grep -q "not found" <<<"$out"; then
        echo "$out" >&2
        echo "install-criu: libraries missing for $p/bin/criu (see above)" >&2
        return 1
    fi
    out=$("$p/lib/$LOADER" --library-path "$p/lib:$HOST_LIBDIRS" "$p/bin/criu" check 2>&1) || true
    if grep -q "Looks good" <<<"$out"; then return 0; fi
    echo "$out" >&2
    return 1
}

criu_version() { # $1 = prefix
    "$1/lib/$LOADER" --library-path "$1/lib:$HOST_LIBDIRS" "$1/bin/criu" --version 2>/dev/null | awk '/^Version:/ { print $2; exit }'
}

install_wrapper() {
    [ -n "$WRAPPER" ] || return 0
    local tmp
    mkdir -p "$(dirname "$WRAPPER")"
    tmp=$(mktemp "$WRAPPER.XXXXXX")
    cat >"$tmp" <<EOF
#!/bin/sh
# Generated by rctr's etc/setup/install-criu.sh: runs CRIU from $PREFIX through its own loader.
exec "$PREFIX/lib/$LOADER" --library-path "$PREFIX/lib:$HOST_LIBDIRS" --argv0 criu "$PREFIX/bin/criu" "\$@"
EOF
    chown root:root "$tmp"
    chmod 0755 "$tmp"
    mv -f "$tmp" "$WRAPPER"
}

# A prefix must be root-owned and writable by root only, all the way up: rctr refuses engine
# binaries that other users could replace.
check_parents() {
    local d
    d=$(dirname "$PREFIX")
    while :; do
        if [ -e "$d" ]; then
            [ "$(stat -c %u "$d")" = 0 ] || die "$d is not owned by root; choose another RCTR_CRIU_PREFIX"
            case "$(stat -c %A "$d")" in
                ?????w???? | ????????w?) [ -k "$d" ] || die "$d is group/other-writable; choose another RCTR_CRIU_PREFIX" ;;
            esac
        fi
        [ "$d" = / ] && break
        d=$(dirname "$d")
    done
}
check_parents

if [ "$FORCE" = 0 ] && [ -f "$PREFIX/PACKAGES" ] && [ "$(cat "$PREFIX/PACKAGES")" = "$MANIFEST_TEXT" ] && verify "$PREFIX" 2>/dev/null; then
    install_wrapper
    say "CRIU $(criu_version "$PREFIX") already installed in $PREFIX (use --force to reinstall)"
    exit 0
fi

# --- download and unpack ----------------------------------------------------------------------
DL="$WORK/debs"
rm -rf "$DL"
mkdir -p "$DL"
id _apt >/dev/null 2>&1 && chown _apt:root "$DL"
SPECS=()
for p in "${NEW_PKGS[@]}"; do SPECS+=("$p=${WANT[$p]}"); done
say "downloading from $SUITE: ${SPECS[*]}"
(cd "$DL" && apt-get -q "${APT_PRIVATE[@]}" download "${SPECS[@]}") >"$WORK/download.log" 2>&1 ||
    { cat "$WORK/download.log" >&2; die "apt-get download failed (log above)"; }

install -d -o root -g root -m 0755 "$(dirname "$PREFIX")"
STAGE=$(mktemp -d "$PREFIX.new.XXXXXX")
trap 'rm -rf "$STAGE" "$STAGE.x"' EXIT
mkdir -p "$STAGE.x" "$STAGE/bin" "$STAGE/lib"
for deb in "$DL"/*.deb; do
    dpkg-deb -x "$deb" "$STAGE.x"
done

# Flatten: the criu binary into bin/, every top-level shared object (and soname symlink) of the
# unpacked packages into lib/. Both /lib and /usr/lib are looked at: older packages used /lib.
[ -f "$STAGE.x/usr/sbin/criu" ] || die "the criu package has no usr/sbin/criu"
cp -a "$STAGE.x/usr/sbin/criu" "$STAGE/bin/criu"
for d in "$STAGE.x/lib/$TRIPLET" "$STAGE.x/usr/lib/$TRIPLET"; do
    [ -d "$d" ] || continue
    find "$d" -maxdepth 1 \( -type f -o -type l \) -name '*.so*' -exec cp -a {} "$STAGE/lib/" \;
done
# Symlinks must stay inside lib/: re-point absolute ones at the file of the same name, then
# drop any that dangle (e.g. development symlinks to files of packages not unpacked).
for l in "$STAGE"/lib/*; do
    [ -L "$l" ] || continue
    t=$(readlink "$l")
    case "$t" in /*) ln -sfn "$(basename "$t")" "$l" ;; esac
done
find "$STAGE/lib" -xtype l -delete
[ -f "$STAGE/lib/$LOADER" ] || die "the libc6 package from $SUITE has no $LOADER"
printf '%s\n' "$MANIFEST_TEXT" >"$STAGE/PACKAGES"
rm -rf "$STAGE.x"

chown -R root:root "$STAGE"
chmod -R go-w "$STAGE"
chmod 0755 "$STAGE" "$STAGE/bin" "$STAGE/lib"

say "verifying: criu check through $LOADER"
verify "$STAGE" || die "the unpacked CRIU fails 'criu check' (output above); $PREFIX left unchanged"

# Swap in atomically enough: the old prefix is renamed away first, then removed.
if [ -e "$PREFIX" ]; then
    mv "$PREFIX" "$PREFIX.old.$$"
fi
mv "$STAGE" "$PREFIX"
rm -rf "$PREFIX.old.$$"
trap - EXIT

verify "$PREFIX" || die "criu check failed after installing into $PREFIX"
install_wrapper
say "installed CRIU $(criu_version "$PREFIX") in $PREFIX ($(tr '\n' ' ' <"$PREFIX/PACKAGES"))"
say "run it with: $PREFIX/lib/$LOADER --library-path $PREFIX/lib:$HOST_LIBDIRS $PREFIX/bin/criu check${WRAPPER:+  (or: $WRAPPER check)}"
