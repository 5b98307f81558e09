#!/usr/bin/env bash
# run.sh: rctr's benchmark suite (`make bench`). Needs root, like the runtime itself.
#
# Each case runs rctr and a hand-made baseline alternately in the same run, several times,
# and docs/benchmarks.md gets a markdown report (medians, min–max, ratios against the targets,
# the machine and the date) between its GENERATED markers; text outside the markers is kept.
#
#   1. Startup     `rctr exec IMG true` vs unshare --mount --pid --fork + mount -o loop + chroot
#   2. Checkpoint  `rctr checkpoint instance` of 256 MiB / 1 GiB of touched memory and of a
#                  Python TCP server vs the bundled criu dump with the same options, run by
#                  hand (nsenter) on the same instance; disk speed by dd with fsync
#   3. Restore     `rctr instance start --ckpt-restart` until the server answers vs criu
#                  restore of the same kind of images in a hand-made container (handmade-ctr.sh)
#   4. Build       `rctr build` of a ~50 MB Python root filesystem vs mksquashfs -comp gzip
#   5. Job         a foreground job (`rctr exec --ckpt`) resumed until its first new output line
#                  vs an instance restarted from the same kind of checkpoint until its log's
#                  first new line
#   6. Podman      the same Python server in Podman + runc with the same CRIU (`make bench-deps`):
#                  `podman container checkpoint -R` vs `rctr checkpoint instance` (and a raw
#                  `criu dump --leave-running` for the freeze time), `podman container restore`
#                  vs `rctr instance start --ckpt-restart`, each until the server answers
#   8. Lazy      a 1 GiB server restored with `--ckpt-restart --lazy-pages` until it answers vs
#                  the same restored eagerly and vs the Python server's restore, in the same rounds
#   7. Migrate     downtime of the Python server as a Slurm job moved between the two nodes of
#                  the e2e test cluster (checkpoint + requeue + restore, or a successor job
#                  that takes it over) vs the same server checkpointed and restarted on one
#                  machine without Slurm (migrate-bench.rs)
#   9. RSS         dump throughput and freeze time against memory size (1, 4, 8 GiB touched):
#                  `rctr checkpoint instance` (durable) vs dd of as many bytes with fsync
#
# Environment:
#   RCTR_BIN             rctr binary (default: target/release/rctr, built with cargo first)
#   RCTR_BENCH_DIR       where scratch files, images and checkpoints go (default /var/tmp): it
#                        must be on the disk whose speed matters, not a tmpfs
#   RCTR_BENCH_OUT       report file (default docs/benchmarks.md; "-" for stdout only)
#   RCTR_BENCH_RUNS      runs per checkpoint/restore/build case (default 7)
#   RCTR_BENCH_STARTUP_RUNS  runs per startup case (default 20)
#   RCTR_BENCH_KEEP=1    keep the scratch directory (images, checkpoints, logs, samples)
#   RCTR_BENCH_RSS_SIZES memory sizes of the rss case, MiB (default "1024 4096 8192")
#   RCTR_BENCH_RSS_RUNS  rounds per size of the rss case (default 3)
#   RCTR_BENCH_CASES     cases to run, space-separated subset of
#                        "startup checkpoint restore build job podman migrate lazy rss"
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

RUNS=${RCTR_BENCH_RUNS:-7}
STARTUP_RUNS=${RCTR_BENCH_STARTUP_RUNS:-20}
# The rss case's sizes and rounds (its 8 GiB checkpoint alone takes tens of seconds).
read -r -a RSS_SIZES <<<"${RCTR_BENCH_RSS_SIZES:-1024 4096 8192}"
RUNS_RSS=${RCTR_BENCH_RSS_RUNS:-3}
CASES=${RCTR_BENCH_CASES:-startup checkpoint restore build job podman migrate lazy rss}
OUT=${RCTR_BENCH_OUT:-$REPO/docs/benchmarks.md}
PY=/usr/bin/python3
TOOLS=("$PY" "$HERE/tools.py")
ENGINE_ARGS=(--leave-running --tcp-established --file-locks --network-lock nftables)
RESTORE_ARGS=(--restore-detached --restore-sibling --tcp-close --file-locks)
MEM_SIZES=(256 1024)

[ "$(id -u)" -eq 0 ] || die "the benchmarks need root (rctr sets up mounts and runs CRIU): sudo make bench"
case "$RUNS$STARTUP_RUNS" in *[!0-9]*) die "RCTR_BENCH_RUNS and RCTR_BENCH_STARTUP_RUNS must be numbers" ;; esac
{ [ "$RUNS" -ge 1 ] && [ "$STARTUP_RUNS" -ge 1 ]; } || die "RCTR_BENCH_RUNS and RCTR_BENCH_STARTUP_RUNS must be at least 1"
for c in $CASES; do
    case "$c" in startup | checkpoint | restore | build | job | podman | migrate | lazy | rss) ;; *) die "unknown case '$c' in RCTR_BENCH_CASES" ;; esac
done
wants() { [[ " $CASES " == *" $1 "* ]]; }
for tool in unshare nsenter mount chroot pivot_root mksquashfs gcc dd sync awk ldd tar; do
    command -v "$tool" >/dev/null || die "$tool not found (make deps installs what the benchmarks need)"
done
[ -x "$PY" ] || die "$PY not found: apt-get install python3"
[ -x /bin/busybox ] || die "/bin/busybox not found: apt-get install busybox-static"

# --- the rctr binary --------------------------------------------------------------------------
if [ -n "${RCTR_BIN:-}" ]; then
    RCTR=$RCTR_BIN
else
    [ -d "$HOME/.cargo/bin" ] && PATH=$HOME/.cargo/bin:$PATH
    say "building the release binary (cargo build --release -p rctr)"
    (cd "$REPO" && cargo build --release -q -p rctr) || die "cargo build --release -p rctr failed"
    RCTR=${CARGO_TARGET_DIR:-$REPO/target}/release/rctr
fi
[ -x "$RCTR" ] || die "rctr binary $RCTR not found or not executable (set RCTR_BIN)"
RCTR=$(realpath "$RCTR")
# The migration case's driver, built now: cargo needs the real $HOME, which is replaced below.
MIGRATE_BENCH=${CARGO_TARGET_DIR:-$REPO/target}/debug/migrate-bench
if wants migrate; then
    [ -d "$HOME/.cargo/bin" ] && PATH=$HOME/.cargo/bin:$PATH
    say "building the migration case's driver (cargo build -p rctr-e2e --bin migrate-bench)"
    (cd "$REPO" && cargo build -q -p rctr-e2e --bin migrate-bench) || die "cargo build -p rctr-e2e --bin migrate-bench failed"
