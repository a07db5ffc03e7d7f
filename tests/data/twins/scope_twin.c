/* Native twin of tests/data/scope_watch.c (gcc -g, run under gdbserver): the
 * reference output for tests/test_e2e_watch_scope.py. A main that calls the
 * export like the stub's `--invoke scope_caller 4` and prints its result. */
#include <stdio.h>
#include "../scope_watch.c"

int main(void) {
    printf("%d\n", scope_caller(4));
    return 0;
}
