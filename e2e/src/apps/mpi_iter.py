"""An iterative MPI computation (mpi4py, Open MPI): every rank updates its value from an
allreduce of all of them; rank 0 prints "ITERATION SUM" with the sum's exact repr, so a
restored run can be compared bit for bit with an uninterrupted one."""
import time

from mpi4py import MPI

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
x = float(rank + 1)
i = 0
while True:
    i += 1
    s = comm.allreduce(x * 1.0000001 + i, op=MPI.SUM)
    x = (x + s) / 3.0 + 1e-3 * rank
    if rank == 0:
        print(f"{i} {s!r}", flush=True)
    time.sleep(0.02)
