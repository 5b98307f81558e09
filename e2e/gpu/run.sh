#!/bin/bash
# GPU checkpoint/restart on a real NVIDIA GPU, in one short run (a few minutes):
#   1. a CUDA counter (built here with nvcc) whose count and 512 MiB buffer live in GPU
#      memory runs under `rctr instance start --nv --ckpt-launch`; it is checkpointed while it
#      runs, then checkpointed and stopped, and restarted: the count goes on, the buffer is
#      intact;
#   2. a deterministic PyTorch training loop is checkpointed, stopped and restarted in the
#      middle: its loss sequence equals an uninterrupted run's;
#   3. the raw sequence (cuda-checkpoint lock+checkpoint, criu dump, cuda-checkpoint
#      restore+unlock) on the same counter outside rctr is the baseline for the timings.
# Prints times per GiB of GPU memory and writes $OUT/gpu-results.md.
#
# Needs: root, the NVIDIA driver (nvidia-smi), cuda-checkpoint, nvcc, python3 with torch, and
# the kit `make gpu-kit` builds (target/gpu-kit: the release rctr and the CRIU bundle) on a
# machine with the sources. No network.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
KIT=${KIT:-$repo/target/gpu-kit}
OUT=${OUT:-/tmp/rctr-gpu-out}
WORK=$(mktemp -d /tmp/rctr-gpu.XXXXXX)
mkdir -p "$OUT"
RESULTS=$OUT/gpu-results.md
say() { echo "[gpu] $*" | tee -a "$OUT/run.log"; }
die() { say "FAILED: $*"; exit 1; }
now_ms() { date +%s%3N; }

[ "$(id -u)" = 0 ] || die "run as root"
command -v nvidia-smi >/dev/null || die "no nvidia-smi: no NVIDIA driver here"
CUDA_CKPT=${CUDA_CKPT:-$(command -v cuda-checkpoint || echo /usr/bin/cuda-checkpoint)}
[ -x "$CUDA_CKPT" ] || die "no cuda-checkpoint (set CUDA_CKPT=PATH)"
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
[ -x "$NVCC" ] || die "no nvcc (set NVCC=PATH)"
[ -x "$KIT/rctr" ] && [ -d "$KIT/criu/bin" ] || die "no kit at $KIT: run make gpu-kit first"

gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)
say "GPU: $gpu; kernel $(uname -r); cuda-checkpoint $CUDA_CKPT"

# The engine, root-owned as rctr requires, and a configuration naming it and cuda-checkpoint.
ENGINE=/opt/rctr/gpu-kit
rm -rf "$ENGINE"
install -d -m 0755 "$ENGINE"
cp -a "$KIT/criu" "$ENGINE/"
install -m 0755 "$KIT/rctr" "$ENGINE/rctr"
chown -R root:root "$ENGINE"
chmod -R go-w "$ENGINE"
CONF=$ENGINE/ckpt-conf.yaml
cat > "$CONF" <<CONF
engine: criu
bins: [$ENGINE/criu/bin/criu]
lib-paths: [$ENGINE/criu/lib]
loader: $ENGINE/criu/lib/ld-linux-x86-64.so.2
keep: 3
cuda-checkpoint:
  path: $CUDA_CKPT
  lock-timeout: 30
CONF
chmod 0644 "$CONF"
export RCTR_CKPT_CONF=$CONF
RCTR=$ENGINE/rctr
"$RCTR" version | tee -a "$OUT/run.log"
"$RCTR" checkpoint check --ckpt-conf "$CONF" | tee -a "$OUT/run.log" || die "checkpoint check failed"

# The programs.
"$NVCC" -O2 -o "$WORK/counter" "$here/counter.cu" || die "nvcc failed"
cp "$here/train.py" "$WORK/train.py"

# The image: a sandbox directory whose startscript runs its arguments, with the host's /usr
# (python3 and torch included) bound in. Torch outside /usr (a venv) is bound too.
ROOT=$WORK/root
mkdir -p "$ROOT"/{usr,opt,tmp,var/tmp,etc,proc,sys,dev,root,home,run,.singularity.d/env,.singularity.d/libs}
for d in bin lib lib64 sbin; do ln -s "usr/$d" "$ROOT/$d"; done
printf '#!/bin/sh\nexec "$@"\n' > "$ROOT/.singularity.d/startscript"
cp "$ROOT/.singularity.d/startscript" "$ROOT/.singularity.d/runscript"
printf '#!/bin/sh\nLD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/.singularity.d/libs"\nexport LD_LIBRARY_PATH\n' \
    > "$ROOT/.singularity.d/env/99-base.sh"
