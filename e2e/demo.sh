#!/usr/bin/env bash
# demo.sh: rctr's main demo (`make demo`). Runs the README's checkpoint/restart flow on a small
# Python TCP server that answers every connection with "request:<n>", n counting in memory:
#
#   request:1, request:2, checkpoint, stop, restart from the checkpoint, request:3
#
# The restarted server answering request:3 (not request:1) shows its memory came back from the
# checkpoint. Exits non-zero if it does not.
#
# It runs as you, with your ~/.rctr, like the README's commands; it refuses to start if the
# names it uses (checkpoint "ex", instances "server" and "restarted-server") are taken, and
# removes what it created, also on failure.
# Environment: RCTR_BIN (default target/debug/rctr), DEMO_PORT (default 8888, or a free port
# when 8888 is busy).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RCTR_BIN=${RCTR_BIN:-$REPO/target/debug/rctr}
CKPT="ex"
FIRST=server
SECOND=restarted-server

die() { echo "demo: error: $*" >&2; exit 1; }

[ -x "$RCTR_BIN" ] || die "$RCTR_BIN not found: run 'make build' first (or set RCTR_BIN)"
command -v ss >/dev/null || die "'ss' not found: install iproute2 (make deps)"
command -v cargo >/dev/null || die "'cargo' not found: run 'make deps'"
# Host-only Python settings would leak into the container's Python.
unset PYTHONHOME PYTHONPATH

listening() { [ -n "$(ss -ltnH "sport = :$1" 2>/dev/null)" ]; }

PORT=${DEMO_PORT:-8888}
if listening "$PORT"; then
    busy=$PORT
    PORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    echo "demo: port $busy is in use, using $PORT instead"
fi

# --- refuse to touch anything of the user's ------------------------------------------------------
checkpoints=$("$RCTR_BIN" checkpoint list --json) || die "rctr checkpoint list failed"
instances=$("$RCTR_BIN" instance list --json) || die "rctr instance list failed"
if grep -q "\"name\": \"$CKPT\"" <<<"$checkpoints"; then
    die "a checkpoint named '$CKPT' already exists in ~/.rctr; delete it (rctr checkpoint delete $CKPT) or run with another HOME"
fi
for name in "$FIRST" "$SECOND"; do
    if grep -q "\"instance\": \"$name\"" <<<"$instances"; then
        die "an instance named '$name' is running; stop it (rctr instance stop $name) or run with another HOME"
    fi
done

# --- cleanup, also on failure --------------------------------------------------------------------
WORK=$(mktemp -d /tmp/rctr-demo.XXXXXX)
STARTED=()
CKPT_CREATED=0
LOG_DIR="$HOME/.rctr/instances/$(cat /proc/sys/kernel/hostname)/$(id -un)"
cleanup() {
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        for name in "${STARTED[@]}"; do
            for log in "$LOG_DIR/$name.out" "$LOG_DIR/$name.err"; do
                [ -s "$log" ] && { echo "--- $log:"; tail -n 20 "$log"; }
            done
        done >&2
    fi
    for name in "${STARTED[@]}"; do
        "$RCTR_BIN" instance stop --force "$name" >/dev/null 2>&1 || true
    done
    if [ "$CKPT_CREATED" = 1 ]; then
        "$RCTR_BIN" checkpoint delete --force "$CKPT" >/dev/null 2>&1 || true
    fi
    if [ "$rc" -eq 0 ]; then # on failure the logs stay, for a closer look
        for name in "${STARTED[@]}"; do rm -f "$LOG_DIR/$name.out" "$LOG_DIR/$name.err"; done
    fi
    rm -rf "$WORK"
    [ "$rc" -eq 0 ] || echo "demo: FAILED (exit $rc); cleaned up" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- helpers ----------------------------------------------------------------------------------
rctr() { # prints the command as a user would type it, then runs it
    echo "\$ rctr $*"
    "$RCTR_BIN" "$@"
}

wait_for_port() { # polls until the server listens (connecting would count as a request)
    for _ in $(seq 400); do
        listening "$PORT" && return 0
        sleep 0.05
    done
    die "nothing listens on port $PORT after 20 s"
}

ask() { # $1 = expected answer
    local answer
    answer=$(timeout 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT && cat <&3") ||
        die "no answer from 127.0.0.1:$PORT"
    echo "  connect to 127.0.0.1:$PORT -> $answer"
    [ "$answer" = "$1" ] || die "expected '$1', the server answered '$answer'"
}

# --- the image -------------------------------------------------------------------------------
echo "demo: building server.sif (the host's python3 + busybox, /opt/counter_server.py as startscript)"
(cd "$REPO" && cargo run --quiet -p rctr-e2e --bin e2e-image -- server "$WORK/server.sif") >/dev/null
cd "$WORK"
echo

# --- the README flow -------------------------------------------------------------------------
rctr checkpoint create "$CKPT"
CKPT_CREATED=1
STARTED+=("$FIRST")
rctr instance start --ckpt-launch "$CKPT" server.sif "$FIRST" "$PORT"
wait_for_port
ask request:1
ask request:2
rctr checkpoint instance "$FIRST"
rctr instance stop "$FIRST"
STARTED+=("$SECOND")
rctr instance start --ckpt-restart "$CKPT" server.sif "$SECOND" "$PORT"
wait_for_port
ask request:3
rctr checkpoint list
# A checkpoint in use by a running instance cannot be deleted: stop it first.
rctr instance stop "$SECOND"
rctr checkpoint delete "$CKPT"
CKPT_CREATED=0
echo
echo "demo: OK: the server restarted from its checkpoint answered request:3, continuing its count"
