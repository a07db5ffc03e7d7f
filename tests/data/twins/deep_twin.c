/* Native twin of examples/deep.c (see inventory_twin.c). The depth comes from
 * argv[1], as the stub's `--invoke deep_run N`. */
#include <stdio.h>
#include <stdlib.h>
#include "../../../examples/deep.c"

int main(int argc, char **argv) {
    printf("%d\n", deep_run(argc > 1 ? atoi(argv[1]) : 3));
    return 0;
}
