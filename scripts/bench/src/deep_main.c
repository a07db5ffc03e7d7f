/* Native twin of examples/deep.c for scripts/bench/inspect_latency.py: main
 * calls deep_run(argv[1]) as the stub's `--invoke deep_run N` does. */
#include <stdio.h>
#include <stdlib.h>
#include "deep.c"

int main(int argc, char **argv) {
    printf("%d\n", deep_run(argc > 1 ? atoi(argv[1]) : 100));
    return 0;
}
