/* http_handler.c: an HTTP request handler for `wasm-gdbstub host --http`.
 *
 * The host's handler ABI (gdbstub/http_host.py):
 *   http_buffer(size) -> pointer to `size` bytes of linear memory the host may
 *                        fill with the request body (0 if the body is too big);
 *   handle(body, len) -> (response pointer << 32) | response length, an i64;
 *                        the host copies the response out of linear memory.
 * Each request runs in a fresh Store, so the static buffers below start zeroed
 * every time and no request sees another's data.
 *
 * The response: a line counting the body's words and bytes, then the body in
 * upper case.  For example, the body "hello wasm" answers
 *   "2 words, 10 bytes\nHELLO WASM\n".
 *
 * Exports and sample results:
 *   count_words(0, 0)      -> 0
 *   http_buffer(1000000)   -> 0        (larger than the request buffer)
 */

#define REQUEST_MAX 65536

static char request[REQUEST_MAX];
static char response[REQUEST_MAX + 64];

char *http_buffer(int size) {
    return size >= 0 && size <= REQUEST_MAX ? request : 0;
}

static int is_space(char c) {
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

__attribute__((noinline)) int count_words(const char *text, int len) {
    int words = 0;
    int in_word = 0;
    for (int i = 0; i < len; i++) {
        if (is_space(text[i])) {
            in_word = 0;
        } else if (!in_word) {
            in_word = 1;
            words++;
        }
    }
    return words;
}

static int put_text(char *out, int at, const char *text) {
    while (*text)
        out[at++] = *text++;
    return at;
}

static int put_number(char *out, int at, int value) {
    char digits[12];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value > 0);
    while (n > 0)
        out[at++] = digits[--n];
    return at;
}

long long handle(const char *body, int len) {
    int words = count_words(body, len);
    int n = 0;
    n = put_number(response, n, words);
    n = put_text(response, n, words == 1 ? " word, " : " words, ");
    n = put_number(response, n, len);
    n = put_text(response, n, " bytes\n");
    for (int i = 0; i < len; i++) {
        char c = body[i];
        response[n++] = c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
    }
    response[n++] = '\n';
    return ((long long)(unsigned long)response << 32) | (unsigned)n;
}
