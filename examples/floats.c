/* floats.c: f32 and f64 arithmetic, sqrt, min/max, rounding, conversions, bit casts.
 *
 * Every sample result below is exactly representable, so comparisons can be exact.
 *
 * Exports and sample results:
 *   hypot_f64(3.0, 4.0)         -> 5.0          (sqrt(a*a + b*b), f64.sqrt)
 *   sqrt_f32(2.25)              -> 1.5          (f32.sqrt)
 *   clamp_f32(5.0, 0.0, 2.5)    -> 2.5          (f32.max then f32.min)
 *   minmax_f64(-1.5, 2.0)       -> 0.5          (f64.min(a, b) + f64.max(a, b))
 *   round_sum(2.5)              -> 9.0          (floor + ceil + trunc + nearest: 2 + 3 + 2 + 2; nearest is ties-to-even)
 *   round_sum(-2.5)             -> -9.0
 *   abs_neg_copysign(-3.0, 1.0) -> 9.0          (|a| + (-a) + copysign(a, b) = 3 + 3 + 3)
 *   f64_to_i32(-7.9)            -> -7           (C truncation toward zero)
 *   f32_to_u32(3000000000.0)    -> -1294967296  (i32 bits of 3000000000 as unsigned)
 *   i64_to_f64(9007199254740993)-> 9007199254740992.0 (rounds to nearest even)
 *   u32_to_f32(-1)              -> 4294967296.0 (4294967295 as unsigned, rounded to f32)
 *   promote_demote(0.1)         -> 0.10000000149011612 (f64 -> f32 -> f64)
 *   f32_bits(1.0)               -> 1065353216   (0x3f800000, i32.reinterpret_f32)
 *   f64_from_bits(4614253070214989087) -> 3.14  (f64.reinterpret_i64 of 0x40091EB851EB851F)
 *   horner(2.0)                 -> 57.0         (3x^3 - 2x^2 + 5x + 31 in f64)
 *   leibniz_pi(1000)            -> 3140         (1000 * the first n terms of the Leibniz series, truncated to i32)
 *   mandel_iters(-0.5, 0.5)     -> 100          (f32 escape-time iterations, capped at 100)
 *   mandel_iters(1.0, 1.0)      -> 2
 */

double hypot_f64(double a, double b) {
    return __builtin_sqrt(a * a + b * b);
}

float sqrt_f32(float x) {
    return __builtin_sqrtf(x);
}

/* __builtin_wasm_min/max are the wasm instructions (NaN-propagating, -0 < +0),
 * unlike C's fmin/fmax which clang would turn into libcalls. */
float clamp_f32(float x, float low, float high) {
    return __builtin_wasm_min_f32(__builtin_wasm_max_f32(x, low), high);
}

double minmax_f64(double a, double b) {
    return __builtin_wasm_min_f64(a, b) + __builtin_wasm_max_f64(a, b);
}

double round_sum(double x) {
    return __builtin_floor(x) + __builtin_ceil(x) + __builtin_trunc(x) + __builtin_nearbyint(x);
}

double abs_neg_copysign(double a, double b) {
    return __builtin_fabs(a) + (-a) + __builtin_copysign(a, b);
}

int f64_to_i32(double x) {
    return (int)x;
}

int f32_to_u32(float x) {
    return (int)(unsigned)x;
}

double i64_to_f64(long long x) {
    return (double)x;
}

float u32_to_f32(int x) {
    return (float)(unsigned)x;
}

double promote_demote(double x) {
    return (double)(float)x;
}

int f32_bits(float x) {
    union { float f; int i; } pun = {.f = x};
    return pun.i;
}

double f64_from_bits(long long bits) {
    union { long long i; double d; } pun = {.i = bits};
    return pun.d;
}

double horner(double x) {
    static const double coefficients[] = {3.0, -2.0, 5.0, 31.0};
    double result = 0.0;
    for (int i = 0; i < 4; i++)
        result = result * x + coefficients[i];
    return result;
}

int leibniz_pi(int terms) {
    double sum = 0.0;
    double sign = 1.0;
    for (int k = 0; k < terms; k++) {
        sum += sign / (2.0 * k + 1.0);
        sign = -sign;
    }
    return (int)(4000.0 * sum);
}

int mandel_iters(float cx, float cy) {
    float x = 0.0f, y = 0.0f;
    int i = 0;
    while (i < 100 && x * x + y * y <= 4.0f) {
        float next_x = x * x - y * y + cx;
        y = 2.0f * x * y + cy;
        x = next_x;
        i++;
    }
    return i;
}
