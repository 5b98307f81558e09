// A counter that lives in GPU memory beside a large buffer holding a known pattern. Every
// step increments the counter on the GPU and checks the whole buffer there; the host prints
// both. After a checkpoint and restore the count goes on and the buffer is intact.
#include <cstdio>
#include <cstdlib>
#include <unistd.h>
#include <cuda_runtime.h>

static __device__ unsigned int pattern(size_t i) { return (unsigned int)(i * 2654435761u); }

__global__ void fill(unsigned int *buf, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        buf[i] = pattern(i);
}

__global__ void step(unsigned long long *count, const unsigned int *buf, size_t n,
                     unsigned int *bad) {
    size_t first = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (first == 0) *count += 1;
    for (size_t i = first; i < n; i += (size_t)gridDim.x * blockDim.x)
        if (buf[i] != pattern(i)) atomicAdd(bad, 1u);
}

static void check(cudaError_t e, const char *what) {
    if (e != cudaSuccess) {
        fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
        exit(1);
    }
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoull(argv[1], 0, 10) : 512;
    size_t n = mib * 1024 * 1024 / sizeof(unsigned int);
    unsigned int *buf, *bad;
    unsigned long long *count;
    check(cudaMalloc(&buf, n * sizeof *buf), "cudaMalloc buffer");
    check(cudaMalloc(&count, sizeof *count), "cudaMalloc count");
    check(cudaMalloc(&bad, sizeof *bad), "cudaMalloc bad");
    check(cudaMemset(count, 0, sizeof *count), "cudaMemset");
    check(cudaMemset(bad, 0, sizeof *bad), "cudaMemset");
    fill<<<1024, 256>>>(buf, n);
    check(cudaDeviceSynchronize(), "fill");
    for (;;) {
        step<<<1024, 256>>>(count, buf, n, bad);
        unsigned long long c;
        unsigned int b;
        check(cudaMemcpy(&c, count, sizeof c, cudaMemcpyDeviceToHost), "copy count");
        check(cudaMemcpy(&b, bad, sizeof b, cudaMemcpyDeviceToHost), "copy bad");
        printf("count %llu bad %u\n", c, b);
        fflush(stdout);
        usleep(100000);
    }
}