fi

# --- scratch space and cleanup ----------------------------------------------------------------
BASE=${RCTR_BENCH_DIR:-/var/tmp}
[ -d "$BASE" ] || die "RCTR_BENCH_DIR $BASE is not a directory"
WORK=$(mktemp -d "$BASE/rctr-bench.XXXXXX")
RES=$WORK/results
mkdir -p "$RES" "$WORK/bin" "$WORK/pids" "$WORK/mnt"
# A throwaway $HOME: instances and checkpoints of this run only.
export HOME=$WORK/home
mkdir -p "$HOME"
RAND=/dev/shm/rctr-bench-$$.rand
STARTED_INSTANCES=()

cleanup() {
    local rc=$? f name
    set +e
    for f in "$WORK"/pids/*; do
        [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
    done
    for name in "${STARTED_INSTANCES[@]}"; do
        timeout 30 "$RCTR" instance stop "$name" >/dev/null 2>&1
    done
    rm -f "$RAND"
    if [ -n "${POD_NAME:-}" ]; then
        podman rm -f "$POD_NAME" >/dev/null 2>&1
        podman rmi -f "$POD_IMAGE" >/dev/null 2>&1
    fi
    if [ -n "${BENCH_USER:-}" ]; then
        userdel -r "$BENCH_USER" >/dev/null 2>&1
        rm -rf "$USER_DIR"
    fi
    if [ "${RCTR_BENCH_KEEP:-0}" = 1 ]; then
        say "scratch directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$WORK"

# --- helpers and images -----------------------------------------------------------------------
say "compiling the helpers, assembling the root filesystems"
gcc -O2 -Wall -o "$WORK/bin/benchwait" "$HERE/benchwait.c"
gcc -O2 -Wall -static -o "$WORK/bin/memhog" "$HERE/memhog.c"
gcc -O2 -Wall -static -o "$WORK/bin/memserver" "$REPO/e2e/src/apps/memserver.c"
BW=$WORK/bin/benchwait
bash "$HERE/rootfs.sh" busybox "$WORK/rootfs-busybox"
bash "$HERE/rootfs.sh" python "$WORK/rootfs-python"
cp "$WORK/bin/memhog" "$WORK/bin/memserver" "$REPO/e2e/src/counter_server.py" "$WORK/rootfs-python/opt/"

IMG_BB_SQFS=$WORK/busybox.sqfs
IMG_BB_SIF=$WORK/busybox.sif
IMG_PY=$WORK/python.sif
quietly mksquashfs "$WORK/rootfs-busybox" "$IMG_BB_SQFS" -comp gzip -noappend -no-progress
if "$RCTR" build "$IMG_BB_SIF" "$WORK/rootfs-busybox" >"$WORK/last.log" 2>&1 &&
    "$RCTR" build "$IMG_PY" "$WORK/rootfs-python" >"$WORK/last.log" 2>&1; then
    RCTR_BUILD_OK=1
else
    # rctr runs plain squashfs files too: the other cases do not depend on `rctr build`.
    RCTR_BUILD_OK=0
    BUILD_ERROR=$(grep -m1 . "$WORK/last.log" || echo "no output")
    say "rctr build failed ($BUILD_ERROR); using mksquashfs images"
    IMG_BB_SIF=""
    IMG_PY=$WORK/python.sqfs
    quietly mksquashfs "$WORK/rootfs-python" "$IMG_PY" -comp gzip -noappend -no-progress
fi

# The machine, as the report describes it (and how busy it was).
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# === 1. startup ===============================================================================
baseline_startup() {
    # shellcheck disable=SC2016 # $1 and $2 are the inner shell's
    unshare --mount --pid --fork --propagation private /bin/sh -c \
        'mount -t squashfs -o ro,loop "$1" "$2" && exec chroot "$2" /bin/true' sh "$IMG_BB_SQFS" "$WORK/mnt"
}

# A user who is not root: a throwaway account, the binary and image where it can read them.
BENCH_USER=""
USER_DIR=""
setup_bench_user() {
    command -v squashfuse_ll >/dev/null && [ -r /dev/fuse ] && [ -w /dev/fuse ] || {
        say "startup as a user: skipped (squashfuse or a usable /dev/fuse missing)"
        return 1
    }
    BENCH_USER=rctrbench$$
    useradd -m "$BENCH_USER" || { BENCH_USER=""; return 1; }
    USER_DIR=$(mktemp -d /tmp/rctr-bench-user.XXXXXX)
    cp "$RCTR" "$USER_DIR/rctr"
    cp "$IMG_BB_SQFS" "$USER_DIR/busybox.sqfs"
    chmod -R a+rX "$USER_DIR"
    install -d -o "$BENCH_USER" "$USER_DIR/mnt"
}

as_bench_user() { (cd "$USER_DIR" && runuser -u "$BENCH_USER" -- "$@"); }

# The user's shell baseline: a user namespace mapping them to root (so that squashfuse may
# mount by itself), squashfuse in the foreground, chroot, true.
baseline_user_startup() {
    # shellcheck disable=SC2016 # $1 and $2 are the inner shell's
    as_bench_user unshare --user --map-root-user --mount --pid --fork /bin/sh -c \
        'squashfuse_ll -f "$1" "$2" & n=0
         until mountpoint -q "$2"; do n=$((n + 1)); [ $n -lt 100000 ] || exit 1; done
         chroot "$2" /bin/true; s=$?; kill $!; exit $s' \
        sh "$USER_DIR/busybox.sqfs" "$USER_DIR/mnt"
}

case_startup() {
    local i user=0
    say "1/4 startup: $STARTUP_RUNS runs each"
    setup_bench_user && user=1
    for i in 1 2 3; do # warm-up: page cache, loop driver, first-run costs
        quietly "$RCTR" exec "$IMG_BB_SQFS" true
        quietly baseline_startup
        if [ $user = 1 ]; then
            quietly as_bench_user "$USER_DIR/rctr" exec "$USER_DIR/busybox.sqfs" true
            quietly baseline_user_startup
        fi
    done
    for ((i = 0; i < STARTUP_RUNS; i++)); do
        if [ -n "$IMG_BB_SIF" ]; then timed startup-rctr-sif "$RCTR" exec "$IMG_BB_SIF" true; fi
        timed startup-rctr-sqfs "$RCTR" exec "$IMG_BB_SQFS" true
        timed startup-baseline baseline_startup
        if [ $user = 1 ]; then
            timed startup-user-rctr as_bench_user "$USER_DIR/rctr" exec "$USER_DIR/busybox.sqfs" true
            timed startup-user-baseline baseline_user_startup
        fi
    done
}

# === 2. checkpoint ============================================================================
# Per workload: instance name, checkpoint name, and facts read from the instance record.
declare -A INIT_PID APP_PID APP_HOST_PID ENGINE_DIR

# instance_record NAME: the record rctr keeps of instance NAME (instances/<host>/<user>/NAME.json).
instance_record() {
    local found=("$HOME"/.rctr/instances/*/*/"$1".json)
    { [ ${#found[@]} -eq 1 ] && [ -f "${found[0]}" ]; } || die "no single instance record for $1 under $HOME/.rctr/instances"
    echo "${found[0]}"
}
ckpt_dir() { echo "$HOME/.rctr/checkpoint/criu/$1"; }

# engine_argv BUNDLE_DIR: the bundled CRIU as run inside the container (as rctr runs it).
engine_argv() {
    local loader
    loader=$("${TOOLS[@]}" json "$1/bundle.json" loader)
    echo "/.rctr-engine/lib/$loader --library-path /.rctr-engine/lib --inhibit-cache /.rctr-engine/bin/criu"
}

# start_workload WL CMD...: an instance "bench-WL" launched with checkpoint "ck-WL".
start_workload() {
    local wl=$1
    shift
    quietly "$RCTR" checkpoint create "ck-$wl"
    quietly "$RCTR" instance start --ckpt-launch "ck-$wl" "$IMG_PY" "bench-$wl" "$@"
    STARTED_INSTANCES+=("bench-$wl")
    workload_facts "$wl"
}

# workload_facts WL: pids and engine mount of instance bench-WL, from its record.
workload_facts() {
    local wl=$1 rec
    rec=$(instance_record "bench-$wl")
    INIT_PID[$wl]=$("${TOOLS[@]}" json "$rec" init_pid)
    APP_PID[$wl]=$("${TOOLS[@]}" json "$rec" app_pid)
    APP_HOST_PID[$wl]=$("${TOOLS[@]}" json "$rec" app_host_pid)
    ENGINE_DIR[$wl]=$("${TOOLS[@]}" engine-mount "$rec")
}

# wait_rss PID MIB: until the process has MIB MiB resident (memhog has touched its memory).
wait_rss() {
    local want=$(($2 * 1024)) rss i
    for ((i = 0; i < 600; i++)); do
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0)
        [ "${rss:-0}" -ge "$want" ] && return 0
        sleep 0.1
    done
    die "process $1 did not reach $2 MiB resident within 60 s"
}

rctr_checkpoint() { # WL
    local wl=$1 t0 ms json=$WORK/ckpt.json size
    sync
    t0=$(now_us)
    "$RCTR" checkpoint instance --json "bench-$wl" >"$json" 2>"$WORK/last.log" ||
        { cat "$WORK/last.log" >&2; die "rctr checkpoint instance bench-$wl failed"; }
    ms=$(ms_since "$t0")
    size=$("${TOOLS[@]}" json "$json" size_bytes)
    record "ckpt-$wl-rctr" "$ms"
    record "ckpt-$wl-rctr-frozen" "$("${TOOLS[@]}" json "$json" frozen_ms)"
    record "ckpt-$wl-size" "$size"
    record "ckpt-$wl-rctr-mibs" "$(awk -v s="$size" -v ms="$ms" 'BEGIN { printf "%.1f", s / 1048576 / (ms / 1000) }')"
}

# raw_checkpoint WL [KEEP_AS]: the bundled criu dump with rctr's options, run by hand in the
# instance's mount and pid namespaces; then the same images fsync'ed (what rctr guarantees).
# With KEEP_AS the images are kept under that name for the restore case, and not counted.
raw_checkpoint() {
    local wl=$1 keep=${2:-} ck dir t0 ms
    ck=$(ckpt_dir "ck-$wl")
    dir=$ck/raw-dump
    rm -rf "$dir"
    mkdir -m 0700 "$dir"
    sync
    t0=$(now_us)
    # shellcheck disable=SC2046 # the engine argv is meant to split
    if ! env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin nsenter -t "${INIT_PID[$wl]}" -m -p --wd=/ -- \
        $(engine_argv "${ENGINE_DIR[$wl]}") dump -t "${APP_PID[$wl]}" -D /.checkpoint/raw-dump \
        -o /.checkpoint/raw-dump.log -v2 "${ENGINE_ARGS[@]}" </dev/null >/dev/null 2>&1; then
        grep Error "$ck/raw-dump.log" >&2 || true
        die "raw criu dump of bench-$wl failed (log: $ck/raw-dump.log)"
    fi
    ms=$(ms_since "$t0")
    sync -- "$dir"/* "$dir"
    if [ -n "$keep" ]; then
        rm -rf "${ck:?}/$keep"
        mv "$dir" "$ck/$keep"
        return 0
    fi
    record "ckpt-$wl-raw" "$ms"
    record "ckpt-$wl-rawsync" "$(ms_since "$t0")"
    record "ckpt-$wl-raw-frozen" "$("${TOOLS[@]}" frozen-ms "$dir")"
    record "ckpt-$wl-raw-size" "$("${TOOLS[@]}" dir-bytes "$dir")"
    rm -rf "$dir"
}

# Phases of an rctr checkpoint, 3 runs; one line per run in results/breakdown-WL: before the
# engine, engine, after the engine, total (ms), bounded by the fork, wait and exit of rctr's main
# thread, whatever helper threads do in between. `perf trace` (tracepoints, no ptrace) when it
# works, else strace of the main thread alone (not -f: CRIU, a child, could not ptrace the
# application otherwise), whose stops at each of the ~1100 syscalls of the start inflate the
# first phase several times.
checkpoint_breakdown() { # WL
    local wl=$1 i
    for i in 1 2 3; do traced_checkpoint "$wl"; done
}

traced_checkpoint() { # WL
    local wl=$1
    local trace=$WORK/trace-$wl.txt
    sync
    if command -v perf >/dev/null &&
        perf trace -e execve,clone,wait4,exit_group -o "$trace" -- \
            "$RCTR" checkpoint instance --json "bench-$wl" >/dev/null 2>"$WORK/last.log" &&
        perf_phases "$trace" >>"$RES/breakdown-$wl"; then
        echo "perf trace" >"$RES/breakdown-tool"
        return 0
    fi
    if ! command -v strace >/dev/null; then
        echo "neither perf nor strace is installed (apt-get install linux-perf strace)" >"$RES/no-breakdown"
        return 0
    fi
    sync
    strace -tt -T -e trace=execve,clone,wait4,exit_group -o "$trace" \
        "$RCTR" checkpoint instance --json "bench-$wl" >/dev/null 2>"$WORK/last.log" || return 0
    if strace_phases "$trace" >>"$RES/breakdown-$wl"; then echo "strace" >"$RES/breakdown-tool"; fi
}

# perf_phases FILE: the phases from `perf trace` output, whose times are ms since the exec.
perf_phases() {
    awk '
        { if (!match($0, /: rctr\/[0-9]+ /)) next; tid = substr($0, RSTART + 7, RLENGTH - 8) }
        /execve\(/ && !main { main = tid }
        tid != main { next }
        function dur(   s) { if (!match($0, /\( *[0-9.]+ ms\)/)) return -1; s = substr($0, RSTART + 1); return s + 0 }
        / clone\(/ && !fork { fork = $1 + 0 }
        /wait4\(/ && fork && !engine_end && dur() >= 0 { engine_end = $1 + dur() }
        /exit_group\(/ { end = $1 + 0 }
        END {
            if (!fork || !engine_end || !end) exit 1
            printf "%.1f %.1f %.1f %.1f\n", fork, engine_end - fork, end - engine_end, end
        }' "$1"
}

# strace_phases FILE: the phases from `strace -tt -T` output.
strace_phases() {
    awk '
        function t(s,   a) { split(s, a, ":"); return a[1] * 3600 + a[2] * 60 + a[3] }
        function dur(line) { if (match(line, /<[0-9.]+>$/)) return substr(line, RSTART + 1, RLENGTH - 2) + 0; return 0 }
        NR == 1 { start = t($1) }
        /clone/ && !fork { fork = t($1) }
        /wait4\(/ && fork && !engine_end { engine_end = t($1) + dur($0) }
        /exit_group/ { end = t($1) }
        END {
            if (!fork || !engine_end || !end) exit 1
            printf "%.1f %.1f %.1f %.1f\n", (fork - start) * 1000, (engine_end - fork) * 1000,
                (end - engine_end) * 1000, (end - start) * 1000
        }' "$1"
}

# disk_speed KEY: one sample of the disk's sequential write speed, as dd measures it: 1 GiB
# of random data (from RAM, so reading costs nothing) written and fsync'ed to the scratch disk.
disk_speed() {
    local key=$1 t0 s
    [ -f "$RAND" ] || head -c 1G /dev/urandom >"$RAND"
    sync
    t0=$(now_us)
    dd if="$RAND" of="$WORK/dd.out" bs=1M conv=fsync status=none
    s=$(ms_since "$t0")
    record "$key" "$(awk -v ms="$s" 'BEGIN { printf "%.1f", 1024 / (ms / 1000) }')"
    rm -f "$WORK/dd.out"
}

case_checkpoint() {
    local wl i mib port
    # The disk on its own: a warm-up, then 3 runs back to back. (On a VM the first write into
    # memory the guest has not used lately is much slower; see docs/benchmarks.md.)
    say "2/4 disk: sequential write speed, dd of 1 GiB with fsync"
    for i in 0 1 2 3; do disk_speed disk-mibs; done
    sed -i 1d "$RES/disk-mibs"
    for mib in "${MEM_SIZES[@]}"; do
        wl=m$mib
        say "2/4 checkpoint: $mib MiB of touched memory, $RUNS runs each"
        start_workload "$wl" /opt/memhog "$mib"
        wait_rss "${APP_HOST_PID[$wl]}" "$mib"
        checkpoint_pair "$wl"
    done
    wl=srv
    say "2/4 checkpoint: Python TCP server, $RUNS runs each"
    port=$("${TOOLS[@]}" free-port)
    SRV_PORT=$port
    start_workload srv python3 /opt/counter_server.py "$port"
    "$BW" port "$port" 10000 >/dev/null || die "the counter server in instance bench-srv never answered on port $port"
    checkpoint_pair srv
    rm -f "$RAND"
    # What a restore of the 1 GiB checkpoint pays before the engine runs: the checksum pass.
    for ((i = 0; i < RUNS; i++)); do
        timed verify-m1024 "$RCTR" checkpoint verify ck-m1024
    done
    # The images the restore case uses: rctr's newest generation and this raw dump.
    raw_checkpoint srv raw-keep
    SRV_PIPES=("$(readlink "/proc/${APP_HOST_PID[srv]}/fd/1")" "$(readlink "/proc/${APP_HOST_PID[srv]}/fd/2")")
    SRV_DEV_MODE=$(stat -c %a "/proc/${APP_HOST_PID[srv]}/root/dev/null")
    SRV_ROOT_OFFSET=$("${TOOLS[@]}" json "$(instance_record bench-srv)" plan.root.offset)
    SRV_ROOT_SIZE=$("${TOOLS[@]}" json "$(instance_record bench-srv)" plan.root.size)
}

# checkpoint_pair WL: a warm-up of each, then RUNS rounds alternating which goes first,
# then three traced rctr runs for the phase breakdown. The disk's speed is sampled again in
# each round of the 1 GiB workload, under the same conditions as the checkpoints.
checkpoint_pair() {
    local wl=$1 i k
    rctr_checkpoint "$wl"
    raw_checkpoint "$wl"
    for k in ckpt-$wl-rctr ckpt-$wl-rctr-frozen ckpt-$wl-size ckpt-$wl-rctr-mibs \
        ckpt-$wl-raw ckpt-$wl-rawsync ckpt-$wl-raw-frozen ckpt-$wl-raw-size; do
        rm -f "$RES/$k" # the warm-up's samples
    done
    for ((i = 0; i < RUNS; i++)); do
        if ((i % 2)); then
            raw_checkpoint "$wl"
            rctr_checkpoint "$wl"
        else
            rctr_checkpoint "$wl"
            raw_checkpoint "$wl"
        fi
        if [ "$wl" = m1024 ]; then disk_speed disk-mibs-rounds; fi
    done
    checkpoint_breakdown "$wl"
}

# === 3. restore ===============================================================================
# The Python server stopped after case 2; rctr restarts its newest generation, the baseline
# restores the raw dump (same server, same options) in handmade-ctr.sh's container.

rctr_restore() {
    local t0 answer
    t0=$(now_us)
    quietly "$RCTR" instance start --ckpt-restart ck-srv "$IMG_PY" bench-srv-r
    STARTED_INSTANCES+=(bench-srv-r)
    answer=$("$BW" port "$SRV_PORT" 10000) || die "the restored server (rctr) never answered"
    record restore-rctr "$(ms_since "$t0")"
    [ "$answer" != "request:1" ] || die "the server rctr restarted answered $answer: it started afresh instead of restoring"
    quietly "$RCTR" instance stop bench-srv-r
    "$BW" free "$SRV_PORT" 10000 || die "port $SRV_PORT still busy after stopping bench-srv-r"
}

raw_restore() {
    local ck t0 answer pidfile=$WORK/pids/handmade engine
    ck=$(ckpt_dir ck-srv)
    engine=$(engine_argv "${ENGINE_DIR[srv]}")
    local script="echo 99999 >/proc/sys/kernel/ns_last_pid && $engine restore -D /.checkpoint/raw-keep \
-o /.checkpoint/raw-restore.log -v2 ${RESTORE_ARGS[*]} --inherit-fd 'fd[1]:${SRV_PIPES[0]}' \
--inherit-fd 'fd[2]:${SRV_PIPES[1]}' </dev/null && exec sleep 2147483647"
    t0=$(now_us)
    PIDFILE=$pidfile DEV_MODE=0$SRV_DEV_MODE bash "$HERE/handmade-ctr.sh" "$IMG_PY" \
        "$SRV_ROOT_OFFSET" "$SRV_ROOT_SIZE" "${ENGINE_DIR[srv]}" "$ck" "$WORK/mnt" -- /bin/sh -c "$script" > >(cat >>"$WORK/handmade.log") 2>&1 &
    local bg=$!
    if ! answer=$("$BW" port "$SRV_PORT" 10000); then
        grep Error "$ck/raw-restore.log" >&2 || true
        die "the server restored by hand never answered (log: $ck/raw-restore.log)"
    fi
    record restore-raw "$(ms_since "$t0")"
    [ "$answer" != "request:1" ] || die "the server restored by hand answered $answer: not restored"
    kill -KILL "$(cat "$pidfile")"
    wait "$bg" 2>/dev/null || true
    rm -f "$pidfile"
    "$BW" free "$SRV_PORT" 10000 || die "port $SRV_PORT still busy after killing the hand-made container"
}

# A plain `instance start` of the same server until it answers, against `rctr exec` of it in
# the foreground until it answers (exec's cost + the application's own start): what an
# instance adds (its detached init, its record, watching the start) and no fixed wait.
start_instance() {
    local t0
    t0=$(now_us)
    quietly "$RCTR" instance start "$IMG_PY" bench-start python3 /opt/counter_server.py "$SRV_PORT"
    STARTED_INSTANCES+=(bench-start)
    "$BW" port "$SRV_PORT" 10000 >/dev/null || die "the server of instance bench-start never answered"
    record start-instance "$(ms_since "$t0")"
    quietly "$RCTR" instance stop bench-start
    "$BW" free "$SRV_PORT" 10000 || die "port $SRV_PORT still busy after stopping bench-start"
}

start_exec() {
    local t0 pid
    t0=$(now_us)
    "$RCTR" exec "$IMG_PY" python3 /opt/counter_server.py "$SRV_PORT" >>"$WORK/exec-server.log" 2>&1 &
    pid=$!
    "$BW" port "$SRV_PORT" 10000 >/dev/null || die "the server run by rctr exec never answered"
    record start-exec "$(ms_since "$t0")"
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    "$BW" free "$SRV_PORT" 10000 || die "port $SRV_PORT still busy after rctr exec of the server ended"
}

case_restore() {
    local i t0
    say "3/4 restore: Python TCP server until it answers, $RUNS runs each"
    quietly "$RCTR" instance stop bench-srv
    "$BW" free "$SRV_PORT" 10000 || die "port $SRV_PORT still busy after stopping bench-srv"
    rctr_restore
    raw_restore
    rm -f "$RES/restore-rctr" "$RES/restore-raw" # warm-up
    for ((i = 0; i < RUNS; i++)); do
        if ((i % 2)); then
            raw_restore
            rctr_restore
        else
            rctr_restore
            raw_restore
        fi
    done
    # The restore side's own checksum pass, alone.
    for ((i = 0; i < RUNS; i++)); do
        timed restore-verify "$RCTR" checkpoint verify ck-srv
    done
    start_instance
    start_exec
    rm -f "$RES/start-instance" "$RES/start-exec" # warm-up
    for ((i = 0; i < RUNS; i++)); do
        if ((i % 2)); then
            start_exec
            start_instance
        else
            start_instance
            start_exec
        fi
    done
}

# === 4. build =================================================================================
case_build() {
    local i
    say "4/4 build: $(du -sm "$WORK/rootfs-python" | cut -f1) MB root filesystem, $RUNS runs each"
    for ((i = 0; i < RUNS; i++)); do
        if ((i % 2)); then
            timed build-mksquashfs mksquashfs "$WORK/rootfs-python" "$WORK/b.sqfs" -comp gzip -noappend -no-progress
            timed build-rctr "$RCTR" build -F "$WORK/b.sif" "$WORK/rootfs-python"
        else
            timed build-rctr "$RCTR" build -F "$WORK/b.sif" "$WORK/rootfs-python"
            timed build-mksquashfs mksquashfs "$WORK/rootfs-python" "$WORK/b.sqfs" -comp gzip -noappend -no-progress
        fi
    done
    BUILD_SIZES="$(stat -c %s "$WORK/b.sif") $(stat -c %s "$WORK/b.sqfs")"
}

# === 5. job ===================================================================================
# The same Python counter (a line every 20 ms) checkpointed once as a foreground job (on USR1,
# then exit) and once as an instance (checkpoint --stop); then, alternating, each is brought
# back from its checkpoint and timed from the command's start until a new line of output
# reaches the job's output file / the instance's log.
PY_COUNTER='import itertools, time
for i in itertools.count(1):
    print(i, flush=True)
    time.sleep(0.02)'

inst_log() { echo "$(dirname "$(instance_record "$1")")/$1.out"; }

job_resume() {
    local t0 size pid
    size=$(stat -c %s "$WORK/job.out")
    t0=$(now_us)
    "$RCTR" exec --ckpt ck-job "$IMG_PY" python3 -u -c "$PY_COUNTER" >>"$WORK/job.out" 2>>"$WORK/job.err" &
    pid=$!
    "$BW" grow "$WORK/job.out" "$size" 10000 >/dev/null || die "the resumed job printed nothing (see $WORK/job.err)"
    record job-resume "$(ms_since "$t0")"
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
}

instance_resume() {
    local t0 size log=$INST_LOG
    size=$(stat -c %s "$log")
    t0=$(now_us)
    quietly "$RCTR" instance start --ckpt-restart ck-inst "$IMG_PY" bench-inst python3 -u -c "$PY_COUNTER"
    "$BW" grow "$log" "$size" 10000 >/dev/null || die "the restarted instance logged nothing"
    record job-instance "$(ms_since "$t0")"
    quietly "$RCTR" instance stop bench-inst
}

case_job() {
    local i pid
    say "5/5 job: resume until the first new output line vs instance restart, $RUNS runs each"
    quietly "$RCTR" checkpoint create ck-job --engine criu
    : >"$WORK/job.out"
    "$RCTR" exec --ckpt ck-job --ckpt-signal USR1 --ckpt-then exit "$IMG_PY" python3 -u -c "$PY_COUNTER" >>"$WORK/job.out" 2>>"$WORK/job.err" &
    pid=$!
    "$BW" grow "$WORK/job.out" 0 10000 >/dev/null || die "the job printed nothing (see $WORK/job.err)"
    kill -USR1 "$pid"
    wait "$pid" || die "the job did not exit 0 after its checkpoint (see $WORK/job.err)"
    quietly "$RCTR" checkpoint create ck-inst --engine criu
    quietly "$RCTR" instance start --ckpt-launch ck-inst "$IMG_PY" bench-inst python3 -u -c "$PY_COUNTER"
    STARTED_INSTANCES+=(bench-inst)
    # The log keeps its path when the instance is stopped and restarted under the same name.
    INST_LOG=$(inst_log bench-inst)
    "$BW" grow "$INST_LOG" 0 10000 >/dev/null || die "the instance logged nothing"
    quietly "$RCTR" checkpoint instance --stop bench-inst
    job_resume
    instance_resume
    rm -f "$RES/job-resume" "$RES/job-instance" # warm-up
    for ((i = 0; i < RUNS; i++)); do
        if ((i % 2)); then
            instance_resume
            job_resume
        else
            job_resume
            instance_resume
        fi
    done
}

# === 6. podman ================================================================================
# The counter server of case 2 as a peer runtime runs it: Podman 4.3 (Debian) with runc and the
# same CRIU (the `criu` wrapper `make bench-deps` puts on PATH), its image imported from the
# same root filesystem (no registry). Per round, alternating which goes first: checkpoints
# leaving the server running (Podman's `checkpoint -R`, rctr's `checkpoint instance`, and a
# raw `criu dump --leave-running` of rctr's server for the freeze time), then restores of
# both stopped servers until each answers (with its count, checked).
POD_NAME=""
POD_IMAGE=""
# Podman 4.3 only starts containers here with rlimits at or below the hard limits (root lacks
# CAP_SYS_RESOURCE on these machines); runc because Debian's crun links a libcriu that fails.
POD_RUN_ARGS=(--runtime runc --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 --network host)

podman_ready() {
    command -v podman >/dev/null || { echo "podman is not installed (make bench-deps)"; return 1; }
    command -v runc >/dev/null || { echo "runc is not installed (make bench-deps)"; return 1; }
    criu --version 2>/dev/null | grep -q "Version: 4\." ||
        { echo "no CRIU 4.x as 'criu' on PATH for runc (make bench-deps)"; return 1; }
    return 0
}

# pod_checkpoint: `podman container checkpoint -R` of the running server; CRIU's own freeze
# time from --print-stats.
pod_checkpoint() {
    local t0 json=$WORK/pod-ckpt.json
    sync
    t0=$(now_us)
    podman container checkpoint -R --print-stats "$POD_NAME" >"$json" 2>"$WORK/last.log" ||
        { cat "$WORK/last.log" >&2; die "podman container checkpoint -R $POD_NAME failed"; }
    record pod-ckpt-podman "$(ms_since "$t0")"
    record pod-ckpt-podman-frozen "$("${TOOLS[@]}" pod-frozen-ms "$json")"
}

pod_restore() {
    local t0 answer
    podman kill "$POD_NAME" >/dev/null 2>&1 || true
    podman wait "$POD_NAME" >/dev/null 2>&1 || true
    "$BW" free "$POD_PORT" 10000 || die "port $POD_PORT still busy after podman kill"
    t0=$(now_us)
    podman container restore "$POD_NAME" >"$WORK/last.log" 2>&1 ||
        { cat "$WORK/last.log" >&2; die "podman container restore $POD_NAME failed"; }
    answer=$("$BW" port "$POD_PORT" 10000) || die "the server Podman restored never answered"
    record pod-restore-podman "$(ms_since "$t0")"
    [ "$answer" != "request:1" ] || die "the server Podman restored answered $answer: not restored"
}

# pod_rctr_restore: the rctr side's instance (bench-pod) stopped and restarted from its newest
# generation until it answers; then the workload's facts (pids) are read again.
pod_rctr_restore() {
    local t0 answer
    quietly "$RCTR" instance stop bench-pod
    "$BW" free "$POD_RPORT" 10000 || die "port $POD_RPORT still busy after stopping bench-pod"
    t0=$(now_us)
    quietly "$RCTR" instance start --ckpt-restart ck-pod "$IMG_PY" bench-pod
    answer=$("$BW" port "$POD_RPORT" 10000) || die "the server rctr restarted (bench-pod) never answered"
    record pod-restore-rctr "$(ms_since "$t0")"
    [ "$answer" != "request:1" ] || die "the server rctr restarted answered $answer: it started afresh"
    workload_facts pod
}

pod_round() { # FIRST: rctr or podman
    local i
    if [ "$1" = rctr ]; then
        rctr_checkpoint pod
        pod_checkpoint
        raw_checkpoint pod
        pod_rctr_restore
        pod_restore
    else
        pod_checkpoint
        raw_checkpoint pod
        rctr_checkpoint pod
        pod_restore
        pod_rctr_restore
    fi
}

case_podman() {
    local i k reason
    if ! reason=$(podman_ready); then
        skip podman "$reason"
        return 0
    fi
    say "6/6 podman: checkpoint -R and restore until it answers, $RUNS rounds"
    POD_IMAGE=localhost/rctr-bench-python:$$
    tar -C "$WORK/rootfs-python" -cf "$WORK/rootfs-python.tar" .
    quietly podman import -q "$WORK/rootfs-python.tar" "$POD_IMAGE"
    rm -f "$WORK/rootfs-python.tar"
    POD_PORT=$("${TOOLS[@]}" free-port)
    POD_NAME=rctr-bench-$$
    quietly podman run -d --name "$POD_NAME" "${POD_RUN_ARGS[@]}" "$POD_IMAGE" \
        python3 /opt/counter_server.py "$POD_PORT"
    "$BW" port "$POD_PORT" 10000 >/dev/null || die "the counter server in Podman never answered on port $POD_PORT"
    POD_RPORT=$("${TOOLS[@]}" free-port)
    start_workload pod python3 /opt/counter_server.py "$POD_RPORT"
    "$BW" port "$POD_RPORT" 10000 >/dev/null || die "the counter server in bench-pod never answered on port $POD_RPORT"
    pod_round rctr # warm-up
    for k in pod-ckpt-podman pod-ckpt-podman-frozen pod-restore-podman pod-restore-rctr \
        ckpt-pod-rctr ckpt-pod-rctr-frozen ckpt-pod-size ckpt-pod-rctr-mibs ckpt-pod-raw \
        ckpt-pod-rawsync ckpt-pod-raw-frozen ckpt-pod-raw-size; do
        rm -f "$RES/$k"
    done
    for ((i = 0; i < RUNS; i++)); do
        if ((i % 2)); then pod_round podman; else pod_round rctr; fi
    done
    POD_VERSIONS="podman $(podman --version | awk '{ print $3 }'), runc $(runc --version | awk 'NR == 1 { print $3 }')"
    quietly "$RCTR" instance stop bench-pod
    podman rm -f "$POD_NAME" >/dev/null 2>&1 || true
    podman rmi -f "$POD_IMAGE" >/dev/null 2>&1 || true
    POD_NAME=""
}

# === 7. migrate ===============================================================================
# e2e/src/bin/migrate-bench.rs starts the two-node Slurm cluster of the e2e tests and measures
# all three moves itself (see its header); it writes its samples into $RES.
case_migrate() {
    local prog missing=""
    for prog in munged slurmctld slurmd sbatch scontrol squeue ip; do
        command -v "$prog" >/dev/null || [ -x "/usr/sbin/$prog" ] || missing="$missing $prog"
    done
    if [ -n "$missing" ]; then
        skip migrate "Slurm, munge or iproute2 is not installed (missing:$missing): make deps"
        return 0
    fi
    say "7/7 migrate: the Python server between two Slurm nodes, $RUNS runs each"
    # The rctr measured is the one on $PATH (the job script says `rctr`).
    PATH="$(dirname "$RCTR"):$PATH" "$MIGRATE_BENCH" "$IMG_PY" "$RUNS" "$RES" "$WORK" 2>"$WORK/migrate.log" ||
        { tail -n 30 "$WORK/migrate.log" >&2; die "the migration case failed (log above)"; }
}

# === 8. lazy restore ==========================================================================
# A server holding 1 GiB of patterned memory (e2e/src/apps/memserver.c) restored eagerly and
# with --lazy-pages, each until it answers (one word of its memory checked) and then until its
# whole memory has been checked, next to the Python server's restore, in the same rounds.

lazy_restore_once() { # KEY CKPT PORT [CHECK_PORT [--lazy-pages]]
    local key=$1 ck=$2 port=$3 check=${4:-} t0 answer
    shift 3
    [ $# -gt 0 ] && shift
    t0=$(now_us)
    quietly "$RCTR" instance start --ckpt-restart "$ck" "$@" "$IMG_PY" bench-lz-r
    STARTED_INSTANCES+=(bench-lz-r)
    answer=$("$BW" port "$port" 30000) || die "the server restored from $ck never answered"
    record "$key" "$(ms_since "$t0")"
    case $answer in *bad*) die "the server restored from $ck answered $answer: memory lost" ;; esac
    if [ -n "$check" ]; then
        answer=$("$BW" port "$check" 60000) || die "the server restored from $ck never checked its memory"
        record "$key-all" "$(ms_since "$t0")"
        [[ $answer == ok* ]] || die "the server restored from $ck found its memory wrong: $answer"
    fi
    quietly "$RCTR" instance stop bench-lz-r
    "$BW" free "$port" 10000 || die "port $port still busy after stopping bench-lz-r"
}

# === 9. dump throughput against memory size ===================================================
# memhog's touched memory at each size, checkpointed by rctr (durable: fsync'd, checksummed)
# alternating with dd writing as many bytes (from /dev/zero, nothing held in memory) with
# fsync: the disk's own speed for that size under the same conditions.

rss_disk_speed() { # KEY MIB
    local t0 ms
    sync
    t0=$(now_us)
    dd if=/dev/zero of="$WORK/dd-rss.out" bs=1M count="$2" conv=fsync status=none
    ms=$(ms_since "$t0")
    rm -f "$WORK/dd-rss.out"
    record "$1" "$(awk -v m="$2" -v ms="$ms" 'BEGIN { printf "%.1f", m / (ms / 1000) }')"
}

rss_checkpoint() { # WL
    local wl=$1 t0 ms json=$WORK/ckpt.json size
    sync
    t0=$(now_us)
    # One generation kept: 8 GiB checkpoints would otherwise fill the disk.
    "$RCTR" checkpoint instance --json --keep 1 "bench-$wl" >"$json" 2>"$WORK/last.log" ||
        { cat "$WORK/last.log" >&2; die "rctr checkpoint instance bench-$wl failed"; }
    ms=$(ms_since "$t0")
    size=$("${TOOLS[@]}" json "$json" size_bytes)
    record "$wl-ms" "$ms"
    record "$wl-frozen" "$("${TOOLS[@]}" json "$json" frozen_ms)"
    record "$wl-mibs" "$(awk -v s="$size" -v ms="$ms" 'BEGIN { printf "%.1f", s / 1048576 / (ms / 1000) }')"
}

case_rss() {
    local mib wl i
    for mib in "${RSS_SIZES[@]}"; do
        wl=rss$mib
        say "9/9 dump throughput: $mib MiB of touched memory, $RUNS_RSS rounds"
        start_workload "$wl" /opt/memhog "$mib"
        wait_rss "${APP_HOST_PID[$wl]}" "$mib"
        for ((i = -1; i < RUNS_RSS; i++)); do
            if ((i % 2)); then
                rss_checkpoint "$wl"
                rss_disk_speed "$wl-disk" "$mib"
            else
                rss_disk_speed "$wl-disk" "$mib"
                rss_checkpoint "$wl"
            fi
            if ((i < 0)); then rm -f "$RES/$wl"-*; fi # the warm-up
        done
        quietly "$RCTR" instance stop "bench-$wl"
        quietly "$RCTR" checkpoint delete "ck-$wl"
    done
}

case_lazy() {
    local i ps pm pc
    say "8/8 lazy restore: 1 GiB server eager and lazy vs the Python server, $RUNS runs each"
    ps=$("${TOOLS[@]}" free-port)
    start_workload lzsrv python3 /opt/counter_server.py "$ps"
    "$BW" port "$ps" 10000 >/dev/null || die "the counter server in bench-lzsrv never answered"
    quietly "$RCTR" checkpoint instance bench-lzsrv
    quietly "$RCTR" instance stop bench-lzsrv
    pm=$("${TOOLS[@]}" free-port)
    pc=$("${TOOLS[@]}" free-port)
    start_workload lzmem /opt/memserver 1024 "$pm" "$pc"
    "$BW" port "$pc" 60000 >/dev/null || die "the memory server in bench-lzmem never answered"
    quietly "$RCTR" checkpoint instance bench-lzmem
    quietly "$RCTR" instance stop bench-lzmem
    for ((i = -1; i < RUNS; i++)); do
        case $(((i + 3) % 3)) in
            0) lazy_restore_once lz-small ck-lzsrv "$ps"
               lazy_restore_once lz-eager ck-lzmem "$pm" "$pc"
               lazy_restore_once lz-lazy ck-lzmem "$pm" "$pc" --lazy-pages ;;
            1) lazy_restore_once lz-eager ck-lzmem "$pm" "$pc"
               lazy_restore_once lz-lazy ck-lzmem "$pm" "$pc" --lazy-pages
               lazy_restore_once lz-small ck-lzsrv "$ps" ;;
            2) lazy_restore_once lz-lazy ck-lzmem "$pm" "$pc" --lazy-pages
               lazy_restore_once lz-small ck-lzsrv "$ps"
               lazy_restore_once lz-eager ck-lzmem "$pm" "$pc" ;;
        esac
        if ((i < 0)); then rm -f "$RES"/lz-*; fi # the warm-up
    done
    # The checksum pass every restore of the 1 GiB checkpoint pays first.
    for ((i = 0; i < RUNS; i++)); do
        timed lz-verify "$RCTR" checkpoint verify ck-lzmem
    done
    LZ_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
}

# === run ======================================================================================
T_START=$(now_us)
BUSY0=$(machine_busy_s)
own_cpu
OWN0=$OWN_CPU
if wants startup; then case_startup; fi

CRIU_OK=1
if wants checkpoint || wants restore; then
    if ! "$RCTR" checkpoint check >"$WORK/check.log" 2>&1; then
        CRIU_OK=0
        reason="the checkpoint engine does not work here ($(grep -m1 -i error "$WORK/check.log" || tail -n1 "$WORK/check.log")); install it with etc/setup/install-criu.sh"
        skip checkpoint "$reason"
        skip restore "$reason"
    fi
fi
if [ "$CRIU_OK" = 1 ] && { wants checkpoint || wants restore; }; then
    case_checkpoint
    for wl in m256 m1024; do
        quietly "$RCTR" instance stop "bench-$wl"
    done
    if wants restore; then case_restore; fi
fi
if wants job; then
    if [ "$CRIU_OK" = 1 ] && "$RCTR" checkpoint check >/dev/null 2>&1; then
        case_job
    else
        skip job "the checkpoint engine does not work here; install it with etc/setup/install-criu.sh"
    fi
fi
if wants podman; then
    if [ "$CRIU_OK" = 1 ] && "$RCTR" checkpoint check >/dev/null 2>&1; then
        case_podman
    else
        skip podman "the checkpoint engine does not work here; install it with etc/setup/install-criu.sh"
    fi
fi
if wants migrate; then
    if [ "$CRIU_OK" = 1 ] && "$RCTR" checkpoint check >/dev/null 2>&1; then
        case_migrate
    else
        skip migrate "the checkpoint engine does not work here; install it with etc/setup/install-criu.sh"
    fi
fi
if wants lazy; then
    if "$RCTR" checkpoint check >/dev/null 2>&1; then
        case_lazy
    else
        skip lazy "the checkpoint engine does not work here; install it with etc/setup/install-criu.sh"
    fi
fi
if wants rss; then
    if "$RCTR" checkpoint check >/dev/null 2>&1; then
        case_rss
    else
        skip rss "the checkpoint engine does not work here; install it with etc/setup/install-criu.sh"
    fi
fi
if wants build; then
    if [ "$RCTR_BUILD_OK" = 1 ]; then
        case_build
    else
        skip build "rctr build failed: $BUILD_ERROR"
    fi
fi
TOTAL_S=$(awk -v ms="$(ms_since "$T_START")" 'BEGIN { printf "%.0f", ms / 1000 }')
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
own_cpu
FOREIGN_CPU=$(foreign_cpu_pct "$BUSY0" "$OWN0" "$OWN_CPU" "$(awk -v ms="$(ms_since "$T_START")" 'BEGIN { print ms / 1000 }')")

# shellcheck source=report.sh
. "$HERE/report.sh"
write_report
