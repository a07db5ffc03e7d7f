/* inventory.c: the C data a debugger must show, for the native-view variable tests.
 *
 * A linked list threaded through an array of structs, an array of pointers, a
 * pointer to pointer, a union, enums, bitfields, a typedef'd function pointer,
 * a two-dimensional array, globals (initialized and zero), a file static and a
 * function static. No libc: the host calls inventory_run directly, and
 * tests/data/twins/inventory_twin.c runs the same code natively (gcc -g) as
 * the reference a debugger's output is compared with.
 *
 * Export and sample result (one call per instance: walk counts its calls in a
 * function static):
 *   inventory_run(3) -> see examples/exports.json
 */

enum color { RED, GREEN = 5, BLUE };

struct flags {
    unsigned active : 1;
    unsigned level : 3;
    signed delta : 4;
    unsigned code : 8;
};

union number {
    int i;
    float f;
    unsigned char bytes[4];
};

struct item {
    int id;
    enum color color;
    struct flags flags;
    union number weight;
    char name[8];
    struct item *next;
};

typedef struct item item_t;
typedef int (*scorer_fn)(const item_t *);

struct item items[4];
struct item *ptrs[4];
struct item *head;
int counter = 7;
short small = -3;
double ratio = 0.5;
unsigned long long big = 0x123456789abcdefULL;
const char greeting[] = "hello";
int grid[3][4];
static int hidden_total;

static int score(const item_t *it) {
    return it->id * 10 + it->flags.level;
}

static scorer_fn current_scorer = score;

__attribute__((noinline)) static int walk(struct item *it, int limit) {
    static int calls;
    int total = 0;
    int steps = 0;
    calls++;
    while (it && steps < limit) {
        total += current_scorer(it);
        it = it->next;
        steps++;
    }
    hidden_total += total;
    return total + calls;
}

__attribute__((noinline)) static int count_links(struct item **pp) {
    int n = 0;
    while (*pp) {
        n++;
        pp = &(*pp)->next;
    }
    return n;
}

__attribute__((noinline)) static void fill(int n) {
    for (int k = 0; k < 4; k++) {
        struct item *it = &items[k];
        it->id = k + 1;
        it->color = k % 2 ? BLUE : GREEN;
        it->flags.active = k & 1;
        it->flags.level = (unsigned)(k + 2);
        it->flags.delta = -k;
        it->flags.code = (unsigned)(0x40 + k);
        it->weight.i = 0x41424344 + k;
        for (int c = 0; c < 7; c++)
            it->name[c] = (char)(c < 4 ? 'a' + k + c : 0);
        it->name[7] = 0;
        it->next = k + 1 < n && k + 1 < 4 ? &items[k + 1] : 0;
        ptrs[k] = it;
    }
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++)
            grid[r][c] = r * 10 + c;
    head = &items[0];
}

__attribute__((noinline)) static int extras(void) {
    int flavour = small + (int)(ratio * 4) + (int)(big & 0xff) + greeting[1];
    return flavour;
}

int inventory_run(int n) {
    struct item **pp = &head;
    union number probe;
    int result;
    fill(n);
    probe.f = 1.5f;
    result = walk(head, n);
    result += count_links(pp);
    result += extras();
    return result + counter + grid[2][3] + hidden_total / 100 + (probe.i >> 20);
}
