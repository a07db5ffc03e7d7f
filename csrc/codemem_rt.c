/* codemem_rt.c: code-memory syscalls and the guest/host trampolines.
 *
 * Guest code ABI (what the compiler in codemem/x64 emits and these
 * trampolines assume):
 *   r15  the current context: an instance vmctx or a host function's context;
 *        its first quadword points at the Store's cm_stack_ctx.  Every guest
 *        function preserves r15 (callers restore it after cross-context calls).
 *   rsi  on entry to a function: pointer to its argument array (8 bytes per
 *        value); the callee writes its results to the same array.
 *   rbp  frame pointer; frames are rbp-chained.
 *   Every other register is clobbered by calls.  There is no red zone: the
 *   trampolines push onto the guest stack.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "codemem_rt.h"

_Static_assert(sizeof(cm_regfile) == 424, "regfile layout is shared with Python");
_Static_assert(offsetof(cm_regfile, rip) == 128, "rip offset");
_Static_assert(offsetof(cm_regfile, rflags) == 136, "rflags offset");
_Static_assert(offsetof(cm_regfile, xmm) == 144, "xmm offset");
_Static_assert(offsetof(cm_regfile, mxcsr) == 400, "mxcsr offset");
_Static_assert(offsetof(cm_stack_ctx, host_rsp) == 0, "host_rsp offset");
_Static_assert(offsetof(cm_stack_ctx, guest_rsp) == 8, "guest_rsp offset");
_Static_assert(offsetof(cm_stack_ctx, stack_limit) == 16, "stack_limit offset");
_Static_assert(offsetof(cm_stack_ctx, trap_code) == 32, "trap_code offset");
_Static_assert(offsetof(cm_stack_ctx, depth) == 40, "depth offset");

/* ------------------------------------------------------------------------ */
/* Code memory                                                               */
/* ------------------------------------------------------------------------ */

int64_t cm_memfd_create(const char *name, uint64_t size)
{
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t)size) != 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

/* Once sealed, neither this process nor anyone holding the fd can change the
 * canonical bytes: writes, shared writable mappings and resizing all fail.
 * MAP_PRIVATE mappings stay allowed, which is what StoreCode uses. */
int64_t cm_memfd_seal(int fd)
{
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) != 0)
        return -errno;
    return 0;
}

int64_t cm_memfd_seals(int fd)
{
    int seals = fcntl(fd, F_GET_SEALS);
    return seals < 0 ? -errno : seals;
}

