/* scope_watch.c: a watchpoint on a local that goes out of scope
 * (tests/test_e2e_watch_scope.py; its native twin is twins/scope_twin.c).
 *
 * scope_caller(n) calls accumulate(n), whose local `total` is written n + 1
 * times and then goes out of scope when accumulate returns into scope_caller;
 * scope_caller then writes the stack memory `total` occupied (through its own
 * locals) so a watch left behind would fire.  scope_caller(4) -> 6 + 1000.
 */

__attribute__((noinline)) int accumulate(int n) {
    int total = 0;
    for (int i = 0; i < n; i++)
        total += i;
    return total;
}

__attribute__((noinline)) int scribble(int n) {
    int pad[4] = {n, n + 1, n + 2, n + 3};
    return pad[0] + pad[3] - 2 * n - 3;
}

int scope_caller(int n) {
    int got = accumulate(n);
    got += scribble(n);
    return got + 1000;
}
