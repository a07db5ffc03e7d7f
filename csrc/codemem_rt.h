/* codemem_rt.h: the C runtime of codemem (the only C in the project).
 *
 * What must be C: the syscalls behind code memory (memfd, mmap, mprotect,
 * seals), and the three trampolines that move between the host's C stack and
 * a guest stack (entry, breakpoint, trap) plus the host-call trampoline for
 * imports implemented in Python.  Everything else lives in Python.
 *
 * This header is also fed to cffi's cdef (see codemem/_native_build.py), so it
 * holds only declarations cffi can parse: no macros with expressions, no
 * static asserts (those are in codemem_rt.c).
 */

/* Register file filled by the breakpoint and trap trampolines, 424 bytes.
 *
 *   offset   0  gpr[16]  rax rbx rcx rdx rsi rdi rbp rsp r8 .. r15
 *                        (gdb's amd64 'g' order, not the hardware order)
 *   offset 128  rip      the stop pc: for a breakpoint, the patch site
 *                        (return address - 5); writing it moves the resume pc
 *   offset 136  rflags
 *   offset 144  xmm[16][16]
 *   offset 400  mxcsr
 *   offset 404  control     0 when the trampoline calls the host; the host
 *                           may set it (see CM_CONTROL_RESUME and the kill
 *                           path below)
 *   offset 408  fs_base, gs_base (always 0: guests have no TLS)
 *
 * Resuming restores every register from the regfile, rsp included: the guest
 * continues at rip + 5 (rip is a patch site) with the regfile's rsp.  A host
 * that changes rsp must keep it at or above the lowest address of the stop's
 * resume gap (the guest's rsp at the stop - CM_RESUME_GAP_BYTES + 16): the
 * trampoline writes two words just below the new rsp while its own frame,
 * below the gap, is still being read.
 */
typedef struct cm_regfile {
    uint64_t gpr[16];
    uint64_t rip;
    uint64_t rflags;
    uint8_t xmm[16][16];
    uint32_t mxcsr;
    uint32_t control;
    uint64_t fs_base;
    uint64_t gs_base;
} cm_regfile;

/* Per-Store execution context.  Offset 0 of every context a guest runs with
 * (an instance's vmctx, a host function's context) points at its Store's
 * cm_stack_ctx, which is how the trampolines find the host stack.
 *
 *   offset  0 host_rsp      rsp inside the innermost cm_enter frame; host
 *                           callbacks run below it, traps unwind to it
 *   offset  8 guest_rsp     guest rsp while the host runs a callback (a nested
 *                           cm_enter continues the guest stack below it)
 *   offset 16 stack_limit   lowest rsp a guest prologue may reach
 *   offset 24 store_id      for the host's dispatch
 *   offset 32 trap_code     code of the trap being unwound (for inspection)
 *   offset 40 depth         cm_enter nesting depth
 */
typedef struct cm_stack_ctx {
    uint64_t host_rsp;
    uint64_t guest_rsp;
    uint64_t stack_limit;
    uint64_t store_id;
    uint64_t trap_code;
    uint64_t depth;
} cm_stack_ctx;

/* ---- code memory syscalls: each returns 0 / a value, or -errno ---- */
int64_t cm_memfd_create(const char *name, uint64_t size);
int64_t cm_memfd_seal(int fd);
int64_t cm_memfd_seals(int fd);
int64_t cm_pwrite_all(int fd, const void *data, uint64_t size, uint64_t offset);
/* mmap of fd (or anonymous when fd < 0); shared != 0 for MAP_SHARED. */
int64_t cm_map(int fd, uint64_t size, int prot, int shared);
/* cm_map at exactly ADDR, never replacing a mapping: -EEXIST when anything
 * overlaps [ADDR, ADDR+SIZE) (codemem/lowmem.py places debug Stores' memory
 * below 4 GiB with it; codemem/sitehooks.py puts a StoreCode's hook area
 * within rel32 reach of its image).  fd < 0: anonymous memory. */
int64_t cm_map_at(int fd, uint64_t size, int prot, int shared, uint64_t addr);
int64_t cm_unmap(uint64_t addr, uint64_t size);
int64_t cm_protect(uint64_t addr, uint64_t size, int prot);
/* madvise(MADV_DONTNEED): on a MAP_PRIVATE file mapping this drops every
   private (copied-on-write) page, so the range reads the file's bytes again. */
int64_t cm_discard_private_pages(uint64_t addr, uint64_t size);
int64_t cm_close(int fd);
uint64_t cm_page_size(void);

/* Guest stacks: [base, base+guard) is PROT_NONE, the rest read+write. */
int64_t cm_stack_alloc(uint64_t size, uint64_t guard);
int64_t cm_stack_free(uint64_t base, uint64_t size);

/* Writes a 5-byte patch so that a thread executing the code concurrently sees
 * either the old or the new instruction, never a torn one: the site must not
 * cross an 8-byte boundary (the compiler aligns sites so) and the store is a
 * single atomic 8-byte write.  Returns -EINVAL for a misaligned site. */
int64_t cm_patch5_atomic(uint64_t site, const uint8_t *bytes5);