int64_t cm_pwrite_all(int fd, const void *data, uint64_t size, uint64_t offset)
{
    const char *p = data;
    while (size) {
        ssize_t n = pwrite(fd, p, size, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        size -= (uint64_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

int64_t cm_map(int fd, uint64_t size, int prot, int shared)
{
    int flags = shared ? MAP_SHARED : MAP_PRIVATE;
    if (fd < 0)
        flags |= MAP_ANONYMOUS;
    void *p = mmap(NULL, size, prot, flags, fd, 0);
    return p == MAP_FAILED ? -errno : (int64_t)(uintptr_t)p;
}

int64_t cm_map_at(int fd, uint64_t size, int prot, int shared, uint64_t addr)
{
    int flags = (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED_NOREPLACE;
    if (fd < 0)
        flags |= MAP_ANONYMOUS;
    void *p = mmap((void *)(uintptr_t)addr, size, prot, flags, fd, 0);
    if (p == MAP_FAILED)
        return -errno;
    if ((uint64_t)(uintptr_t)p != addr) {
        /* a kernel older than 4.17 takes MAP_FIXED_NOREPLACE for a hint */
        munmap(p, size);
        return -EEXIST;
    }
    return (int64_t)(uintptr_t)p;
}

int64_t cm_unmap(uint64_t addr, uint64_t size)
{
    return munmap((void *)(uintptr_t)addr, size) == 0 ? 0 : -errno;
}

int64_t cm_protect(uint64_t addr, uint64_t size, int prot)
{
    return mprotect((void *)(uintptr_t)addr, size, prot) == 0 ? 0 : -errno;
}

int64_t cm_discard_private_pages(uint64_t addr, uint64_t size)
{
    return madvise((void *)(uintptr_t)addr, size, MADV_DONTNEED) == 0 ? 0 : -errno;
}

int64_t cm_close(int fd)
{
    return close(fd) == 0 ? 0 : -errno;
}

uint64_t cm_page_size(void)
{
    return (uint64_t)sysconf(_SC_PAGESIZE);
}

int64_t cm_stack_alloc(uint64_t size, uint64_t guard)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    if (guard && mprotect(p, guard, PROT_NONE) != 0) {
        int err = errno;
        munmap(p, size);
        return -err;
    }
    return (int64_t)(uintptr_t)p;
}

int64_t cm_stack_free(uint64_t base, uint64_t size)
{
    return cm_unmap(base, size);
}

int64_t cm_patch5_atomic(uint64_t site, const uint8_t *bytes5)
{
    uint64_t word_addr = site & ~(uint64_t)7;
    unsigned shift = (unsigned)(site & 7);
    if (shift > 3)
        return -EINVAL; /* the 5 bytes would straddle two quadwords */
    uint64_t *word = (uint64_t *)(uintptr_t)word_addr;
    uint64_t old = __atomic_load_n(word, __ATOMIC_RELAXED);
    uint8_t bytes[8];
    memcpy(bytes, &old, 8);
    memcpy(bytes + shift, bytes5, 5);
    uint64_t new_word;
    memcpy(&new_word, bytes, 8);
    __atomic_store_n(word, new_word, __ATOMIC_SEQ_CST);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Bulk patch-site edits                                                     */
/* ------------------------------------------------------------------------ */

/* A PatchSite record of the frame table (codemem/frametable.py):
 *
 *   +-------------------+-------------+--------------+----------+
 *   | offset (u32, LE)  | enable[5]   | disable[5]   | reserved |
 *   +-------------------+-------------+--------------+----------+
 *   0                   4             9              14         16
 */
#define SITE_RECORD_SIZE 16
#define SITE_BYTES 5

static uint32_t site_offset(const uint8_t *record)
{
    uint32_t offset;
    memcpy(&offset, record, 4);
    return offset;
}

static void write_site(uint8_t *code, const uint8_t *record, int enable, int live)
{
    uint32_t offset = site_offset(record);
    const uint8_t *bytes = record + 4 + (enable ? 0 : SITE_BYTES);
    if (live)
        cm_patch5_atomic((uint64_t)(uintptr_t)(code + offset), bytes);
    else
        memcpy(code + offset, bytes, SITE_BYTES);
}

/* Counts one reference more (delta +1) or less (-1) on a site; its bytes
   change on 0 -> 1 (enable) and 1 -> 0 (disable).  Returns whether they did. */
static int change_site(uint8_t *code, const uint8_t *records, uint32_t *refcounts, uint32_t index,
                       int32_t delta, int live)
{
    uint32_t count = refcounts[index];
    refcounts[index] = delta > 0 ? count + 1 : count - 1;
    if ((delta > 0 && count == 0) || (delta < 0 && count == 1)) {
        write_site(code, records + (size_t)index * SITE_RECORD_SIZE, delta > 0, live);
        return 1;
    }
    return 0;
}

int64_t cm_sites_update(uint8_t *code, uint64_t code_size, const uint8_t *records, uint32_t num_records,
                        uint32_t *refcounts, const uint32_t *indexes, uint32_t first, uint32_t count,
                        int32_t delta, int32_t live)
{
    if (delta != 1 && delta != -1)
        return -(int64_t)count - 1;
    /* Everything is checked before anything changes. */
    for (uint32_t i = 0; i < count; i++) {
        uint32_t index = indexes ? indexes[i] : first + i;
        if (index >= num_records)
            return -(int64_t)i - 1;
        uint32_t offset = site_offset(records + (size_t)index * SITE_RECORD_SIZE);
        if ((uint64_t)offset + SITE_BYTES > code_size || (offset & 7) > 8 - SITE_BYTES)
            return -(int64_t)i - 1;
        if (delta < 0 && refcounts[index] == 0)
            return -(int64_t)i - 1;
    }
    int64_t written = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t index = indexes ? indexes[i] : first + i;
        if (delta < 0 && refcounts[index] == 0) {
            /* The same site listed more often than it is enabled: undo, in
               reverse, what this call did, and refuse. */
            for (uint32_t j = i; j-- > 0;)
                change_site(code, records, refcounts, indexes ? indexes[j] : first + j, -delta, live);
            return -(int64_t)i - 1;
        }
        written += change_site(code, records, refcounts, index, delta, live);
    }
    return written;
}

/* ------------------------------------------------------------------------ */
/* Host callbacks                                                            */
/* ------------------------------------------------------------------------ */

static cm_event_fn event_callback;
static cm_host_call_fn host_call_callback;

void cm_set_callbacks(cm_event_fn event, cm_host_call_fn host_call)
{
    event_callback = event;
    host_call_callback = host_call;
}

/* The gate the current event callback deferred its resume to (per guest thread). */
static __thread uint32_t *deferred_resume_gate;

void cm_defer_resume(uint32_t *gate)
{
    deferred_resume_gate = gate;
}

void cm_gate_open(uint32_t *gate)
{
    __atomic_store_n(gate, 0, __ATOMIC_RELEASE);
    syscall(SYS_futex, gate, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void gate_wait(uint32_t *gate)
{
    /* FUTEX_WAIT returns at once if the word is no longer 1 (opened before we
       slept), and may wake spuriously: the loop re-checks. */
    while (__atomic_load_n(gate, __ATOMIC_ACQUIRE) != 0)
        syscall(SYS_futex, gate, FUTEX_WAIT_PRIVATE, 1, NULL, NULL, 0);
}

/* Called by the trampolines on the host stack. */
__attribute__((visibility("hidden"), used)) void cm_dispatch_event(uint64_t kind, uint64_t code,
                                                                   cm_regfile *regfile, uint64_t vmctx)
{
    if (event_callback)
        event_callback(kind, code, regfile, vmctx);
    uint32_t *gate = deferred_resume_gate;
    if (gate) {
        deferred_resume_gate = NULL;
        gate_wait(gate);
    }
}

__attribute__((visibility("hidden"), used)) uint64_t cm_dispatch_host_call(uint64_t hostctx, uint64_t *args)
{
    if (!host_call_callback)
        return 1; /* no host: trap rather than run garbage */
    return host_call_callback(hostctx, args);
}

/* ------------------------------------------------------------------------ */
/* Trampolines                                                               */
/* ------------------------------------------------------------------------ */
/*
 * cm_enter frame on the host stack (rbp = cm_enter's frame pointer):
 *
 *   rbp+8   return address into C
 *   rbp     saved rbp
 *   rbp-8   rbx   rbp-16 r12   rbp-24 r13   rbp-32 r14   rbp-40 r15
 *   rbp-48  sc (the cm_stack_ctx pointer)
 *   rbp-56  sc->host_rsp of the enclosing cm_enter (nesting)
 *   rbp-64  sc->guest_rsp of the enclosing host call    <- sc->host_rsp
 *
 * A trap anywhere below unwinds by loading rsp = sc->host_rsp and jumping to
 * cm_enter_restore with the code in eax: no C or Python frame lies between,
 * because host callbacks return before the guest continues.
 *
 * Register-file frame on the guest stack, built by the breakpoint and trap
 * trampolines (rsp = its base while the host runs), CM_RESUME_GAP bytes below
 * the guest's rsp:
 *
 *   rsp+0        cm_regfile (424 bytes, padded to 432)
 *   rsp+432      rflags (pushfq)
 *   rsp+440      the gap: CM_RESUME_GAP bytes the trampolines never touch
 *   rsp+440+GAP  return address (site + 5 for a breakpoint)
 *   rsp+448+GAP  the guest's rsp at the patch site
 *
 * The gap is what a debugger may use below the stopped guest's rsp while the
 * regfile is live: gdb's inferior calls write a return address (and
 * arguments) below rsp and move rsp there (gdbstub/target.py checks that the
 * new rsp keeps clear of this frame).
 *
 * Resuming (RESUME_REGFILE) honours every register of the regfile, rsp too:
 * rflags and rip+5 (rip is a patch site, a no-op) are written just below the
 * regfile's rsp, then `popfq; ret` lands there.  With rsp unchanged those are
 * the call's own return-address slot and the dead word below it.
 */
#define S(x) #x
#define XS(x) S(x)
#define CM_RESUME_GAP 4096
#define GAP XS(CM_RESUME_GAP)
_Static_assert(CM_RESUME_GAP == CM_RESUME_GAP_BYTES, "the header's gap is the trampolines' gap");
_Static_assert(offsetof(cm_regfile, control) == 404, "control offset");

#define SAVE_REGFILE                                   \
    "lea rsp, [rsp-" GAP "]\n"                         \
    "pushfq\n"                                         \
    "sub rsp, 432\n"                                   \
    "mov [rsp+0], rax\n"                               \
    "mov [rsp+8], rbx\n"                               \
    "mov [rsp+16], rcx\n"                              \
    "mov [rsp+24], rdx\n"                              \
    "mov [rsp+32], rsi\n"                              \
    "mov [rsp+40], rdi\n"                              \
    "mov [rsp+48], rbp\n"                              \
    "lea rax, [rsp+448+" GAP "]\n"                     \
    "mov [rsp+56], rax\n"                              \
    "mov [rsp+64], r8\n"                               \
    "mov [rsp+72], r9\n"                               \
    "mov [rsp+80], r10\n"                              \
    "mov [rsp+88], r11\n"                              \
    "mov [rsp+96], r12\n"                              \
    "mov [rsp+104], r13\n"                             \
    "mov [rsp+112], r14\n"                             \
    "mov [rsp+120], r15\n"                             \
    "mov rax, [rsp+432]\n"                             \
    "mov [rsp+136], rax\n"                             \
    "movdqu [rsp+144], xmm0\n"                         \
    "movdqu [rsp+160], xmm1\n"                         \
    "movdqu [rsp+176], xmm2\n"                         \
    "movdqu [rsp+192], xmm3\n"                         \
    "movdqu [rsp+208], xmm4\n"                         \
    "movdqu [rsp+224], xmm5\n"                         \
    "movdqu [rsp+240], xmm6\n"                         \
    "movdqu [rsp+256], xmm7\n"                         \
    "movdqu [rsp+272], xmm8\n"                         \
    "movdqu [rsp+288], xmm9\n"                         \
    "movdqu [rsp+304], xmm10\n"                        \
    "movdqu [rsp+320], xmm11\n"                        \
    "movdqu [rsp+336], xmm12\n"                        \
    "movdqu [rsp+352], xmm13\n"                        \
    "movdqu [rsp+368], xmm14\n"                        \
    "movdqu [rsp+384], xmm15\n"                        \
    "stmxcsr [rsp+400]\n"                              \
    "mov dword ptr [rsp+404], 0\n" /* control */        \
    "mov qword ptr [rsp+408], 0\n"                     \
    "mov qword ptr [rsp+416], 0\n"

/* Calls cm_dispatch_event(kind=edi, code=esi, regfile, vmctx) on the host
 * stack.  Leaves rbx = regfile, r12 = sc; clobbers the rest (they are all
 * restored from the regfile afterwards). */
#define CALL_HOST_EVENT                                \
    "mov rbx, rsp\n"                                   \
    "mov r12, [r15]\n"                                 \
    "mov [r12+8], rsp\n"                               \
    "mov rdx, rbx\n"                                   \
    "mov rcx, r15\n"                                   \
    "mov rsp, [r12]\n"                                 \
    "and rsp, -16\n"                                   \
    "cld\n"                                            \
    "call cm_dispatch_event\n"                         \
    "mov rsp, rbx\n"

__asm__(
    ".intel_syntax noprefix\n"
    ".text\n"

    /* Everything from here to cm_runtime_code_end is runtime code a guest frame
     * can return into or stop in; the stub describes this range to debuggers. */
    ".globl cm_runtime_code_start\n"
    "cm_runtime_code_start:\n"
    /* uint64_t cm_enter(code=rdi, vmctx=rsi, args=rdx, sc=rcx, guest_sp=r8, entry_thunk=r9) */
    ".globl cm_enter\n"
    ".type cm_enter, @function\n"
    "cm_enter:\n"
    "  push rbp\n"
    "  mov rbp, rsp\n"
    "  push rbx\n"
    "  push r12\n"
    "  push r13\n"
    "  push r14\n"
    "  push r15\n"
    "  push rcx\n"
    "  push qword ptr [rcx]\n"
    "  push qword ptr [rcx+8]\n"
    "  mov [rcx], rsp\n"
    "  inc qword ptr [rcx+40]\n"
    "  test r8, r8\n"
    "  jnz 1f\n"
    /* nested entry: continue below the guest rsp of the enclosing host call,
     * leaving room for anything the guest had just below it */
    "  mov r8, [rcx+8]\n"
    "  sub r8, 256\n"
    "1:\n"
    "  mov rsp, r8\n"
    "  and rsp, -16\n"
    "  mov r15, rsi\n"
    "  mov rsi, rdx\n"
    "  xor ebp, ebp\n" /* terminates the rbp chain for unwinders */
    "  test r9, r9\n"
    "  jz 2f\n"
    "  call r9\n" /* the thunk's `call rdi` calls the guest */
    "  jmp 3f\n"
    "2:\n"
    "  call rdi\n"
    "3:\n"
    "  xor eax, eax\n"
    "  mov rcx, [r15]\n"
    "  mov rsp, [rcx]\n"
    "cm_enter_restore:\n" /* rsp = the cm_enter frame's sc->host_rsp, eax = result */
    "  mov rcx, [rsp+16]\n"
    "  mov [rcx+32], rax\n"
    "  dec qword ptr [rcx+40]\n"
    "  pop rdx\n"
    "  mov [rcx+8], rdx\n"
    "  pop rdx\n"
    "  mov [rcx], rdx\n"
    "  add rsp, 8\n"
    "  pop r15\n"
    "  pop r14\n"
    "  pop r13\n"
    "  pop r12\n"
    "  pop rbx\n"
    "  pop rbp\n"
    "  ret\n"
    ".size cm_enter, .-cm_enter\n"

    /* Reached by `call veneer` at a patch site (the veneer jumps here), so the
     * stack top is the return address site+5. */
    ".globl cm_breakpoint_trampoline\n"
    ".type cm_breakpoint_trampoline, @function\n"
    "cm_breakpoint_trampoline:\n"
    SAVE_REGFILE
    "  mov rax, [rsp+440+" GAP "]\n"
    "  sub rax, 5\n"
    "  mov [rsp+128], rax\n"
    "  mov edi, 1\n"
    "  xor esi, esi\n"
    CALL_HOST_EVENT
    /* rip = 0 from the host: end the guest (a debugger's kill); unwind like a
     * trap with the code in control, CM_TRAP_KILLED when that is 0 */
    "  cmp qword ptr [rsp+128], 0\n"
    "  jne cm_resume_regfile\n"
    "  mov eax, [rsp+404]\n"
    "  test eax, eax\n"
    "  jnz 4f\n"
    "  mov eax, 0xfffe\n"
    "4:\n"
    "  mov rsp, [r12]\n"
    "  jmp cm_enter_restore\n"
    /* rsp = a regfile frame: restore every register from it, rsp included,
     * and continue after the (possibly moved) site rip (the site is a no-op) */
    "cm_resume_regfile:\n"
    "  ldmxcsr [rsp+400]\n"
    "  movdqu xmm0, [rsp+144]\n"
    "  movdqu xmm1, [rsp+160]\n"
    "  movdqu xmm2, [rsp+176]\n"
    "  movdqu xmm3, [rsp+192]\n"
    "  movdqu xmm4, [rsp+208]\n"
    "  movdqu xmm5, [rsp+224]\n"
    "  movdqu xmm6, [rsp+240]\n"
    "  movdqu xmm7, [rsp+256]\n"
    "  movdqu xmm8, [rsp+272]\n"
    "  movdqu xmm9, [rsp+288]\n"
    "  movdqu xmm10, [rsp+304]\n"
    "  movdqu xmm11, [rsp+320]\n"
    "  movdqu xmm12, [rsp+336]\n"
    "  movdqu xmm13, [rsp+352]\n"
    "  movdqu xmm14, [rsp+368]\n"
    "  movdqu xmm15, [rsp+384]\n"
    /* [new rsp - 16] = rflags, [new rsp - 8] = rip + 5: both at or above
     * this frame's gap (the host checked the new rsp) */
    "  mov rax, [rsp+56]\n"
    "  sub rax, 16\n"
    "  mov rcx, [rsp+136]\n"
    "  mov [rax], rcx\n"
    "  mov rcx, [rsp+128]\n"
    "  add rcx, 5\n"
    "  mov [rax+8], rcx\n"
    "  mov [rsp+56], rax\n"
    "  mov r8, [rsp+64]\n"
    "  mov r9, [rsp+72]\n"
    "  mov r10, [rsp+80]\n"
    "  mov r11, [rsp+88]\n"
    "  mov r12, [rsp+96]\n"
    "  mov r13, [rsp+104]\n"
    "  mov r14, [rsp+112]\n"
    "  mov r15, [rsp+120]\n"
    "  mov rbp, [rsp+48]\n"
    "  mov rdi, [rsp+40]\n"
    "  mov rsi, [rsp+32]\n"
    "  mov rdx, [rsp+24]\n"
    "  mov rcx, [rsp+16]\n"
    "  mov rbx, [rsp+8]\n"
    "  mov rax, [rsp+0]\n"
    "  mov rsp, [rsp+56]\n"
    "  popfq\n"
    "  ret\n"
    ".size cm_breakpoint_trampoline, .-cm_breakpoint_trampoline\n"

    /* Reached by `mov edi, CODE; call trap_veneer` in guest code.  Reports the
     * trap to the host (a debugger may inspect the stopped guest), then
     * unwinds to the innermost cm_enter, which returns CODE. */
    ".globl cm_trap_trampoline\n"
    ".type cm_trap_trampoline, @function\n"
    "cm_trap_trampoline:\n"
    SAVE_REGFILE
    "  mov rax, [rsp+440+" GAP "]\n"
    "  mov [rsp+128], rax\n"
    "  mov r13d, edi\n"
    "  mov esi, edi\n"
    "  mov edi, 2\n"
    CALL_HOST_EVENT
    /* control CM_CONTROL_RESUME: the host moved the guest to a state it can
     * continue from (the one before a debugger's inferior call that trapped) */
    "  cmp dword ptr [rsp+404], 0x7fffffff\n"
    "  je cm_resume_regfile\n"
    "  mov eax, r13d\n"
    "  cmp qword ptr [rsp+128], 0\n"
    "  jne 5f\n"
    "  mov ecx, [rsp+404]\n"
    "  test ecx, ecx\n"
    "  cmovnz eax, ecx\n"
    "5:\n"
    "  mov rsp, [r12]\n"
    "  jmp cm_enter_restore\n"
    ".size cm_trap_trampoline, .-cm_trap_trampoline\n"

    /* Called like a guest function for an import the host implements:
     * r15 = host function context {sc, ...}, rsi = args. */
    ".globl cm_host_call_trampoline\n"
    ".type cm_host_call_trampoline, @function\n"
    "cm_host_call_trampoline:\n"
    "  push rbp\n"
    "  mov rbp, rsp\n"
    "  push rbx\n"
    "  push r12\n"
    "  push r13\n"
    "  mov r13, rsi\n"
    "  mov rbx, [r15]\n"
    "  mov r12, rsp\n"
    "  mov [rbx+8], rsp\n"
    "  mov rdi, r15\n"
    "  mov rsp, [rbx]\n"
    "  and rsp, -16\n"
    "  cld\n"
    "  call cm_dispatch_host_call\n"
    "  mov rsp, r12\n"
    "  test rax, rax\n"
    "  jnz 2f\n"
    /* result 0 also in rax and xmm0, as a compiled callee leaves it
     * (codemem/abi.py "Results"): the caller takes it from there */
    "  mov rax, [r13]\n"
    "  movq xmm0, rax\n"
    "  pop r13\n"
    "  pop r12\n"
    "  pop rbx\n"
    "  pop rbp\n"
    "  ret\n"
    "2:\n"
    "  mov rsp, [rbx]\n"
    "  jmp cm_enter_restore\n"
    ".size cm_host_call_trampoline, .-cm_host_call_trampoline\n"

    /* Where a debugger's inferior call returns (gdb pushes the entry point of
     * the executable image as the called function's return address, GDB
     * manual "Calling Program Functions"): a permanent breakpoint, so the
     * guest stops there with the function's result in rax/xmm0 whether or
     * not the debugger inserted its own.  Resumed without new registers it
     * stops again. */
    ".globl cm_call_landing\n"
    ".type cm_call_landing, @function\n"
    "cm_call_landing:\n"
    "  call cm_breakpoint_trampoline\n"
    "  jmp cm_call_landing\n"
    ".size cm_call_landing, .-cm_call_landing\n"
    ".globl cm_runtime_code_end\n"
    "cm_runtime_code_end:\n"

    ".att_syntax prefix\n");

extern char cm_breakpoint_trampoline[], cm_trap_trampoline[], cm_host_call_trampoline[], cm_call_landing[];
extern char cm_runtime_code_start[], cm_runtime_code_end[];

uint64_t cm_breakpoint_trampoline_address(void) { return (uint64_t)(uintptr_t)cm_breakpoint_trampoline; }
uint64_t cm_trap_trampoline_address(void) { return (uint64_t)(uintptr_t)cm_trap_trampoline; }
uint64_t cm_host_call_trampoline_address(void) { return (uint64_t)(uintptr_t)cm_host_call_trampoline; }
uint64_t cm_enter_address(void) { return (uint64_t)(uintptr_t)cm_enter; }
uint64_t cm_call_landing_address(void) { return (uint64_t)(uintptr_t)cm_call_landing; }
uint64_t cm_runtime_code_start_address(void) { return (uint64_t)(uintptr_t)cm_runtime_code_start; }
uint64_t cm_runtime_code_end_address(void) { return (uint64_t)(uintptr_t)cm_runtime_code_end; }

/* ------------------------------------------------------------------------ */
/* The agent's printf (dprintf-style agent)                                  */
/* ------------------------------------------------------------------------ */

/* Region kinds of the hook area's table (codemem/sitehooks.py). */
enum { REGION_FIXED = 0, REGION_MEMORY = 1, REGION_MIRROR = 2 };

/* The native address of client address `addr` and how many bytes from it are
 * readable in its region; 0 when no region holds it. */
static uint64_t readable_span(const uint64_t *regions, uint64_t addr, uint64_t *native)
{
    if (!regions)
        return 0;
    uint64_t count = regions[0];
    const uint64_t *row = regions + 1;
    for (uint64_t i = 0; i < count; i++, row += 4) {
        uint64_t start = row[0], end = row[1], bias = 0;
        const uint64_t *memdef = (const uint64_t *)(uintptr_t)row[2];
        if (row[3] == REGION_MEMORY) {
            start = memdef[0];
            end = memdef[0] + memdef[1];
        } else if (row[3] == REGION_MIRROR) {
            start = 0;
            end = memdef[1];
            bias = memdef[0];
        }
        if (addr >= start && addr < end) {
            *native = addr + bias;
            return end - addr;
        }
    }
    return 0;
}

struct out_buf {
    char *buf;
    uint64_t size, len;
};

static void put(struct out_buf *out, const char *text, uint64_t n)
{
    for (uint64_t i = 0; i < n && out->len + 1 < out->size; i++)
        out->buf[out->len++] = text[i];
}

uint64_t cm_agent_format(char *buf, uint64_t size, const char *format, uint64_t nargs, const uint64_t *args,
                         const uint64_t *regions)
{
    struct out_buf out = {buf, size, 0};
    uint64_t k = 0;
    const char *p = format;
    if (!size)
        return 0;
    while (*p) {
        if (*p != '%') {
            put(&out, p++, 1);
            continue;
        }
        const char *spec = p++;
        while (*p && strchr("-+ #0", *p))
            p++;
        while (*p && strchr("0123456789.", *p))
            p++;
        const char *length = p;
        while (*p && strchr("hlzjtqL", *p))
            p++;
        int length_len = (int)(p - length);
        char conv = *p;
        if (!conv) {
            put(&out, spec, strlen(spec));
            break;
        }
        p++;
        if (conv == '%') {
            put(&out, "%", 1);
            continue;
        }
        uint64_t value = k < nargs ? args[k] : 0;
        k++;
        /* flags/width/precision of the spec, then our own length and conversion */
        char sub[64];
        int flags_len = (int)(length - spec);
        if (flags_len > 40)
            flags_len = 40;
        memcpy(sub, spec, (size_t)flags_len);
        int bits = 32;
        if (length_len == 1 && length[0] == 'h')
            bits = 16;
        else if (length_len == 2 && length[0] == 'h')
            bits = 8;
        else if (length_len)
            bits = 64;
        char piece[512];
        int n = 0;
        if (conv == 'd' || conv == 'i') {
            long long v = bits == 64 ? (long long)value : bits == 16 ? (short)value : bits == 8 ? (signed char)value
                                                                                    : (int)value;
            memcpy(sub + flags_len, "lld", 4);
            n = snprintf(piece, sizeof piece, sub, v);
        } else if (conv == 'u' || conv == 'x' || conv == 'X' || conv == 'o') {
            unsigned long long v = bits == 64 ? value : value & ((1ULL << bits) - 1);
            sub[flags_len] = 'l';
            sub[flags_len + 1] = 'l';
            sub[flags_len + 2] = conv;
            sub[flags_len + 3] = 0;
            n = snprintf(piece, sizeof piece, sub, v);
        } else if (conv == 'c') {
            memcpy(sub + flags_len, "c", 2);
            n = snprintf(piece, sizeof piece, sub, (int)(unsigned char)value);
        } else if (conv == 'p') {
            char hex[24];
            snprintf(hex, sizeof hex, "%#llx", (unsigned long long)value);
            memcpy(sub + flags_len, "s", 2);
            n = snprintf(piece, sizeof piece, sub, hex);
        } else if (conv == 's') {
            char text[400];
            uint64_t native, len = 0;
            uint64_t span = readable_span(regions, value, &native);
            if (!span) {
                memcpy(text, "<unreadable>", 13);
            } else {
                const char *src = (const char *)(uintptr_t)native;
                while (len < span && len + 1 < sizeof text && src[len])
                    len++;
                memcpy(text, src, len);
                text[len] = 0;
            }
            memcpy(sub + flags_len, "s", 2);
            n = snprintf(piece, sizeof piece, sub, text);
        } else {
            put(&out, spec, (uint64_t)(p - spec));
            continue;
        }
        if (n > 0)
            put(&out, piece, (uint64_t)n < sizeof piece ? (uint64_t)n : sizeof piece - 1);
    }
    out.buf[out.len] = 0;
    return out.len;
}

void cm_agent_printf(const char *format, uint64_t nargs, const uint64_t *args, const uint64_t *regions)
{
    char buf[4096];
    uint64_t len = cm_agent_format(buf, sizeof buf, format, nargs, args, regions);
    const char *p = buf;
    while (len) {
        ssize_t n = write(1, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += n;
        len -= (uint64_t)n;
    }
}

uint64_t cm_agent_printf_address(void) { return (uint64_t)(uintptr_t)cm_agent_printf; }
