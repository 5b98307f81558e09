/* memserver: a TCP server holding MIB MiB of patterned memory (lazy restore tests).
 *
 *   memserver MIB PORT CHECK_PORT
 *
 * Fills MIB MiB of anonymous memory with a pattern computed from each 8-byte word's index (no
 * page is a zero page), then answers every connection at once, without reading:
 *   on PORT        "pong N ok" (N: connections served so far), touching one word of the
 *                  memory only ("bad" instead of "ok" if that word is wrong);
 *   on CHECK_PORT  reads every word and answers "ok N", or "bad OFFSET" for the first word
 *                  that is not the pattern (a page lost or zero-filled by a restore).
 * Built static so that it runs in any image. */
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

static uint64_t pattern(uint64_t i) {
    uint64_t x = i * 0x9e3779b97f4a7c15ULL + 0x2545f4914f6cdd1dULL;
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ULL;
    return x ^ (x >> 29);
}

static int listener(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 16)) {
        perror("memserver: bind/listen");
        return -1;
    }
    return s;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: memserver MIB PORT CHECK_PORT\n");
        return 2;
    }
    size_t words = (strtoul(argv[1], NULL, 10) << 20) / sizeof(uint64_t);
    int port = atoi(argv[2]), check_port = atoi(argv[3]);
    if (words == 0 || port <= 0 || port > 65535 || check_port <= 0 || check_port > 65535) {
        fprintf(stderr, "memserver: bad size or port\n");
        return 2;
    }
    uint64_t *mem = mmap(NULL, words * sizeof *mem, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("memserver: mmap");
        return 1;
    }
    for (size_t i = 0; i < words; i++)
        mem[i] = pattern(i);
    int s = listener(port), cs = listener(check_port);
    if (s < 0 || cs < 0)
        return 1;
    printf("memserver: %zu MiB ready on port %d\n", words * sizeof *mem >> 20, port);
    fflush(stdout);
    unsigned long served = 0;
    struct pollfd fds[2] = {{.fd = s, .events = POLLIN}, {.fd = cs, .events = POLLIN}};
    for (;;) {
        if (poll(fds, 2, -1) < 0)
            continue;
        int checking = (fds[1].revents & POLLIN) != 0;
        int c = accept(checking ? cs : s, NULL, NULL);
        if (c < 0)
            continue;
        char reply[64];
        served++;
        if (checking) {
            size_t bad = words;
            for (size_t i = 0; i < words; i++)
                if (mem[i] != pattern(i)) {
                    bad = i;
                    break;
                }
            if (bad == words)
                snprintf(reply, sizeof reply, "ok %lu\n", served);
            else
                snprintf(reply, sizeof reply, "bad %zu\n", bad * sizeof *mem);
        } else {
            /* One word, somewhere new each time: a page of the heap that may still be lazy. */
            size_t i = (served * 7919 * 512) % words;
            snprintf(reply, sizeof reply, "pong %lu %s\n", served, mem[i] == pattern(i) ? "ok" : "bad");
        }
        if (write(c, reply, strlen(reply)) < 0)
            perror("memserver: write");
        close(c);
    }
}
