/* aggregates.c: C structs passed and returned by value, for the native-view
 * calling-convention tests (tests/test_e2e_aggregates.py).
 *
 * System V x86-64 passes and returns a struct of 16 bytes or less in
 * registers by its eightbytes' classes (rax:rdx, xmm0:xmm1), a larger one in
 * memory; wasm32 passes every struct with more than one element by pointer
 * and returns it through a hidden pointer (gdbstub/c_abi.py). One function
 * per shape: INTEGER (pair, trio), SSE (vec2), SSE + INTEGER (mixed), MEMORY
 * (big), a single element (one, passed as its scalar by both), and one
 * called through a function pointer (call_indirect in wasm). No libc:
 * the host calls aggregates_run directly, and
 * tests/data/twins/aggregates_twin.c runs the same code natively.
 *
 * Export and sample result:
 *   aggregates_run(3) -> see examples/exports.json
 */

struct pair {
    int a;
    int b;
};

struct trio {
    int a;
    int b;
    int c;
};

struct vec2 {
    float x;
    float y;
};

struct mixed {
    double d;
    int n;
};

struct big {
    int v[6];
};

struct one {
    int only;
};

__attribute__((noinline)) struct pair make_pair(int a) {
    struct pair p = {a, a + 1};
    return p;
}

__attribute__((noinline)) struct trio make_trio(int a) {
    struct trio t = {a, 2 * a, 3 * a};
    return t;
}

__attribute__((noinline)) struct vec2 make_vec2(float x) {
    struct vec2 v = {x, x / 2};
    return v;
}

__attribute__((noinline)) struct mixed make_mixed(double d, int n) {
    struct mixed m = {d * n, n + 1};
    return m;
}

__attribute__((noinline)) struct big make_big(int a) {
    struct big b;
    for (int i = 0; i < 6; i++)
        b.v[i] = a * (i + 1);
    return b;
}

__attribute__((noinline)) struct one make_one(int a) {
    struct one o = {7 * a};
    return o;
}

__attribute__((noinline)) int pair_sum(struct pair p, int k) {
    int s = p.a + p.b * k;
    return s;
}

__attribute__((noinline)) int trio_sum(struct trio t) {
    int s = t.a + t.b + t.c;
    return s;
}

__attribute__((noinline)) float vec2_dot(struct vec2 u, struct vec2 v) {
    float d = u.x * v.x + u.y * v.y;
    return d;
}

__attribute__((noinline)) double mixed_scale(struct mixed m, double f) {
    double r = m.d * f + m.n;
    return r;
}

__attribute__((noinline)) int big_sum(struct big b, int k) {
    int s = 0;
    for (int i = 0; i < 6; i++)
        s += b.v[i];
    return s * k;
}

__attribute__((noinline)) struct pair pair_swap(struct pair p) {
    struct pair q = {p.b, p.a};
    return q;
}

__attribute__((noinline)) struct pair pair_of(int a, int b) {
    struct pair p = {a, b};
    return p;
}

/* Not static and written nowhere else in this file, but the compiler cannot
 * know that: the call below stays indirect at -O2. */
struct pair (*pair_maker)(int, int) = pair_of;

int aggregates_run(int n) {
    struct pair p = make_pair(n);
    struct trio t = make_trio(n);
    struct vec2 v = make_vec2((float)n);
    struct mixed m = make_mixed(1.5, n);
    struct big b = make_big(n);
    struct one o = make_one(n);
    struct pair q = pair_swap(p);
    struct pair r = pair_maker(n, 2 * n);
    int total = pair_sum(q, 2) + trio_sum(t) + (int)vec2_dot(v, v) + (int)mixed_scale(m, 2.0) + big_sum(b, 1);
    return total + o.only + r.a + r.b;
}
