/* benchwait: the benchmarks' waiting helper.
 *
 *   benchwait port PORT TIMEOUT_MS   until a TCP server on 127.0.0.1:PORT accepts a connection
 *                                    and answers; prints the answer's first line
 *   benchwait free PORT TIMEOUT_MS   until nothing listens on 127.0.0.1:PORT any more
 *   benchwait file PATH TIMEOUT_MS   until PATH exists; prints its first line
 *   benchwait grow PATH SIZE TIMEOUT_MS  until PATH holds a complete line after its first SIZE
 *                                    bytes (a new line of output); prints it
 *
 * Exits 0 when the condition holds, 1 after TIMEOUT_MS. It polls every 0.5 ms: a compiled
 * helper rather than a shell loop so the waiting adds microseconds to a measurement, not the
 * milliseconds of forking a client per try.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void first_line(char *buf) { buf[strcspn(buf, "\n")] = '\0'; }

/* 1: answered (line in buf), 0: refused or silent, -1: error */
static int try_port(int port, char *buf, size_t len) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    /* A frozen server must not hang us past the deadline. */
    struct timeval tv = {1, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int answered = 0;
    if (connect(s, (struct sockaddr *)&addr, sizeof addr) == 0) {
        ssize_t n = read(s, buf, len - 1);
        if (n > 0) {
            buf[n] = '\0';
            first_line(buf);
            answered = 1;
        }
    }
    close(s);
    return answered;
}

static int try_free(int port) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    int refused = connect(s, (struct sockaddr *)&addr, sizeof addr) != 0 && errno == ECONNREFUSED;
    close(s);
    return refused;
}

static int try_file(const char *path, char *buf, size_t len) {
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    buf[0] = '\0';
    if (!fgets(buf, len, f))
        buf[0] = '\0';
    fclose(f);
    first_line(buf);
    return 1;
}

/* 1: a complete line after byte `from` (in buf), 0: not yet */
static int try_grow(const char *path, long from, char *buf, size_t len) {
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int got = 0;
    if (fseek(f, from, SEEK_SET) == 0 && fgets(buf, len, f) && strchr(buf, '\n')) {
        first_line(buf);
        got = 1;
    }
    fclose(f);
    return got;
}

int main(int argc, char **argv) {
    int grow = argc == 5 && !strcmp(argv[1], "grow");
    if (!grow && (argc != 4 || (strcmp(argv[1], "port") && strcmp(argv[1], "free") && strcmp(argv[1], "file")))) {
        fprintf(stderr, "usage: benchwait port|free PORT TIMEOUT_MS | benchwait file PATH TIMEOUT_MS | benchwait grow PATH SIZE TIMEOUT_MS\n");
        return 2;
    }
    const char *mode = argv[1];
    int port = atoi(argv[2]);
    long from = grow ? atol(argv[3]) : 0;
    double timeout = atof(argv[grow ? 4 : 3]);
    double deadline = now_ms() + timeout;
    const struct timespec pause = {0, 500000};
    char buf[256];
    for (;;) {
        int r;
        if (!strcmp(mode, "port"))
            r = try_port(port, buf, sizeof buf);
        else if (!strcmp(mode, "free"))
            r = try_free(port);
        else if (grow)
            r = try_grow(argv[2], from, buf, sizeof buf);
        else
            r = try_file(argv[2], buf, sizeof buf);
        if (r < 0) {
            perror("benchwait: socket");
            return 1;
        }
        if (r > 0) {
            if (strcmp(mode, "free"))
                printf("%s\n", buf);
            return 0;
        }
        if (now_ms() >= deadline)
            break;
        nanosleep(&pause, NULL);
    }
    fprintf(stderr, "benchwait: %s %s: not reached within %s ms\n", mode, argv[2], argv[grow ? 4 : 3]);
    return 1;
}
