/* loops.c: counted loops, while/do-while loops, early exits and one deliberate trap.
 *
 * Freestanding (no libc). Every export takes and returns plain i32 values and its
 * result depends only on its arguments, so a differential test can replay calls on a
 * fresh or a reused instance alike.
 *
 * Exports and sample results:
 *   sum_to(100)              -> 5050     (1 + 2 + ... + n; 0 for n <= 0)
 *   count_primes(100)        -> 25       (primes p with 2 <= p < limit, trial division)
 *   collatz_steps(27)        -> 111      (steps of the 3n+1 map until 1)
 *   gcd(1071, 462)           -> 21       (Euclid; gcd(0, 0) = 0)
 *   digit_count(0)           -> 1        (decimal digits of an unsigned value, do-while)
 *   digit_count(-1)          -> 10       (-1 is 4294967295 as unsigned)
 *   xor_triangle(50)         -> 37009    (sum over 0 <= j < i < n of (i ^ j))
 *   must_be_positive(7)      -> 7
 *   must_be_positive(0)      -> traps: unreachable (__builtin_trap)
 */

int sum_to(int n) {
    int total = 0;
    for (int i = 1; i <= n; i++)
        total += i;
    return total;
}

int count_primes(int limit) {
    int count = 0;
    for (int candidate = 2; candidate < limit; candidate++) {
        int is_prime = 1;
        for (int divisor = 2; divisor * divisor <= candidate; divisor++) {
            if (candidate % divisor == 0) {
                is_prime = 0;
                break;
            }
        }
        count += is_prime;
    }
    return count;
}

int collatz_steps(int n) {
    unsigned value = (unsigned)n;
    int steps = 0;
    while (value > 1) {
        value = (value & 1) ? 3 * value + 1 : value / 2;
        steps++;
    }
    return steps;
}

int gcd(int a, int b) {
    unsigned x = a < 0 ? -(unsigned)a : (unsigned)a;
    unsigned y = b < 0 ? -(unsigned)b : (unsigned)b;
    while (y != 0) {
        unsigned rest = x % y;
        x = y;
        y = rest;
    }
    return (int)x;
}

int digit_count(int n) {
    unsigned value = (unsigned)n;
    int digits = 0;
    do {
        digits++;
        value /= 10;
    } while (value != 0);
    return digits;
}

int xor_triangle(int n) {
    int total = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            total += i ^ j;
    return total;
}

int must_be_positive(int x) {
    if (x <= 0)
        __builtin_trap();   /* wasm `unreachable` */
    return x;
}
