"""Counting TCP server for rctr's checkpoint/restart tests and demo.

Listens on the port given as the only argument and answers every connection with
"request:<n>", n counting from 1. The count lives only in memory: after a restart from a
checkpoint it continues, after a plain restart it starts again at 1.
Single-threaded on purpose: one process, one thread, nothing but the count to restore.
"""

import socket
import sys


def main() -> None:
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: counter_server.py PORT")
    port = int(sys.argv[1])
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A new server may reuse the port while the previous one's connections sit in TIME_WAIT.
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(16)
    print(f"counter server listening on 127.0.0.1:{port}", flush=True)
    count = 0
    while True:
        conn, _ = server.accept()
        count += 1
        with conn:
            conn.sendall(f"request:{count}\n".encode())
        print(f"answered request:{count}", flush=True)


if __name__ == "__main__":
    main()
