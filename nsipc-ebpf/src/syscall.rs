//! One syscall, three ways to watch it: the syscall tracepoints, a kprobe/kretprobe pair on the
//! kernel function behind the syscall, or fentry/fexit on that function. Each syscall is
//! described once, by what it does at entry ([`Enter`]) and at exit ([`Exit`]), and
//! [`syscall_hooks!`] defines its programs for the three backends from that: whichever backend
//! userspace attaches, the records are the same.
//!
//! Arguments come from:
//! - `syscalls:sys_enter_*` (kernel/trace/trace_syscalls.c): 8 bytes of common fields,
//!   `int __syscall_nr`, then each argument as an 8-byte slot from offset 16; `sys_exit_*` has
//!   `long ret` at offset 16.
//! - the x86-64 syscall wrapper `long __x64_sys_<name>(const struct pt_regs *regs)` for kprobes
//!   and fentry: the user registers saved at syscall entry ([`wrapper_args`]). The functions
//!   behind the wrappers are no use: `ksys_msgget`, `ksys_unshare` and the like are global but
//!   inlined into the syscall body in their own file (a kprobe on the out-of-line copy never
//!   fires for the syscall, as seen on Debian's 6.1), and `ksys_msgctl` is static and
//!   constprop'd. The wrappers are reached through the syscall table, so they are never inlined.

use aya_ebpf::{
    EbpfContext, helpers::bpf_get_current_pid_tgid, macros::map, maps::LruHashMap,
    programs::TracePointContext,
};
use nsipc_common::{EventKind, NsRef, RECORD_ARGS};

use crate::{
    record::count_lost,
    task::{current_task, load_field, offset, read_field},
};

pub type Args = [u64; RECORD_ARGS];

/// What a syscall carries from its entry to its exit.
#[derive(Clone, Copy)]
pub struct Call {
    pub args: Args,
    /// The thread's IPC namespace at entry (used by the namespace-switching calls).
    pub ns_before: NsRef,
}

/// At entry, given the current task (a BTF pointer, fetched once per program: every helper call
/// costs): what to carry to the exit, or None when the call is of no interest (an unshare
/// without CLONE_NEWIPC, say).
pub type Enter = fn(*const u8, EventKind, Args) -> Option<Call>;
/// At exit, given the current task and the return value: writes the call's record.
pub type Exit = fn(*const u8, EventKind, Call, i64);

/// The plain entry: the arguments, nothing else.
#[inline(always)]
pub fn enter_plain(_task: *const u8, _kind: EventKind, args: Args) -> Option<Call> {
    Some(Call {
        args,
        ns_before: NsRef::default(),
    })
}

/// A syscall in flight on one thread, between its entry and exit programs.
#[derive(Clone, Copy)]
pub struct PendingCall {
    pub kind: u32,
    pub _pad: u32,
    pub call: Call,
}

/// Keyed by pid_tgid. LRU, so a thread killed inside a syscall cannot leak its slot.
#[map(name = "PENDING")]
static PENDING: LruHashMap<u64, PendingCall> = LruHashMap::with_max_entries(16384, 0);

/// An entry program: remembers the call for the exit program. `task` is the current task;
/// `args` None: they could not be read, and the call counts as lost.
#[inline(always)]
pub fn on_enter(task: *const u8, kind: EventKind, enter: Enter, args: Option<Args>) {
    let Some(args) = args else {
        count_lost(kind);
        return;
    };
    if let Some(call) = enter(task, kind, args) {
        let pending = PendingCall {
            kind: kind as u32,
            _pad: 0,
            call,
        };
        // A full LRU map evicts its oldest entry; insert cannot fail for lack of room.
        let _ = PENDING.insert(bpf_get_current_pid_tgid(), pending, 0);
    }
}

/// An exit program: takes back the call this thread remembered, if it was of `kind`.
#[inline(always)]
pub fn on_exit(kind: EventKind, exit: Exit, ret: i64) {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING.get(key) }).copied() else {
        return;
    };
    let _ = PENDING.remove(key);
    if pending.kind == kind as u32 {
        exit(current_task(), kind, pending.call, ret);
    }
}

