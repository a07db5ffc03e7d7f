/* Native twin of examples/calls.c (gcc -g, run under gdbserver): the
 * reference output for tests/test_e2e_calls.py. The argument comes from
 * argv[1], as the stub's `--invoke calls_run N`. */
#include <stdio.h>
#include <stdlib.h>
#include "../../../examples/calls.c"

int main(int argc, char **argv) {
    printf("%d\n", calls_run(argc > 1 ? atoi(argv[1]) : 3));
    return 0;
}
