/* codemem_compile.c: the baseline compiler's per-function loop, in C.
 *
 * A byte-for-byte port of codemem/x64/compiler.py `_compile_function` (with
 * regcache.py, the validator's body algorithm, and the instruction reader)
 * for the instructions C compiled from clang uses most.  It must produce the
 * very bytes, sequence points, sites and mirror lists the Python compiler
 * makes; golden_hash.py and tests/test_compile_c.py hold it to that.
 *
 * Machine-code templates: the ones of nearly every instruction are encoded
 * here, byte for byte what compiler.py's `_build_*` and numeric.py build
 * (register moves, loads and stores with their bounds checks, integer and
 * float operations and conversions), with the branch padding `_emit`'s
 * variant for that offset mod 32 has.  The rest (rounding, copysign,
 * trapping truncations, u64 conversions, select, calls, epilogues ...) stay
 * in Python: the C side keys them exactly as compiler.py does and asks
 * Python (cm_py_template, once per key and code offset mod 32) for the
 * bytes, then copies them from its own cache.
 *
 * Frame table: the stack-types and mirror pools are kept here, module-wide,
 * in the order FrameTableBuilder would make them (cm_cc_intern for what
 * Python compiles in between); the records come out final.
 *
 * Anything it does not handle (an opcode, a malformed or invalid body, a
 * template Python could not build) makes cm_cc_compile return 0 and the
 * function is compiled by Python, which reports errors in the spec's order.
 */
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codemem_compile.h"

/* The Python callback (cffi extern "Python", codemem/ccompile.py). */
extern int cm_py_template(void *userdata, const int64_t *key, uint32_t nkey, int32_t at);

/* ---- constants mirrored from codemem/abi.py, numeric.py, frametable.py ---- */
enum { FRAME_ARGS_PTR = -8, FRAME_FIXED_SIZE = 72, FRAME_SAVED_CTX = -16, STACK_CHECK_EXTRA = 256,
       VMCTX_MEMORY_BASE = 8, VMCTX_MEMORY_DEF = 16, VMCTX_STACK_CTX = 0, MEMDEF_LENGTH = 8,
       STACK_CTX_STACK_LIMIT = 16, TRAP_STACK_EXHAUSTED = 9, TRAP_UNREACHABLE = 1 };
enum { RAX = 0, RCX = 1, RDX = 2, RBX = 3, RSP = 4, RBP = 5, RSI = 6, RDI = 7, R15 = 15 };
enum { KIND_INSTRUCTION = 0, KIND_RETURN_POINT = 1, KIND_ENTRY = 2 };
enum { MIRROR_SLOT = 0, MIRROR_MEMORY0_BASE = 1, MIRROR_MEMORY0_LENGTH = 2 };
enum { COND_AE = 3, COND_E = 4, COND_NE = 5, COND_B = 2 };
#define BOUNDARY 32
#define MEMORY_BASE (-((int64_t)1 << 40))
#define MEMORY_LENGTH (MEMORY_BASE - 1)
#define NO_LOC INT64_MIN
#define UNKNOWN_T 0x00
#define I32_T 0x7F
#define I64_T 0x7E
#define F32_T 0x7D
#define F64_T 0x7C
static inline int is_float_type(uint8_t t) { return t == F32_T || t == F64_T; }
#define FUNCREF_T 0x70

/* Opcode flags (set by cm_cc_set_opcode from compiler.py's classes). */
#define CM_CC_SUPPORTED 1u    /* this file compiles it */
#define CM_CC_SIMPLE 2u       /* validator._SIMPLE: fixed signature */
#define CM_CC_NUMERIC 4u      /* numeric.NUMERIC */
#define CM_CC_CACHE_AWARE 8u
#define CM_CC_SCRATCH_ONLY 16u
#define CM_CC_XMM_RESULT_ONLY 32u
#define CM_CC_XMM_UNTOUCHED 64u
#define CM_CC_XMM_X_INPUT 128u
#define CM_CC_XMM_Y_INPUT 256u
#define CM_CC_MEMARG 512u
#define CM_CC_DEFERRING 1024u /* compiler.py _DEFERRING */

/* Template kinds: the key's first element (codemem/ccompile.py maps each to
 * compiler.py's key and builder). */
enum { K_COPY = 1, K_SAVE, K_RESTORE, K_EPILOGUE, K_UNREACHABLE, K_SELECT, K_LOCAL_GET, K_LOCAL_SET,
       K_GLOBAL_GET, K_GLOBAL_SET, K_TO_SLOT, K_RNUM2, K_RNUM1, K_LOAD, K_STORE, K_MEMSIZE, K_CALL_IMPORT,
       K_CALL_INDIRECT, K_TAKE_RESULT, K_MEMORY_GROW };
enum { AFTER_CLOBBER = 0, AFTER_RESULT = 1, AFTER_X = 2, AFTER_KEEP = 3 };

#define NOPS_MAX 9
static const uint8_t NOPS[10][9] = {
    {0}, {0x90}, {0x66, 0x90}, {0x0f, 0x1f, 0x00}, {0x0f, 0x1f, 0x40, 0x00}, {0x0f, 0x1f, 0x44, 0x00, 0x00},
    {0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00}, {0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00},
    {0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00}, {0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00},
};
static const uint8_t SITE_DISABLED[5] = {0x0f, 0x1f, 0x44, 0x00, 0x00};
#define SITE_PAD_PREFIX 0x3E /* frametable.py SITE_PAD_PREFIX: a DS segment override */
static const int CACHE_REGS[10] = {RSI, RDI, 8, 9, 10, 11, RBX, 12, 13, 14};
static const int MIRROR_ORDER[10] = {RBX, RSI, RDI, 8, 9, 10, 11, 12, 13, 14};

typedef struct {
    uint32_t flags;
    uint8_t params[3], results[1];
    uint8_t nparams, nresults, natural_align, arity, xmm0_after;
} opinfo;
static opinfo OPS[0x120];
/* ONE_TYPE[t] == t: the result list of a block of value type t. */
static uint8_t ONE_TYPE[256];

/* abi.py's vmctx/MemoryDefinition offsets and trap codes the encoded templates
 * use, given once per process by ccore.py (one source of truth). */
static int32_t VMCTX_MEMORY_BASE_, VMCTX_MEMORY_DEF_, MEMDEF_LENGTH_;
static int32_t TRAP_OUT_OF_BOUNDS_MEMORY, TRAP_DIVIDE_BY_ZERO, TRAP_INTEGER_OVERFLOW;
static int32_t LIBCALL_TRAP_DISP; /* rbp-relative: the code a libcall left (compiler.py _LIBCALL_TRAP) */
static int abi_set;

void cm_cc_set_abi(int32_t vmctx_memory_base, int32_t vmctx_memory_def, int32_t memdef_length,
                   int32_t trap_out_of_bounds_memory, int32_t trap_divide_by_zero, int32_t trap_integer_overflow,
                   int32_t libcall_trap_disp)
{
    LIBCALL_TRAP_DISP = libcall_trap_disp;
    VMCTX_MEMORY_BASE_ = vmctx_memory_base;
    VMCTX_MEMORY_DEF_ = vmctx_memory_def;
    MEMDEF_LENGTH_ = memdef_length;
    TRAP_OUT_OF_BOUNDS_MEMORY = trap_out_of_bounds_memory;
    TRAP_DIVIDE_BY_ZERO = trap_divide_by_zero;
    TRAP_INTEGER_OVERFLOW = trap_integer_overflow;
    abi_set = 1;
}

void cm_cc_set_opcode(uint32_t op, uint32_t flags, const uint8_t *params, uint32_t nparams,
                      const uint8_t *results, uint32_t nresults, uint32_t natural_align, uint32_t arity,
                      uint32_t xmm0_after)
{
    if (op >= 0x120 || nparams > 3 || nresults > 1)
        return;
    opinfo *o = &OPS[op];
    for (int t = 0; t < 256; t++)
        ONE_TYPE[t] = (uint8_t)t;
    o->flags = flags;
    o->nparams = (uint8_t)nparams;
    o->nresults = (uint8_t)nresults;
    memcpy(o->params, params, nparams);
    memcpy(o->results, results, nresults);
    o->natural_align = (uint8_t)natural_align;
    o->arity = (uint8_t)arity;
    o->xmm0_after = (uint8_t)xmm0_after;
}

/* ------------------------------------------------------------------------ */
/* Growable buffers                                                          */
/* ------------------------------------------------------------------------ */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void buf_reserve(buf *b, size_t extra, jmp_buf *fail)
{
    if (b->n + extra <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        longjmp(*fail, 1);
    b->p = p;
    b->cap = cap;
}

#define VEC(T) struct { T *p; size_t n, cap; }
#define VEC_PUSH(v, x, fail)                                                          \
    do {                                                                              \
        if ((v).n == (v).cap) {                                                       \
            size_t _c = (v).cap ? (v).cap * 2 : 64;                                   \
            void *_p = realloc((v).p, _c * sizeof(*(v).p));                           \
            if (!_p)                                                                  \
                longjmp(*(fail), 1);                                                  \
            (v).p = _p;                                                               \
            (v).cap = _c;                                                             \
        }                                                                             \
        (v).p[(v).n++] = (x);                                                         \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Module                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct {
    uint8_t *params, *results;
    uint32_t nparams, nresults;
} functype;

#define MAXK 12
typedef struct {
    int64_t key[MAXK];
    uint32_t nkey;
    int32_t at;
    uint64_t hash;
    uint8_t *code;
    uint32_t code_size, ntraps, hazards;
    int carrier; /* ends with a carrier store (cm_cc_store_template) */
    uint32_t *trap_pos;
    int32_t *trap_codes;
} template_t;

/* The register cache (regcache.py): an ordered list of (location, register)
 * entries (dict insertion order matters: _establish and _loop_header walk it),
 * plus the by-register view. */
typedef struct {
    int64_t loc[16];
    int8_t reg[16];
    int n;
} cstate;

typedef struct {
    uint32_t offset;
    uint32_t op;
    int64_t imm;  /* index, constant bits, memarg offset, blocktype, br_table first label */
    uint32_t imm2; /* memarg align, call_indirect table, br_table count, blocktype kind */
} instr;

enum { BT_EMPTY = 0, BT_VAL = 1, BT_INDEX = 2 };
enum { V_BLOCK, V_LOOP, V_IF, V_ELSE, V_FUNCTION };
enum { C_FUNCTION, C_BLOCK, C_LOOP, C_IF, C_DEAD };

typedef struct {
    /* validator frame */
    int vkind;
    const uint8_t *start_types, *end_types;
    uint32_t nstart, nend;
    uint8_t inline_type;
    uint32_t vheight;
    int unreachable;
    /* compiler frame (_Ctl) */
    int ckind;
    uint32_t height, arity, nparams;
    int label, else_label, else_seen;
    int32_t save_offset;
    int nstates;       /* forward edges so far; common holds what they agree on */
    cstate common;
    cstate else_state;
    cstate header;
} frame;

typedef struct { uint32_t pos; int label; int anchor_label; } fixup;
typedef struct { uint32_t pos; uint32_t seq; int32_t code; } trapfield;
typedef struct { int table; uint32_t first, count; } jtable;
typedef struct { uint32_t seq; int32_t code; uint32_t stub; } stubkey;
typedef struct {
    uint32_t off, wasm_offset;
    uint8_t kind;
    uint32_t types_at, types_len; /* in tpool */
    int32_t state;                /* index into states, -1: none */
} point;

/* An open-addressing index over the entries of a pool (intern()). */
typedef struct {
    uint32_t *hash;
    size_t cap, alloc;
} itable;

struct cm_cc_module {
    int debug;
    void *userdata;
    functype *types;
    uint32_t ntypes;
    uint32_t *func_types;
    uint32_t nfuncs, num_imported;
    int32_t *import_entries;
    uint8_t *gtypes, *gmut;
    int32_t *gcells;
    uint32_t nglobals;
    uint8_t *telems;
    uint32_t ntables, nmemories;
    template_t *tmpl;
    size_t tmpl_cap, tmpl_n;
    uint64_t clock;
    uint64_t stamp[16];

    /* per-function state */
    jmp_buf fail;
    const uint8_t *local_types;
    const functype *fn_type; /* the function being compiled */
    uint32_t nlocals, nsave;
    buf code;
    int fusible_at, fusible_end;
    /* Where the last carrier store (`mov [rsp+disp8], r64` or `mov [rsp], r64`) ends,
     * -1 after a label is bound: the next INSTRUCTION site may be that store
     * when it is still the last thing emitted (instruction_site; asm.py
     * Assembler.carrier_end). */
    int64_t carrier_end;
    /* Where the last constant's `mov r32, imm32` ends (its slot store starts there), or -1: a producer
     * carrier may be made of it (defer_carrier_store; compiler.py producer_end). */
    int64_t producer_end;
    /* code_base mod 32: where offset 0 of m->code falls in a 32-byte block
     * (functions start at 28 mod 32, compiler.py FUNCTION_START_PHASE), so
     * every alignment rule below looks at PHASE(m, offset), not the offset */
    uint32_t origin;
    VEC(int64_t) labels;
    VEC(fixup) fixups;
    VEC(trapfield) traps;
    VEC(jtable) jtables;
    VEC(int) jlabels;
    VEC(instr) ins;
    VEC(uint32_t) brlabels;
    VEC(frame) frames;
    buf vals;
    uint32_t seq;
    /* cache */
    cstate cache;
    int64_t by_reg[16];
    uint32_t cache_version, recorded_version;
    int32_t recorded_state;
    VEC(cstate) states;
    VEC(int64_t) xmm0;
    /* points */
    VEC(point) points;
    buf tpool;
    /* outputs */
    buf seq_out, types_out, mirrors_out, locals_out;
    VEC(uint32_t) types_ends;
    VEC(uint32_t) mirror_ends;
    VEC(uint32_t) sites;
    VEC(uint32_t) trap_calls;
    VEC(uint32_t) calls;
    VEC(int32_t) state_ids;
    /* interning (per function) */
    itable ifn; /* per function */
    /* Module-wide pools (FrameTableBuilder's, in first-occurrence order over
     * the functions compiled here and the ones Python compiled in between:
     * cm_cc_intern): the stack-types pool and the mirror-record pool, each
     * entry ending at ends[k]. */
    buf gtypes_pool, gmirror_pool;
    VEC(uint32_t) gtypes_ends;
    VEC(uint32_t) gmirror_ends;
    itable igtypes, igmirrors;
    VEC(uint32_t) gmap; /* a function's list index -> its module-wide entry */
    uint32_t fail_op, fail_offset;
    VEC(uint32_t) stub_depth; /* br_table's out-of-line branches */
    VEC(int) stub_label;
    VEC(stubkey) stubs;       /* trap stubs */
};

cm_cc_module *cm_cc_module_new(int debug, void *userdata)
{
    cm_cc_module *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->debug = debug;
    m->userdata = userdata;
    return m;
}

#define FREE_VEC(v) free((v).p)
void cm_cc_module_free(cm_cc_module *m)
{
    if (!m)
        return;
    for (uint32_t i = 0; i < m->ntypes; i++) {
        free(m->types[i].params);
        free(m->types[i].results);
    }
    free(m->types);
    free(m->func_types);
    free(m->import_entries);
    free(m->gtypes);
    free(m->gmut);
    free(m->gcells);
    free(m->telems);
    for (size_t i = 0; i < m->tmpl_cap; i++)
        if (m->tmpl[i].code) {
            free(m->tmpl[i].code);
            free(m->tmpl[i].trap_pos);
            free(m->tmpl[i].trap_codes);
        }
    free(m->tmpl);
    free(m->code.p);
    FREE_VEC(m->labels);
    FREE_VEC(m->fixups);
    FREE_VEC(m->traps);
    FREE_VEC(m->jtables);
    FREE_VEC(m->jlabels);
    FREE_VEC(m->ins);
    FREE_VEC(m->brlabels);
    FREE_VEC(m->frames);
    free(m->vals.p);
    FREE_VEC(m->states);
    FREE_VEC(m->xmm0);
    FREE_VEC(m->points);
    free(m->tpool.p);
    free(m->seq_out.p);
    free(m->types_out.p);
    free(m->mirrors_out.p);
    free(m->locals_out.p);
    FREE_VEC(m->types_ends);
    FREE_VEC(m->mirror_ends);
    FREE_VEC(m->sites);
    FREE_VEC(m->trap_calls);
    FREE_VEC(m->calls);
    FREE_VEC(m->state_ids);
    FREE_VEC(m->stub_depth);
    FREE_VEC(m->stub_label);
    FREE_VEC(m->stubs);
    free(m->ifn.hash);
    free(m->igtypes.hash);
    free(m->igmirrors.hash);
    free(m->gtypes_pool.p);
    free(m->gmirror_pool.p);
    FREE_VEC(m->gtypes_ends);
    FREE_VEC(m->gmirror_ends);
    FREE_VEC(m->gmap);
    free(m);
}

static void *dup(const void *p, size_t n)
{
    void *q = malloc(n ? n : 1);
    if (q && n)
        memcpy(q, p, n);
    return q;
}

int cm_cc_add_type(cm_cc_module *m, const uint8_t *params, uint32_t nparams, const uint8_t *results,
                   uint32_t nresults)
{
    functype *t = realloc(m->types, (m->ntypes + 1) * sizeof(*t));
    if (!t)
        return 0;
    m->types = t;
    t[m->ntypes].params = dup(params, nparams);
    t[m->ntypes].results = dup(results, nresults);
    t[m->ntypes].nparams = nparams;
    t[m->ntypes].nresults = nresults;
    m->ntypes++;
    return 1;
}

int cm_cc_set_funcs(cm_cc_module *m, const uint32_t *type_indices, uint32_t nfuncs, uint32_t num_imported,
                    const int32_t *import_entries)
{
    m->func_types = dup(type_indices, nfuncs * sizeof(uint32_t));
    m->import_entries = dup(import_entries, num_imported * sizeof(int32_t));
    m->nfuncs = nfuncs;
    m->num_imported = num_imported;
    for (uint32_t i = 0; i < nfuncs; i++)
        if (type_indices[i] >= m->ntypes)
            return 0;
    return m->func_types && m->import_entries;
}

int cm_cc_set_globals(cm_cc_module *m, const uint8_t *valtypes, const uint8_t *mutables, const int32_t *cells,
                      uint32_t nglobals)
{
    m->gtypes = dup(valtypes, nglobals);
    m->gmut = dup(mutables, nglobals);
    m->gcells = dup(cells, nglobals * sizeof(int32_t));
    m->nglobals = nglobals;
    return m->gtypes && m->gmut && m->gcells;
}

int cm_cc_set_tables(cm_cc_module *m, const uint8_t *elem_types, uint32_t ntables, uint32_t nmemories)
{
    m->telems = dup(elem_types, ntables);
    m->ntables = ntables;
    m->nmemories = nmemories;
    return m->telems != NULL;
}

/* ------------------------------------------------------------------------ */
/* Template cache                                                            */
/* ------------------------------------------------------------------------ */

static uint64_t key_hash(const int64_t *key, uint32_t nkey, int32_t at)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)(at + 7);
    for (uint32_t i = 0; i < nkey; i++) {
        h ^= (uint64_t)key[i];
        h *= 1099511628211ull;
        h ^= h >> 29;
    }
    return h | 1; /* 0 marks an empty slot */
}

