#!/bin/bash
# Installs rctr's checkpoint helper: a copy of rctr, setuid root, with which users who are
# not root launch, checkpoint and restart their own instances with the CRIU engine (what
# it does and does not allow: docs/security.md). Run as root:
#   bash etc/setup/install-suid.sh [RCTR_BINARY] [DESTINATION]
# Default: target/release/rctr into /usr/local/libexec/rctr/rctr-suid, where rctr looks.
set -euo pipefail
src=${1:-target/release/rctr}
dst=${2:-/usr/local/libexec/rctr/rctr-suid}
die() { echo "install-suid: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run this as root (it installs a setuid-root program)"
[ -f "$src" ] || die "$src does not exist: build rctr first (cargo build --release -p rctr)"
install -d -o root -g root -m 0755 "$(dirname "$dst")"
# Atomically: a half-copied setuid binary must never be runnable.
install -o root -g root -m 0700 "$src" "$dst.new"
chmod 4755 "$dst.new"
mv -f "$dst.new" "$dst"
# Root's state for each user of the helper (one private directory per uid).
install -d -o root -g root -m 0755 /var/lib/rctr
install -d -o root -g root -m 0700 /var/lib/rctr/users
echo "installed the checkpoint helper: $dst (setuid root)"
