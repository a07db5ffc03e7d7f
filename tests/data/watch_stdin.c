/* A WASI command that reads stdin into a global with one read() (WASI
 * fd_read: the host writes linear memory), for the watchpoint test of
 * tests/test_e2e_agent.py.  inbuf_address() names the buffer for a
 * debugger that sees no C variables. */
#include <stdio.h>
#include <unistd.h>

char inbuf[64];

__attribute__((export_name("inbuf_address"))) int inbuf_address(void) {
    return (int)inbuf;
}

int main(void) {
    ssize_t n = read(0, inbuf, sizeof inbuf - 1);
    printf("read %d bytes: %s", (int)n, inbuf);
    return 0;
}
