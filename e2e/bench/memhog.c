/* memhog: the checkpoint benchmarks' memory workload.
 *
 *   memhog MIB   allocates MIB MiB of anonymous memory, fills every byte with pseudo-random
 *                data (so no page is a zero page and nothing below could compress or
 *                deduplicate it), then sleeps until killed.
 *
 * Built static (gcc -static) so it runs in any image, including busybox-only ones.
 * Readiness is visible from outside: VmRSS in /proc/PID/status reaches MIB MiB.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: memhog MIB\n");
        return 2;
    }
    char *end;
    unsigned long mib = strtoul(argv[1], &end, 10);
    if (*end != '\0' || mib == 0 || mib > (1UL << 20)) {
        fprintf(stderr, "memhog: bad size '%s' (MiB, 1..1048576)\n", argv[1]);
        return 2;
    }
    size_t len = mib << 20;
    uint64_t *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("memhog: mmap");
        return 1;
    }
    uint64_t x = 0x9e3779b97f4a7c15ULL; /* xorshift64 */
    for (size_t i = 0; i < len / sizeof *mem; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        mem[i] = x;
    }
    printf("memhog: %lu MiB touched\n", mib);
    fflush(stdout);
    for (;;)
        pause();
}
