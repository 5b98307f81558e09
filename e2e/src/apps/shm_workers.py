"""Python multiprocessing.shared_memory: two worker processes each increment their own
counter in a shared block (POSIX shared memory in /dev/shm); the parent prints both counters
and checks them against what it expects. A worker that loses the block dies."""
import multiprocessing as mp
import struct
import time
from multiprocessing import shared_memory


def worker(name, slot):
    shm = shared_memory.SharedMemory(name=name)
    while True:
        (v,) = struct.unpack_from("q", shm.buf, slot * 8)
        struct.pack_into("q", shm.buf, slot * 8, v + 1)
        time.sleep(0.01)


if __name__ == "__main__":
    shm = shared_memory.SharedMemory(create=True, size=16)
    struct.pack_into("qq", shm.buf, 0, 0, 0)
    procs = [mp.Process(target=worker, args=(shm.name, i), daemon=True) for i in range(2)]
    for p in procs:
        p.start()
    while True:
        a, b = struct.unpack_from("qq", shm.buf, 0)
        alive = all(p.is_alive() for p in procs)
        print(f"counters {a} {b} {'ok' if alive else 'WORKER DIED'}", flush=True)
        time.sleep(0.1)
