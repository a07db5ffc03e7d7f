/* Native twin of examples/aggregates.c (gcc -g, run under gdbserver): the
 * reference output for tests/test_e2e_aggregates.py. The argument comes from
 * argv[1], as the stub's `--invoke aggregates_run N`. */
#include <stdio.h>
#include <stdlib.h>
#include "../../../examples/aggregates.c"

int main(int argc, char **argv) {
    printf("%d\n", aggregates_run(argc > 1 ? atoi(argv[1]) : 3));
    return 0;
}
