# shellcheck shell=bash
# lib.sh: helpers of e2e/bench/run.sh (sourced): messages, timing, samples and statistics.
# Samples are plain files, one number per line, under $RES (results/<key>).

say() { echo "bench: $*" >&2; }
die() {
    echo "bench: error: $*" >&2
    exit 1
}

# Microseconds since the epoch, without forking ($EPOCHREALTIME is bash >= 5).
now_us() { echo "${EPOCHREALTIME/./}"; }

# ms_since T0_US: milliseconds elapsed since T0_US, three decimals.
ms_since() {
    local t1
    t1=$(now_us)
    awk -v a="$1" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1000 }'
}

# record KEY VALUE: appends one sample.
record() { echo "$2" >>"$RES/$1"; }

# has KEY: whether KEY has samples.
has() { [ -s "$RES/$1" ]; }

# stat_of KEY WHAT: median, min, max or n of KEY's samples ("" when there are none).
stat_of() {
    has "$1" || { echo ""; return 0; }
    sort -g "$RES/$1" | awk -v what="$2" '
        { v[NR] = $1 }
        END {
            if (what == "n") { print NR; exit }
            if (what == "min") { print v[1]; exit }
            if (what == "max") { print v[NR]; exit }
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            print m
        }'
}

# fmt NUMBER [DECIMALS]: rounded for the report ("–" when empty).
fmt() {
    [ -n "$1" ] || { echo "–"; return 0; }
    awk -v x="$1" -v d="${2:-1}" 'BEGIN { printf "%.*f\n", d, x }'
}

# summary KEY [DECIMALS]: "median (min–max)" of KEY, e.g. "17.3 (16.4–20.1)".
summary() {
    has "$1" || { echo "–"; return 0; }
    local d=${2:-1}
    echo "$(fmt "$(stat_of "$1" median)" "$d") ($(fmt "$(stat_of "$1" min)" "$d")–$(fmt "$(stat_of "$1" max)" "$d"))"
}

# ratio A B: A/B with two decimals ("" when either is missing or B is 0).
ratio() {
    if [ -z "$1" ] || [ -z "$2" ]; then
        echo ""
        return 0
    fi
    awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print ""; else printf "%.2f\n", a / b }'
}

# verdict VALUE OP LIMIT: "met" / "**missed**" for VALUE <= or >= LIMIT ("not measured" if empty).
verdict() {
    [ -n "$1" ] || { echo "not measured"; return 0; }
    awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
        ok = (op == "<=") ? (v <= l) : (v >= l)
        print ok ? "met" : "**missed**"
    }'
}

# CPU seconds the whole machine spent busy so far (user, nice, system, irq, softirq, steal).
machine_busy_s() {
    awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%.2f\n", ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat
}

# own_cpu: sets OWN_CPU to the CPU seconds this shell and its waited-for descendants used so
# far, from bash's `times` (called directly: in a $(...) subshell it reports the subshell's).
own_cpu() {
    times >"$WORK/times"
    # shellcheck disable=SC2034 # read by the caller
    OWN_CPU=$(awk '{ for (i = 1; i <= NF; i++) { split($i, a, "m"); s += a[1] * 60 + a[2] } } END { printf "%.2f", s }' "$WORK/times")
}

# foreign_cpu_pct BUSY0 OWN0 OWN1 ELAPSED_S: share of the machine's CPU capacity used by other
# processes between two samples (approximate: kernel write-back threads and the instances'
# daemons, which are not our waited-for children, count as others).
foreign_cpu_pct() {
    awk -v b0="$1" -v o0="$2" -v o1="$3" -v t="$4" -v b1="$(machine_busy_s)" -v n="$(nproc)" \
        'BEGIN { p = 100 * ((b1 - b0) - (o1 - o0)) / (t * n); if (p < 0) p = 0; printf "%.0f\n", p }'
}

# skip CASE REASON: a case that could not run; the report says why.
skip() {
    say "skipping $1: $2"
    echo "$2" >"$RES/skip-$1"
}
skipped() { [ -f "$RES/skip-$1" ]; }
skip_reason() { cat "$RES/skip-$1"; }

# quietly CMD...: runs CMD with its output in $WORK/last.log; on failure dies showing it.
quietly() {
    if ! "$@" >"$WORK/last.log" 2>&1; then
        sed 's/^/    /' "$WORK/last.log" >&2
        die "command failed: $*"
    fi
}

# timed KEY CMD...: runs CMD quietly and records its wall time in ms under KEY.
timed() {
    local key=$1 t0
    shift
    t0=$(now_us)
    quietly "$@"
    record "$key" "$(ms_since "$t0")"
}
