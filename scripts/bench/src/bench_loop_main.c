/* bench_loop_main.c: examples/bench_loop.c as a native program, for gdbserver.
 *
 * bp_roundtrip.py builds it with `gcc -O0 -g -I examples` so that gdb breaks on the
 * very same `tick` the wasm build calls.  argv[1] is call_loop's n (default 1000).
 */
#include <stdlib.h>

#include "bench_loop.c"

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    /* Exit status 0 whatever the sum: the result only keeps the loop from being dead code. */
    return call_loop(n) == 0x7fffffff;
}
