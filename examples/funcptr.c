/* funcptr.c: function pointers (call_indirect through the table wasm-ld builds),
 * a callback passed to a noinline higher-order function, and calls through a raw
 * table slot that trap.
 *
 * Exports and sample results:
 *   apply(2, 6, 7)        -> 42      (op 0..5 = add sub mul max min avg through a table of pointers; other ops -> 0)
 *   fold(0, 10)           -> 55      (folds op over 1..n starting from op's identity: add -> sum)
 *   fold(2, 5)            -> 120     (mul -> n!)
 *   compose_count(36, 5)  -> 144     (a chain of 3 unary function pointers, each picked by 2 bits of
 *                                     `selector`, low bits first: 0 inc, 1 dbl, 2 sqr, 3 inc;
 *                                     36 = 0b10_01_00: inc, dbl, sqr: ((5 + 1) * 2)^2)
 *   call_slot(0, 5)       -> traps: uninitialized element (table slot 0 is the null function pointer)
 *   call_slot(100000, 5)  -> traps: undefined element (index past the end of the table)
 */

typedef int (*binary_op)(int, int);
typedef int (*unary_op)(int);

static int op_add(int a, int b) { return a + b; }
static int op_sub(int a, int b) { return a - b; }
static int op_mul(int a, int b) { return a * b; }
static int op_max(int a, int b) { return a > b ? a : b; }
static int op_min(int a, int b) { return a < b ? a : b; }
static int op_avg(int a, int b) { return (a + b) / 2; }

static binary_op const binary_ops[] = {op_add, op_sub, op_mul, op_max, op_min, op_avg};
static const int identities[] = {0, 0, 1, -2147483647 - 1, 2147483647, 0};
#define OP_COUNT (int)(sizeof binary_ops / sizeof binary_ops[0])

/* volatile so -O2 cannot resolve the pointer at compile time and must call_indirect */
static binary_op volatile selected;

int apply(int op, int a, int b) {
    if (op < 0 || op >= OP_COUNT)
        return 0;
    selected = binary_ops[op];
    return selected(a, b);
}

static __attribute__((noinline)) int fold_range(binary_op f, int start, int n) {
    int acc = start;
    for (int i = 1; i <= n; i++)
        acc = f(acc, i);
    return acc;
}

int fold(int op, int n) {
    if (op < 0 || op >= OP_COUNT)
        return 0;
    return fold_range(binary_ops[op], identities[op], n);
}

static int inc(int x) { return x + 1; }
static int dbl(int x) { return x * 2; }
static int sqr(int x) { return x * x; }

static unary_op const unary_ops[] = {inc, dbl, sqr, inc};

static __attribute__((noinline)) int run_chain(const unary_op *chain, int length, int x) {
    for (int i = 0; i < length; i++)
        x = chain[i](x);
    return x;
}

int compose_count(int selector, int x) {
    unary_op chain[3];
    for (int i = 0; i < 3; i++)
        chain[i] = unary_ops[(selector >> (2 * i)) & 3];
    return run_chain(chain, 3, x);
}

int call_slot(int slot, int x) {
    /* A wasm32 function pointer is a table index; slot 0 is wasm-ld's null entry. */
    unary_op f = (unary_op)(unsigned long)(unsigned)slot;
    return f(x);
}
