/* memory.c: arrays and pointers in linear memory, narrow loads/stores, bulk memory.
 *
 * Every export rebuilds the data it reads, so results do not depend on earlier calls.
 * With -mbulk-memory, __builtin_memcpy/__builtin_memset become memory.copy/memory.fill.
 *
 * Exports and sample results:
 *   fill_squares_sum(10)    -> 285       (buf[i] = i*i for i < n, summed through a pointer walk; n clamped to 0..256)
 *   sort_checksum(7, 100)   -> 111577296 (LCG-filled array, insertion sort, sum of (i+1)*buf[i] mod 2^32)
 *   narrow_mix(200)         -> -92883    (signed/unsigned 8- and 16-bit stores and loads; n clamped to 0..256)
 *   copy_fill_sum(100, 30)  -> 3745      (memcpy 100 bytes, memset a 30-byte window to 7, byte sum)
 *   reverse_hash(5)         -> 96352995  (reverse a string in place via two pointers, polynomial hash; n clamped to 1..26)
 *   pointer_chase(8)        -> 2244      (follow an index chain stored in memory n steps, weighted sum)
 *   peek(0)                 -> 0         (the i32 at a byte address; nothing is ever stored at address 0)
 *   peek(2147483632)        -> traps: out of bounds memory access
 */

#define BUF_LEN 256

static int buf[BUF_LEN];
static unsigned char bytes_a[BUF_LEN];
static unsigned char bytes_b[BUF_LEN];

static int clamp(int value, int low, int high) {
    return value < low ? low : value > high ? high : value;
}

int fill_squares_sum(int n) {
    n = clamp(n, 0, BUF_LEN);
    for (int i = 0; i < n; i++)
        buf[i] = i * i;
    int total = 0;
    for (const int *p = buf, *end = buf + n; p != end; ++p)
        total += *p;
    return total;
}

int sort_checksum(int seed, int n) {
    n = clamp(n, 0, BUF_LEN);
    unsigned state = (unsigned)seed;
    for (int i = 0; i < n; i++) {
        state = state * 1103515245u + 12345u;   /* the classic ANSI C LCG */
        buf[i] = (int)((state >> 16) & 0x7fff);
    }
    for (int i = 1; i < n; i++) {
        int key = buf[i];
        int j = i - 1;
        while (j >= 0 && buf[j] > key) {
            buf[j + 1] = buf[j];
            j--;
        }
        buf[j + 1] = key;
    }
    unsigned checksum = 0;
    for (int i = 0; i < n; i++)
        checksum += (unsigned)(i + 1) * (unsigned)buf[i];
    return (int)checksum;
}

int narrow_mix(int n) {
    n = clamp(n, 0, BUF_LEN);
    signed char *s8 = (signed char *)bytes_a;
    short *s16 = (short *)bytes_b;          /* BUF_LEN bytes = BUF_LEN/2 shorts */
    for (int i = 0; i < n; i++)
        s8[i] = (signed char)(i * 37);      /* i32.store8, wraps into -128..127 */
    for (int i = 0; i < n / 2; i++)
        s16[i] = (short)(i * 1000 - 30000); /* i32.store16 */
    int total = 0;
    for (int i = 0; i < n; i++)
        total += s8[i] - bytes_a[i] / 4;    /* i32.load8_s and i32.load8_u */
    for (int i = 0; i < n / 2; i++)
        total += s16[i] / 16 - ((unsigned short *)bytes_b)[i] / 64;  /* load16_s, load16_u */
    return total;
}

int copy_fill_sum(int n, int window) {
    n = clamp(n, 0, BUF_LEN);
    window = clamp(window, 0, n);
    for (int i = 0; i < n; i++)
        bytes_a[i] = (unsigned char)(i + 1);
    __builtin_memcpy(bytes_b, bytes_a, (unsigned long)n);
    __builtin_memset(bytes_b + (n - window) / 2, 7, (unsigned long)window);
    int total = 0;
    for (int i = 0; i < n; i++)
        total += bytes_b[i];
    return total;
}

int reverse_hash(int n) {
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz";
    char text[27];
    n = clamp(n, 1, 26);
    for (int i = 0; i < n; i++)
        text[i] = alphabet[i];
    text[n] = 0;
    for (char *left = text, *right = text + n - 1; left < right; left++, right--) {
        char swap = *left;
        *left = *right;
        *right = swap;
    }
    unsigned hash = 0;
    for (const char *p = text; *p; p++)
        hash = hash * 31u + (unsigned char)*p;
    return (int)hash;
}

int pointer_chase(int steps) {
    /* next[i] = (i * 5 + 3) % 16: a permutation, so the chase never stops early */
    for (int i = 0; i < 16; i++)
        buf[i] = (i * 5 + 3) % 16;
    int *cursor = &buf[0];
    int total = 0;
    for (int step = 1; step <= steps; step++) {
        cursor = &buf[*cursor];
        total += step * (int)(cursor - buf) * 11;
    }
    return total;
}

int peek(int addr) {
    return *(volatile int *)(unsigned long)(unsigned)addr;
}
