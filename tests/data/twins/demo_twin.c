/* The native twin of examples/demo.c: the same source (included, so file
 * names and line numbers are the same) with a main that calls run(). */
#include "../../../examples/demo.c"

int main(void) {
    return run() == 505 ? 0 : 1;
}
