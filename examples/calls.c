/* calls.c: values returned, forced returns and inferior calls, for the
 * native-view calling-convention tests (tests/test_e2e_calls.py).
 *
 * One function per kind of return value gdb reads the System V way (int,
 * long long, float, double, pointer, a struct of 8 bytes, a struct of 24
 * bytes), one with mixed integer and floating-point arguments, and one that
 * traps (divides by zero) when called with b = 0. No libc: the host calls
 * calls_run directly, and tests/data/twins/calls_twin.c runs the same code
 * natively (gcc -g) as the reference.
 *
 * Export and sample result:
 *   calls_run(3) -> see examples/exports.json
 */

struct pair {
    int a;
    int b;
};

struct big {
    int v[6];
};

int table[4] = {10, 20, 30, 40};
int last_divisor = 1;

__attribute__((noinline)) int twice(int x) {
    int r = x * 2;
    return r;
}

__attribute__((noinline)) long long widen(int x) {
    long long r = (long long)x << 33;
    return r + 5;
}

__attribute__((noinline)) float halve(float x) {
    float r = x / 2.0f;
    return r;
}

__attribute__((noinline)) double scale(double x, int k) {
    double r = x * k;
    return r;
}

__attribute__((noinline)) int *slot_of(int i) {
    int *p = &table[i & 3];
    return p;
}

__attribute__((noinline)) struct pair make_pair(int a) {
    struct pair p = {a, a + 1};
    return p;
}

__attribute__((noinline)) struct big make_big(int a) {
    struct big b;
    for (int i = 0; i < 6; i++)
        b.v[i] = a + i;
    return b;
}

__attribute__((noinline)) int mix(int a, long long b, float c, double d, int e) {
    int r = a + (int)(b >> 32) + (int)(c * 4) + (int)(d * 8) + e;
    return r;
}

__attribute__((noinline)) int divide(int a, int b) {
    last_divisor = b;
    int q = a / b;
    return q;
}

int calls_run(int n) {
    int t = twice(n);
    long long w = widen(n);
    float h = halve((float)n);
    double s = scale(1.5, n);
    int *p = slot_of(n);
    struct pair pr = make_pair(n);
    struct big bg = make_big(n);
    int m = mix(n, w, h, s, t);
    int q = divide(100, n);
    return t + (int)(w >> 33) + (int)h + (int)s + *p + pr.a + pr.b + bg.v[5] + m + q;
}