/// An exit program that sees arguments and return value at once: no map in between. `args`
/// None: they could not be read, and the call counts as lost.
#[inline(always)]
pub fn on_return(
    task: *const u8,
    kind: EventKind,
    enter: Enter,
    exit: Exit,
    args: Option<Args>,
    ret: i64,
) {
    let Some(args) = args else {
        count_lost(kind);
        return;
    };
    if let Some(call) = enter(task, kind, args) {
        exit(task, kind, call, ret);
    }
}

const TRACEPOINT_ARGS_OFFSET: usize = 16;
const TRACEPOINT_RET_OFFSET: usize = 16;

/// The first `N` arguments of a `sys_enter_*` tracepoint.
#[inline(always)]
pub fn tracepoint_args<const N: usize>(ctx: &TracePointContext) -> Args {
    let mut args = [0u64; RECORD_ARGS];
    let mut i = 0;
    while i < N && i < RECORD_ARGS {
        // SAFETY: the offset is inside the tracepoint record for a syscall with >= N arguments.
        args[i] = unsafe { ctx.read_at::<u64>(TRACEPOINT_ARGS_OFFSET + 8 * i) }.unwrap_or(0);
        i += 1;
    }
    args
}

/// The return value of a `sys_exit_*` tracepoint: a plain load from the context (which the
/// verifier allows within the tracepoint's record), not a helper call as `read_at` makes.
#[inline(always)]
pub fn tracepoint_ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: `ret` is at a fixed offset in every sys_exit record.
    unsafe {
        *(ctx.as_ptr() as *const u8)
            .add(TRACEPOINT_RET_OFFSET)
            .cast::<i64>()
    }
}

/// The `n`th argument of the hooked kernel function, whatever the program type.
pub trait FunctionArgs: EbpfContext {
    /// Whether the verifier types the arguments by the kernel's BTF (fentry, fexit), and so
    /// refuses to let a program read one the BTF does not define.
    const TYPED_ARGS: bool = true;

    fn function_arg(&self, n: usize) -> u64;

    /// Reads a field of the `struct pt_regs *` the wrapper gets. fentry/fexit programs see it
    /// typed (a BTF pointer: a plain load); a kprobe sees a bare register value.
    #[inline(always)]
    fn read_regs_field(regs: *const u8, offset: u32) -> Option<u64> {
        load_field(regs, offset)
    }
}

impl FunctionArgs for aya_ebpf::programs::ProbeContext {
    const TYPED_ARGS: bool = false;

    #[inline(always)]
    fn function_arg(&self, n: usize) -> u64 {
        self.arg(n).unwrap_or(0)
    }

    #[inline(always)]
    fn read_regs_field(regs: *const u8, offset: u32) -> Option<u64> {
        read_field(regs, offset)
    }
}

impl FunctionArgs for aya_ebpf::programs::FEntryContext {
    #[inline(always)]
    fn function_arg(&self, n: usize) -> u64 {
        self.arg(n)
    }
}

impl FunctionArgs for aya_ebpf::programs::FExitContext {
    #[inline(always)]
    fn function_arg(&self, n: usize) -> u64 {
        self.arg(n)
    }
}

/// Offset in arch/x86/include/asm/ptrace.h's `struct pt_regs` of syscall argument `n`: the
/// x86-64 syscall order is di, si, dx, r10 (r8, r9 unused here), and the offsets come from the
/// running kernel's BTF like every other. `n` is a constant once the callers' loops are
/// unrolled, so this is one load of a frozen global, which the verifier knows the value of.
#[inline(always)]
fn syscall_arg_offset(n: usize) -> u32 {
    match n {
        0 => offset!(pt_regs_di),
        1 => offset!(pt_regs_si),
        2 => offset!(pt_regs_dx),
        _ => offset!(pt_regs_r10),
    }
}