/* Enables (delta +1) or disables (delta -1) many patch sites of one StoreCode
 * mapping at once: the sites ``indexes[0..count)``, or ``[first, first+count)``
 * when ``indexes`` is NULL, of the frame table's PatchSite ``records``
 * (``num_records``, 16 bytes each), with one reference count per site in
 * ``refcounts``: bytes are written on 0 -> 1 (enable bytes) and 1 -> 0
 * (disable bytes), with one atomic 8-byte store each when ``live`` (a guest
 * may be running the code).  ``code`` is the mapping's base, writable;
 * ``code_size`` bounds every site.  Returns the number of sites written, or
 * -(i + 1) when the i-th requested site is out of range, malformed or (for a
 * disable) not enabled: then nothing has changed. */
int64_t cm_sites_update(uint8_t *code, uint64_t code_size, const uint8_t *records, uint32_t num_records,
                        uint32_t *refcounts, const uint32_t *indexes, uint32_t first, uint32_t count,
                        int32_t delta, int32_t live);

/* ---- trampolines ---- */

/* Runs guest code `code` with r15 = vmctx and rsi = args on the guest stack at
 * guest_sp (0: continue below the guest rsp saved by the enclosing host call).
 * Returns 0 when the guest returned, or the nonzero code of a trap.
 * entry_thunk: 0, or the address of code that does `call rdi; ret` (bytes
 * ff d7 c3), through which the guest is then called, so that the outermost
 * guest frame returns into the thunk rather than into cm_enter.  Debug Stores
 * place one below 4 GiB (codemem/lowmem.py), where an x32 debugger can see it. */
uint64_t cm_enter(uint64_t code, uint64_t vmctx, uint64_t args, cm_stack_ctx *sc, uint64_t guest_sp,
                  uint64_t entry_thunk);

/* Addresses of the trampolines a guest image's veneers jump to. */
uint64_t cm_breakpoint_trampoline_address(void);
uint64_t cm_trap_trampoline_address(void);
uint64_t cm_host_call_trampoline_address(void);

/* cm_enter's address, and the range [start, end) of all the runtime's assembly
 * (cm_enter and the three trampolines): what a debugger needs to describe the
 * frames a guest returns into or stops in. */
uint64_t cm_enter_address(void);
/* The return address for a debugger's inferior calls in Stores placed
 * anywhere (a 5-byte call of the breakpoint trampoline, looping): the entry
 * point of the runtime's debug image.  Low Stores use the entry thunk page's
 * copy (codemem/lowmem.py). */
uint64_t cm_call_landing_address(void);
uint64_t cm_runtime_code_start_address(void);
uint64_t cm_runtime_code_end_address(void);

/* A breakpoint event callback that sets regfile->rip to 0 ends the guest: the
 * trampoline unwinds to the innermost cm_enter, which returns regfile->control
 * when that is nonzero, else this code.  (A trap callback that sets rip to 0
 * makes a nonzero control the code returned instead of the trap's.) */
enum { CM_TRAP_KILLED = 0xfffe };

/* A trap event callback that sets regfile->control to this resumes the guest
 * from the regfile (as after a breakpoint) instead of unwinding: for a state
 * the host checked the guest can continue from. */
enum { CM_CONTROL_RESUME = 0x7fffffff };

/* Bytes below a stopped guest's rsp that the trampolines leave untouched
 * while the guest is stopped (see the regfile's resume rule above). */
enum { CM_RESUME_GAP_BYTES = 4096 };

/* Event kinds passed to the event callback. */
enum { CM_EVENT_BREAKPOINT = 1, CM_EVENT_TRAP = 2 };

/* Host callbacks, set once per process.
 *   event(kind, code, regfile, vmctx): a breakpoint or trap on a guest thread;
 *     may block; may modify *regfile (restored when it returns).
 *   host_call(hostctx, args) -> 0 or a trap code: an import implemented by the
 *     host, reading its params from and writing its results to args[]. */
typedef void (*cm_event_fn)(uint64_t kind, uint64_t code, cm_regfile *regfile, uint64_t vmctx);
typedef uint64_t (*cm_host_call_fn)(uint64_t hostctx, uint64_t *args);
void cm_set_callbacks(cm_event_fn event, cm_host_call_fn host_call);

/* The agent's printf (gdb's dprintf-style agent, GDB manual "Bytecode
 * Descriptions", printf): formats `format` with nargs 64-bit argument words
 * (C conversions %d %i %u %x %X %o %c %s %p %%, flags, width, precision and
 * the hh h l ll z j t length modifiers) and writes the text to fd 1.  A %s
 * argument is read only where the region table allows (codemem.sitehooks
 * layout: u64 count, then {start, end, memdef, kind} rows), else it prints
 * "<unreadable>".  Called from a site's veneer on the guest stack, aligned. */
void cm_agent_printf(const char *format, uint64_t nargs, const uint64_t *args, const uint64_t *regions);
uint64_t cm_agent_printf_address(void);
/* The same formatting into buf (at most size bytes, NUL-terminated); returns
 * the length.  For tests. */
uint64_t cm_agent_format(char *buf, uint64_t size, const char *format, uint64_t nargs, const uint64_t *args,
                         const uint64_t *regions);

/* Resume gates: a stopped guest that waits in C, not in the host callback.
 * An event callback that calls cm_defer_resume(gate) (with *gate nonzero,
 * "closed") returns at once; the guest thread then waits, after the callback
 * returned and so without any lock the host's callback machinery holds (for
 * CPython: the GIL), until another thread calls cm_gate_open(gate).  Only then
 * are the registers restored from *regfile and the guest resumed.  The gate
 * word must stay valid until the guest has passed it. */
void cm_defer_resume(uint32_t *gate);
void cm_gate_open(uint32_t *gate);