static template_t *tmpl_find(cm_cc_module *m, const int64_t *key, uint32_t nkey, int32_t at, uint64_t h)
{
    if (!m->tmpl_cap)
        return NULL;
    size_t mask = m->tmpl_cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        template_t *t = &m->tmpl[i];
        if (!t->hash)
            return NULL;
        if (t->hash == h && t->nkey == nkey && t->at == at && !memcmp(t->key, key, nkey * sizeof(int64_t)))
            return t;
    }
}

static int tmpl_grow(cm_cc_module *m)
{
    size_t cap = m->tmpl_cap ? m->tmpl_cap * 2 : 1024;
    template_t *t = calloc(cap, sizeof(*t));
    if (!t)
        return 0;
    for (size_t i = 0; i < m->tmpl_cap; i++) {
        template_t *o = &m->tmpl[i];
        if (!o->hash)
            continue;
        size_t j = o->hash & (cap - 1);
        while (t[j].hash)
            j = (j + 1) & (cap - 1);
        t[j] = *o;
    }
    free(m->tmpl);
    m->tmpl = t;
    m->tmpl_cap = cap;
    return 1;
}

int cm_cc_store_template(cm_cc_module *m, const int64_t *key, uint32_t nkey, int32_t at, const uint8_t *code,
                         uint32_t code_size, const uint32_t *trap_pos, const int32_t *trap_codes,
                         uint32_t ntraps, uint32_t hazards, int carrier)
{
    if (nkey > MAXK)
        return 0;
    uint64_t h = key_hash(key, nkey, at);
    if (tmpl_find(m, key, nkey, at, h))
        return 1;
    if ((m->tmpl_n + 1) * 2 > m->tmpl_cap && !tmpl_grow(m))
        return 0;
    size_t mask = m->tmpl_cap - 1;
    size_t i = h & mask;
    while (m->tmpl[i].hash)
        i = (i + 1) & mask;
    template_t *t = &m->tmpl[i];
    memset(t, 0, sizeof(*t));
    memcpy(t->key, key, nkey * sizeof(int64_t));
    t->nkey = nkey;
    t->at = at;
    t->code = dup(code, code_size);
    t->trap_pos = dup(trap_pos, ntraps * sizeof(uint32_t));
    t->trap_codes = dup(trap_codes, ntraps * sizeof(int32_t));
    if (!t->code || !t->trap_pos || !t->trap_codes)
        return 0;
    t->code_size = code_size;
    t->ntraps = ntraps;
    t->hazards = hazards;
    t->carrier = carrier;
    t->hash = h;
    m->tmpl_n++;
    return 1;
}

static template_t *get_template(cm_cc_module *m, const int64_t *key, uint32_t nkey, int32_t at)
{
    uint64_t h = key_hash(key, nkey, at);
    template_t *t = tmpl_find(m, key, nkey, at, h);
    if (t)
        return t;
    if (!cm_py_template(m->userdata, key, nkey, at))
        longjmp(m->fail, 2);
    t = tmpl_find(m, key, nkey, at, h);
    if (!t)
        longjmp(m->fail, 2);
    return t;
}

/* ------------------------------------------------------------------------ */
/* Assembler (asm.py, the parts compiler.py uses directly)                   */
/* ------------------------------------------------------------------------ */

