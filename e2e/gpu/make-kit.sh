#!/bin/bash
# Builds target/gpu-kit for e2e/gpu/run.sh on a GPU machine without network: the release
# rctr (one file, see README) and the CRIU engine bundle (CRIU with its whole library
# closure and loader), as `rctr checkpoint check` assembles it on this host.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
kit=$repo/target/gpu-kit
rctr=$repo/target/release/rctr
[ -x "$rctr" ] || { echo "make-kit: build the release binary first (cargo build --release -p rctr)" >&2; exit 1; }
bundle=$("$rctr" checkpoint check | sed -n 's/^\[ ok \] bundle: \([^ ]*\) (.*/\1/p')
[ -d "$bundle/bin" ] || { echo "make-kit: no engine bundle (rctr checkpoint check failed?)" >&2; exit 1; }
rm -rf "$kit"
mkdir -p "$kit/criu"
cp -a "$bundle/bin" "$bundle/lib" "$kit/criu/"
cp "$rctr" "$kit/rctr"
echo "make-kit: $kit ($(du -sh "$kit" | cut -f1)): carry it with e2e/gpu to the GPU machine, run bash e2e/gpu/run.sh"
