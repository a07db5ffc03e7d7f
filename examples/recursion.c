/* recursion.c: plain, double, mutual and deep-ish recursion.
 *
 * The helpers are noinline so -O2 keeps real wasm calls (clang would otherwise turn
 * several of them into loops and the call tree would vanish).
 *
 * Exports and sample results:
 *   fib(20)            -> 6765                  (naive double recursion, fib(0)=0, fib(1)=1)
 *   factorial(20)      -> 2432902008176640000   (i64 result; factorial(n<=1) = 1)
 *   ackermann(2, 3)    -> 9
 *   ackermann(3, 3)    -> 61
 *   hanoi_moves(10)    -> 1023                  (moves counted by recursion, = 2^n - 1)
 *   is_even(10)        -> 1                     (mutual recursion with is_odd)
 *   is_odd(7)          -> 1
 *   binomial(10, 4)    -> 210                   (Pascal's rule, recursive)
 */

__attribute__((noinline)) int fib(int n) {
    if (n < 2)
        return n;
    return fib(n - 1) + fib(n - 2);
}

__attribute__((noinline)) long long factorial(int n) {
    if (n <= 1)
        return 1;
    return (long long)n * factorial(n - 1);
}

__attribute__((noinline)) int ackermann(int m, int n) {
    if (m == 0)
        return n + 1;
    if (n == 0)
        return ackermann(m - 1, 1);
    return ackermann(m - 1, ackermann(m, n - 1));
}

static __attribute__((noinline)) int hanoi(int disks, int from, int to, int via) {
    if (disks == 0)
        return 0;
    int moves = hanoi(disks - 1, from, via, to);
    moves += 1;                       /* move the largest disk from `from` to `to` */
    moves += hanoi(disks - 1, via, to, from);
    return moves;
}

int hanoi_moves(int disks) {
    return hanoi(disks, 1, 3, 2);
}

__attribute__((noinline)) int is_odd(int n);

__attribute__((noinline)) int is_even(int n) {
    if (n == 0)
        return 1;
    return is_odd(n - 1);
}

__attribute__((noinline)) int is_odd(int n) {
    if (n == 0)
        return 0;
    return is_even(n - 1);
}

__attribute__((noinline)) int binomial(int n, int k) {
    if (k == 0 || k == n)
        return 1;
    return binomial(n - 1, k - 1) + binomial(n - 1, k);
}
