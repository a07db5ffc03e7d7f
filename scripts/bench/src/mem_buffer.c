/* mem_buffer.c: 16 MiB of memory for mem_read.py to dump, built both ways.
 *
 *   wasm32 (clang-19 --target=wasm32, freestanding): the host invokes fill_and_stop;
 *     `buffer` lives in linear memory (wasm-ld sizes the initial memory to hold it).
 *   native (gcc -O0 -g): main calls fill_and_stop.
 *
 * fill_and_stop writes a position-dependent pattern into every byte (so every page is
 * really backed, on both sides, and a dump can be checked), then calls the non-inlined
 * `ready`, where the debugger stops to dump. buffer_address() tells the host where the
 * buffer is (a wasm address: an offset into linear memory).
 */
#define BUFFER_SIZE (16u << 20)

static unsigned char buffer[BUFFER_SIZE];

__attribute__((noinline)) int ready(unsigned char *p) {
    return p[0] + p[BUFFER_SIZE - 1];
}

unsigned char *buffer_address(void) {
    return buffer;
}

int fill_and_stop(void) {
    for (unsigned i = 0; i < BUFFER_SIZE; i++)
        buffer[i] = (unsigned char)(i * 131u + (i >> 12));
    return ready(buffer);
}

#ifndef __wasm__
int main(void) {
    return fill_and_stop() == 0x7fffffff;
}
#endif
