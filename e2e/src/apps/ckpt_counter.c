/* A C counter that checkpoints itself (rctr's application-level engine).
 *
 * Prints "count N" every 20 ms. SIGUSR1 only sets a flag; the main loop then writes N to
 * $RCTR_CKPT_DIR/counter (fsync'd) and creates .done. Started with $RCTR_RESTORE_DIR set, it
 * continues from that directory's counter. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t requested;

static void on_usr1(int sig) { (void)sig; requested = 1; }

static void write_file(const char *dir, const char *name, const char *text) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) { perror(path); exit(1); }
    if (write(fd, text, strlen(text)) != (ssize_t)strlen(text) || fsync(fd) != 0) { perror(path); exit(1); }
    close(fd);
}

int main(void) {
    const char *out = getenv("RCTR_CKPT_DIR");
    const char *in = getenv("RCTR_RESTORE_DIR");
    long n = 0;
    if (in) {
        char path[4096];
        snprintf(path, sizeof path, "%s/counter", in);
        FILE *f = fopen(path, "r");
        if (!f || fscanf(f, "%ld", &n) != 1) { fprintf(stderr, "cannot load %s\n", path); return 1; }
        fclose(f);
        printf("restored at count %ld\n", n);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct timespec tick = {0, 20 * 1000 * 1000};
    for (;;) {
        if (requested && out) {
            char text[64];
            requested = 0;
            snprintf(text, sizeof text, "%ld\n", n);
            write_file(out, "counter", text);
            write_file(out, ".done", "");
            printf("checkpoint written at count %ld\n", n);
        }
        n++;
        printf("count %ld\n", n);
        nanosleep(&tick, NULL);
    }
}
