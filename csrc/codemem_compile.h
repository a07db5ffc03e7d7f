/* codemem_compile.h: the C function compiler (see csrc/codemem_compile.c).
 *
 * Plain declarations only: this text is also given to cffi's cdef
 * (codemem/_native_build.py), so no macros, no includes. */

typedef struct cm_cc_module cm_cc_module;

/* What one compiled function is, valid until the next cm_cc_compile on the
 * same module.  Offsets are relative to the function's first byte (which the
 * caller places at code_base, 28 mod 32: its 4-byte `push rbp; mov rbp, rsp`
 * ends on 32 bytes, where the ENTRY point is).  seqpoints: num_seqpoints 20-byte
 * frame-table SequencePoint records, final: native offsets from code_base on,
 * stack_types and first_mirror pointing into the module-wide pools
 * (cm_cc_pools).  sites, trap_calls: image offsets too (code_base on).
 * types_* / mirror_*: the function's distinct lists (what it interned),
 * where each ends in its pool.  calls: pairs (rel32 field relative to the
 * function, callee's defined-function index). */
typedef struct {
    const uint8_t *code;
    uint32_t code_size;
    uint32_t native_size;
    uint32_t frame_size;
    uint32_t num_seqpoints;
    const uint8_t *seqpoints;
    uint32_t num_types;
    const uint8_t *types_pool;
    const uint32_t *types_ends;
    uint32_t num_mirror_lists;
    const uint8_t *mirror_pool;
    const uint32_t *mirror_ends;
    uint32_t num_locals;
    const uint8_t *locals; /* the frame table's LocalSlot records (8 bytes each) */
    uint32_t num_sites;
    const uint32_t *sites;
    uint32_t num_trap_calls;
    const uint32_t *trap_calls;
    uint32_t num_calls;
    const uint32_t *calls;
    uint32_t reason_op; /* the opcode (0xFC00 + sub), 0xFFFF malformed or invalid, 0x1000N internal */
    uint32_t reason_offset;
} cm_cc_result;

/* Opcode tables, once per process: for opcode index op (a byte, or 0x100 +
 * the sub-opcode of 0xFC), flags (CM_CC_* bits in codemem_compile.c), the
 * fixed signature of table-driven instructions, and numeric.py's xmm0 facts. */
void cm_cc_set_opcode(uint32_t op, uint32_t flags, const uint8_t *params, uint32_t nparams,
                      const uint8_t *results, uint32_t nresults, uint32_t natural_align,
                      uint32_t arity, uint32_t xmm0_after);

/* abi.py's offsets and trap codes used by the templates encoded in C (once per process). */
void cm_cc_set_abi(int32_t vmctx_memory_base, int32_t vmctx_memory_def, int32_t memdef_length,
                   int32_t trap_out_of_bounds_memory, int32_t trap_divide_by_zero, int32_t trap_integer_overflow,
                   int32_t libcall_trap_disp);

cm_cc_module *cm_cc_module_new(int debug, void *userdata);
void cm_cc_module_free(cm_cc_module *m);
int cm_cc_add_type(cm_cc_module *m, const uint8_t *params, uint32_t nparams, const uint8_t *results,
                   uint32_t nresults);
int cm_cc_set_funcs(cm_cc_module *m, const uint32_t *type_indices, uint32_t nfuncs, uint32_t num_imported,
                    const int32_t *import_entries);
int cm_cc_set_globals(cm_cc_module *m, const uint8_t *valtypes, const uint8_t *mutables,
                      const int32_t *cells, uint32_t nglobals);
int cm_cc_set_tables(cm_cc_module *m, const uint8_t *elem_types, uint32_t ntables, uint32_t nmemories);

/* A template the caller built for cm_py_template's request.  carrier: its
 * last instruction is a carrier store (`mov [rsp+disp8], r64` or `mov [rsp], r64`)
 * that no label of the template is bound after (compiler.py _template). */
int cm_cc_store_template(cm_cc_module *m, const int64_t *key, uint32_t nkey, int32_t at, const uint8_t *code,
                         uint32_t code_size, const uint32_t *trap_pos, const int32_t *trap_codes,
                         uint32_t ntraps, uint32_t hazards, int carrier);

/* Compile defined function `defined_index`, whose body (instructions, final
 * end included) is data[body_offset:end_offset], locals (params first) the
 * value type bytes local_types.  Returns 1 and fills *out, or 0: the C
 * compiler does not handle this body (an opcode it lacks, or anything it
 * finds malformed or invalid); the caller compiles it in Python then, which
 * reports errors.  out->reason_op / reason_offset say why. */
int cm_cc_compile(cm_cc_module *m, const uint8_t *data, uint32_t body_offset, uint32_t end_offset,
                  uint32_t defined_index, const uint8_t *local_types, uint32_t nlocals, uint32_t code_base,
                  cm_cc_result *out);

/* The module-wide pools the frame table's records point into (the
 * FrameTableBuilder's, kept here): which 0 the stack-types pool (entries
 * are value type bytes), 1 the mirror pool (entries are packed
 * RegisterMirror records).  cm_cc_intern adds entry p[0:n] unless an equal
 * one is there and sets *start to its byte offset in the pool (0: out of
 * memory); cm_cc_pools gives the pool, its size and where each entry ends,
 * in order of first occurrence. */
int cm_cc_intern(cm_cc_module *m, int which, const uint8_t *p, uint32_t n, uint32_t *start);
void cm_cc_pools(cm_cc_module *m, int which, const uint8_t **pool, uint32_t *size, const uint32_t **ends,
                 uint32_t *count);

/* The frame table's PatchSite records (16 bytes each, into out) of n sites
 * whose enabled form is `call target` (e8 rel32, image offsets) and whose
 * disabled form is the code's own 5 bytes at the site (the NOP, or a carrier
 * store: frametable.py carrier_store), or the 5-byte NOP when code is NULL:
 * 1 if the offsets ascend, 0 if not, -1 if a site straddles an 8-byte
 * boundary, -2 if a site's bytes are neither (out then partly written). */
int cm_call_site_records(const uint32_t *offsets, size_t n, uint32_t target, const uint8_t *code,
                         size_t code_size, uint8_t *out);
