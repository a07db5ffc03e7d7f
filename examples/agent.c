/* agent.c: workloads for work done at the patched call: conditions, dprintf, watchpoints.
 *
 * cond_loop(n): calls the non-inlined `f` n times (i = 0..n-1); `break f if i == -1` never stops.
 * fill_loop(n): writes arr[i % 64] = i, n times, then `watched = n` once at the end.
 * run_items(n): n calls of `restock`, which adds to a struct member (items[k].qty).
 * read_twice(n): reads `counter` twice (rwatch / awatch), after setting it to n.
 * bulk(n): memory.fill then memory.copy of n bytes (clamped to 0..2048) into `big`.
 * local_scope(n): a local accumulator that goes out of scope when it returns.
 * address_of(k): the linear-memory address of a global, so tests can name it
 *   without debug info for variables: 0 watched, 1 arr, 2 items, 3 counter, 4 big.
 *
 * Exports and sample results:
 *   f(5)              -> 16
 *   cond_loop(1000)   -> 1499500   (sum of 3i+1 for i < n)
 *   fill_loop(100)    -> 99        (the last value written)
 *   run_items(10)     -> 45        (items[k].qty after n calls, summed as returned)
 *   read_twice(21)    -> 42
 *   bulk(100)         -> 16843009  (big[0] = 0x01010101)
 *   local_scope(10)   -> 45
 */

struct item {
    int id;
    int qty;
};

struct item items[8];
int watched;
int counter;
int arr[64];
int big[1024];

__attribute__((noinline)) int f(int i) {
    return i * 3 + 1;
}

int cond_loop(int n) {
    int acc = 0;
    for (int i = 0; i < n; i++)
        acc += f(i);
    return acc;
}

int fill_loop(int n) {
    for (int i = 0; i < n; i++)
        arr[i & 63] = i;
    watched = n;
    return arr[(n - 1) & 63];
}

__attribute__((noinline)) int restock(struct item *it, int amount) {
    it->qty += amount;
    return it->qty;
}

int run_items(int n) {
    int last = 0;
    for (int i = 0; i < 8; i++) {
        items[i].id = i;
        items[i].qty = 0;
    }
    for (int i = 0; i < n; i++)
        last += restock(&items[i & 7], i) - items[i & 7].qty + i;
    return last;
}

int read_twice(int n) {
    counter = n;
    return counter + counter;
}

int bulk(int n) {
    n = n < 0 ? 0 : n > 2048 ? 2048 : n;
    __builtin_memset(big, 1, (unsigned)n);
    __builtin_memcpy((char *)big + 2048, big, (unsigned)n);
    return big[0];
}

__attribute__((noinline)) int local_scope(int n) {
    int local = 0;
    for (int i = 0; i < n; i++)
        local += i;
    return local;
}

int address_of(int k) {
    switch (k) {
    case 0: return (int)&watched;
    case 1: return (int)arr;
    case 2: return (int)items;
    case 3: return (int)&counter;
    default: return (int)big;
    }
}
