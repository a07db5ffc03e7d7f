/* The program of the DAP end-to-end test (tests/test_e2e_dap_native.py):
 * a struct with a nested struct and an array to expand, a call to step
 * into and out of, and output on stdout that the IDE must show. */
#include <stdio.h>

struct point {
    int x;
    int y;
};

struct box {
    struct point corner;
    int width;
    char tag[6];
};

static int area(const struct box *b) {
    int w = b->width;
    return w * w;
}

int main(void) {
    struct box b = {{3, 4}, 5, "first"};
    int total = 0;
    printf("start %s\n", b.tag);
    total += area(&b);
    b.width = 6;
    total += area(&b);
    printf("total %d\n", total);
    return 0;
}
