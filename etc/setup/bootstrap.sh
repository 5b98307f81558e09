#!/usr/bin/env bash
# bootstrap.sh demo|test: the README's two setup commands. On a fresh Debian 12 machine even
# `make` may be missing, so install it first, then hand over to the Makefile (which installs
# everything else through install-deps.sh, builds rctr and runs the demo or all tests).
set -euo pipefail
case "${1:-}" in
    demo | test) ;;
    *) echo "usage: bash etc/setup/bootstrap.sh demo|test" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "bootstrap: error: run as root (it installs packages)" >&2; exit 1; }
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if ! command -v make >/dev/null; then
    echo "bootstrap: installing make"
    apt-get -q update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get -q -y install make >/dev/null
fi
exec make "$1"
