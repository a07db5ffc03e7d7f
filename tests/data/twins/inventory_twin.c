/* Native twin of examples/inventory.c (gcc -g, run under gdbserver): the
 * reference output for tests/test_e2e_cvars.py. Same code, a main that calls
 * the export like the stub's `--invoke inventory_run 3` and prints its result. */
#include <stdio.h>
#include "../../../examples/inventory.c"

int main(void) {
    printf("%d\n", inventory_run(3));
    return 0;
}
