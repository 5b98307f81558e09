"""A Fibonacci job that checkpoints itself (rctr's application-level engine).

Prints "fib(N) = VALUE" for N = 1, 2, ... every few milliseconds. On SIGUSR1 it writes its
state (N and the last two values) to $RCTR_CKPT_DIR/fib.json and creates .done. Started with
$RCTR_RESTORE_DIR set, it loads that state and continues with the next number; otherwise it
starts from the beginning. The messages are the ones of the job this port comes from.
"""

import json
import os
import signal
import sys
import time

checkpoint_requested = False


def request_checkpoint(_signum, _frame) -> None:
    # Only note the request: the state is written between two steps, where it is consistent.
    global checkpoint_requested
    checkpoint_requested = True


def save(out: str, n: int, a: int, b: int) -> None:
    tmp = os.path.join(out, "fib.json.tmp")
    with open(tmp, "w") as f:
        json.dump({"n": n, "a": str(a), "b": str(b)}, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, os.path.join(out, "fib.json"))
    open(os.path.join(out, ".done"), "w").close()


def load(src: str):
    path = os.path.join(src, "fib.json")
    with open(path) as f:
        state = json.load(f)
    return state["n"], int(state["a"]), int(state["b"])


def main() -> None:
    global checkpoint_requested
    delay = float(sys.argv[1]) if len(sys.argv) > 1 else 0.05
    ckpt_dir = os.environ.get("RCTR_CKPT_DIR", "")
    restore_dir = os.environ.get("RCTR_RESTORE_DIR")
    n, a, b = 0, 0, 1  # fib(0) = 0, fib(1) = 1
    if restore_dir:
        n, a, b = load(restore_dir)
        print(f"Loaded latest checkpoint from {restore_dir}", flush=True)
    else:
        print(f"No loadable checkpoint in {ckpt_dir or '(no checkpoint directory)'}", flush=True)
    signal.signal(signal.SIGUSR1, request_checkpoint)
    while True:
        if checkpoint_requested and ckpt_dir:
            checkpoint_requested = False
            save(ckpt_dir, n, a, b)
            print(f"checkpoint written at fib({n})", flush=True)
        n += 1
        a, b = b, a + b
        print(f"fib({n}) = {a}", flush=True)
        time.sleep(delay)


if __name__ == "__main__":
    main()