/// The first `N` arguments of the current thread's syscall, from the user registers the entry
/// code saved on its kernel stack (`task_pt_regs`). The syscall does not change them, so they
/// are still there at its exit tracepoint: no entry program and no map in between. `task` is
/// the current task.
#[inline(always)]
pub fn current_syscall_args<const N: usize>(task: *const u8, nr: i64) -> Option<Args> {
    if offset!(task_pt_regs) == 0 {
        return stack_syscall_args::<N>(task, nr);
    }
    // SAFETY: `task` is the trusted pointer bpf_get_current_task_btf returned, which is what
    // bpf_task_pt_regs takes.
    let regs = unsafe { aya_ebpf::helpers::generated::bpf_task_pt_regs(task as *mut _) };
    Some(regs_args::<N>(regs as *const u8, load_field))
}

/// The first `N` arguments of syscall `nr` of the wrapper `ctx` is in, from its `regs`
/// argument; where the kernel's BTF leaves that untyped (5.10), from the task's stack.
#[inline(always)]
pub fn wrapper_args<const N: usize, C: FunctionArgs>(
    ctx: &C,
    task: *const u8,
    nr: i64,
) -> Option<Args> {
    if C::TYPED_ARGS && offset!(wrapper_regs) == 0 {
        return stack_syscall_args::<N>(task, nr);
    }
    Some(regs_args::<N>(
        ctx.function_arg(0) as *const u8,
        C::read_regs_field,
    ))
}

/// The first `N` arguments of the current thread's syscall `nr`, from the registers saved at
/// the top of its kernel stack, where `task_pt_regs()` finds them: for kernels without
/// `bpf_task_pt_regs` (before 5.15) or with untyped wrapper arguments. That they hold syscall
/// `nr` (`orig_ax`) checks the stack size userspace assumed; if they do not, the arguments
/// are unknown (None), and the caller counts the call as lost.
#[inline(always)]
fn stack_syscall_args<const N: usize>(task: *const u8, nr: i64) -> Option<Args> {
    let regs = stack_regs(task)?;
    if read_field::<i64>(regs, offset!(pt_regs_orig_ax))? != nr {
        return None;
    }
    Some(regs_args::<N>(regs, read_field))
}

/// Where `task_pt_regs()` finds a task's saved user registers: at the top of its kernel stack.
#[inline(always)]
fn stack_regs(task: *const u8) -> Option<*const u8> {
    let stack: *const u8 = read_field(task, offset!(task_stack))?;
    Some(stack.wrapping_add(offset!(stack_pt_regs) as usize))
}

/// The number of the syscall the current thread is in (`orig_ax` of its saved user
/// registers: a kernel thread's are zero), -1 where unread. `task` is the current task.
#[inline(always)]
pub fn current_syscall_nr(task: *const u8) -> i64 {
    let regs = if offset!(task_pt_regs) == 0 {
        stack_regs(task)
    } else {
        // SAFETY: as in current_syscall_args.
        Some(unsafe { aya_ebpf::helpers::generated::bpf_task_pt_regs(task as *mut _) } as *const u8)
    };
    regs.and_then(|regs| read_field::<i64>(regs, offset!(pt_regs_orig_ax)))
        .unwrap_or(-1)
}

/// The first `N` syscall arguments in a saved `struct pt_regs`, each read with `read`.
#[inline(always)]
fn regs_args<const N: usize>(regs: *const u8, read: fn(*const u8, u32) -> Option<u64>) -> Args {
    let mut args = [0u64; RECORD_ARGS];
    let mut i = 0;
    while i < N && i < RECORD_ARGS {
        args[i] = read(regs, syscall_arg_offset(i)).unwrap_or(0);
        i += 1;
    }
    args
}

/// An fexit program gets the return value after the wrapper's one argument.
pub const WRAPPER_RET_ARG: usize = 1;

