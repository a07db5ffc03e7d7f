/* int64.c: i64 (and a few i32) arithmetic, division, shifts, rotates and bit counts.
 *
 * Division is written plainly, so divide-by-zero and INT64_MIN / -1 trap as wasm says.
 *
 * Exports and sample results (i64 unless noted):
 *   mul64(4294967296, 3)                 -> 12884901888
 *   mul_wrap64(9223372036854775807, 2)   -> -2            (wraps mod 2^64)
 *   div_s64(-7, 2)                       -> -3            (truncates toward zero)
 *   div_s64(1, 0)                        -> traps: integer divide by zero
 *   div_s64(-9223372036854775808, -1)    -> traps: integer overflow
 *   rem_s64(-9223372036854775808, -1)    -> 0             (wasm defines it; C calls it undefined)
 *   div_u64(-1, 16)                      -> 1152921504606846975  (0xffff...ff / 16 = 0x0fff...ff)
 *   rem_s64(-7, 2)                       -> -1            (sign of the dividend)
 *   rem_u64(-1, 10)                      -> 5             (18446744073709551615 % 10)
 *   shl64(1, 65)                         -> 2             (shift count taken mod 64)
 *   shr_s64(-256, 4)                     -> -16
 *   shr_u64(-256, 60)                    -> 15
 *   rotl64(-9223372036854775807, 4)      -> 24            (0x8000000000000001 rotl 4 = 0x18)
 *   rotr64(1, 1)                         -> -9223372036854775808
 *   clz64(1)                             -> 63            (clz64(0) = 64)
 *   ctz64(-9223372036854775808)          -> 63            (ctz64(0) = 64)
 *   popcnt64(-1)                         -> 64
 *   bitcounts32(240)                     -> 240404        (i32: clz*10000 + ctz*100 + popcnt = 24, 4, 4)
 *   rotl32(-2147483647, 1)               -> 3             (i32: 0x80000001 rotl 1)
 *   extend_mix(-5)                       -> -4294967311   (sign-extended - zero-extended + wrap(3 * a): -5 - 4294967291 - 15)
 *   hash64(42, 10)                       -> -7608715890022575173  (xorshift/multiply/rotate mixing)
 */

long long mul64(long long a, long long b) { return a * b; }

long long mul_wrap64(long long a, long long b) {
    return (long long)((unsigned long long)a * (unsigned long long)b);
}

long long div_s64(long long a, long long b) { return a / b; }
long long div_u64(long long a, long long b) { return (long long)((unsigned long long)a / (unsigned long long)b); }
long long rem_s64(long long a, long long b) { return a % b; }
long long rem_u64(long long a, long long b) { return (long long)((unsigned long long)a % (unsigned long long)b); }

long long shl64(long long a, long long count) { return (long long)((unsigned long long)a << (count & 63)); }
long long shr_s64(long long a, long long count) { return a >> (count & 63); }
long long shr_u64(long long a, long long count) { return (long long)((unsigned long long)a >> (count & 63)); }

long long rotl64(long long a, long long count) {
    return (long long)__builtin_rotateleft64((unsigned long long)a, (unsigned long long)count);
}

long long rotr64(long long a, long long count) {
    return (long long)__builtin_rotateright64((unsigned long long)a, (unsigned long long)count);
}

/* __builtin_clz/ctz of 0 is undefined in C; wasm defines it as the bit width, so say so. */
long long clz64(long long a) { return a == 0 ? 64 : __builtin_clzll((unsigned long long)a); }
long long ctz64(long long a) { return a == 0 ? 64 : __builtin_ctzll((unsigned long long)a); }
long long popcnt64(long long a) { return __builtin_popcountll((unsigned long long)a); }

int bitcounts32(int a) {
    unsigned x = (unsigned)a;
    int clz = x == 0 ? 32 : __builtin_clz(x);
    int ctz = x == 0 ? 32 : __builtin_ctz(x);
    return clz * 10000 + ctz * 100 + __builtin_popcount(x);
}

int rotl32(int a, int count) {
    return (int)__builtin_rotateleft32((unsigned)a, (unsigned)count);
}

long long extend_mix(int a) {
    long long sign_extended = a;                       /* i64.extend_i32_s */
    long long zero_extended = (unsigned)a;             /* i64.extend_i32_u */
    int wrapped = (int)(sign_extended * 3);            /* i32.wrap_i64 */
    return sign_extended - zero_extended + wrapped;
}

long long hash64(long long seed, int rounds) {
    unsigned long long h = (unsigned long long)seed ^ 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < rounds; i++) {
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdull;
        h ^= h << 17;
        h = __builtin_rotateleft64(h, 23) + (unsigned long long)i;
    }
    return (long long)h;
}
