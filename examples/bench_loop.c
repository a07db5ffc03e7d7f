/* bench_loop.c: workloads for the benchmarks.
 *
 * call_loop(n): calls the non-inlined `tick` n times. A breakpoint on `tick` fires n
 *   times, so the breakpoint benchmark measures the cost of one hit.
 * cpu_kernel(n): n passes of integer and float arithmetic over a 1024-element array,
 *   no calls inside the loop: the overhead benchmark compares debug on/off on it.
 *   The array is re-initialised on each call, so the result depends only on n.
 *
 * Exports and sample results:
 *   tick(5)             -> 33          ((5 * 7) ^ (5 >> 1))
 *   call_loop(1000)     -> 3504596     (sum of tick(i) for 0 <= i < n, wrapping i32)
 *   cpu_kernel(10)      -> 352871901
 *   cpu_kernel(1000)    -> 1710708557
 *   cpu_kernel(300000)  -> -1542813033 (the benchmark size: about 1.0 s for the -O0 build and 0.6 s for
 *                                      the -O2 build under wasmtime 50 on the 2-core dev machine)
 */

__attribute__((noinline)) int tick(int i) {
    return (i * 7) ^ (i >> 1);
}

int call_loop(int n) {
    int acc = 0;
    for (int i = 0; i < n; i++)
        acc += tick(i);
    return acc;
}

#define KERNEL_LEN 1024
static float values[KERNEL_LEN];
static int counters[KERNEL_LEN];

int cpu_kernel(int passes) {
    for (int i = 0; i < KERNEL_LEN; i++) {
        values[i] = (float)(i % 17) * 0.25f;
        counters[i] = i;
    }
    unsigned checksum = 0;
    for (int pass = 0; pass < passes; pass++) {
        for (int i = 0; i < KERNEL_LEN; i++) {
            float v = values[i] * 0.999f + (float)((i ^ pass) & 255) * 0.001f;
            values[i] = v;
            /* unsigned arithmetic: wrapping is defined, so -O0 and -O2 agree */
            unsigned c = (unsigned)counters[i] * 1103515245u + 12345u + (unsigned)pass;
            counters[i] = (int)c;
            checksum += c >> 7;
            checksum ^= (unsigned)(int)(v * 16.0f);
        }
    }
    return (int)checksum;
}