chmod 0755 "$ROOT/.singularity.d/startscript" "$ROOT/.singularity.d/runscript" "$ROOT/.singularity.d/env/99-base.sh"
PY=$(command -v python3)
# $WORK is under /tmp, which containers see by default.
BINDS=(--bind /usr:/usr:ro)
py_prefix=$(python3 -c 'import sys; print(sys.prefix)')
case "$py_prefix" in /usr|/usr/*) ;; *) BINDS+=(--bind "$py_prefix:$py_prefix:ro") ;; esac
torch_dir=$(python3 -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
case "$torch_dir" in /usr/*|"$py_prefix"/*|"$WORK"/*) ;; *) BINDS+=(--bind "$torch_dir:$torch_dir:ro") ;; esac
export CUBLAS_WORKSPACE_CONFIG=:4096:8
cd "$WORK"

log_of() { echo "$HOME/.rctr/instances/$(hostname)/$(id -un)/$1.out"; }
last_count() { grep -a '^count ' "$1" | tail -1 | awk '{print $2}'; }
wait_for() { # FILE PATTERN SECONDS
    local end=$((SECONDS + $3))
    until grep -aq "$2" "$1" 2>/dev/null; do
        [ $SECONDS -lt $end ] || die "timed out waiting for '$2' in $1"
        sleep 0.2
    done
}
gpu_mib_of() { # host pid -> GPU memory it holds, MiB
    nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits |
        awk -F', ' -v p="$1" '$1 == p {print $2}'
}

# --- 1. the CUDA counter under rctr ---------------------------------------------------------
"$RCTR" checkpoint delete --force cnt >/dev/null 2>&1 || true
"$RCTR" checkpoint create cnt
"$RCTR" instance start --nv --ckpt-conf "$CONF" --ckpt-launch cnt "${BINDS[@]}" \
    "$ROOT" cnt1 "$WORK/counter" 512 || die "instance start --nv failed"
wait_for "$(log_of cnt1)" '^count 20 ' 60
app_pid=$("$RCTR" instance list --json | python3 -c 'import json,sys; print([i for i in json.load(sys.stdin)["instances"] if i["instance"]=="cnt1"][0]["app_pid"])' 2>/dev/null || true)
mib=$(gpu_mib_of "${app_pid:-0}"); mib=${mib:-512}
t0=$(now_ms)
"$RCTR" checkpoint instance --ckpt-conf "$CONF" cnt1 || die "checkpoint (leave running) failed"
t1=$(now_ms)
before=$(last_count "$(log_of cnt1)")
sleep 1
after=$(last_count "$(log_of cnt1)")
[ "$after" -gt "$before" ] || die "the counter stopped after a checkpoint that leaves it running"
grep -aq ' bad [1-9]' "$(log_of cnt1)" && die "the GPU buffer was damaged"
t2=$(now_ms)
"$RCTR" checkpoint instance --ckpt-conf "$CONF" --stop cnt1 || die "checkpoint --stop failed"
t3=$(now_ms)
stopped_at=$(last_count "$(log_of cnt1)")
t4=$(now_ms)
"$RCTR" instance start --ckpt-conf "$CONF" --ckpt-restart cnt "$ROOT" cnt2 || die "restart failed"
t5=$(now_ms)
wait_for "$(log_of cnt2)" '^count ' 30
first=$(grep -a '^count ' "$(log_of cnt2)" | head -1 | awk '{print $2}')
sleep 1
resumed=$(last_count "$(log_of cnt2)")
grep -aq ' bad [1-9]' "$(log_of cnt2)" && die "the GPU buffer was damaged by the restore"
[ "$first" -ge "$stopped_at" ] && [ "$first" -le $((stopped_at + 2)) ] ||
    die "the count did not go on: stopped at $stopped_at, came back at $first"
[ "$resumed" -gt "$first" ] || die "the restored counter does not count"
"$RCTR" instance stop cnt2
say "counter: $mib MiB of GPU memory; stopped at $stopped_at, restored at $first, then $resumed"
rctr_live=$((t1 - t0)); rctr_stop=$((t3 - t2)); rctr_restore=$((t5 - t4))

# --- 2. raw baseline: the same counter, cuda-checkpoint + criu by hand ----------------------
CRIU=("$ENGINE/criu/lib/ld-linux-x86-64.so.2" --library-path "$ENGINE/criu/lib" "$ENGINE/criu/bin/criu")
setsid "$WORK/counter" 512 > "$WORK/raw.log" 2>&1 < /dev/null &
raw=$!
wait_for "$WORK/raw.log" '^count 20 ' 60
mkdir -p "$WORK/raw-img"
r0=$(now_ms)
"$CUDA_CKPT" --action lock --pid "$raw" --timeout 30000
"$CUDA_CKPT" --action checkpoint --pid "$raw"
r1=$(now_ms)
"${CRIU[@]}" dump -t "$raw" -D "$WORK/raw-img" --leave-running -o dump.log -v2 ||
    die "raw criu dump failed (see $WORK/raw-img/dump.log)"
r2=$(now_ms)
"$CUDA_CKPT" --action restore --pid "$raw"
"$CUDA_CKPT" --action unlock --pid "$raw"
r3=$(now_ms)
kill -9 "$raw" 2>/dev/null || true
raw_toggle=$((r1 - r0 + r3 - r2)); raw_dump=$((r2 - r1)); raw_total=$((r3 - r0))

# --- 3. PyTorch: checkpointed run vs uninterrupted run --------------------------------------
"$RCTR" exec --nv "${BINDS[@]}" "$ROOT" "$PY" "$WORK/train.py" 300 0.02 > "$WORK/reference.txt" ||
    die "the uninterrupted training run failed"
"$RCTR" checkpoint delete --force tr >/dev/null 2>&1 || true
"$RCTR" checkpoint create tr
"$RCTR" instance start --nv --ckpt-conf "$CONF" --ckpt-launch tr "${BINDS[@]}" \
    "$ROOT" tr1 "$PY" "$WORK/train.py" 300 0.02
wait_for "$(log_of tr1)" '^step 100 ' 120
"$RCTR" checkpoint instance --ckpt-conf "$CONF" --stop tr1 || die "training checkpoint failed"
"$RCTR" instance start --ckpt-conf "$CONF" --ckpt-restart tr "$ROOT" tr2 || die "training restart failed"
wait_for "$(log_of tr2)" '^done' 120
cat "$(log_of tr1)" "$(log_of tr2)" | grep -a '^step ' | sort -u -k2,2n > "$WORK/resumed.txt"
grep -a '^step ' "$WORK/reference.txt" > "$WORK/reference-steps.txt"
if ! diff -q "$WORK/reference-steps.txt" "$WORK/resumed.txt" >/dev/null; then
    diff "$WORK/reference-steps.txt" "$WORK/resumed.txt" | head -5 | tee -a "$OUT/run.log"
    die "the restored training's losses differ from the uninterrupted run's"
fi
split=$(grep -ac '^step ' "$(log_of tr1)")
say "training: checkpointed after $split of 300 steps; all 300 losses equal the uninterrupted run's"
"$RCTR" instance stop tr2 2>/dev/null || true

gib=$(python3 -c "print(max($mib, 1) / 1024)")
per_gib() { python3 -c "print(f'{$1 / $gib:.0f}')"; }
ratio=$(python3 -c "print(f'{$rctr_live / max($raw_total, 1):.2f}')")
{
    echo "GPU checkpoint/restart, $(date -u +%Y-%m-%d), $gpu, kernel $(uname -r)"
    echo
    echo "| step | ms | ms per GiB of GPU memory ($mib MiB) |"
    echo "|---|---|---|"
    echo "| raw: cuda-checkpoint lock+checkpoint+restore+unlock | $raw_toggle | $(per_gib $raw_toggle) |"
    echo "| raw: criu dump --leave-running | $raw_dump | $(per_gib $raw_dump) |"
    echo "| raw: whole sequence | $raw_total | $(per_gib $raw_total) |"
    echo "| rctr checkpoint instance (leave running) | $rctr_live | $(per_gib $rctr_live) |"
    echo "| rctr checkpoint instance --stop | $rctr_stop | $(per_gib $rctr_stop) |"
    echo "| rctr instance start --ckpt-restart | $rctr_restore | $(per_gib $rctr_restore) |"
    echo
    echo "rctr's GPU checkpoint / raw sequence: ${ratio}x (target <= 1.2x)."
    echo "Training: checkpointed and restored after step $split of 300; losses equal the uninterrupted run's."
} > "$RESULTS"
cat "$RESULTS"
say "PASSED"
