/* A program that holds SysV IPC objects and checks them forever: a semaphore set, a message
 * queue holding one message, and a shared memory segment it keeps attached. Every 50 ms it
 * verifies all three and prints "ok N"; when one is gone or changed it prints "LOST: ..."
 * and exits 1. Used to check that a checkpoint keeps SysV IPC. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <time.h>
#include <unistd.h>

struct msg { long type; char text[32]; };

static void lost(const char *what) {
    printf("LOST: %s: %s\n", what, strerror(errno));
    fflush(stdout);
    exit(1);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int sem = semget(IPC_PRIVATE, 1, 0600);
    int q = msgget(IPC_PRIVATE, 0600);
    int shm = shmget(IPC_PRIVATE, 4096, 0600);
    if (sem < 0 || q < 0 || shm < 0) lost("create");
    if (semctl(sem, 0, SETVAL, 42) < 0) lost("semctl SETVAL");
    struct msg m = {7, "kept across checkpoints"};
    if (msgsnd(q, &m, sizeof m.text, 0) < 0) lost("msgsnd");
    char *mem = shmat(shm, NULL, 0);
    if (mem == (void *)-1) lost("shmat");
    strcpy(mem, "shared memory survives");
    printf("holding sem %d queue %d shm %d\n", sem, q, shm);
    struct timespec tick = {0, 50 * 1000 * 1000};
    for (long n = 1;; n++) {
        if (semctl(sem, 0, GETVAL) != 42) lost("semaphore");
        struct msg got;
        if (msgrcv(q, &got, sizeof got.text, 7, IPC_NOWAIT) < 0) lost("message queue");
        if (strcmp(got.text, m.text) != 0) { errno = 0; lost("message text"); }
        if (msgsnd(q, &got, sizeof got.text, 0) < 0) lost("msgsnd again");
        if (strcmp(mem, "shared memory survives") != 0) { errno = 0; lost("shared memory"); }
        printf("ok %ld\n", n);
        nanosleep(&tick, NULL);
    }
}
