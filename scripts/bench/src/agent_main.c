/* agent_main.c: examples/agent.c as a native program, for gdbserver.
 *
 * The benchmarks of work at the patched call (cond_bp.py, watch.py, dprintf.py)
 * build it with `gcc -O0 -g -I examples`, so gdb sets the same breakpoints and
 * watchpoints on the same C as the wasm build runs.
 * argv[1] names the workload (cond_loop, fill_loop), argv[2] is its n.
 */
#include <stdlib.h>
#include <string.h>

#include "agent.c"

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "cond_loop";
    int n = argc > 2 ? atoi(argv[2]) : 1000;
    int result = strcmp(what, "fill_loop") == 0 ? fill_loop(n) : cond_loop(n);
    /* Exit status 0 whatever the result: it only keeps the work from being dead code. */
    return result == 0x7fffffff;
}
