/* demo.c: the program for the debugging demo.
 *
 * A small, clear call tree:  run -> sum_of_squares -> square  (a loop of calls)
 *                            run -> fact -> fact -> ...       (recursion)
 * Every function is noinline so the same tree exists in the -O0 and -O2 builds.
 * `last_total` is a global in linear memory for "print/watch a variable" demos.
 *
 * Exports and sample results:
 *   square(7)           -> 49
 *   sum_of_squares(10)  -> 385     (1 + 4 + ... + 100)
 *   fact(5)             -> 120     (fact(n <= 1) = 1)
 *   run()               -> 505     (sum_of_squares(10) + fact(5))
 */

int last_total;

__attribute__((noinline)) int square(int x) {
    return x * x;
}

__attribute__((noinline)) int sum_of_squares(int n) {
    int total = 0;
    for (int i = 1; i <= n; i++)
        total += square(i);
    return total;
}

__attribute__((noinline)) int fact(int n) {
    if (n <= 1)
        return 1;
    return n * fact(n - 1);
}

int run(void) {
    int squares = sum_of_squares(10);
    int factorial = fact(5);
    last_total = squares + factorial;
    return last_total;
}
