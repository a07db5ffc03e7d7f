/* deep.c: recursion with a struct and an array in every frame (frame N, up,
 * down, bt full; the inspect-latency benchmark breaks 100 frames deep).
 *
 * Exports and sample results:
 *   deep_run(3)   -> 57
 *   deep_run(100) -> ...   (see exports.json)
 */

struct frame_info {
    int depth;
    int values[4];
};

__attribute__((noinline)) int descend(int depth, int limit) {
    struct frame_info info;
    int squares[8];
    info.depth = depth;
    for (int i = 0; i < 4; i++)
        info.values[i] = depth * i;
    for (int i = 0; i < 8; i++)
        squares[i] = i * i + depth;
    if (depth >= limit)
        return info.values[3] + squares[7];
    return descend(depth + 1, limit) + info.depth + squares[depth % 8];
}

int deep_run(int limit) {
    return descend(0, limit);
}
