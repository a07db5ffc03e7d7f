/* structs.c: structs by pointer and by value, nested structs, a linked list in a static pool.
 *
 * Exports and sample results:
 *   rect_area(0.5, 1.0, 4.5, 3.5)  -> 10.0     (f32; area of the normalized rectangle, corners in any order)
 *   vec_dot(3, 4, -2, 5)           -> 14       (dot product via structs passed and returned by value)
 *   list_sum(10)                   -> 855      (build an n-node list of value 3*i, reverse it, sum value*position;
 *                                               n clamped to 0..64)
 *   record_checksum(5)             -> 2225     (i64; fills a mixed-field record array and folds every field)
 *   particle_step(10)              -> 317      (f64 truncated to i32: n steps of a small particle system)
 */

struct vec2f { float x, y; };
struct rectf { struct vec2f min, max; };

struct vec2i { int x, y; };

struct node {
    int value;
    struct node *next;
};

struct record {
    char tag;
    short small;
    int medium;
    long long large;
    double real;
};

struct particle {
    double position;
    double velocity;
};

static struct rectf normalize(struct rectf r) {
    struct rectf out;
    out.min.x = r.min.x < r.max.x ? r.min.x : r.max.x;
    out.max.x = r.min.x < r.max.x ? r.max.x : r.min.x;
    out.min.y = r.min.y < r.max.y ? r.min.y : r.max.y;
    out.max.y = r.min.y < r.max.y ? r.max.y : r.min.y;
    return out;
}

float rect_area(float x0, float y0, float x1, float y1) {
    struct rectf r = {{x0, y0}, {x1, y1}};
    struct rectf n = normalize(r);
    return (n.max.x - n.min.x) * (n.max.y - n.min.y);
}

static __attribute__((noinline)) struct vec2i make_vec(int x, int y) {
    struct vec2i v = {x, y};
    return v;
}

static __attribute__((noinline)) int dot(struct vec2i a, struct vec2i b) {
    return a.x * b.x + a.y * b.y;
}

int vec_dot(int ax, int ay, int bx, int by) {
    return dot(make_vec(ax, ay), make_vec(bx, by));
}

#define POOL_LEN 64
static struct node pool[POOL_LEN];

static struct node *reverse(struct node *head) {
    struct node *previous = 0;
    while (head) {
        struct node *next = head->next;
        head->next = previous;
        previous = head;
        head = next;
    }
    return previous;
}

int list_sum(int n) {
    if (n < 0) n = 0;
    if (n > POOL_LEN) n = POOL_LEN;
    struct node *head = 0;
    for (int i = 0; i < n; i++) {          /* pushing at the head builds the list n-1 .. 0 */
        pool[i].value = 3 * i;
        pool[i].next = head;
        head = &pool[i];
    }
    head = reverse(head);                  /* now 0 .. n-1 */
    int total = 0, position = 0;
    for (struct node *p = head; p; p = p->next)
        total += p->value * position++;
    return total;
}

long long record_checksum(int count) {
    struct record records[8];
    if (count < 0) count = 0;
    if (count > 8) count = 8;
    for (int i = 0; i < count; i++) {
        records[i].tag = (char)('A' + i);
        records[i].small = (short)(i * 100 - 50);
        records[i].medium = i * 1000;
        records[i].large = (long long)i * 10000;
        records[i].real = i * 0.5;
    }
    long long sum = 0;
    for (int i = 0; i < count; i++) {
        const struct record *r = &records[i];
        sum += r->tag + r->small + r->medium / 10 + r->large / 1000 + (long long)(r->real * 8);
    }
    return sum;
}

int particle_step(int steps) {
    struct particle ps[4] = {{0.0, 1.0}, {10.0, -0.5}, {-3.0, 2.0}, {7.5, 0.25}};
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < 4; i++) {
            struct particle *p = &ps[i];
            p->velocity += 0.5 * (double)(i + 1);
            p->position += p->velocity;
        }
    }
    double total = 0;
    for (int i = 0; i < 4; i++)
        total += ps[i].position;
    return (int)total;
}
