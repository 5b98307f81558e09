"""Counting TCP server for rctr's checkpoint/restart tests and demo.

Listens on the port given as the first argument, on 127.0.0.1 or on the address given as the
second (0.0.0.0: every address of the network namespace, as a service on a cluster node
does), and answers every connection with "request:<n>", n counting from 1. The count lives only in memory: after a restart from a
checkpoint it continues, after a plain restart it starts again at 1.
Single-threaded on purpose: one process, one thread, nothing but the count to restore.

With rctr's application-level engine (`checkpoint create --engine app`) the server saves and
loads the count itself: on SIGUSR1 it writes it to $RCTR_CKPT_DIR/count and creates .done;
started with $RCTR_RESTORE_DIR set, it resumes from that directory's count. With CRIU neither
variable is set and none of this runs.
"""

import os
import signal
import socket
import sys

count = 0


def save_checkpoint(_signum, _frame) -> None:
    out = os.environ["RCTR_CKPT_DIR"]
    with open(os.path.join(out, "count"), "w") as f:
        f.write(f"{count}\n")
        f.flush()
        os.fsync(f.fileno())
    open(os.path.join(out, ".done"), "w").close()


def main() -> None:
    if len(sys.argv) not in (2, 3) or not sys.argv[1].isdigit():
        sys.exit("usage: counter_server.py PORT [ADDRESS]")
    port = int(sys.argv[1])
    address = sys.argv[2] if len(sys.argv) == 3 else "127.0.0.1"
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A new server may reuse the port while the previous one's connections sit in TIME_WAIT.
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, port))
    server.listen(16)
    global count
    restore = os.environ.get("RCTR_RESTORE_DIR")
    if restore:
        with open(os.path.join(restore, "count")) as f:
            count = int(f.read())
        print(f"resumed at request:{count} from {restore}", flush=True)
    if os.environ.get("RCTR_CKPT_DIR"):
        signal.signal(signal.SIGUSR1, save_checkpoint)
    print(f"counter server listening on {address}:{port}", flush=True)
    while True:
        conn, _ = server.accept()
        count += 1
        with conn:
            conn.sendall(f"request:{count}\n".encode())
        print(f"answered request:{count}", flush=True)


if __name__ == "__main__":
    main()