/// Defines every program that watches one syscall, x86-64 syscall number `nr`. With `fentry =
/// NAME` (and two tracepoint programs), an entry program carries the call to the exit program,
/// for calls whose record needs the state at entry; without, the exit program alone sees
/// arguments and return value: fexit gets both, and the `sys_exit_*` tracepoint reads the
/// arguments from the saved user registers ([`current_syscall_args`]).
macro_rules! syscall_hooks {
    (@kprobe $kind:expr, $n:literal, $nr:literal, $enter:path, $exit:path,
        kprobe($kprobe:ident, $kretprobe:ident)) => {
        #[aya_ebpf::macros::kprobe]
        pub fn $kprobe(ctx: aya_ebpf::programs::ProbeContext) -> u32 {
            let task = $crate::task::current_task();
            let args = $crate::syscall::wrapper_args::<$n, _>(&ctx, task, $nr);
            $crate::syscall::on_enter(task, $kind, $enter, args);
            0
        }

        #[aya_ebpf::macros::kretprobe]
        pub fn $kretprobe(ctx: aya_ebpf::programs::RetProbeContext) -> u32 {
            $crate::syscall::on_exit($kind, $exit, ctx.ret::<i64>());
            0
        }
    };
    ($kind:expr, nr = $nr:literal, nargs = $n:literal, enter = $enter:path, exit = $exit:path,
        tracepoint($tp_enter:ident, $tp_exit:ident),
        kprobe($kprobe:ident, $kretprobe:ident),
        fentry = $fentry:ident, fexit = $fexit:ident $(,)?) => {
        $crate::syscall::syscall_hooks!(@kprobe $kind, $n, $nr, $enter, $exit,
            kprobe($kprobe, $kretprobe));

        #[aya_ebpf::macros::tracepoint]
        pub fn $tp_enter(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            let args = $crate::syscall::tracepoint_args::<$n>(&ctx);
            $crate::syscall::on_enter($crate::task::current_task(), $kind, $enter, Some(args));
            0
        }

        #[aya_ebpf::macros::tracepoint]
        pub fn $tp_exit(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            $crate::syscall::on_exit($kind, $exit, $crate::syscall::tracepoint_ret(&ctx));
            0
        }

        #[aya_ebpf::macros::fentry]
        pub fn $fentry(ctx: aya_ebpf::programs::FEntryContext) -> u32 {
            let task = $crate::task::current_task();
            let args = $crate::syscall::wrapper_args::<$n, _>(&ctx, task, $nr);
            $crate::syscall::on_enter(task, $kind, $enter, args);
            0
        }

        #[aya_ebpf::macros::fexit]
        pub fn $fexit(ctx: aya_ebpf::programs::FExitContext) -> u32 {
            let ret: i64 = ctx.arg($crate::syscall::WRAPPER_RET_ARG);
            $crate::syscall::on_exit($kind, $exit, ret);
            0
        }
    };
    ($kind:expr, nr = $nr:literal, nargs = $n:literal, enter = $enter:path, exit = $exit:path,
        tracepoint($tp_exit:ident),
        kprobe($kprobe:ident, $kretprobe:ident),
        fexit = $fexit:ident $(,)?) => {
        $crate::syscall::syscall_hooks!(@kprobe $kind, $n, $nr, $enter, $exit,
            kprobe($kprobe, $kretprobe));

        #[aya_ebpf::macros::tracepoint]
        pub fn $tp_exit(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            let task = $crate::task::current_task();
            let args = $crate::syscall::current_syscall_args::<$n>(task, $nr);
            let ret = $crate::syscall::tracepoint_ret(&ctx);
            $crate::syscall::on_return(task, $kind, $enter, $exit, args, ret);
            0
        }

        #[aya_ebpf::macros::fexit]
        pub fn $fexit(ctx: aya_ebpf::programs::FExitContext) -> u32 {
            let ret: i64 = ctx.arg($crate::syscall::WRAPPER_RET_ARG);
            let task = $crate::task::current_task();
            let args = $crate::syscall::wrapper_args::<$n, _>(&ctx, task, $nr);
            $crate::syscall::on_return(task, $kind, $enter, $exit, args, ret);
            0
        }
    };
}
pub(crate) use syscall_hooks;
