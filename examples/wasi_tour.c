/* A WASI command that uses what a C program with `main` expects from its host:
 * argv and the environment, stdin, files in a preopened directory, clocks,
 * sleeping and randomness.  Its output is deterministic, so the tests run it
 * under `wasm-gdbstub run` and `wasmtime run` and compare (tests/test_wasi.py).
 *
 *   wasi_tour args [ARGS...]   argv and the environment
 *   wasi_tour stdin            echo stdin line by line, then count what is left
 *   wasi_tour poll             wait for stdin with poll(), then read it
 *   wasi_tour files DIR        file I/O in DIR (a --dir guest path); DIR/input.txt must exist
 *   wasi_tour escape DIR       paths that try to leave DIR (through DIR/link_dir_out -> ..,
 *                              DIR/link_abs -> /etc, DIR/link_rel_out -> ../outside.txt): each must fail
 *   wasi_tour time             clocks, sleeping, random numbers
 *   wasi_tour sleep SECONDS    sleep (one host call), then say so
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int show_args(int argc, char **argv) {
    printf("argc=%d\n", argc);
    for (int i = 1; i < argc; i++)
        printf("argv[%d]=%s\n", i, argv[i]);
    for (char **e = environ; *e; e++)
        printf("env %s\n", *e);
    const char *greeting = getenv("GREETING");
    printf("GREETING is %s\n", greeting ? greeting : "(unset)");
    return 0;
}

static int echo_stdin(void) {
    char line[256];
    int n = 0;
    while (n < 3 && fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        printf("line %d: [%s] %zu bytes\n", ++n, line, strlen(line));
    }
    size_t rest = 0;
    int c;
    while ((c = getchar()) != EOF)
        rest++;
    printf("%zu more bytes, then end of file\n", rest);
    return 0;
}

static int poll_stdin(void) {
    struct pollfd p = {.fd = 0, .events = POLLIN};
    int ready = poll(&p, 1, 5000);
    printf("poll: %d ready, POLLIN %s\n", ready, (p.revents & POLLIN) ? "set" : "clear");
    char buf[64];
    ssize_t got = read(0, buf, sizeof buf - 1);
    if (got >= 0) {
        buf[got] = 0;
        printf("read %zd bytes: %s", got, buf);
    }
    return 0;
}

static void path_in(char *out, size_t size, const char *dir, const char *name) {
    snprintf(out, size, "%s/%s", dir, name);
}

static void report(const char *what, int result) {
    if (result < 0)
        printf("%s: error %d (%s)\n", what, errno, strerror(errno));
    else
        printf("%s: ok\n", what);
}

static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void list_directory(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        printf("opendir %s: %s\n", dir, strerror(errno));
        return;
    }
    char *names[64];
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(d)) && count < 64) {
        char line[300];
        const char *type = entry->d_type == DT_DIR ? "dir" : entry->d_type == DT_REG ? "file"
                         : entry->d_type == DT_LNK ? "link" : "other";
        snprintf(line, sizeof line, "%s (%s)", entry->d_name, type);
        names[count++] = strdup(line);
    }
    closedir(d);
    qsort(names, count, sizeof names[0], compare_names);
    printf("listing of %s:\n", dir);
    for (int i = 0; i < count; i++) {
        printf("  %s\n", names[i]);
        free(names[i]);
    }
}

static int files(const char *dir) {
    char path[256], other[256], text[256];

    path_in(path, sizeof path, dir, "input.txt");
    FILE *in = fopen(path, "r");
    if (!in) {
        printf("fopen %s: %s\n", path, strerror(errno));
        return 1;
    }
    int lines = 0;
    while (fgets(text, sizeof text, in))
        lines++;
    fclose(in);
    printf("input.txt has %d lines\n", lines);

    path_in(path, sizeof path, dir, "notes.txt");
    FILE *f = fopen(path, "w");
    fprintf(f, "first line\nsecond line\n");
    fclose(f);
    f = fopen(path, "r+");
    fseek(f, 6, SEEK_SET);
    fwrite("LINE", 1, 4, f);
    printf("ftell after overwrite: %ld\n", ftell(f));
    fseek(f, 0, SEEK_END);
    printf("size by fseek/ftell: %ld\n", ftell(f));
    rewind(f);
    size_t got = fread(text, 1, sizeof text - 1, f);
    text[got] = 0;
    fclose(f);
    printf("notes.txt now:\n%s", text);

    int fd = open(path, O_WRONLY | O_APPEND);
    report("open O_APPEND", fd);
    report("write appended", (int)write(fd, "third\n", 6) - 6);
    close(fd);
    struct stat st;
    report("stat", stat(path, &st));
    printf("size %lld, regular %d\n", (long long)st.st_size, S_ISREG(st.st_mode));

    fd = open(path, O_RDWR);
    char four[5] = {0};
    report("pread", (int)pread(fd, four, 4, 12) - 4);
    printf("pread at 12: %s\n", four);
    report("pwrite", (int)pwrite(fd, "S", 1, 12) - 1);
    printf("lseek SEEK_END: %lld\n", (long long)lseek(fd, 0, SEEK_END));
    report("ftruncate", ftruncate(fd, 10));
    fstat(fd, &st);
    printf("size after ftruncate: %lld\n", (long long)st.st_size);
    close(fd);

    struct timespec times[2] = {{.tv_sec = 1000000000, .tv_nsec = 0}, {.tv_sec = 1234567890, .tv_nsec = 0}};
    report("utimensat", utimensat(AT_FDCWD, path, times, 0));
    stat(path, &st);
    printf("mtime %lld\n", (long long)st.st_mtim.tv_sec);

    path_in(path, sizeof path, dir, "d");
    report("mkdir d", mkdir(path, 0755));
    report("mkdir d again", mkdir(path, 0755));
    path_in(path, sizeof path, dir, "d/a");
    f = fopen(path, "w");
    fputs("a\n", f);
    fclose(f);
    path_in(path, sizeof path, dir, "d/b");
    f = fopen(path, "w");
    fclose(f);
    path_in(path, sizeof path, dir, "d/a");
    path_in(other, sizeof other, dir, "d/c");
    report("rename d/a d/c", rename(path, other));
    path_in(path, sizeof path, dir, "d/hard");
    report("link d/c d/hard", link(other, path));
    path_in(path, sizeof path, dir, "d/soft");
    report("symlink c d/soft", symlink("c", path));
    char target[64] = {0};
    ssize_t length = readlink(path, target, sizeof target - 1);
    printf("readlink d/soft: %zd [%s]\n", length, length >= 0 ? target : "");
    f = fopen(path, "r");
    printf("through the link: %s", f && fgets(text, sizeof text, f) ? text : "(nothing)\n");
    if (f)
        fclose(f);
    report("lstat d/soft", lstat(path, &st));
    printf("d/soft is a link: %d\n", S_ISLNK(st.st_mode));
    path_in(path, sizeof path, dir, "d");
    list_directory(path);
    report("rmdir d (not empty)", rmdir(path));
    path_in(path, sizeof path, dir, "d/b");
    report("unlink d/b", unlink(path));
    report("unlink d/b again", unlink(path));
    path_in(path, sizeof path, dir, "d");
    report("unlink d (a directory)", unlink(path));
    const char *leftovers[] = {"d/c", "d/hard", "d/soft"};
    for (int i = 0; i < 3; i++) {
        path_in(path, sizeof path, dir, leftovers[i]);
        unlink(path);
    }
    path_in(path, sizeof path, dir, "d");
    report("rmdir d", rmdir(path));
    path_in(path, sizeof path, dir, "notes.txt/");
    report("open notes.txt/", open(path, O_RDONLY));
    path_in(path, sizeof path, dir, "missing.txt");
    report("open missing.txt", open(path, O_RDONLY));
    path_in(path, sizeof path, dir, "notes.txt");
    report("open O_CREAT|O_EXCL existing", open(path, O_WRONLY | O_CREAT | O_EXCL, 0644));
    list_directory(dir);
    return 0;
}

static int escape(const char *dir) {
    char path[256];
    const char *attempts[] = {"../outside.txt", "sub/../../outside.txt", "link_dir_out/outside.txt",
                              "link_abs/passwd", "link_rel_out", "..", "sub/../..", NULL};
    for (int i = 0; attempts[i]; i++) {
        path_in(path, sizeof path, dir, attempts[i]);
        errno = 0;
        FILE *f = fopen(path, "r");
        printf("fopen %s: %s\n", attempts[i], f ? "OPENED (escape!)" : strerror(errno));
        if (f)
            fclose(f);
        struct stat st;
        int result = stat(path, &st);
        printf("stat %s: %s\n", attempts[i], result == 0 ? "ok" : strerror(errno));
    }
    path_in(path, sizeof path, dir, "../created_outside");
    report("mkdir ../created_outside", mkdir(path, 0755));
    path_in(path, sizeof path, dir, "new_link");
    report("symlink /etc new_link", symlink("/etc", path));
    report("fopen /etc/passwd", fopen("/etc/passwd", "r") ? 0 : -1);
    report("opendir /", opendir("/") ? 0 : -1);
    return 0;
}

static int clocks_and_random(void) {
    struct timespec now, before, after, resolution;
    clock_gettime(CLOCK_REALTIME, &now);
    printf("realtime after 2020: %d\n", now.tv_sec > 1577836800);
    printf("time() agrees: %d\n", (long long)time(NULL) - (long long)now.tv_sec < 5);
    clock_getres(CLOCK_MONOTONIC, &resolution);
    printf("monotonic resolution at most 1 ms: %d\n", resolution.tv_sec == 0 && resolution.tv_nsec <= 1000000);
    clock_gettime(CLOCK_MONOTONIC, &before);
    struct timespec nap = {.tv_sec = 0, .tv_nsec = 30 * 1000 * 1000};
    report("nanosleep 30 ms", nanosleep(&nap, NULL));
    usleep(20 * 1000);
    clock_gettime(CLOCK_MONOTONIC, &after);
    long long slept = (after.tv_sec - before.tv_sec) * 1000000000LL + (after.tv_nsec - before.tv_nsec);
    printf("slept at least 50 ms: %d\n", slept >= 50 * 1000000LL);
    struct timespec cpu;
    report("process CPU clock", clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu));
    report("thread CPU clock", clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu));

    unsigned char bytes[32] = {0};
    report("getentropy", getentropy(bytes, sizeof bytes));
    int zeros = 0;
    for (size_t i = 0; i < sizeof bytes; i++)
        zeros += bytes[i] == 0;
    printf("entropy is not all zeros: %d\n", zeros < 8);
    uint32_t a = arc4random(), b = arc4random();
    printf("two arc4random values differ: %d\n", a != b);
    srand(42);
    int first = rand();
    srand(42);
    printf("rand is repeatable with a seed: %d\n", first == rand());
    return 0;
}

static int sleep_for(int seconds) {
    struct timespec nap = {.tv_sec = seconds, .tv_nsec = 0};
    report("nanosleep", nanosleep(&nap, NULL));
    printf("awake after %d s\n", seconds);
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "args";
    if (strcmp(mode, "args") == 0)
        return show_args(argc, argv);
    if (strcmp(mode, "stdin") == 0)
        return echo_stdin();
    if (strcmp(mode, "poll") == 0)
        return poll_stdin();
    if (strcmp(mode, "files") == 0 && argc > 2)
        return files(argv[2]);
    if (strcmp(mode, "escape") == 0 && argc > 2)
        return escape(argv[2]);
    if (strcmp(mode, "time") == 0)
        return clocks_and_random();
    if (strcmp(mode, "sleep") == 0 && argc > 2)
        return sleep_for(atoi(argv[2]));
    fprintf(stderr, "usage: wasi_tour args|stdin|poll|files DIR|escape DIR|time|sleep SECONDS\n");
    return 2;
}