static inline void put(cm_cc_module *m, const void *p, size_t n)
{
    buf_reserve(&m->code, n, &m->fail);
    memcpy(m->code.p + m->code.n, p, n);
    m->code.n += n;
}
static inline void put1(cm_cc_module *m, uint8_t b)
{
    buf_reserve(&m->code, 1, &m->fail);
    m->code.p[m->code.n++] = b;
}
static inline void put32(cm_cc_module *m, int32_t v)
{
    uint32_t u = (uint32_t)v;
    uint8_t b[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
    put(m, b, 4);
}
static inline void store32(cm_cc_module *m, size_t pos, int32_t v)
{
    uint32_t u = (uint32_t)v;
    m->code.p[pos] = (uint8_t)u;
    m->code.p[pos + 1] = (uint8_t)(u >> 8);
    m->code.p[pos + 2] = (uint8_t)(u >> 16);
    m->code.p[pos + 3] = (uint8_t)(u >> 24);
}
#define HERE(m) ((uint32_t)(m)->code.n)
/* Where function offset x falls mod 32 (and so mod 8) in the image. */
#define PHASE(m, x) ((uint32_t)(x) + (m)->origin)

static void nops(cm_cc_module *m, int length)
{
    while (length > 0) {
        int chunk = length < NOPS_MAX ? length : NOPS_MAX;
        put(m, NOPS[chunk], (size_t)chunk);
        length -= chunk;
    }
}

/* Assembler.pad_for_branch with branch_boundary 32 (positions in the image: PHASE). */
static void pad_for_branch(cm_cc_module *m, int length, int conditional)
{
    int end = (int)m->code.n;
    int start = conditional && m->fusible_end == end ? m->fusible_at : end;
    int at = (int)(PHASE(m, start) & (BOUNDARY - 1));
    int pad = at + (end - start) + length < BOUNDARY ? 0 : BOUNDARY - at;
    if (pad) {
        buf_reserve(&m->code, (size_t)pad, &m->fail);
        memmove(m->code.p + start + pad, m->code.p + start, (size_t)(end - start));
        m->code.n = (size_t)start;
        nops(m, pad);
        m->code.n = (size_t)(end + pad);
    }
    m->fusible_end = -1;
}

/* _rm with a register or a [base + disp] operand (no index). */
static void enc_rm(cm_cc_module *m, int w, const uint8_t *opcode, int nop, int reg, int is_mem, int base,
                   int32_t disp, int force_rex)
{
    uint8_t b[16];
    int n = 0;
    if (is_mem) {
        int rex = w | ((reg & 8) >> 1) | (base >> 3);
        if (rex || force_rex)
            b[n++] = (uint8_t)(0x40 | rex);
        for (int i = 0; i < nop; i++)
            b[n++] = opcode[i];
        int low = base & 7, mod, dn;
        if (disp == 0 && low != 5) {
            mod = 0x00;
            dn = 0;
        } else if (disp >= -128 && disp <= 127) {
            mod = 0x40;
            dn = 1;
        } else {
            mod = 0x80;
            dn = 4;
        }
        if (low != 4) {
            b[n++] = (uint8_t)(mod | low | ((reg & 7) << 3));
        } else {
            b[n++] = (uint8_t)(mod | 0x04 | ((reg & 7) << 3));
            b[n++] = (uint8_t)(0x20 | low);
        }
        uint32_t u = (uint32_t)disp;
        for (int i = 0; i < dn; i++)
            b[n++] = (uint8_t)(u >> (8 * i));
    } else {
        int rm = base;
        int rex = w | ((reg & 8) >> 1) | (rm >> 3);
        if (rex || force_rex)
            b[n++] = (uint8_t)(0x40 | rex);
        for (int i = 0; i < nop; i++)
            b[n++] = opcode[i];
        b[n++] = (uint8_t)(0xC0 | ((reg & 7) << 3) | (rm & 7));
    }
    put(m, b, (size_t)n);
}

static const uint8_t OP_MOV_STORE[1] = {0x89}, OP_MOV_LOAD[1] = {0x8B}, OP_LEA[1] = {0x8D},
                     OP_TEST[1] = {0x85}, OP_83[1] = {0x83}, OP_81[1] = {0x81}, OP_XOR[1] = {0x31},
                     OP_CMP_LOAD[1] = {0x3B}, OP_ADD_STORE[1] = {0x01}, OP_MOVSXD[1] = {0x63};

static void mov_rr(cm_cc_module *m, int dst, int src) { enc_rm(m, 8, OP_MOV_STORE, 1, src, 0, dst, 0, 0); }
static void mov_rm(cm_cc_module *m, int dst, int base, int32_t disp, int size64)
{
    enc_rm(m, size64 ? 8 : 0, OP_MOV_LOAD, 1, dst, 1, base, disp, 0);
}
static void mov_mr(cm_cc_module *m, int base, int32_t disp, int src)
{
    enc_rm(m, 8, OP_MOV_STORE, 1, src, 1, base, disp, 0);
    if (base == RSP && disp >= 0 && disp < 128 && !(disp & 7))
        m->carrier_end = (int64_t)m->code.n;
}
static void lea(cm_cc_module *m, int dst, int base, int32_t disp) { enc_rm(m, 8, OP_LEA, 1, dst, 1, base, disp, 0); }

static void note_fusible(cm_cc_module *m, int start)
{
    m->fusible_at = start;
    m->fusible_end = (int)m->code.n;
}

/* _mov_reg_imm(dst, imm, 64) */
static void mov_imm64(cm_cc_module *m, int dst, uint64_t bits)
{
    int64_t value = (int64_t)bits;
    int low = dst & 7, rex_b = dst >> 3;
    if (value >= 0 && value <= 0xFFFFFFFFll) {
        if (rex_b)
            put1(m, 0x41);
        put1(m, (uint8_t)(0xB8 | low));
        put32(m, (int32_t)(uint32_t)value);
    } else if (value >= -0x80000000ll && value < 0) {
        put1(m, (uint8_t)(0x48 | rex_b));
        put1(m, 0xC7);
        put1(m, (uint8_t)(0xC0 | low));
        put32(m, (int32_t)value);
    } else {
        put1(m, (uint8_t)(0x48 | rex_b));
        put1(m, (uint8_t)(0xB8 | low));
        uint8_t b[8];
        for (int i = 0; i < 8; i++)
            b[i] = (uint8_t)(bits >> (8 * i));
        put(m, b, 8);
    }
}

static int new_label(cm_cc_module *m)
{
    VEC_PUSH(m->labels, -1, &m->fail);
    return (int)m->labels.n - 1;
}
static void bind(cm_cc_module *m, int label)
{
    m->labels.p[label] = (int64_t)m->code.n;
    m->fusible_end = -1;
    m->carrier_end = -1; /* a branch to here would skip a site on the store before */
}
static void ref32(cm_cc_module *m, uint32_t pos, int label, int anchor_label)
{
    fixup f = {pos, label, anchor_label};
    VEC_PUSH(m->fixups, f, &m->fail);
}
static void jmp(cm_cc_module *m, int label)
{
    pad_for_branch(m, 5, 0);
    put1(m, 0xE9);
    put32(m, 0);
    ref32(m, HERE(m) - 4, label, -1);
}
static void jcc(cm_cc_module *m, int cond, int label)
{
    pad_for_branch(m, 6, 1);
    put1(m, 0x0F);
    put1(m, (uint8_t)(0x80 | cond));
    put32(m, 0);
    ref32(m, HERE(m) - 4, label, -1);
}
static void call_rax(cm_cc_module *m)
{
    pad_for_branch(m, 2, 0);
    put1(m, 0xFF);
    put1(m, 0xD0);
}

/* ------------------------------------------------------------------------ */
/* Register cache (regcache.py)                                              */
/* ------------------------------------------------------------------------ */

static int cs_find(const cstate *s, int64_t loc)
{
    for (int i = 0; i < s->n; i++)
        if (s->loc[i] == loc)
            return i;
    return -1;
}
static void cs_remove(cstate *s, int i)
{
    for (int k = i + 1; k < s->n; k++) {
        s->loc[k - 1] = s->loc[k];
        s->reg[k - 1] = s->reg[k];
    }
    s->n--;
}
static inline void changed(cm_cc_module *m) { m->cache_version++; }

static void cache_clear(cm_cc_module *m)
{
    if (m->cache.n) {
        for (int r = 0; r < 16; r++)
            m->by_reg[r] = NO_LOC;
        m->cache.n = 0;
        changed(m);
    }
}
static void cache_restore(cm_cc_module *m, const cstate *s)
{
    m->cache = *s;
    for (int r = 0; r < 16; r++)
        m->by_reg[r] = NO_LOC;
    for (int i = 0; i < s->n; i++)
        m->by_reg[s->reg[i]] = s->loc[i];
    changed(m);
}
static int cache_get(cm_cc_module *m, int64_t loc)
{
    int i = cs_find(&m->cache, loc);
    if (i < 0)
        return -1;
    int reg = m->cache.reg[i];
    m->stamp[reg] = ++m->clock;
    return reg;
}
static int cache_peek(cm_cc_module *m, int64_t loc)
{
    int i = cs_find(&m->cache, loc);
    return i < 0 ? -1 : m->cache.reg[i];
}
static void cache_bind(cm_cc_module *m, int reg, int64_t loc)
{
    int64_t old_loc = m->by_reg[reg];
    if (old_loc != NO_LOC)
        cs_remove(&m->cache, cs_find(&m->cache, old_loc));
    int i = cs_find(&m->cache, loc);
    if (i >= 0) {
        m->by_reg[m->cache.reg[i]] = NO_LOC;
        cs_remove(&m->cache, i);
    }
    m->by_reg[reg] = loc;
    m->cache.loc[m->cache.n] = loc;
    m->cache.reg[m->cache.n] = (int8_t)reg;
    m->cache.n++;
    changed(m);
    m->stamp[reg] = ++m->clock;
}
static void cache_forget(cm_cc_module *m, int64_t loc)
{
    int i = cs_find(&m->cache, loc);
    if (i >= 0) {
        m->by_reg[m->cache.reg[i]] = NO_LOC;
        cs_remove(&m->cache, i);
        changed(m);
    }
}
static void cache_release(cm_cc_module *m, int reg)
{
    int64_t loc = m->by_reg[reg];
    if (loc != NO_LOC) {
        m->by_reg[reg] = NO_LOC;
        cs_remove(&m->cache, cs_find(&m->cache, loc));
        changed(m);
    }
}
static void cache_truncate(cm_cc_module *m, int64_t depth)
{
    for (int i = 0; i < m->cache.n;) {
        if (m->cache.loc[i] >= depth) {
            m->by_reg[m->cache.reg[i]] = NO_LOC;
            cs_remove(&m->cache, i);
            changed(m);
        } else {
            i++;
        }
    }
}
static int cache_alloc(cm_cc_module *m, unsigned avoid)
{
    for (int k = 0; k < 10; k++) {
        int r = CACHE_REGS[k];
        if (m->by_reg[r] == NO_LOC && !(avoid >> r & 1))
            return r;
    }
    int victim = -1;
    for (int k = 0; k < 10; k++) {
        int r = CACHE_REGS[k];
        if (avoid >> r & 1)
            continue;
        if (victim < 0 || m->stamp[r] < m->stamp[victim])
            victim = r;
    }
    cache_release(m, victim);
    return victim;
}
static int cache_free_register(cm_cc_module *m, unsigned avoid)
{
    for (int k = 0; k < 10; k++) {
        int r = CACHE_REGS[k];
        if (m->by_reg[r] == NO_LOC && !(avoid >> r & 1))
            return r;
    }
    return -1;
}
static int cache_use(cm_cc_module *m, int64_t loc, unsigned avoid, int *load)
{
    int i = cs_find(&m->cache, loc);
    if (i >= 0) {
        int reg = m->cache.reg[i];
        m->stamp[reg] = ++m->clock;
        *load = 0;
        return reg;
    }
    int reg = cache_alloc(m, avoid);
    cache_bind(m, reg, loc);
    *load = 1;
    return reg;
}
static void state_below(const cstate *s, int64_t height, cstate *out)
{
    out->n = 0;
    for (int i = 0; i < s->n; i++)
        if (s->loc[i] < height) {
            out->loc[out->n] = s->loc[i];
            out->reg[out->n] = s->reg[i];
            out->n++;
        }
}
/* A forward edge to frame f's label (common_state, accumulated). */
static void add_edge_state(frame *f, const cstate *s)
{
    if (!f->nstates++) {
        f->common = *s;
        return;
    }
    cstate *c = &f->common;
    for (int i = 0; i < c->n;) {
        int j = cs_find(s, c->loc[i]);
        if (j < 0 || s->reg[j] != c->reg[i])
            cs_remove(c, i);
        else
            i++;
    }
}

/* xmm0 guess (a set of locations) */
static int xmm_has(cm_cc_module *m, int64_t loc)
{
    for (size_t i = 0; i < m->xmm0.n; i++)
        if (m->xmm0.p[i] == loc)
            return 1;
    return 0;
}
static void xmm_add(cm_cc_module *m, int64_t loc)
{
    if (!xmm_has(m, loc))
        VEC_PUSH(m->xmm0, loc, &m->fail);
}
static void xmm_discard(cm_cc_module *m, int64_t loc)
{
    for (size_t i = 0; i < m->xmm0.n; i++)
        if (m->xmm0.p[i] == loc) {
            m->xmm0.p[i] = m->xmm0.p[--m->xmm0.n];
            return;
        }
}
#define xmm_clear(m) ((m)->xmm0.n = 0)

/* ------------------------------------------------------------------------ */
/* Templates                                                                 */
/* ------------------------------------------------------------------------ */

static void emit(cm_cc_module *m, const int64_t *key, uint32_t nkey)
{
    template_t *t = get_template(m, key, nkey, -1);
    uint32_t base = HERE(m);
    uint32_t at = PHASE(m, base) & (BOUNDARY - 1);
    if (t->hazards >> at & 1)
        t = get_template(m, key, nkey, (int32_t)at);
    for (uint32_t i = 0; i < t->ntraps; i++) {
        trapfield f = {base + t->trap_pos[i], m->seq, t->trap_codes[i]};
        VEC_PUSH(m->traps, f, &m->fail);
    }
    put(m, t->code, t->code_size);
    if (t->carrier)
        m->carrier_end = (int64_t)m->code.n;
}
#define EMIT(m, ...)                                                       \
    do {                                                                   \
        const int64_t _k[] = {__VA_ARGS__};                                \
        emit((m), _k, (uint32_t)(sizeof(_k) / sizeof(_k[0])));             \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Decoding (instructions.py), strict: anything unusual -> Python            */
/* ------------------------------------------------------------------------ */

typedef struct {
    const uint8_t *d;
    uint32_t pos, limit;
} reader;

static void bail(cm_cc_module *m, uint32_t op, uint32_t offset)
{
    m->fail_op = op;
    m->fail_offset = offset;
    longjmp(m->fail, 3);
}

static uint32_t rd_u32(cm_cc_module *m, reader *r)
{
    uint64_t v = 0;
    for (int i = 0; i < 5; i++) {
        if (r->pos >= r->limit)
            bail(m, 0xFFFF, r->pos);
        uint8_t b = r->d[r->pos++];
        if (i == 4 && (b & 0xF0))
            bail(m, 0xFFFF, r->pos);
        v |= (uint64_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80))
            return (uint32_t)v;
    }
    bail(m, 0xFFFF, r->pos);
    return 0;
}

/* Signed LEB128 of `bits` bits (32, 33 or 64), the spec's rules on the last byte. */
static int64_t rd_sleb(cm_cc_module *m, reader *r, int bits)
{
    uint64_t v = 0;
    int shift = 0;
    int maxbytes = (bits + 6) / 7;
    for (int i = 0; i < maxbytes; i++) {
        if (r->pos >= r->limit)
            bail(m, 0xFFFF, r->pos);
        uint8_t b = r->d[r->pos++];
        if (i == maxbytes - 1) {
            /* the bits beyond `bits` must be the sign extension, no continuation */
            int used = bits - 7 * i; /* value bits in this byte */
            if (b & 0x80)
                bail(m, 0xFFFF, r->pos);
            int sign = (b >> (used - 1)) & 1;
            uint8_t rest = (uint8_t)((b & 0x7F) >> used);
            uint8_t want = sign ? (uint8_t)(0x7F >> used) : 0;
            if (rest != want)
                bail(m, 0xFFFF, r->pos);
        }
        v |= (uint64_t)(b & 0x7F) << shift;
        shift += 7;
        if (!(b & 0x80)) {
            if (shift < 64 && (b & 0x40))
                v |= ~(uint64_t)0 << shift;
            return (int64_t)v;
        }
    }
    bail(m, 0xFFFF, r->pos);
    return 0;
}

static void decode_body(cm_cc_module *m, const uint8_t *data, uint32_t start, uint32_t end)
{
    reader r = {data, start, end};
    int depth = 0;
    uint8_t kinds[1024]; /* if frames for else (deeper nesting -> Python) */
    m->ins.n = 0;
    m->brlabels.n = 0;
    for (;;) {
        if (r.pos >= r.limit)
            bail(m, 0xFFFF, r.pos);
        instr in = {r.pos, data[r.pos], 0, 0};
        r.pos++;
        uint32_t op = in.op;
        if (op == 0xFC) {
            uint32_t sub = rd_u32(m, &r);
            if (sub > 7)
                bail(m, 0xFC00 | sub, in.offset);
            in.op = 0x100 + sub;
        } else if (!(OPS[op].flags & CM_CC_SUPPORTED)) {
            bail(m, op, in.offset);
        }
        switch (op) {
        case 0x02: case 0x03: case 0x04: {
            if (r.pos >= r.limit)
                bail(m, 0xFFFF, r.pos);
            uint8_t b = data[r.pos];
            if (b == 0x40) {
                in.imm2 = BT_EMPTY;
                r.pos++;
            } else if (b == I32_T || b == I64_T || b == F32_T || b == F64_T || b == FUNCREF_T || b == 0x6F) {
                in.imm2 = BT_VAL;
                in.imm = b;
                r.pos++;
            } else if ((b & 0xC0) == 0x40) {
                bail(m, op, in.offset); /* a malformed value type */
            } else {
                int64_t idx = rd_sleb(m, &r, 33);
                if (idx < 0)
                    bail(m, op, in.offset);
                in.imm2 = BT_INDEX;
                in.imm = idx;
            }
            if (depth >= (int)sizeof(kinds))
                bail(m, op, in.offset);
            kinds[depth++] = op == 0x04 ? 1 : 0;
            break;
        }
        case 0x05:
            if (!depth || kinds[depth - 1] != 1)
                bail(m, op, in.offset);
            kinds[depth - 1] = 2;
            break;
        case 0x0B:
            VEC_PUSH(m->ins, in, &m->fail);
            if (!depth) {
                if (r.pos != end)
                    bail(m, op, r.pos);
                return;
            }
            depth--;
            continue;
        case 0x0C: case 0x0D: case 0x10: case 0x20: case 0x21: case 0x22: case 0x23: case 0x24:
            in.imm = rd_u32(m, &r);
            break;
        case 0x0E: {
            uint32_t count_pos = r.pos;
            uint32_t n = rd_u32(m, &r);
            if (n > end - count_pos)
                bail(m, op, in.offset);
            in.imm = (int64_t)m->brlabels.n;
            in.imm2 = n;
            for (uint32_t k = 0; k <= n; k++) { /* the labels, then the default */
                uint32_t l = rd_u32(m, &r);
                VEC_PUSH(m->brlabels, l, &m->fail);
            }
            break;
        }
        case 0x11:
            in.imm = rd_u32(m, &r);
            in.imm2 = rd_u32(m, &r);
            break;
        case 0x3F: case 0x40:
            if (r.pos >= r.limit || data[r.pos] != 0)
                bail(m, op, in.offset);
            r.pos++;
            break;
        case 0x1C: /* typed select: one numeric value type (anything else: Python says what is wrong) */
            if (rd_u32(m, &r) != 1 || r.pos >= r.limit)
                bail(m, op, in.offset);
            in.imm = data[r.pos++];
            if (in.imm != I32_T && in.imm != I64_T && in.imm != F32_T && in.imm != F64_T)
                bail(m, op, in.offset);
            break;
        case 0x41:
            in.imm = rd_sleb(m, &r, 32);
            break;
        case 0x42:
            in.imm = rd_sleb(m, &r, 64);
            break;
        case 0x43:
            if (r.pos + 4 > r.limit)
                bail(m, op, in.offset);
            in.imm = (int64_t)((uint32_t)data[r.pos] | (uint32_t)data[r.pos + 1] << 8 |
                               (uint32_t)data[r.pos + 2] << 16 | (uint32_t)data[r.pos + 3] << 24);
            r.pos += 4;
            break;
        case 0x44: {
            if (r.pos + 8 > r.limit)
                bail(m, op, in.offset);
            uint64_t v = 0;
            for (int i = 7; i >= 0; i--)
                v = v << 8 | data[r.pos + i];
            in.imm = (int64_t)v;
            r.pos += 8;
            break;
        }
        default:
            if (OPS[in.op].flags & CM_CC_MEMARG) {
                in.imm2 = rd_u32(m, &r);
                in.imm = rd_u32(m, &r);
            }
            break;
        }
        VEC_PUSH(m->ins, in, &m->fail);
    }
}

/* ------------------------------------------------------------------------ */
/* Validation (validator.py FuncValidator); a failure -> Python              */
/* ------------------------------------------------------------------------ */

#define VALS(m) ((m)->vals.p)
#define NVALS(m) ((uint32_t)(m)->vals.n)
#define TOPF(m) (&(m)->frames.p[(m)->frames.n - 1])

static void push_val(cm_cc_module *m, uint8_t t)
{
    buf_reserve(&m->vals, 1, &m->fail);
    m->vals.p[m->vals.n++] = t;
}
static void push_vals(cm_cc_module *m, const uint8_t *t, uint32_t n)
{
    buf_reserve(&m->vals, n, &m->fail);
    memcpy(m->vals.p + m->vals.n, t, n);
    m->vals.n += n;
}
static uint8_t pop_val(cm_cc_module *m, uint8_t expect, const instr *in)
{
    frame *f = TOPF(m);
    if (NVALS(m) == f->vheight) {
        if (f->unreachable)
            return UNKNOWN_T;
        bail(m, in->op, in->offset);
    }
    uint8_t actual = m->vals.p[--m->vals.n];
    if (expect && actual != expect && actual != UNKNOWN_T)
        bail(m, in->op, in->offset);
    return actual;
}
/* _pop_vals; popped values (for br_table) go to out if given. */
static void pop_vals(cm_cc_module *m, const uint8_t *types, uint32_t n, const instr *in, uint8_t *out)
{
    frame *f = TOPF(m);
    if (NVALS(m) >= n && NVALS(m) - n >= f->vheight) {
        uint8_t *p = m->vals.p + m->vals.n - n;
        for (uint32_t i = 0; i < n; i++)
            if (p[i] != types[i] && p[i] != UNKNOWN_T)
                bail(m, in->op, in->offset);
        if (out)
            memcpy(out, p, n);
        m->vals.n -= n;
        return;
    }
    for (uint32_t i = n; i-- > 0;) {
        uint8_t t = pop_val(m, types[i], in);
        if (out)
            out[i] = t;
    }
}
static void set_unreachable(cm_cc_module *m)
{
    frame *f = TOPF(m);
    m->vals.n = f->vheight;
    f->unreachable = 1;
}
static const uint8_t *label_types(frame *f, uint32_t *n)
{
    if (f->vkind == V_LOOP) {
        *n = f->nstart;
        return f->start_types;
    }
    *n = f->nend;
    return f->end_types;
}
static frame *label_frame(cm_cc_module *m, uint32_t depth, const instr *in)
{
    if (depth >= m->frames.n)
        bail(m, in->op, in->offset);
    return &m->frames.p[m->frames.n - 1 - depth];
}

static frame *push_frame(cm_cc_module *m)
{
    frame f;
    memset(&f, 0, sizeof(f));
    f.label = f.else_label = -1;
    VEC_PUSH(m->frames, f, &m->fail);
    return TOPF(m);
}

/* Validator push_ctrl into the frame just pushed. */
static void v_push_ctrl(cm_cc_module *m, frame *f, int vkind, const uint8_t *start, uint32_t nstart,
                        const uint8_t *endt, uint32_t nend)
{
    f->vkind = vkind;
    f->start_types = start;
    f->nstart = nstart;
    f->end_types = endt;
    f->nend = nend;
    f->vheight = NVALS(m);
    f->unreachable = 0;
    push_vals(m, start, nstart);
}

static void block_type(cm_cc_module *m, const instr *in, const uint8_t **params, uint32_t *np,
                       const uint8_t **results, uint32_t *nr, uint8_t *inline_slot)
{
    if (in->imm2 == BT_EMPTY) {
        *np = *nr = 0;
        *params = *results = NULL;
    } else if (in->imm2 == BT_VAL) {
        *inline_slot = (uint8_t)in->imm;
        *np = 0;
        *params = NULL;
        *results = inline_slot;
        *nr = 1;
    } else {
        if ((uint64_t)in->imm >= m->ntypes)
            bail(m, in->op, in->offset);
        functype *t = &m->types[in->imm];
        *params = t->params;
        *np = t->nparams;
        *results = t->results;
        *nr = t->nresults;
    }
}

/* The validator's pop_ctrl of the top frame (checks, then pops it). */
static void v_pop_ctrl_check(cm_cc_module *m, const instr *in)
{
    frame *f = TOPF(m);
    pop_vals(m, f->end_types, f->nend, in, NULL);
    if (NVALS(m) != f->vheight)
        bail(m, in->op, in->offset);
}

/* ------------------------------------------------------------------------ */
/* Sequence points                                                           */
/* ------------------------------------------------------------------------ */

static uint32_t site(cm_cc_module *m)
{
    uint32_t here = HERE(m);
    uint32_t r = PHASE(m, here) & 7;
    uint32_t pad = r > 3 ? 8 - r : 0;
    for (uint32_t i = 0; i < pad; i++)
        put1(m, 0x3E);
    put(m, SITE_DISABLED, 5);
    uint32_t off = here + pad;
    VEC_PUSH(m->sites, off, &m->fail);
    return off;
}

/* compiler.py _carrier_kind: what the carrier that ends the code is; the low byte is its length. */
enum { SLOT_STORE = 5, SLOT_STORE_RSP = 4, LOCAL_STORE = 4 + 0x100, REGISTER_MOVE = 3 };
static int carrier_kind(const cm_cc_module *m)
{
    const uint8_t *e = m->code.p + m->code.n;
    if (e[-1] == 0x24)
        return SLOT_STORE_RSP;
    if (e[-2] == 0x24)
        return SLOT_STORE;
    if (e[-2] == 0x89 && e[-1] >= 0xC0)
        return REGISTER_MOVE;
    return LOCAL_STORE;
}

/* The site of an INSTRUCTION sequence point (compiler.py _instruction_site
 * and _carrier_site): the carrier just emitted when it is the last
 * instruction and no label is bound after it; else a disabled NOP site
 * (site()).  The carrier may still change: `mov [rsp], r64` becomes its disp8
 * form (disp8 0), a local's store gets one DS prefix and a move two (5 bytes
 * each), and DS prefixes go before a carrier that would straddle an 8-byte
 * boundary. */
static uint32_t instruction_site(cm_cc_module *m)
{
    uint32_t end = HERE(m);
    if (m->carrier_end != (int64_t)end)
        return site(m);
    m->carrier_end = -1;
    int kind = carrier_kind(m);
    if (kind == SLOT_STORE_RSP) { /* [rsp]: REX 89 04|r 24 -> REX 89 44|r 24 00 */
        m->code.p[end - 2] |= 0x40;
        put1(m, 0);
        end++;
    } else if (kind != SLOT_STORE) {
        uint32_t length = (uint32_t)kind & 0xFF, own = 5 - length;
        buf_reserve(&m->code, own, &m->fail);
        memmove(m->code.p + end - length + own, m->code.p + end - length, length);
        memset(m->code.p + end - length, SITE_PAD_PREFIX, own);
        m->code.n += own;
        end += own;
    }
    uint32_t start = end - 5;
    uint32_t r = PHASE(m, start) & 7;
    if (r > 3) {
        uint32_t pad = 8 - r;
        buf_reserve(&m->code, pad, &m->fail);
        memmove(m->code.p + start + pad, m->code.p + start, 5);
        memset(m->code.p + start, SITE_PAD_PREFIX, pad);
        m->code.n += pad;
        start += pad;
    }
    VEC_PUSH(m->sites, start, &m->fail);
    return start;
}

/* compiler.py _store_deferrable: may the carrier store that ends the code (m->carrier_end == HERE) be left
 * out at the point of `op` (CM_CC_DEFERRING) with d values on the stack: it is a slot store (not a local's
 * store or a move), the previous sequence point is not
 * after the store's start (else the value is live there too), it stores slot d-1 from the register
 * that mirrors it, and op's code reads that register (unary and local.set: that entry; binary: the first
 * operand is mirrored or gets a free register, so nothing evicts the entry first). */
static int store_deferrable(cm_cc_module *m, uint32_t op, int64_t d)
{
    int kind = carrier_kind(m);
    if (kind != SLOT_STORE && kind != SLOT_STORE_RSP)
        return 0;
    uint32_t end = HERE(m);
    const uint8_t *p = m->code.p;
    uint32_t start = end - (uint32_t)kind;
    int64_t disp = kind == SLOT_STORE_RSP ? 0 : p[end - 1];
    int reg = (p[start] & 4) << 1 | (p[start + 2] >> 3 & 7);
    if (m->points.p[m->points.n - 1].off > start || disp != 8 * (d - 1) || cache_peek(m, d - 1) != reg)
        return 0;
    return OPS[op].arity != 2 || cache_peek(m, d - 2) >= 0 || cache_free_register(m, 0) >= 0;
}

/* compiler.py _defer_carrier_store: debug, the point's site becomes a deferred carrier (0F 1F 44 SIB disp8
 * naming the store, frametable.py deferred_carrier_bytes); without debugging the store is dropped. */
/* compiler.py _producer_site: debug, the deferrable slot store at store_start stores the constant loaded
 * right before it: the store is left out and the constant's `mov r32, imm32` (b8+r imm32, a REX.B before it
 * staying a prefix) is the point's site, DS prefixes before both when it would straddle 8 bytes. */
static uint32_t producer_site(cm_cc_module *m, uint32_t store_start)
{
    const uint8_t *p = m->code.p;
    int reg = (p[store_start] & 4) << 1 | (p[store_start + 2] >> 3 & 7);
    m->code.n = store_start;
    m->carrier_end = -1;
    uint32_t site = store_start - 5;
    uint32_t r = PHASE(m, site) & 7;
    if (r > 3) {
        uint32_t pad = 8 - r, at = site - (uint32_t)(reg >> 3);
        buf_reserve(&m->code, pad, &m->fail);
        memmove(m->code.p + at + pad, m->code.p + at, store_start - at);
        memset(m->code.p + at, SITE_PAD_PREFIX, pad);
        m->code.n += pad;
        site += pad;
    }
    VEC_PUSH(m->sites, site, &m->fail);
    return site;
}

static uint32_t defer_carrier_store(cm_cc_module *m)
{
    if (m->debug) {
        uint32_t end = HERE(m);
        uint32_t store_start = end - (m->code.p[end - 1] == 0x24 ? 4 : 5);
        int64_t producer_end = m->producer_end;
        m->producer_end = -1;
        if (producer_end == (int64_t)store_start)
            return producer_site(m, store_start);
        uint32_t start = instruction_site(m);
        uint8_t *b = m->code.p + start;
        int reg = (b[0] & 4) << 1 | (b[2] >> 3 & 7);
        uint8_t disp = b[4];
        b[0] = 0x0F;
        b[1] = 0x1F;
        b[2] = 0x44;
        b[3] = (uint8_t)((reg & 8) << 3 | (reg & 7) << 3 | 4);
        b[4] = disp;
        return start;
    }
    m->code.n -= m->code.p[m->code.n - 1] == 0x24 ? 4 : 5;
    m->carrier_end = -1;
    return HERE(m);
}

static int32_t current_state(cm_cc_module *m)
{
    if (!m->cache.n)
        return -1;
    if (m->recorded_version == m->cache_version && m->recorded_state >= 0)
        return m->recorded_state;
    VEC_PUSH(m->states, m->cache, &m->fail);
    m->recorded_version = m->cache_version;
    m->recorded_state = (int32_t)m->states.n - 1;
    return m->recorded_state;
}

static void add_point(cm_cc_module *m, uint32_t off, uint32_t wasm_offset, int kind, const uint8_t *types,
                      uint32_t ntypes, int with_state)
{
    point p = {off, wasm_offset, (uint8_t)kind, (uint32_t)m->tpool.n, ntypes, with_state ? current_state(m) : -1};
    buf_reserve(&m->tpool, ntypes, &m->fail);
    memcpy(m->tpool.p + m->tpool.n, types, ntypes);
    m->tpool.n += ntypes;
    VEC_PUSH(m->points, p, &m->fail);
}

/* _instruction_point */
static void instruction_point(cm_cc_module *m, const instr *in, const uint8_t *types, uint32_t ntypes)
{
    uint32_t off = m->debug ? instruction_site(m) : HERE(m);
    m->seq = off;
    add_point(m, off, in->offset, KIND_INSTRUCTION, types, ntypes, 1);
}

static void return_point(cm_cc_module *m, const instr *in)
{
    uint32_t off = m->debug ? site(m) : HERE(m);
    add_point(m, off, in->offset, KIND_RETURN_POINT, VALS(m), NVALS(m), 0);
}

static void pad_for_return_site(cm_cc_module *m, uint32_t call_length)
{
    if (m->debug) {
        uint32_t here = PHASE(m, HERE(m)), pad = 0;
        while (((here + pad + call_length) & 7) > 3 || ((here + pad) & 31) + call_length >= 32)
            pad++;
        nops(m, (int)pad);
    }
}

/* ------------------------------------------------------------------------ */
/* Control flow (compiler.py)                                                */
/* ------------------------------------------------------------------------ */

static inline int64_t slot_disp(int64_t i) { return 8 * i; }
static inline int32_t local_offset(int64_t index) { return (int32_t)-(FRAME_FIXED_SIZE + 8 * (index + 1)); }

static void copy_slots(cm_cc_module *m, int64_t src, int64_t dst, int64_t n)
{
    if (n && src != dst) /* _build_copy */
        for (int64_t k = 0; k < n; k++) {
            mov_rm(m, RAX, RSP, (int32_t)slot_disp(src + k), 1);
            mov_mr(m, RSP, (int32_t)slot_disp(dst + k), RAX);
        }
}

static void load_location(cm_cc_module *m, int reg, int64_t loc)
{
    if (loc >= 0) {
        mov_rm(m, reg, RSP, (int32_t)slot_disp(loc), 1);
    } else if (loc == MEMORY_BASE) {
        mov_rm(m, reg, R15, VMCTX_MEMORY_BASE, 1);
    } else if (loc == MEMORY_LENGTH) {
        mov_rm(m, reg, R15, VMCTX_MEMORY_DEF, 1);
        mov_rm(m, reg, reg, MEMDEF_LENGTH, 1);
    } else {
        mov_rm(m, reg, RBP, local_offset(-loc - 1), 1);
    }
}

static void establish(cm_cc_module *m, const cstate *header)
{
    /* moves: reg -> (loc, src or -1), in header order */
    int dst_reg[16], src_reg[16], nmoves = 0;
    int64_t mloc[16];
    for (int i = 0; i < header->n; i++) {
        int cur = cache_peek(m, header->loc[i]);
        if (cur != header->reg[i]) {
            dst_reg[nmoves] = header->reg[i];
            mloc[nmoves] = header->loc[i];
            src_reg[nmoves] = cur;
            nmoves++;
        }
    }
    if (!nmoves)
        return;
    int pending[16], psrc[16], np = nmoves; /* indexes into the moves, in dict order */
    for (int i = 0; i < nmoves; i++) {
        pending[i] = i;
        psrc[i] = src_reg[i];
    }
    while (np) {
        int pick = -1;
        for (int i = 0; i < np && pick < 0; i++) {
            int r = dst_reg[pending[i]], used = 0;
            for (int j = 0; j < np; j++)
                if (psrc[pending[j]] == r) {
                    used = 1;
                    break;
                }
            if (!used)
                pick = i;
        }
        if (pick < 0) {
            int blocked = dst_reg[pending[0]];
            for (int j = 0; j < np; j++)
                if (psrc[pending[j]] == blocked) {
                    psrc[pending[j]] = -1;
                    break;
                }
            continue;
        }
        int k = pending[pick];
        for (int i = pick + 1; i < np; i++)
            pending[i - 1] = pending[i];
        np--;
        if (psrc[k] >= 0)
            mov_rr(m, dst_reg[k], psrc[k]);
        else
            load_location(m, dst_reg[k], mloc[k]);
    }
    for (int i = 0; i < nmoves; i++)
        cache_bind(m, dst_reg[i], mloc[i]);
}

static void edge_to(cm_cc_module *m, frame *target)
{
    if (target->ckind == C_LOOP) {
        cstate h = target->header;
        establish(m, &h);
    } else {
        cstate s;
        state_below(&m->cache, (int64_t)target->height, &s);
        add_edge_state(target, &s);
    }
}

static void branch(cm_cc_module *m, frame *target, int64_t d)
{
    copy_slots(m, d - target->arity, target->height, target->arity);
    edge_to(m, target);
    jmp(m, target->label);
}

static void test_condition(cm_cc_module *m, int64_t index)
{
    int reg = cache_get(m, index);
    int start = (int)m->code.n;
    if (reg >= 0)
        enc_rm(m, 0, OP_TEST, 1, reg, 0, reg, 0, 0);
    else {
        enc_rm(m, 0, OP_83, 1, 7, 1, RSP, (int32_t)slot_disp(index), 0);
        put1(m, 0);
    }
    note_fusible(m, start);
    cache_forget(m, index);
}

static void loop_header(cm_cc_module *m, size_t at, cstate *out)
{
    /* locals read (bitmap over nlocals) and memory use up to the loop's end */
    size_t words = (m->nlocals + 63) / 64 + 1;
    uint64_t small[64];
    uint64_t *reads = words <= 64 ? small : calloc(words, 8);
    if (!reads)
        longjmp(m->fail, 1);
    memset(reads, 0, words * 8);
    int memory = 0, depth = 0;
    for (size_t k = at + 1; k < m->ins.n; k++) {
        uint32_t op = m->ins.p[k].op;
        if (op == 0x20) {
            uint64_t i = (uint64_t)m->ins.p[k].imm;
            if (i < m->nlocals)
                reads[i / 64] |= 1ull << (i % 64);
        } else if (op == 0x02 || op == 0x03 || op == 0x04) {
            depth++;
        } else if (op == 0x0B) {
            if (!depth)
                break;
            depth--;
        } else if (op >= 0x28 && op <= 0x3E) {
            memory = 1;
        }
    }
    out->n = 0;
    for (int i = 0; i < m->cache.n; i++) {
        int64_t loc = m->cache.loc[i];
        int keep;
        if (loc >= 0)
            keep = 0;
        else if (loc >= -(int64_t)m->nlocals) {
            uint64_t idx = (uint64_t)(-loc - 1);
            keep = (int)(reads[idx / 64] >> (idx % 64) & 1);
        } else
            keep = memory;
        if (keep) {
            out->loc[out->n] = loc;
            out->reg[out->n] = m->cache.reg[i];
            out->n++;
        }
    }
    if (reads != small)
        free(reads);
}

/* ------------------------------------------------------------------------ */
/* The function                                                              */
/* ------------------------------------------------------------------------ */

static void do_end(cm_cc_module *m, const instr *in, int fallthrough)
{
    frame *f = TOPF(m);
    if (f->ckind == C_LOOP) {
        if (!fallthrough)
            cache_clear(m);
    } else {
        if (f->ckind == C_IF && !f->else_seen) {
            cstate s = f->else_state;
            add_edge_state(f, &s);
        }
        if (fallthrough) {
            cstate s = m->cache;
            add_edge_state(f, &s);
        }
        if (f->nstates) {
            cstate s = f->common;
            cache_restore(m, &s);
        } else {
            cstate empty;
            empty.n = 0;
            cache_restore(m, &empty);
        }
        xmm_clear(m);
    }
    if (f->ckind == C_IF && !f->else_seen)
        bind(m, f->else_label);
    if (f->ckind != C_LOOP)
        bind(m, f->label);
    /* stack types: vals[:height] + end_types */
    uint32_t h = f->height;
    if (h > NVALS(m))
        bail(m, in->op, in->offset);
    {
        uint32_t n = h + f->nend;
        uint8_t stackbuf[256];
        uint8_t *types = n <= sizeof(stackbuf) ? stackbuf : malloc(n);
        if (!types)
            longjmp(m->fail, 1);
        memcpy(types, VALS(m), h);
        memcpy(types + h, f->end_types, f->nend);
        instruction_point(m, in, types, n);
        if (types != stackbuf)
            free(types);
    }
    /* validator step: end */
    int ckind = f->ckind;
    uint32_t arity = f->arity;
    v_pop_ctrl_check(m, in);
    f = TOPF(m);
    if (f->vkind == V_IF) {
        /* implicit else: its params must be its results */
        const uint8_t *st = f->start_types, *et = f->end_types;
        uint32_t ns = f->nstart, ne = f->nend;
        /* push_ctrl(ELSE, start, end) at the same height, then pop_ctrl */
        uint32_t height = NVALS(m);
        push_vals(m, st, ns);
        /* pop_vals(end) against frame with vheight = height, not unreachable */
        uint32_t saved_h = f->vheight;
        int saved_u = f->unreachable;
        f->vheight = height;
        f->unreachable = 0;
        pop_vals(m, et, ne, in, NULL);
        if (NVALS(m) != height)
            bail(m, in->op, in->offset);
        f->vheight = saved_h;
        f->unreachable = saved_u;
    }
    const uint8_t *et = f->end_types;
    uint32_t ne = f->nend;
    m->frames.n--;
    push_vals(m, et, ne);
    if (ckind == C_FUNCTION) /* compiler.py _epilogue_key */
        EMIT(m, K_EPILOGUE, arity, m->fn_type->nresults && is_float_type(m->fn_type->results[0]),
             m->fn_type->nresults == 0 && m->fn_type->nparams > 0);
}

static void do_else(cm_cc_module *m, const instr *in, int reachable)
{
    frame *f = TOPF(m);
    if (reachable) {
        instruction_point(m, in, VALS(m), NVALS(m));
        jmp(m, f->label);
        cstate s = m->cache;
        add_edge_state(f, &s);
    }
    /* validator: else */
    if (f->vkind != V_IF)
        bail(m, in->op, in->offset);
    v_pop_ctrl_check(m, in);
    /* push_ctrl(ELSE, start, end): same frame, reset */
    f->vkind = V_ELSE;
    f->vheight = NVALS(m);
    f->unreachable = 0;
    push_vals(m, f->start_types, f->nstart);
    f->else_seen = 1;
    bind(m, f->else_label);
    cstate s = f->else_state;
    cache_restore(m, &s);
    xmm_clear(m);
    if (f->nparams) {
        cache_truncate(m, f->height);
        EMIT(m, K_RESTORE, f->height, f->save_offset, f->nparams);
    }
}

/* Validator step for an ordinary instruction (not end/else). */
static void v_step(cm_cc_module *m, const instr *in, size_t index)
{
    uint32_t op = in->op;
    const opinfo *o = &OPS[op];
    if (o->flags & CM_CC_SIMPLE) {
        pop_vals(m, o->params, o->nparams, in, NULL);
        if (o->nresults)
            push_val(m, o->results[0]);
        return;
    }
    switch (op) {
    case 0x00:
        set_unreachable(m);
        return;
    case 0x02: case 0x03: case 0x04: {
        const uint8_t *params, *results;
        uint32_t np, nr;
        uint8_t inl;
        block_type(m, in, &params, &np, &results, &nr, &inl);
        if (op == 0x04)
            pop_val(m, I32_T, in);
        pop_vals(m, params, np, in, NULL);
        frame *f = push_frame(m);
        if (in->imm2 == BT_VAL)
            results = &ONE_TYPE[inl]; /* frames move when the stack grows */
        v_push_ctrl(m, f, op == 0x02 ? V_BLOCK : op == 0x03 ? V_LOOP : V_IF, params, np, results, nr);
        return;
    }
    case 0x0C: {
        uint32_t n;
        const uint8_t *t = label_types(label_frame(m, (uint32_t)in->imm, in), &n);
        pop_vals(m, t, n, in, NULL);
        set_unreachable(m);
        return;
    }
    case 0x0D: {
        pop_val(m, I32_T, in);
        uint32_t n;
        const uint8_t *t = label_types(label_frame(m, (uint32_t)in->imm, in), &n);
        pop_vals(m, t, n, in, NULL);
        push_vals(m, t, n);
        return;
    }
    case 0x0E: {
        uint32_t count = in->imm2;
        const uint32_t *labels = &m->brlabels.p[in->imm];
        pop_val(m, I32_T, in);
        uint32_t arity;
        const uint8_t *dt = label_types(label_frame(m, labels[count], in), &arity);
        for (uint32_t k = 0; k < count; k++) {
            uint32_t n;
            const uint8_t *t = label_types(label_frame(m, labels[k], in), &n);
            if (n != arity)
                bail(m, op, in->offset);
            uint8_t popped[256];
            if (n > sizeof(popped))
                bail(m, op, in->offset);
            pop_vals(m, t, n, in, popped);
            push_vals(m, popped, n);
        }
        pop_vals(m, dt, arity, in, NULL);
        set_unreachable(m);
        return;
    }
    case 0x0F: {
        frame *f0 = &m->frames.p[0];
        pop_vals(m, f0->end_types, f0->nend, in, NULL);
        set_unreachable(m);
        return;
    }
    case 0x10: {
        if ((uint64_t)in->imm >= m->nfuncs)
            bail(m, op, in->offset);
        functype *t = &m->types[m->func_types[in->imm]];
        pop_vals(m, t->params, t->nparams, in, NULL);
        push_vals(m, t->results, t->nresults);
        return;
    }
    case 0x11: {
        uint32_t ti = (uint32_t)in->imm, tab = in->imm2;
        if (tab >= m->ntables || ti >= m->ntypes || m->telems[tab] != FUNCREF_T)
            bail(m, op, in->offset);
        functype *t = &m->types[ti];
        pop_val(m, I32_T, in);
        pop_vals(m, t->params, t->nparams, in, NULL);
        push_vals(m, t->results, t->nresults);
        return;
    }
    case 0x1A:
        pop_val(m, 0, in);
        return;
    case 0x1B: {
        pop_val(m, I32_T, in);
        uint8_t t1 = pop_val(m, 0, in), t2 = pop_val(m, 0, in);
        int num1 = t1 == I32_T || t1 == I64_T || t1 == F32_T || t1 == F64_T || t1 == UNKNOWN_T;
        int num2 = t2 == I32_T || t2 == I64_T || t2 == F32_T || t2 == F64_T || t2 == UNKNOWN_T;
        if (!num1 || !num2 || (t1 != t2 && t1 != UNKNOWN_T && t2 != UNKNOWN_T))
            bail(m, op, in->offset);
        push_val(m, t1 == UNKNOWN_T ? t2 : t1);
        return;
    }
    case 0x20: case 0x21: case 0x22: {
        if ((uint64_t)in->imm >= m->nlocals)
            bail(m, op, in->offset);
        uint8_t t = m->local_types[in->imm];
        if (op == 0x20)
            push_val(m, t);
        else {
            pop_val(m, t, in);
            if (op == 0x22)
                push_val(m, t);
        }
        return;
    }
    case 0x23:
        if ((uint64_t)in->imm >= m->nglobals)
            bail(m, op, in->offset);
        push_val(m, m->gtypes[in->imm]);
        return;
    case 0x24:
        if ((uint64_t)in->imm >= m->nglobals || !m->gmut[in->imm])
            bail(m, op, in->offset);
        pop_val(m, m->gtypes[in->imm], in);
        return;
    case 0x3F:
        if (!m->nmemories)
            bail(m, op, in->offset);
        push_val(m, I32_T);
        return;
    case 0x40:
        if (!m->nmemories)
            bail(m, op, in->offset);
        pop_val(m, I32_T, in);
        push_val(m, I32_T);
        return;
    case 0x1C: {
        uint8_t t = (uint8_t)in->imm;
        pop_val(m, I32_T, in);
        pop_val(m, t, in);
        pop_val(m, t, in);
        push_val(m, t);
        return;
    }
    default:
        if (o->flags & CM_CC_MEMARG) {
            if (!m->nmemories || in->imm2 > o->natural_align)
                bail(m, op, in->offset);
            pop_vals(m, o->params, o->nparams, in, NULL);
            if (o->nresults)
                push_val(m, o->results[0]);
            return;
        }
        bail(m, op, in->offset);
    }
    (void)index;
}

/* compiler.py _take_result: result 0 from rax/xmm0 into its slot after a
 * call (_build_take_result's bytes, encoded here: no branch, no trap). */
static void take_result(cm_cc_module *m, const functype *ft, int64_t base)
{
    if (!ft->nresults)
        return;
    int32_t disp = (int32_t)slot_disp(base);
    if (is_float_type(ft->results[0])) { /* movq [rsp + disp], xmm0: 66 [REX] 0F D6 /r */
        put1(m, 0x66);
        enc_rm(m, 0, (const uint8_t *)"\x0f\xd6", 2, 0, 1, RSP, disp, 0);
    } else
        mov_mr(m, RSP, disp, RAX);
}

static void h_call(cm_cc_module *m, const instr *in, int64_t d)
{
    uint32_t index = (uint32_t)in->imm;
    functype *ft = &m->types[m->func_types[index]];
    int64_t base = d - ft->nparams;
    if (index < m->num_imported) {
        int64_t entry = m->import_entries[index];
        EMIT(m, K_CALL_IMPORT, base, entry);
        pad_for_return_site(m, 2);
        call_rax(m);
        return_point(m, in);
        mov_rm(m, R15, RBP, FRAME_SAVED_CTX, 1);
        take_result(m, ft, base);
    } else {
        lea(m, RSI, RSP, (int32_t)slot_disp(base));
        pad_for_return_site(m, 5);
        pad_for_branch(m, 5, 0);
        put1(m, 0xE8);
        put32(m, 0);
        VEC_PUSH(m->calls, HERE(m) - 4, &m->fail);
        VEC_PUSH(m->calls, index - m->num_imported, &m->fail);
        return_point(m, in);
        take_result(m, ft, base);
    }
}

static void h_br_table(cm_cc_module *m, const instr *in, int64_t d)
{
    uint32_t count = in->imm2;
    const uint32_t first = (uint32_t)in->imm;
    int64_t index = d - 1;
    cstate state = m->cache;
    /* stubs: depth -> label, in first-use order */
    m->stub_depth.n = m->stub_label.n = 0;
#define stub_depth (m->stub_depth)
#define stub_label (m->stub_label)
    size_t nframes = m->frames.n;
#define TARGET_LABEL(depth_, out_)                                                                  \
    do {                                                                                            \
        frame *t_ = &m->frames.p[nframes - 1 - (depth_)];                                          \
        if ((t_->arity == 0 || index - (int64_t)t_->arity == (int64_t)t_->height) &&                \
            !(t_->ckind == C_LOOP && t_->header.n)) {                                              \
            if (t_->ckind != C_LOOP) {                                                              \
                cstate s_;                                                                          \
                state_below(&m->cache, (int64_t)t_->height, &s_);                                  \
                add_edge_state(t_, &s_);                                                            \
            }                                                                                       \
            (out_) = t_->label;                                                                     \
        } else {                                                                                    \
            size_t k_;                                                                              \
            for (k_ = 0; k_ < stub_depth.n && stub_depth.p[k_] != (depth_); k_++)                   \
                ;                                                                                   \
            if (k_ == stub_depth.n) {                                                               \
                VEC_PUSH(stub_depth, (depth_), &m->fail);                                           \
                VEC_PUSH(stub_label, new_label(m), &m->fail);                                       \
            }                                                                                       \
            (out_) = stub_label.p[k_];                                                              \
        }                                                                                           \
    } while (0)
    int default_label;
    /* The default label's depth comes last in the immediate. */
    uint32_t default_depth = m->brlabels.p[first + count];
    TARGET_LABEL(default_depth, default_label);
    if (count) {
        int table = new_label(m);
        mov_rm(m, RAX, RSP, (int32_t)slot_disp(index), 0);
        int start = (int)m->code.n;
        if (count <= 127) {
            enc_rm(m, 0, OP_83, 1, 7, 0, RAX, 0, 0);
            put1(m, (uint8_t)count);
        } else {
            enc_rm(m, 0, OP_81, 1, 7, 0, RAX, 0, 0);
            put32(m, (int32_t)count);
        }
        note_fusible(m, start);
        jcc(m, COND_AE, default_label);
        /* lea rcx, [rip + table] */
        put1(m, 0x48);
        put1(m, 0x8D);
        put1(m, 0x0D);
        put32(m, 0);
        ref32(m, HERE(m) - 4, table, -1);
        /* movsxd rax, [rcx + rax*4] */
        put1(m, 0x48);
        put1(m, OP_MOVSXD[0]);
        put1(m, 0x04);
        put1(m, 0x81);
        start = (int)m->code.n;
        enc_rm(m, 8, OP_ADD_STORE, 1, RCX, 0, RAX, 0, 0);
        note_fusible(m, start);
        pad_for_branch(m, 2, 0);
        put1(m, 0xFF);
        put1(m, 0xE0);
        jtable jt = {table, (uint32_t)m->jlabels.n, count};
        for (uint32_t k = 0; k < count; k++) {
            int l;
            TARGET_LABEL(m->brlabels.p[first + k], l);
            VEC_PUSH(m->jlabels, l, &m->fail);
        }
        VEC_PUSH(m->jtables, jt, &m->fail);
    } else {
        jmp(m, default_label);
    }
    for (size_t k = 0; k < stub_depth.n; k++) {
        bind(m, stub_label.p[k]);
        cache_restore(m, &state);
        branch(m, &m->frames.p[nframes - 1 - stub_depth.p[k]], index);
    }
#undef TARGET_LABEL
#undef stub_depth
#undef stub_label
}

/* Templates without branches or traps, encoded here (the bytes of
 * compiler.py's _build_local_get_reg, _build_local_set_reg, _build_store_slot,
 * _build_global_get_reg, _build_global_set, _build_copy): a Python build per
 * key cost more than the compile (clang -O0 code has a key per local and depth). */
static void t_local_get(cm_cc_module *m, int64_t d, int64_t index, int local_reg, int value, int load)
{
    if (load) {
        mov_rm(m, value, RBP, local_offset(index), 1);
        if (local_reg >= 0)
            mov_rr(m, local_reg, value);
    } else {
        mov_rr(m, value, local_reg);
    }
    mov_mr(m, RSP, (int32_t)slot_disp(d), value);
}
/* The last instruction is a carrier where it can be one (compiler.py _build_local_set_reg): the store to a
 * home within disp8 of rbp (a tee's copy to keep goes first), else a tee's copy to keep. */
static void t_local_set(cm_cc_module *m, int64_t d, int64_t index, int value, int load, int keep)
{
    int32_t home = local_offset(index);
    int near = home >= -128;
    if (load)
        mov_rm(m, value, RSP, (int32_t)slot_disp(d - 1), 1);
    if (keep >= 0 && near)
        mov_rr(m, keep, value);
    mov_mr(m, RBP, home, value);
    if (keep >= 0 && !near)
        mov_rr(m, keep, value);
    if (near || keep >= 0)
        m->carrier_end = (int64_t)m->code.n;
}
static void t_global_get(cm_cc_module *m, int64_t d, int32_t cell, int value)
{
    mov_rm(m, RAX, R15, cell, 1);
    mov_rm(m, value, RAX, 0, 1);
    mov_mr(m, RSP, (int32_t)slot_disp(d), value);
}
static void t_global_set(cm_cc_module *m, int64_t d, int32_t cell, int wide)
{
    mov_rm(m, RAX, R15, cell, 1);
    mov_rm(m, RCX, RSP, (int32_t)slot_disp(d - 1), wide);
    mov_mr(m, RAX, 0, RCX);
}

/* ---- Templates encoded here: memory accesses (compiler.py _build_load_reg,
 * _build_store_reg, _bounds_check).  Emitted straight into the function's
 * code: their branch padding (pad_for_branch at the real offset) is what the
 * Python template padded for that offset mod 32 has (_emit's variant), and
 * each trap field is registered against the current sequence point as
 * emit() does.  Encodings: asm.py Assembler._rm and Mem. ---- */

/* A register or a [base + index + disp] operand (scale 1; index -1: none). */
typedef struct {
    int is_mem, base, index;
    int32_t disp;
} opnd;
#define NO_INDEX (-1)
static inline opnd R(int reg) { opnd o = {0, reg, NO_INDEX, 0}; return o; }
static inline opnd M(int base, int32_t disp) { opnd o = {1, base, NO_INDEX, disp}; return o; }
static inline opnd MX(int base, int32_t disp, int index) { opnd o = {1, base, index, disp}; return o; }
static inline opnd SLOT(int64_t i) { return M(RSP, (int32_t)(8 * i)); }

/* Assembler._rm: prefix [REX] opcode ModRM [SIB] [disp]. */
static void enc(cm_cc_module *m, uint8_t prefix, int w, const char *opcode, int nop, int reg, opnd rm,
                int force_rex)
{
    uint8_t b[16];
    int n = 0;
    if (prefix)
        b[n++] = prefix;
    if (rm.is_mem) {
        int rex = w | ((reg & 8) >> 1) | (rm.base >> 3) | (rm.index >= 0 ? (rm.index & 8) >> 2 : 0);
        if (rex || force_rex)
            b[n++] = (uint8_t)(0x40 | rex);
        for (int i = 0; i < nop; i++)
            b[n++] = (uint8_t)opcode[i];
        int low = rm.base & 7, mod, dn;
        if (rm.disp == 0 && low != 5) {
            mod = 0x00;
            dn = 0;
        } else if (rm.disp >= -128 && rm.disp <= 127) {
            mod = 0x40;
            dn = 1;
        } else {
            mod = 0x80;
            dn = 4;
        }
        if (rm.index < 0 && low != 4) {
            b[n++] = (uint8_t)(mod | low | ((reg & 7) << 3));
        } else {
            b[n++] = (uint8_t)(mod | 0x04 | ((reg & 7) << 3));
            b[n++] = (uint8_t)((rm.index < 0 ? 0x20 : (rm.index & 7) << 3) | low);
        }
        uint32_t u = (uint32_t)rm.disp;
        for (int i = 0; i < dn; i++)
            b[n++] = (uint8_t)(u >> (8 * i));
    } else {
        int rex = w | ((reg & 8) >> 1) | (rm.base >> 3);
        if (rex || force_rex)
            b[n++] = (uint8_t)(0x40 | rex);
        for (int i = 0; i < nop; i++)
            b[n++] = (uint8_t)opcode[i];
        b[n++] = (uint8_t)(0xC0 | ((reg & 7) << 3) | (rm.base & 7));
    }
    put(m, b, (size_t)n);
}
/* ENC: with a string literal opcode (its length from sizeof). */
#define ENC(m, prefix, w, opcode, reg, rm, force) \
    enc((m), (prefix), (w), (opcode), (int)sizeof(opcode) - 1, (reg), (rm), (force))
#define BYTE_REX(r) ((r) >= 4 && (r) <= 7) /* spl..dil need a REX (asm.py _is_byte_rex_reg) */

/* mov reg, r/m (size 32 or 64) and mov r/m, reg (size 8..64). */
static void mov_load(cm_cc_module *m, int dst, opnd src, int size)
{
    ENC(m, 0, size == 64 ? 8 : 0, "\x8b", dst, src, 0);
}
static void mov_store(cm_cc_module *m, opnd dst, int src, int size)
{
    if (size == 8)
        ENC(m, 0, 0, "\x88", src, dst, BYTE_REX(src) || (!dst.is_mem && BYTE_REX(dst.base)));
    else
        ENC(m, size == 16 ? 0x66 : 0, size == 64 ? 8 : 0, "\x89", src, dst, 0);
    if (size == 64 && dst.is_mem && dst.base == RSP && dst.index < 0 && dst.disp >= 0 && dst.disp < 128 && !(dst.disp & 7))
        m->carrier_end = (int64_t)m->code.n; /* mov_mr's carrier store */
}
/* The ALU group with a register source (asm.py _alu): add (0), and (4), sub (5),
 * cmp (7) can fuse with a following jcc. */
static void alu_rr(cm_cc_module *m, int digit, opnd dst, int src, int size)
{
    int start = (int)m->code.n;
    char opcode = (char)(digit * 8 + 1);
    enc(m, 0, size == 64 ? 8 : 0, &opcode, 1, src, dst, 0);
    if (digit == 0 || digit == 4 || digit == 5 || digit == 7)
        note_fusible(m, start);
}
/* TemplateAssembler.trap_if: jcc rel32 to the instruction's trap stub. */
static void trap_if(cm_cc_module *m, int cond, int32_t code)
{
    pad_for_branch(m, 6, 1);
    put1(m, 0x0F);
    put1(m, (uint8_t)(0x80 | cond));
    put32(m, 0);
    trapfield f = {HERE(m) - 4, m->seq, code};
    VEC_PUSH(m->traps, f, &m->fail);
}
static inline int fits_simm32(int64_t v) { return v >= -0x80000000ll && v <= 0x7FFFFFFFll; }

/* _bounds_check: trap unless the zero-extended address + offset + size <= the
 * memory's length (spec 4.4.7); returns the access's operand (rax = the
 * address, rdx = its end). */
static opnd bounds_check(cm_cc_module *m, int address, int64_t offset, int size, int base, int load_base,
                         int length, int load_length)
{
    if (load_length) {
        mov_load(m, length, M(R15, VMCTX_MEMORY_DEF_), 64);
        mov_load(m, length, M(length, MEMDEF_LENGTH_), 64);
    }
    if (load_base)
        mov_load(m, base, M(R15, VMCTX_MEMORY_BASE_), 64);
    mov_store(m, R(RAX), address, 32);
    int64_t end = offset + size;
    if (fits_simm32(end)) {
        ENC(m, 0, 8, "\x8d", RDX, M(RAX, (int32_t)end), 0);
    } else {
        mov_imm64(m, RDX, (uint64_t)end);
        alu_rr(m, 0, R(RDX), RAX, 64);
    }
    alu_rr(m, 7, R(RDX), length, 64);
    trap_if(m, 7 /* A */, TRAP_OUT_OF_BOUNDS_MEMORY);
    if (fits_simm32(offset))
        return MX(base, (int32_t)offset, RAX);
    return MX(base, -size, RDX);
}

/* _LOADS: access size, and how: 0 mov32, 1 mov64, 2 zx, 3 sx32, 4 sx64. */
static const uint8_t LOAD_SIZE[14] = {4, 8, 4, 8, 1, 1, 2, 2, 1, 1, 2, 2, 4, 4};
static const uint8_t LOAD_HOW[14] = {0, 1, 0, 1, 3, 2, 3, 2, 4, 2, 4, 2, 4, 0};
static const uint8_t STORE_SIZE[9] = {4, 8, 4, 8, 1, 2, 1, 2, 4};

static void t_load(cm_cc_module *m, uint32_t op, int64_t d, int64_t offset, int reg, int load, int base,
                   int load_base, int length, int load_length)
{
    int size = LOAD_SIZE[op - 0x28];
    m->fusible_end = -1; /* a template starts with nothing to fuse with */
    if (load)
        mov_load(m, reg, SLOT(d - 1), 64);
    opnd a = bounds_check(m, reg, offset, size, base, load_base, length, load_length);
    switch (LOAD_HOW[op - 0x28]) {
    case 0:
        mov_load(m, reg, a, 32);
        if (op == 0x2A)
            ENC(m, 0x66, 0, "\x0f\x6e", 0, a, 0); /* movd xmm0, m32 */
        break;
    case 1:
        mov_load(m, reg, a, 64);
        if (op == 0x2B)
            ENC(m, 0xF3, 0, "\x0f\x7e", 0, a, 0); /* movq xmm0, m64 */
        break;
    case 2:
        enc(m, 0, 0, size == 1 ? "\x0f\xb6" : "\x0f\xb7", 2, reg, a, 0);
        break;
    case 3:
        enc(m, 0, 0, size == 1 ? "\x0f\xbe" : "\x0f\xbf", 2, reg, a, 0);
        break;
    default:
        if (size == 4)
            ENC(m, 0, 8, "\x63", reg, a, 0);
        else
            enc(m, 0, 8, size == 1 ? "\x0f\xbe" : "\x0f\xbf", 2, reg, a, 0);
    }
    mov_store(m, SLOT(d - 1), reg, 64);
    m->fusible_end = -1; /* a template is bytes to the code around it */
}

static void t_store(cm_cc_module *m, uint32_t op, int64_t d, int64_t offset, int address, int load_address,
                    int value, int load_value, int base, int load_base, int length, int load_length)
{
    int size = STORE_SIZE[op - 0x36];
    m->fusible_end = -1;
    if (load_address)
        mov_load(m, address, SLOT(d - 2), 64);
    if (load_value)
        mov_load(m, value, SLOT(d - 1), 64);
    opnd a = bounds_check(m, address, offset, size, base, load_base, length, load_length);
    mov_store(m, a, value, 8 * size);
    m->fusible_end = -1;
}

/* ---- Integer numeric templates encoded here (numeric.py, register form:
 * compiler.py _build_numeric_reg with x and y cache registers): the result in
 * x, then stored to its slot. ---- */

/* A short forward jump's rel8 field, patched when its label is bound. */
static void bind_short(cm_cc_module *m, uint32_t field)
{
    int64_t value = (int64_t)HERE(m) - (int64_t)(field + 1);
    if (value < -128 || value > 127)
        longjmp(m->fail, 6);
    m->code.p[field] = (uint8_t)(int8_t)value;
    m->fusible_end = -1; /* Assembler.bind: a jump target ends a fusible pair */
}
static uint32_t jcc_short(cm_cc_module *m, int cond)
{
    pad_for_branch(m, 2, 1);
    put1(m, (uint8_t)(0x70 | cond));
    put1(m, 0);
    return HERE(m) - 1;
}
static uint32_t jmp_short(cm_cc_module *m)
{
    pad_for_branch(m, 2, 0);
    put1(m, 0xEB);
    put1(m, 0);
    return HERE(m) - 1;
}
/* zero(r): xor r32, r32 */
static void zero_reg(cm_cc_module *m, int r) { ENC(m, 0, 0, "\x31", r, R(r), 0); }
/* The ALU group with an imm8/imm32 (asm.py _alu with an int source). */
static void alu_ri(cm_cc_module *m, int digit, int dst, int32_t imm, int size)
{
    int start = (int)m->code.n;
    int w = size == 64 ? 8 : 0;
    if (imm >= -128 && imm <= 127) {
        ENC(m, 0, w, "\x83", digit, R(dst), 0);
        put1(m, (uint8_t)(int8_t)imm);
    } else {
        ENC(m, 0, w, "\x81", digit, R(dst), 0);
        put32(m, imm);
    }
    if (digit == 0 || digit == 4 || digit == 5 || digit == 7)
        note_fusible(m, start);
}

/* numeric.py _div: divisor 0 traps; div_s INT_MIN / -1 traps; rem_s by -1 is 0. */
static void n_div(cm_cc_module *m, int x, int y, int size, int is_signed, int remainder)
{
    int w = size == 64 ? 8 : 0;
    mov_store(m, R(RAX), x, size);
    mov_store(m, R(RCX), y, size);
    int start = (int)m->code.n;
    ENC(m, 0, w, "\x85", RCX, R(RCX), 0); /* test rcx, rcx */
    note_fusible(m, start);
    trap_if(m, COND_E, TRAP_DIVIDE_BY_ZERO);
    if (!is_signed) {
        zero_reg(m, RDX);
        ENC(m, 0, w, "\xf7", 6, R(RCX), 0); /* div rcx */
        mov_store(m, R(x), remainder ? RDX : RAX, 64);
        return;
    }
    alu_ri(m, 7, RCX, -1, size);
    uint32_t to_divide = jcc_short(m, COND_NE), to_done = 0;
    if (remainder) {
        zero_reg(m, RDX);
        to_done = jmp_short(m);
    } else {
        if (size == 32) {
            alu_ri(m, 7, RAX, INT32_MIN, 32);
        } else {
            mov_imm64(m, RDX, (uint64_t)1 << 63);
            alu_rr(m, 7, R(RAX), RDX, 64);
        }
        trap_if(m, COND_E, TRAP_INTEGER_OVERFLOW);
    }
    bind_short(m, to_divide);
    if (size == 64)
        put1(m, 0x48); /* cqo */
    put1(m, 0x99);     /* cdq */
    ENC(m, 0, w, "\xf7", 7, R(RCX), 0); /* idiv rcx */
    if (remainder)
        bind_short(m, to_done);
    mov_store(m, R(x), remainder ? RDX : RAX, 64);
}

/* wasm comparison opcodes (i32 0x46.., i64 0x51..) -> condition codes
 * (eq ne lt_s lt_u gt_s gt_u le_s le_u ge_s ge_u). */
static const uint8_t COMPARE_COND[10] = {4, 5, 12, 2, 15, 7, 14, 6, 13, 3};
/* ALU digits of add, sub, and, or, xor, by opcode - 0x6A (mul and the divisions are not ALU ops). */
static const int8_t ALU_DIGIT[10] = {0, 5, -1, -1, -1, -1, -1, 4, 1, 6};

/* The integer operation of numeric opcode `op` on x (and y): 1 if encoded
 * here, 0 if it is not one of these (its template is built in Python). */
static int n_integer(cm_cc_module *m, uint32_t op, int x, int y)
{
    int size = 32;
    uint32_t k;
    if ((op >= 0x46 && op <= 0x4F) || (op >= 0x51 && op <= 0x5A)) { /* _compare */
        size = op >= 0x51 ? 64 : 32;
        int cond = COMPARE_COND[op - (size == 64 ? 0x51 : 0x46)];
        zero_reg(m, RCX);
        alu_rr(m, 7, R(x), y, size);
        const char setcc[2] = {0x0F, (char)(0x90 | cond)};
        enc(m, 0, 0, setcc, 2, 0, R(RCX), 0); /* setcc cl */
        mov_store(m, R(x), RCX, 64);
        return 1;
    }
    if (op == 0x45 || op == 0x50) { /* _eqz */
        zero_reg(m, RAX);
        alu_ri(m, 7, x, 0, op == 0x50 ? 64 : 32);
        ENC(m, 0, 0, "\x0f\x94", 0, R(RAX), 0); /* sete al */
        mov_store(m, R(x), RAX, 64);
        return 1;
    }
    if (op >= 0x67 && op <= 0x8A) {
        if (op >= 0x79) {
            size = 64;
            k = op - 0x79 + 0x67;
        } else {
            k = op;
        }
        int w = size == 64 ? 8 : 0;
        if (k <= 0x69) { /* _bitcount: lzcnt, tzcnt, popcnt rax, x */
            static const char *const BITSCAN[3] = {"\x0f\xbd", "\x0f\xbc", "\x0f\xb8"};
            put1(m, 0xF3);
            enc(m, 0, w, BITSCAN[k - 0x67], 2, RAX, R(x), 0);
            mov_store(m, R(x), RAX, 64);
            return 1;
        }
        if (k >= 0x6D && k <= 0x70) { /* div_s div_u rem_s rem_u */
            n_div(m, x, y, size, k == 0x6D || k == 0x6F, k >= 0x6F);
            return 1;
        }
        if (k >= 0x74) { /* _shift: shl shr_s shr_u rotl rotr by cl */
            static const uint8_t SHIFT_DIGIT[5] = {4, 7, 5, 0, 1};
            mov_store(m, R(RCX), y, 32);
            ENC(m, 0, w, "\xd3", SHIFT_DIGIT[k - 0x74], R(x), 0);
            return 1;
        }
        if (k == 0x6C) { /* imul x, y */
            ENC(m, 0, w, "\x0f\xaf", x, R(y), 0);
            return 1;
        }
        alu_rr(m, ALU_DIGIT[k - 0x6A], R(x), y, size); /* add sub and or xor */
        return 1;
    }
    switch (op) {
    case 0xA7: case 0xAD: /* i32.wrap_i64, i64.extend_i32_u: the low 32 bits, zero-extended */
        mov_store(m, R(RAX), x, 32);
        mov_store(m, R(x), RAX, 64);
        return 1;
    case 0xAC: case 0xC4: /* i64.extend_i32_s, i64.extend32_s */
        ENC(m, 0, 8, "\x63", RAX, R(x), 0);
        mov_store(m, R(x), RAX, 64);
        return 1;
    case 0xC0: case 0xC1: case 0xC2: case 0xC3: { /* extend8_s / extend16_s */
        int byte = op == 0xC0 || op == 0xC2;
        enc(m, 0, op >= 0xC2 ? 8 : 0, byte ? "\x0f\xbe" : "\x0f\xbf", 2, RAX, R(x), byte && BYTE_REX(x));
        mov_store(m, R(x), RAX, 64);
        return 1;
    }
    case 0xBC: case 0xBD: case 0xBE: case 0xBF: /* reinterpret: the slot's bits already are the result */
        return 1;
    }
    return 0;
}

/* ---- Float templates encoded here (numeric.py): xmm0 reuse as numeric.py
 * describes it ("x"/"y" hints verified against the register), scalar SSE. ---- */
enum { HINT_NONE = 0, HINT_X = 1, HINT_Y = 2 };
enum { COND_P = 10, COND_NP = 11, COND_A = 7, COND_BE = 6 };

/* op xmm, xmm (asm.py _sse: prefix, 0F opcode, no REX for xmm0-2) */
static void sse(cm_cc_module *m, uint8_t prefix, uint8_t opcode, int dst, int src)
{
    const char op[2] = {0x0F, (char)opcode};
    enc(m, prefix, 0, op, 2, dst, R(src), 0);
}
/* _fload: movd/movq xmm, reg */
static void fload(cm_cc_module *m, int xmm, int reg, int size)
{
    enc(m, 0x66, size == 64 ? 8 : 0, "\x0f\x6e", 2, xmm, R(reg), 0);
}
/* _fstore: movd/movq reg, xmm */
static void fstore(cm_cc_module *m, int reg, int xmm, int size)
{
    enc(m, 0x66, size == 64 ? 8 : 0, "\x0f\x7e", 2, xmm, R(reg), 0);
}
/* _verify_xmm0: xmm0 = reg's low bits, reloaded only if it does not hold them */
static void verify_xmm0(cm_cc_module *m, int reg, int size)
{
    fstore(m, RAX, 0, size);
    alu_rr(m, 7, R(RAX), reg, size);
    uint32_t same = jcc_short(m, COND_E);
    fload(m, 0, reg, size);
    bind_short(m, same);
}
static void fload_x(cm_cc_module *m, int x, int size, int hint)
{
    if (hint == HINT_X)
        verify_xmm0(m, x, size);
    else
        fload(m, 0, x, size);
}
/* A rel32 jump to a label of this template, patched by bind_near. */
static uint32_t jcc_near(cm_cc_module *m, int cond)
{
    pad_for_branch(m, 6, 1);
    put1(m, 0x0F);
    put1(m, (uint8_t)(0x80 | cond));
    put32(m, 0);
    return HERE(m) - 4;
}
static void bind_near(cm_cc_module *m, uint32_t field)
{
    store32(m, field, (int32_t)(HERE(m) - (field + 4)));
    m->fusible_end = -1;
}
static void setcc_reg(cm_cc_module *m, int cond, int reg)
{
    const char op[2] = {0x0F, (char)(0x90 | cond)};
    enc(m, 0, 0, op, 2, 0, R(reg), 0);
}

/* numeric.py _trunc_bounds: float bit patterns (low, high) with trunc(x) in
 * range exactly when low < x < high. */
static void trunc_bounds(int fsize, int isize, int is_signed, uint64_t *low, uint64_t *high)
{
    double lo, hi;
    if (!is_signed) {
        lo = -1.0;
        hi = (double)((uint64_t)1 << (isize - 1)) * 2.0;
    } else {
        int mantissa = fsize == 32 ? 24 : 53;
        int shift = (isize - 1) - (mantissa - 1);
        double ulp = (double)((uint64_t)1 << (shift > 0 ? shift : 0));
        double magnitude = (double)((uint64_t)1 << (isize - 1));
        lo = -(magnitude + (ulp > 1.0 ? ulp : 1.0));
        hi = magnitude;
    }
    if (fsize == 32) {
        float l = (float)lo, h = (float)hi;
        uint32_t a, b;
        memcpy(&a, &l, 4);
        memcpy(&b, &h, 4);
        *low = a;
        *high = b;
    } else {
        memcpy(low, &lo, 8);
        memcpy(high, &hi, 8);
    }
}

/* The float operation of numeric opcode `op`: 1 if encoded here. */
static int n_float(cm_cc_module *m, uint32_t op, int x, int y, int hint)
{
    if ((op >= 0x92 && op <= 0x95) || (op >= 0xA0 && op <= 0xA3)) { /* _fbin: add sub mul div */
        static const uint8_t FBIN[4] = {0x58, 0x5C, 0x59, 0x5E};
        int size = op >= 0xA0 ? 64 : 32;
        uint8_t prefix = size == 64 ? 0xF2 : 0xF3, opcode = FBIN[op - (size == 64 ? 0xA0 : 0x92)];
        if (hint == HINT_Y) {
            fload(m, 1, x, size);
            verify_xmm0(m, y, size);
            sse(m, prefix, opcode, 1, 0);
            enc(m, 0, 0, "\x0f\x28", 2, 0, R(1), 0); /* movaps xmm0, xmm1 */
        } else {
            fload_x(m, x, size, hint);
            fload(m, 1, y, size);
            sse(m, prefix, opcode, 0, 1);
        }
        fstore(m, x, 0, size);
        return 1;
    }
    if (op == 0x96 || op == 0x97 || op == 0xA4 || op == 0xA5) { /* _fminmax */
        int size = op >= 0xA4 ? 64 : 32, is_min = op == 0x96 || op == 0xA4;
        uint8_t prefix = size == 64 ? 0xF2 : 0xF3, packed = size == 64 ? 0x66 : 0;
        fload_x(m, x, size, hint);
        fload(m, 1, y, size);
        sse(m, packed, 0x2E, 0, 1); /* ucomis */
        uint32_t unordered = jcc_short(m, COND_P), different = jcc_short(m, COND_NE);
        sse(m, packed, is_min ? 0x56 : 0x54, 0, 1); /* orps / andps: -0 and +0 */
        uint32_t done1 = jmp_short(m);
        bind_short(m, unordered);
        sse(m, prefix, 0x58, 0, 1); /* add: a quiet NaN */
        uint32_t done2 = jmp_short(m);
        bind_short(m, different);
        sse(m, prefix, is_min ? 0x5D : 0x5F, 0, 1);
        bind_short(m, done1);
        bind_short(m, done2);
        fstore(m, x, 0, size);
        return 1;
    }
    if ((op >= 0x5B && op <= 0x60) || (op >= 0x61 && op <= 0x66)) { /* _fcompare: eq ne lt gt le ge */
        int size = op >= 0x61 ? 64 : 32, kind = (int)op - (size == 64 ? 0x61 : 0x5B);
        uint8_t packed = size == 64 ? 0x66 : 0;
        if (kind == 2 || kind == 4) { /* lt, le: swapped, xmm1/xmm2 only */
            zero_reg(m, RAX);
            fload(m, 1, y, size);
            fload(m, 2, x, size);
            sse(m, packed, 0x2E, 1, 2);
            setcc_reg(m, kind == 2 ? COND_A : COND_AE, RAX);
        } else if (kind == 3 || kind == 5) { /* gt, ge */
            fload_x(m, x, size, hint);
            zero_reg(m, RAX);
            fload(m, 1, y, size);
            sse(m, packed, 0x2E, 0, 1);
            setcc_reg(m, kind == 3 ? COND_A : COND_AE, RAX);
        } else {
            fload_x(m, x, size, hint);
            zero_reg(m, RAX);
            zero_reg(m, RCX);
            fload(m, 1, y, size);
            sse(m, packed, 0x2E, 0, 1);
            setcc_reg(m, kind == 0 ? COND_E : COND_NE, RAX);
            setcc_reg(m, kind == 0 ? COND_NP : COND_P, RCX);
            alu_rr(m, kind == 0 ? 4 : 1, R(RAX), RCX, 32);
        }
        mov_store(m, R(x), RAX, 64);
        return 1;
    }
    switch (op) {
    case 0x91: case 0x9F: { /* _fsqrt */
        int size = op == 0x9F ? 64 : 32;
        fload_x(m, x, size, hint);
        sse(m, size == 64 ? 0xF2 : 0xF3, 0x51, 0, 0);
        fstore(m, x, 0, size);
        return 1;
    }
    case 0xB6: /* f32.demote_f64 */
        fload_x(m, x, 64, hint);
        sse(m, 0xF2, 0x5A, 0, 0);
        fstore(m, x, 0, 32);
        return 1;
    case 0xBB: /* f64.promote_f32 */
        fload_x(m, x, 32, hint);
        sse(m, 0xF3, 0x5A, 0, 0);
        fstore(m, x, 0, 64);
        return 1;
    case 0x8B: /* f32.abs */
        alu_ri(m, 4, x, 0x7FFFFFFF, 32);
        return 1;
    case 0x8C: /* f32.neg */
        alu_ri(m, 6, x, INT32_MIN, 32);
        return 1;
    case 0x99: /* f64.abs: shift the sign out */
        mov_store(m, R(RAX), x, 64);
        ENC(m, 0, 8, "\xd1", 4, R(RAX), 0);
        ENC(m, 0, 8, "\xd1", 5, R(RAX), 0);
        mov_store(m, R(x), RAX, 64);
        return 1;
    case 0x9A: /* f64.neg */
        mov_imm64(m, RAX, (uint64_t)1 << 63);
        alu_rr(m, 6, R(x), RAX, 64);
        return 1;
    case 0xB2: case 0xB4: case 0xB7: case 0xB9: case 0xB3: case 0xB8: { /* _convert, not from u64 */
        int fsize = op >= 0xB7 ? 64 : 32, isize = (op == 0xB4 || op == 0xB9) ? 64 : 32;
        const char cvt[2] = {0x0F, 0x2A};
        sse(m, 0x66, 0xEF, 0, 0); /* pxor xmm0, xmm0 */
        if (op == 0xB3 || op == 0xB8) {
            mov_store(m, R(RAX), x, 32);
            enc(m, fsize == 64 ? 0xF2 : 0xF3, 8, cvt, 2, 0, R(RAX), 0);
        } else {
            enc(m, fsize == 64 ? 0xF2 : 0xF3, isize == 64 ? 8 : 0, cvt, 2, 0, R(x), 0);
        }
        fstore(m, x, 0, fsize);
        return 1;
    }
    }
    if (op >= 0x100 && op <= 0x107 && op != 0x105 && op != 0x107) { /* _trunc_sat, not to u64 */
        uint32_t k = op - 0x100;
        int isize = k >= 4 ? 64 : 32, fsize = (k & 2) ? 64 : 32, is_signed = !(k & 1);
        uint64_t low, high, minimum, maximum;
        trunc_bounds(fsize, isize, is_signed, &low, &high);
        if (is_signed) {
            minimum = (uint64_t)1 << (isize - 1);
            maximum = minimum - 1;
        } else {
            minimum = 0;
            maximum = ((uint64_t)1 << (isize - 1) << 1) - 1;
        }
        uint8_t packed = fsize == 64 ? 0x66 : 0;
        fload_x(m, x, fsize, hint);
        zero_reg(m, RAX);
        sse(m, packed, 0x2E, 0, 0);
        uint32_t nan = jcc_near(m, COND_P);
        mov_imm64(m, RAX, minimum);
        mov_imm64(m, RCX, low);
        fload(m, 1, RCX, fsize);
        sse(m, packed, 0x2E, 0, 1);
        uint32_t below = jcc_near(m, COND_BE);
        mov_imm64(m, RAX, maximum);
        mov_imm64(m, RCX, high);
        fload(m, 1, RCX, fsize);
        sse(m, packed, 0x2E, 0, 1);
        uint32_t above = jcc_near(m, COND_AE);
        const char cvtt[2] = {0x0F, 0x2C};
        enc(m, fsize == 64 ? 0xF2 : 0xF3, (is_signed && isize == 32) ? 0 : 8, cvtt, 2, RAX, R(0), 0);
        bind_near(m, nan);
        bind_near(m, below);
        bind_near(m, above);
        mov_store(m, R(x), RAX, 64);
        return 1;
    }
    return 0;
}

/* _build_numeric_reg for the integer operations; 0: not one of them. */
static int t_numeric(cm_cc_module *m, uint32_t op, int64_t result, int x, int load_x, int y, int load_y, int hint)
{
    static uint8_t encoded[0x120]; /* 1: integer, 2: float encoded here; filled on first use */
    static int ready;
    if (!ready) {
        for (uint32_t k = 0; k < 0x120; k++) {
            if ((k >= 0x45 && k <= 0x5A) || (k >= 0x67 && k <= 0x8A) || k == 0xA7 || k == 0xAC || k == 0xAD
                || (k >= 0xBC && k <= 0xC4))
                encoded[k] = 1;
            else if ((k >= 0x5B && k <= 0x66) || (k >= 0x92 && k <= 0x97) || (k >= 0xA0 && k <= 0xA5)
                     || k == 0x91 || k == 0x9F || k == 0xB6 || k == 0xBB || k == 0x8B || k == 0x8C || k == 0x99
                     || k == 0x9A || (k >= 0xB2 && k <= 0xB4) || (k >= 0xB7 && k <= 0xB9)
                     || (k >= 0x100 && k <= 0x106 && k != 0x105))
                encoded[k] = 2;
        }
        ready = 1;
    }
    if (op >= 0x120 || !encoded[op])
        return 0;
    m->fusible_end = -1; /* a template starts with nothing to fuse with */
    if (load_x)
        mov_load(m, x, SLOT(result), 64);
    if (load_y)
        mov_load(m, y, SLOT(result + 1), 64);
    if (encoded[op] == 1)
        n_integer(m, op, x, y);
    else
        n_float(m, op, x, y, hint);
    mov_store(m, SLOT(result), x, 64);
    m->fusible_end = -1;
    return 1;
}

static void handle(cm_cc_module *m, const instr *in, size_t index, int64_t d)
{
    uint32_t op = in->op;
    const opinfo *o = &OPS[op];
    if (o->flags & CM_CC_NUMERIC) {
        int64_t result;
        int64_t code = op < 0x100 ? (int64_t)op : 0xFC00 | (int64_t)(op - 0x100); /* compiler.py's opcode */
        if (o->arity == 2) {
            result = d - 2;
            int hint = (xmm_has(m, result) && (o->flags & CM_CC_XMM_X_INPUT)) ? 1
                       : (xmm_has(m, d - 1) && (o->flags & CM_CC_XMM_Y_INPUT)) ? 2 : 0;
            int lx, ly;
            int x = cache_use(m, result, 0, &lx);
            int y = cache_use(m, d - 1, 1u << x, &ly);
            if (!t_numeric(m, op, result, x, lx, y, ly, hint))
                EMIT(m, K_RNUM2, code, d, x, lx, y, ly, hint);
            cache_forget(m, d - 1);
        } else {
            result = d - 1;
            int hint = (xmm_has(m, result) && (o->flags & CM_CC_XMM_X_INPUT)) ? 1 : 0;
            int lx;
            int x = cache_use(m, result, 0, &lx);
            if (!t_numeric(m, op, result, x, lx, -1, 0, hint))
                EMIT(m, K_RNUM1, code, d, x, lx, hint);
        }
        switch (o->xmm0_after) {
        case AFTER_RESULT:
            xmm_clear(m);
            xmm_add(m, result);
            break;
        case AFTER_X:
            if (xmm_has(m, result))
                xmm_discard(m, result);
            else
                xmm_clear(m);
            break;
        case AFTER_KEEP:
            xmm_discard(m, result);
            break;
        default:
            xmm_clear(m);
        }
        return;
    }
    if (o->flags & CM_CC_MEMARG) {
        int64_t offset = in->imm;
        if (op <= 0x35) {
            int load;
            int address = cache_use(m, d - 1, 0, &load);
            int lb, ll;
            int base = cache_use(m, MEMORY_BASE, 1u << address, &lb);
            int length = cache_use(m, MEMORY_LENGTH, (1u << address) | (1u << base), &ll);
            t_load(m, op, d, offset, address, load, base, lb, length, ll);
            if (op == 0x2A || op == 0x2B) {
                xmm_clear(m);
                xmm_add(m, d - 1);
            }
        } else {
            int la, lv;
            int address = cache_use(m, d - 2, 0, &la);
            int value = cache_use(m, d - 1, 1u << address, &lv);
            int lb, ll;
            unsigned avoid = (1u << address) | (1u << value);
            int base = cache_use(m, MEMORY_BASE, avoid, &lb);
            int length = cache_use(m, MEMORY_LENGTH, avoid | (1u << base), &ll);
            t_store(m, op, d, offset, address, la, value, lv, base, lb, length, ll);
            cache_forget(m, d - 2);
            cache_forget(m, d - 1);
        }
        return;
    }
    switch (op) {
    case 0x00:
        EMIT(m, K_UNREACHABLE);
        return;
    case 0x01:
        return;
    case 0x02: case 0x03: {
        frame *f = TOPF(m); /* pushed by the validator step */
        uint32_t nparams = f->nstart;
        if (op == 0x03) {
            cstate header;
            loop_header(m, index, &header);
            cache_restore(m, &header);
            xmm_clear(m);
            int label = new_label(m);
            int pad = -(int)PHASE(m, m->code.n) & 31;
            nops(m, pad);
            bind(m, label);
            f->ckind = C_LOOP;
            f->height = f->vheight;
            f->arity = nparams;
            f->label = label;
            f->nparams = nparams;
            f->header = header;
        } else {
            f->ckind = C_BLOCK;
            f->height = f->vheight;
            f->arity = f->nend;
            f->label = new_label(m);
            f->nparams = nparams;
        }
        return;
    }
    case 0x04: {
        frame *f = TOPF(m);
        uint32_t nparams = f->nstart;
        f->ckind = C_IF;
        f->height = f->vheight;
        f->arity = f->nend;
        f->label = new_label(m);
        f->nparams = nparams;
        f->else_label = new_label(m);
        if (nparams) {
            f->save_offset = local_offset((int64_t)m->nlocals + m->nsave + nparams - 1);
            m->nsave += nparams;
            EMIT(m, K_SAVE, f->height, f->save_offset, nparams);
        }
        test_condition(m, d - 1);
        f = TOPF(m);
        f->else_state = m->cache;
        jcc(m, COND_E, f->else_label);
        return;
    }
    case 0x0C:
        branch(m, &m->frames.p[m->frames.n - 1 - in->imm], d);
        return;
    case 0x0D: {
        frame *target = &m->frames.p[m->frames.n - 1 - in->imm];
        int64_t n = target->arity;
        int64_t src = d - 1 - n;
        test_condition(m, d - 1);
        if (n == 0 || src == (int64_t)target->height) {
            edge_to(m, target);
            jcc(m, COND_NE, target->label);
        } else {
            int skip = new_label(m);
            jcc(m, COND_E, skip);
            cstate fallthrough = m->cache;
            branch(m, target, d - 1);
            cache_restore(m, &fallthrough);
            bind(m, skip);
        }
        return;
    }
    case 0x0E:
        h_br_table(m, in, d);
        return;
    case 0x0F:
        branch(m, &m->frames.p[0], d);
        return;
    case 0x10:
        h_call(m, in, d);
        return;
    case 0x11: {
        functype *ft = &m->types[in->imm];
        int64_t base = d - 1 - ft->nparams;
        EMIT(m, K_CALL_INDIRECT, d, in->imm, in->imm2);
        pad_for_return_site(m, 2);
        call_rax(m);
        return_point(m, in);
        mov_rm(m, R15, RBP, FRAME_SAVED_CTX, 1);
        take_result(m, ft, base);
        return;
    }
    case 0x1A:
        cache_forget(m, d - 1);
        return;
    case 0x1B: case 0x1C: /* untyped and typed select: the same code */
        EMIT(m, K_SELECT, d);
        return;
    case 0x40: /* memory.grow: a libcall (compiler.py _build_libcall) */
        EMIT(m, K_MEMORY_GROW, d);
        return;
    case 0x20: {
        int64_t idx = in->imm;
        int64_t loc = -(idx + 1);
        if (xmm_has(m, loc))
            xmm_add(m, d);
        else
            xmm_discard(m, d);
        int mirror = cache_get(m, loc);
        if (mirror >= 0) {
            int value = cache_alloc(m, 1u << mirror);
            t_local_get(m, d, idx, mirror, value, 0);
            cache_bind(m, value, d);
            return;
        }
        int value = cache_alloc(m, 0);
        cache_bind(m, value, d);
        int keep = cache_free_register(m, 1u << value);
        t_local_get(m, d, idx, keep, value, 1);
        if (keep >= 0)
            cache_bind(m, keep, loc);
        return;
    }
    case 0x21: case 0x22: {
        int64_t idx = in->imm;
        int64_t loc = -(idx + 1);
        int load;
        int value = cache_use(m, d - 1, 0, &load);
        int tee = op == 0x22;
        if (xmm_has(m, d - 1))
            xmm_add(m, loc);
        else
            xmm_discard(m, loc);
        int keep = -1;
        cache_forget(m, loc);
        if (tee)
            keep = cache_free_register(m, 1u << value);
        t_local_set(m, d, idx, value, load, keep);
        if (!tee)
            cache_bind(m, value, loc);
        else if (keep >= 0)
            cache_bind(m, keep, loc);
        return;
    }
    case 0x23: {
        int64_t cell = m->gcells[in->imm];
        int value = cache_alloc(m, 0);
        t_global_get(m, d, (int32_t)cell, value);
        cache_bind(m, value, d);
        return;
    }
    case 0x24: {
        int64_t cell = m->gcells[in->imm];
        uint8_t t = m->gtypes[in->imm];
        t_global_set(m, d, (int32_t)cell, (t != I32_T && t != F32_T));
        return;
    }
    case 0x3F:
        EMIT(m, K_MEMSIZE, d);
        return;
    case 0x41: case 0x42: case 0x43: case 0x44: {
        uint64_t bits = (uint64_t)in->imm;
        if (op == 0x41)
            bits &= 0xFFFFFFFFull;
        int value = cache_alloc(m, 0);
        mov_imm64(m, value, bits);
        if (bits <= 0xFFFFFFFFull) /* [REX.B] b8+r imm32: a producer carrier's form */
            m->producer_end = (int64_t)HERE(m);
        mov_mr(m, RSP, (int32_t)slot_disp(d), value); /* _build_store_slot */
        cache_bind(m, value, d);
        return;
    }
    }
    bail(m, op, in->offset);
}

/* compiler.py _compile_function: `push rbp; mov rbp, rsp` at the function's
 * first byte, then the ENTRY point (its patch site in debug mode), so a
 * debugger's prologue analyser sees a standard frame setup and the frame
 * exists at the ENTRY site (docs/stepping.md "Function layout"). */
static void prologue(cm_cc_module *m, uint32_t body_offset, uint32_t nparams)
{
    put1(m, 0x55);           /* push rbp */
    mov_rr(m, RBP, RSP);     /* mov rbp, rsp */
    uint32_t entry = m->debug ? site(m) : HERE(m);
    add_point(m, entry, body_offset, KIND_ENTRY, NULL, 0, 0);
    m->seq = entry;
    static const uint8_t lea_rax[4] = {0x48, 0x8d, 0x84, 0x24};
    put(m, lea_rax, 4);
    put32(m, 0);
    mov_rm(m, RCX, R15, VMCTX_STACK_CTX, 1);
    int start = (int)m->code.n;
    enc_rm(m, 8, OP_CMP_LOAD, 1, RAX, 1, RCX, STACK_CTX_STACK_LIMIT, 0);
    note_fusible(m, start);
    pad_for_branch(m, 6, 1);
    put1(m, 0x0F);
    put1(m, 0x82);
    put32(m, 0);
    trapfield tf = {HERE(m) - 4, entry, TRAP_STACK_EXHAUSTED}; /* reported at the ENTRY point */
    VEC_PUSH(m->traps, tf, &m->fail);
    static const uint8_t sub_rsp[3] = {0x48, 0x81, 0xec};
    put(m, sub_rsp, 3);
    put32(m, 0);
    mov_mr(m, RBP, FRAME_ARGS_PTR, RSI);
    for (uint32_t k = 0; k < nparams; k++) {
        mov_rm(m, RAX, RSI, (int32_t)(8 * k), 1);
        mov_mr(m, RBP, local_offset(k), RAX);
    }
    uint32_t ndeclared = m->nlocals - nparams;
    if (ndeclared) {
        enc_rm(m, 0, OP_XOR, 1, RAX, 0, RAX, 0, 0);
        if (ndeclared <= 8) {
            for (uint32_t k = nparams; k < m->nlocals; k++)
                mov_mr(m, RBP, local_offset(k), RAX);
        } else {
            lea(m, RDI, RBP, local_offset((int64_t)m->nlocals - 1));
            put1(m, 0xB9); /* mov ecx, imm32 */
            put32(m, (int32_t)ndeclared);
            static const uint8_t rep_stosq[3] = {0xf3, 0x48, 0xab};
            put(m, rep_stosq, 3);
        }
    }
}

/* Intern byte strings (per function) into pool/ends; returns the index. */
static uint32_t intern(cm_cc_module *m, itable *it, buf *pool, void *ends_vec, const uint8_t *p, uint32_t n)
{
    VEC(uint32_t) *ends = ends_vec;
    uint64_t h = 1469598103934665603ull ^ n;
    for (uint32_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    if ((ends->n + 1) * 2 > it->cap) {
        size_t cap = it->cap ? it->cap * 2 : 256;
        uint32_t *t = malloc(cap * sizeof(uint32_t));
        if (!t)
            longjmp(m->fail, 1);
        memset(t, 0xFF, cap * sizeof(uint32_t));
        it->alloc = cap;
        for (size_t k = 0; k < ends->n; k++) {
            uint32_t a = k ? ends->p[k - 1] : 0, b = ends->p[k];
            uint64_t g = 1469598103934665603ull ^ (b - a);
            for (uint32_t i = a; i < b; i++) {
                g ^= pool->p[i];
                g *= 1099511628211ull;
            }
            size_t j = g & (cap - 1);
            while (t[j] != UINT32_MAX)
                j = (j + 1) & (cap - 1);
            t[j] = (uint32_t)k;
        }
        free(it->hash);
        it->hash = t;
        it->cap = cap;
    }
    size_t mask = it->cap - 1;
    size_t j = h & mask;
    for (; it->hash[j] != UINT32_MAX; j = (j + 1) & mask) {
        uint32_t k = it->hash[j];
        uint32_t a = k ? ends->p[k - 1] : 0, b = ends->p[k];
        if (b - a == n && !memcmp(pool->p + a, p, n))
            return k;
    }
    buf_reserve(pool, n, &m->fail);
    memcpy(pool->p + pool->n, p, n);
    pool->n += n;
    VEC_PUSH(*ends, (uint32_t)pool->n, &m->fail);
    it->hash[j] = (uint32_t)ends->n - 1;
    return (uint32_t)ends->n - 1;
}

/* An empty intern table for up to `entries` lists (sized per function: a
 * table sized for the largest function, cleared for each, cost more than the
 * compile of a small one). */
static void reset_intern(cm_cc_module *m, size_t entries)
{
    size_t cap = 256;
    while (cap < 2 * entries + 2)
        cap *= 2;
    if (cap > m->ifn.alloc) {
        uint32_t *t = realloc(m->ifn.hash, cap * sizeof(uint32_t));
        if (!t)
            longjmp(m->fail, 1);
        m->ifn.hash = t;
        m->ifn.alloc = cap;
    }
    m->ifn.cap = cap;
    memset(m->ifn.hash, 0xFF, cap * sizeof(uint32_t));
}

static void finish(cm_cc_module *m, uint32_t frame_size, uint32_t code_base, cm_cc_result *out)
{
    /* frame size into the prologue: lea at 1+3+4 .. ; positions are fixed */
    uint32_t prologue_at = m->debug ? 5 : 0; /* the entry site at offset 0 is never padded */
    store32(m, prologue_at + 1 + 3 + 4, -(int32_t)(frame_size + STACK_CHECK_EXTRA));
    /* sub rsp's imm: after lea(8) mov rcx(3) cmp(4) [pad] jb(6): find by the recorded trap field */
    store32(m, m->traps.p[0].pos + 4 + 3, (int32_t)frame_size);

    /* native size and trap stubs */
    m->stubs.n = 0;
#define stubs (m->stubs)
    for (size_t i = 0; i < m->traps.n; i++) {
        trapfield *f = &m->traps.p[i];
        uint32_t stub = UINT32_MAX;
        for (size_t k = stubs.n; k-- > 0;)
            if (stubs.p[k].seq == f->seq && stubs.p[k].code == f->code) {
                stub = stubs.p[k].stub;
                break;
            }
        if (stub == UINT32_MAX) {
            stub = HERE(m);
            stubkey sk = {f->seq, f->code, stub};
            VEC_PUSH(stubs, sk, &m->fail);
            if (f->code == TRAP_STACK_EXHAUSTED) { /* mov rax, rsi: keeps the argument array */
                put1(m, 0x48);
                put1(m, 0x89);
                put1(m, 0xF0);
            }
            put1(m, 0x48);
            put1(m, 0x8d);
            put1(m, 0x35);
            put32(m, (int32_t)(f->seq - (HERE(m) + 4)));
            if (f->code < 0) { /* a libcall's: mov edi, [rbp + trap slot] */
                enc(m, 0, 0, "\x8b", 1, RDI, M(RBP, LIBCALL_TRAP_DISP), 0);
            } else {
                put1(m, 0xBF);
                put32(m, f->code);
            }
            pad_for_branch(m, 5, 0);
            put1(m, 0xE8);
            put32(m, 0);
            VEC_PUSH(m->trap_calls, HERE(m) - 4, &m->fail);
        }
        store32(m, f->pos, (int32_t)(stub - (f->pos + 4)));
    }
#undef stubs
    out->native_size = HERE(m);
    if (m->jtables.n) {
        while (PHASE(m, m->code.n) & 3)
            put1(m, 0xCC);
        for (size_t t = 0; t < m->jtables.n; t++) {
            jtable *jt = &m->jtables.p[t];
            bind(m, jt->table);
            for (uint32_t k = 0; k < jt->count; k++) {
                put32(m, 0);
                ref32(m, HERE(m) - 4, m->jlabels.p[jt->first + k], jt->table);
            }
        }
    }
    /* label fixups */
    for (size_t i = 0; i < m->fixups.n; i++) {
        fixup *f = &m->fixups.p[i];
        int64_t target = m->labels.p[f->label];
        int64_t anchor = f->anchor_label >= 0 ? m->labels.p[f->anchor_label] : (int64_t)f->pos + 4;
        if (target < 0 || anchor < 0)
            longjmp(m->fail, 4);
        store32(m, f->pos, (int32_t)(target - anchor));
    }

    /* sequence points: types and mirror lists interned per function */
    m->seq_out.n = m->types_out.n = m->mirrors_out.n = 0;
    m->types_ends.n = m->mirror_ends.n = 0;
    m->state_ids.n = 0;
    reset_intern(m, m->points.n);
    for (size_t i = 0; i < m->points.n; i++) {
        point *p = &m->points.p[i];
        uint32_t tid = intern(m, &m->ifn, &m->types_out, &m->types_ends, m->tpool.p + p->types_at, p->types_len);
        buf_reserve(&m->seq_out, 20, &m->fail);
        uint8_t *r = m->seq_out.p + m->seq_out.n;
        m->seq_out.n += 20;
        memcpy(r, &p->off, 4);
        memcpy(r + 4, &p->wasm_offset, 4);
        r[8] = p->kind;
        r[9] = 0;
        uint16_t depth = (uint16_t)p->types_len;
        memcpy(r + 10, &depth, 2);
        memcpy(r + 12, &tid, 4);
        memset(r + 16, 0, 4);
    }
    reset_intern(m, m->states.n);
    /* mirror lists: a state's records, in register order */
    for (size_t s = 0; s < m->states.n; s++) {
        cstate *st = &m->states.p[s];
        uint8_t rec[10 * 8];
        uint32_t n = 0;
        for (int k = 0; k < 10; k++) {
            int reg = MIRROR_ORDER[k];
            int i;
            for (i = 0; i < st->n && st->reg[i] != reg; i++)
                ;
            if (i == st->n)
                continue;
            int64_t loc = st->loc[i];
            int32_t frame_offset;
            uint8_t source;
            if (loc >= 0) {
                source = MIRROR_SLOT;
                frame_offset = (int32_t)(-(int64_t)frame_size + 8 * loc);
            } else if (loc == MEMORY_BASE) {
                source = MIRROR_MEMORY0_BASE;
                frame_offset = 0;
            } else if (loc == MEMORY_LENGTH) {
                source = MIRROR_MEMORY0_LENGTH;
                frame_offset = 0;
            } else {
                source = MIRROR_SLOT;
                frame_offset = local_offset(-loc - 1);
            }
            uint8_t *r = rec + 8 * n++;
            r[0] = (uint8_t)reg;
            r[1] = source;
            r[2] = r[3] = 0;
            memcpy(r + 4, &frame_offset, 4);
        }
        uint32_t id = intern(m, &m->ifn, &m->mirrors_out, &m->mirror_ends, rec, 8 * n);
        VEC_PUSH(m->state_ids, (int32_t)id, &m->fail);
    }
    for (size_t i = 0; i < m->points.n; i++) {
        point *p = &m->points.p[i];
        if (p->state < 0)
            continue;
        uint32_t id = (uint32_t)m->state_ids.p[p->state];
        uint32_t a = id ? m->mirror_ends.p[id - 1] : 0;
        uint8_t *r = m->seq_out.p + 20 * i;
        r[9] = (uint8_t)((m->mirror_ends.p[id] - a) / 8);
        memcpy(r + 16, &id, 4);
    }

    /* Module-wide: each distinct list of the function interned into the
     * module's pools (in order of first occurrence, as FrameTableBuilder
     * interns them), and the records made final: native offsets moved to
     * code_base, stack_types the types pool offset, first_mirror the mirror
     * pool index (0 without mirrors). */
    m->gmap.n = 0;
    for (size_t k = 0; k < m->types_ends.n; k++) {
        uint32_t a = k ? m->types_ends.p[k - 1] : 0, b = m->types_ends.p[k];
        uint32_t g = intern(m, &m->igtypes, &m->gtypes_pool, &m->gtypes_ends, m->types_out.p + a, b - a);
        VEC_PUSH(m->gmap, g ? m->gtypes_ends.p[g - 1] : 0, &m->fail);
    }
    size_t ntypes = m->gmap.n;
    for (size_t k = 0; k < m->mirror_ends.n; k++) {
        uint32_t a = k ? m->mirror_ends.p[k - 1] : 0, b = m->mirror_ends.p[k];
        uint32_t g = intern(m, &m->igmirrors, &m->gmirror_pool, &m->gmirror_ends, m->mirrors_out.p + a, b - a);
        VEC_PUSH(m->gmap, (g ? m->gmirror_ends.p[g - 1] : 0) / 8, &m->fail);
    }
    for (size_t i = 0; i < m->points.n; i++) {
        uint8_t *r = m->seq_out.p + 20 * i;
        uint32_t v;
        memcpy(&v, r, 4);
        v += code_base;
        memcpy(r, &v, 4);
        memcpy(&v, r + 12, 4);
        memcpy(r + 12, &m->gmap.p[v], 4);
        memcpy(&v, r + 16, 4);
        v = r[9] ? m->gmap.p[ntypes + v] : 0;
        memcpy(r + 16, &v, 4);
    }

    out->code = m->code.p;
    out->code_size = HERE(m);
    out->frame_size = frame_size;
    out->num_seqpoints = (uint32_t)m->points.n;
    out->seqpoints = m->seq_out.p;
    out->num_types = (uint32_t)m->types_ends.n;
    out->types_pool = m->types_out.p;
    out->types_ends = m->types_ends.p;
    out->num_mirror_lists = (uint32_t)m->mirror_ends.n;
    out->mirror_pool = m->mirrors_out.p;
    out->mirror_ends = m->mirror_ends.p;
    /* sites, trap calls and the local slots for the image (code_base on) */
    for (size_t i = 0; i < m->sites.n; i++)
        m->sites.p[i] += code_base;
    for (size_t i = 0; i < m->trap_calls.n; i++)
        m->trap_calls.p[i] += code_base;
    m->locals_out.n = 0;
    buf_reserve(&m->locals_out, 8 * (size_t)m->nlocals, &m->fail);
    for (uint32_t i = 0; i < m->nlocals; i++) { /* LocalSlot: i32 frame offset, u8 value type, 3 bytes 0 */
        uint8_t *r = m->locals_out.p + 8 * i;
        int32_t offset = local_offset(i);
        memcpy(r, &offset, 4);
        r[4] = m->local_types[i];
        r[5] = r[6] = r[7] = 0;
    }
    m->locals_out.n = 8 * (size_t)m->nlocals;
    out->locals = m->locals_out.p;
    out->num_locals = m->nlocals;
    out->num_sites = (uint32_t)m->sites.n;
    out->sites = m->sites.p;
    out->num_trap_calls = (uint32_t)m->trap_calls.n;
    out->trap_calls = m->trap_calls.p;
    out->num_calls = (uint32_t)m->calls.n / 2;
    out->calls = m->calls.p;
}

int cm_cc_compile(cm_cc_module *m, const uint8_t *data, uint32_t body_offset, uint32_t end_offset,
                  uint32_t defined_index, const uint8_t *local_types, uint32_t nlocals, uint32_t code_base,
                  cm_cc_result *out)
{
    memset(out, 0, sizeof(*out));
    m->fail_op = m->fail_offset = 0;
    int why = setjmp(m->fail);
    if (why) {
        if (why != 3) /* not bail(): 1 out of memory, 2 no template, 4 an unbound label,
                     * 5 cm_cc_set_abi not called, 6 a short jump out of range */
            m->fail_op = 0x10000 | (uint32_t)why;
        out->reason_op = m->fail_op;
        out->reason_offset = m->fail_offset;
        return 0;
    }
    if (!abi_set)
        longjmp(m->fail, 5);
    uint32_t func_index = m->num_imported + defined_index;
    if (func_index >= m->nfuncs)
        bail(m, 0xFFFF, body_offset);
    functype *ft = &m->types[m->func_types[func_index]];
    if (nlocals < ft->nparams)
        bail(m, 0xFFFF, body_offset);
    m->local_types = local_types;
    m->fn_type = ft;
    m->nlocals = nlocals;
    m->nsave = 0;
    m->code.n = 0;
    m->fusible_at = m->fusible_end = -1;
    m->carrier_end = -1;
    m->producer_end = -1;
    m->labels.n = m->fixups.n = m->traps.n = m->jtables.n = m->jlabels.n = 0;
    m->frames.n = 0;
    m->vals.n = 0;
    m->states.n = 0;
    m->points.n = 0;
    m->tpool.n = 0;
    m->sites.n = m->trap_calls.n = m->calls.n = 0;
    m->recorded_state = -1;
    m->cache_version++;
    m->origin = code_base & (BOUNDARY - 1);

    decode_body(m, data, body_offset, end_offset);

    prologue(m, body_offset, ft->nparams);
    frame *f = push_frame(m);
    f->vkind = V_FUNCTION;
    f->end_types = ft->results;
    f->nend = ft->nresults;
    f->ckind = C_FUNCTION;
    f->height = 0;
    f->arity = ft->nresults;
    f->label = new_label(m);
    m->cache.n = 1; /* force: cache.clear() */
    cache_clear(m);
    for (int r = 0; r < 16; r++)
        m->by_reg[r] = NO_LOC;
    xmm_clear(m);

    uint32_t max_depth = 0;
    for (size_t i = 0; i < m->ins.n; i++) {
        const instr *in = &m->ins.p[i];
        uint32_t op = in->op;
        if (!m->frames.n)
            bail(m, op, in->offset); /* an instruction after the function's end */
        frame *top = TOPF(m);
        int64_t d = NVALS(m);
        if (top->ckind == C_DEAD || top->unreachable) {
            if (op == 0x02 || op == 0x03 || op == 0x04) {
                v_step(m, in, i);
                frame *nf = TOPF(m);
                nf->ckind = C_DEAD;
            } else if (op == 0x0B) {
                if (top->ckind == C_DEAD) {
                    /* validator end only */
                    v_pop_ctrl_check(m, in);
                    frame *vf = TOPF(m);
                    if (vf->vkind == V_IF) {
                        uint32_t height = NVALS(m);
                        push_vals(m, vf->start_types, vf->nstart);
                        vf->vheight = height;
                        vf->unreachable = 0;
                        pop_vals(m, vf->end_types, vf->nend, in, NULL);
                        if (NVALS(m) != height)
                            bail(m, op, in->offset);
                    }
                    const uint8_t *et = vf->end_types;
                    uint32_t ne = vf->nend;
                    m->frames.n--;
                    push_vals(m, et, ne);
                } else {
                    do_end(m, in, 0);
                }
            } else if (op == 0x05) {
                if (top->ckind == C_DEAD) {
                    if (top->vkind != V_IF)
                        bail(m, op, in->offset);
                    v_pop_ctrl_check(m, in);
                    top->vkind = V_ELSE;
                    top->vheight = NVALS(m);
                    top->unreachable = 0;
                    push_vals(m, top->start_types, top->nstart);
                } else {
                    do_else(m, in, 0);
                }
            } else {
                v_step(m, in, i);
            }
        } else if (op == 0x0B) {
            do_end(m, in, 1);
        } else if (op == 0x05) {
            do_else(m, in, 1);
        } else {
            uint32_t off = HERE(m);
            if (m->carrier_end == (int64_t)off && (OPS[op].flags & CM_CC_DEFERRING) && store_deferrable(m, op, d))
                off = defer_carrier_store(m);
            else if (m->debug)
                off = instruction_site(m);
            m->seq = off;
            add_point(m, off, in->offset, KIND_INSTRUCTION, VALS(m), NVALS(m), 1);
            v_step(m, in, i);
            handle(m, in, i, d);
            uint32_t flags = OPS[op].flags;
            if (!(flags & CM_CC_CACHE_AWARE)) {
                if (flags & CM_CC_SCRATCH_ONLY)
                    cache_truncate(m, (int64_t)NVALS(m) - 1);
                else
                    cache_clear(m);
            }
            if (flags & CM_CC_XMM_RESULT_ONLY)
                xmm_discard(m, (int64_t)NVALS(m) - 1);
            else if (!(flags & CM_CC_XMM_UNTOUCHED))
                xmm_clear(m);
        }
        if (NVALS(m) > max_depth)
            max_depth = NVALS(m);
    }
    if (m->frames.n)
        bail(m, 0x0B, end_offset);
    uint32_t frame_size = (FRAME_FIXED_SIZE + 8 * (m->nlocals + m->nsave + max_depth) + 15) & ~15u;
    finish(m, frame_size, code_base, out);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* The module-wide pools, for the functions Python compiles and the builder  */
/* ------------------------------------------------------------------------ */

int cm_cc_intern(cm_cc_module *m, int which, const uint8_t *p, uint32_t n, uint32_t *start)
{
    if (setjmp(m->fail))
        return 0;
    buf *pool = which ? &m->gmirror_pool : &m->gtypes_pool;
    uint32_t g = which ? intern(m, &m->igmirrors, pool, &m->gmirror_ends, p, n)
                       : intern(m, &m->igtypes, pool, &m->gtypes_ends, p, n);
    uint32_t *ends = which ? m->gmirror_ends.p : m->gtypes_ends.p;
    *start = g ? ends[g - 1] : 0;
    return 1;
}

void cm_cc_pools(cm_cc_module *m, int which, const uint8_t **pool, uint32_t *size, const uint32_t **ends,
                 uint32_t *count)
{
    buf *b = which ? &m->gmirror_pool : &m->gtypes_pool;
    *pool = b->p;
    *size = (uint32_t)b->n;
    *ends = which ? m->gmirror_ends.p : m->gtypes_ends.p;
    *count = (uint32_t)(which ? m->gmirror_ends.n : m->gtypes_ends.n);
}

/* ------------------------------------------------------------------------ */
/* Patch-site records of the call sites (frametable.py add_call_sites)       */
/* ------------------------------------------------------------------------ */

/* frametable.py carrier_store: a slot store `mov [rsp+disp8], r64`, REX.W(+R) 89 ModRM(mod=01 rm=100)
 * SIB(24) disp8, or a deferred carrier (deferred_carrier_bytes: 0F 1F 44 SIB disp8, SIB base 100, bit 7
 * clear), each with a non-negative disp8 that is a multiple of 8 (an operand-stack slot); a local store
 * `mov [rbp+disp8], r64` after one DS prefix, 3E REX.W(+R) 89 ModRM(mod=01 rm=101) disp8, with a negative
 * disp8 that is a multiple of 8 (a local's home); or a move `mov r64, r64` after two DS prefixes,
 * 3E 3E REX.W(+R+B) 89 ModRM(mod=11), between two registers other than rsp and rbp; or a producer
 * `mov r32, imm32`, B8+r imm32 (its REX.B, if any, is before the site). */
static int is_carrier_store(const uint8_t *b)
{
    if ((b[0] & 0xF8) == 0xB8) /* a producer: mov r32, imm32 (any immediate) */
        return 1;
    if (b[4] < 0x80 && !(b[4] & 7)) {
        if ((b[0] == 0x48 || b[0] == 0x4C) && b[1] == 0x89 && (b[2] & 0xC7) == 0x44 && b[3] == 0x24)
            return 1;
        return b[0] == 0x0F && b[1] == 0x1F && b[2] == 0x44 && (b[3] & 0x87) == 0x04;
    }
    if (b[0] == SITE_PAD_PREFIX && (b[1] == 0x48 || b[1] == 0x4C) && b[2] == 0x89 && (b[3] & 0xC7) == 0x45)
        return !(b[4] & 7);
    if (b[0] == SITE_PAD_PREFIX && b[1] == SITE_PAD_PREFIX && (b[2] & 0xFA) == 0x48 && b[3] == 0x89 && b[4] >= 0xC0) {
        int source = ((b[2] & 4) << 1) | (b[4] >> 3 & 7), target = ((b[2] & 1) << 3) | (b[4] & 7);
        return source != target && source != RSP && source != RBP && target != RSP && target != RBP;
    }
    return 0;
}

int cm_call_site_records(const uint32_t *offsets, size_t n, uint32_t target, const uint8_t *code,
                         size_t code_size, uint8_t *out)
{
    int ascending = 1;
    for (size_t i = 0; i < n; i++) {
        uint32_t off = offsets[i];
        if ((off & 7) > 8 - sizeof(SITE_DISABLED))
            return -1;
        const uint8_t *disable = SITE_DISABLED;
        if (code) {
            if ((size_t)off + sizeof(SITE_DISABLED) > code_size)
                return -2;
            disable = code + off;
            if (memcmp(disable, SITE_DISABLED, sizeof(SITE_DISABLED)) && !is_carrier_store(disable))
                return -2;
        }
        if (i && offsets[i - 1] >= off)
            ascending = 0;
        /* PatchSite: u32 offset, enable[5] = e8 rel32, disable[5], 2 bytes of padding */
        uint8_t *r = out + 16 * i;
        int32_t rel = (int32_t)(target - sizeof(SITE_DISABLED) - off);
        memcpy(r, &off, 4);
        r[4] = 0xE8;
        memcpy(r + 5, &rel, 4);
        memcpy(r + 9, disable, sizeof(SITE_DISABLED));
        r[14] = r[15] = 0;
    }
    return ascending;
}
