//! Reading kernel structures through offsets userspace took from the running kernel's BTF.
//!
//! Each `kernel:` note names, in brackets, the kernels it was checked on: those of the VM
//! matrix (`cargo xtask vm-test`: Debian's 5.10, 6.1, 6.12) and the host's 6.18, where every
//! hook is attached and every probe test run.
//!
//! kernel: [5.10 6.1 6.12 6.18] include/linux/sched.h: struct task_struct { ... pid_t pid; pid_t tgid; ... struct nsproxy *nsproxy; ... }
//! kernel: [5.10 6.1 6.12 6.18] include/linux/nsproxy.h: struct nsproxy { ... struct ipc_namespace *ipc_ns; ... }
//! kernel: [5.10 6.1 6.12 6.18] include/linux/ipc_namespace.h: struct ipc_namespace { struct ipc_ids ids[3]; ... struct ns_common ns; ... }
//!   (5.10: `refcount_t count` comes first, the namespace's reference count; 5.11 moved it to
//!   ns_common.count, 6.18 renamed it ns_common.__ns_ref)
//! kernel: [5.10 6.1 6.12 6.18] include/linux/sched.h: struct task_struct { ... void *stack; ... }, and
//!   arch/x86/include/asm/processor.h: task_pt_regs(task) is `task->stack + THREAD_SIZE -
//!   TOP_OF_KERNEL_STACK_PADDING` less one `struct pt_regs` (read so before 5.15's bpf_task_pt_regs)
//! kernel: [5.10 6.1 6.12 6.18] include/linux/ns_common.h: struct ns_common { ... unsigned int inum; ... u64 ns_id (6.18) }
//! kernel: [5.10 6.1 6.12 6.18] include/linux/sched.h: struct task_struct { ... struct css_set __rcu *cgroups; ... }
//! kernel: [5.10 6.1 6.12 6.18] include/linux/cgroup-defs.h: struct css_set { struct cgroup_subsys_state *subsys[CGROUP_SUBSYS_COUNT]; ... struct cgroup *dfl_cgrp; ... }
//! kernel: [5.10 6.1 6.12 6.18] include/linux/cgroup-defs.h: struct cgroup_subsys_state { struct cgroup *cgroup; ... }, struct cgroup { struct cgroup_subsys_state self; ... struct kernfs_node *kn; ... }
//! kernel: [5.10 6.1 6.12 6.18] include/linux/kernfs.h: struct kernfs_node { ... u64 id; ... } (5.5+; the directory's inode number on 64-bit)

use aya_ebpf::{Global, helpers::bpf_probe_read_kernel};
use nsipc_common::{KernelOffsets, NO_OFFSET, NsRef, ns_life};

#[unsafe(no_mangle)]
pub(crate) static OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets::UNKNOWN);

/// One field of [`OFFSETS`], read on its own: `OFFSETS.load()` would copy all of them on every
/// use. Volatile, because the compiler must not assume the value the object file holds.
macro_rules! offset {
    ($field:ident) => {
        // SAFETY: Global is repr(transparent) over the value, which is initialised.
        unsafe {
            core::ptr::read_volatile(core::ptr::addr_of!(
                (*(&raw const $crate::task::OFFSETS).cast::<nsipc_common::KernelOffsets>()).$field
            ))
        }
    };
}
pub(crate) use offset;

/// Reads a field at `base + offset`; None for a NULL base, an unknown offset or a failed read.
#[inline(always)]
pub fn read_field<T>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() || offset == NO_OFFSET {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel tolerates any address; a bad one only returns an error.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T).ok() }
}

/// Reads a field of a struct through a pointer the verifier knows the kernel type of (a BTF
/// pointer: `bpf_get_current_task_btf()`, a BTF tracepoint's argument, or a struct pointer
/// loaded through one). A plain load, which the verifier turns into one that reads a bad or
/// NULL pointer as zero: no helper call, several times cheaper than [`read_field`], which the
/// hot paths pay for on every record. The offsets come from the frozen `.rodata`, so the
/// verifier sees them as constants and checks each load against the kernel's BTF.
///
/// On a kernel without `bpf_get_current_task_btf` (before 5.11) the task is a plain address,
/// and every field is read with [`read_field`] instead; `task_btf` is a constant the verifier
/// knows, so each kernel keeps one of the two paths and pays nothing for the other.
#[inline(always)]
pub fn load_field<T: Copy>(base: *const u8, offset: u32) -> Option<T> {
    if offset!(task_btf) == 0 {
        return read_field(base, offset);
    }
    if base.is_null() || offset == NO_OFFSET {
        return None;
    }
    // SAFETY: see above; the kernel recovers from a faulting load.
    Some(unsafe { core::ptr::read(base.wrapping_add(offset as usize) as *const T) })
}

/// `task->nsproxy->ipc_ns`, or NULL once the task dropped its namespaces
/// (`exit_task_namespaces` sets `nsproxy` to NULL). `task` is a BTF pointer.
#[inline(always)]
pub fn ipc_ns_ptr_of(task: *const u8) -> *const u8 {
    load_field::<*const u8>(task, offset!(task_nsproxy))
        .and_then(|nsproxy| load_field::<*const u8>(nsproxy, offset!(nsproxy_ipc_ns)))
        .unwrap_or(core::ptr::null())
}

/// Whether the `struct ipc_namespace` at `ipc_ns` (a BTF pointer) has kernel.shm_rmid_forced
/// set: there, a segment dies without IPC_RMID when its creator exits or its last attachment
/// goes, and the agent must expect its free.
///
/// Not through [`load_field`]'s `Option`: on 5.10 (no BTF task, so a helper read) the
/// compiler kept that `Option` packed in a register and read its payload on the failed path
/// too, and the verifier refused sched_process_exit ("R2 !read_ok"), however the `Option` was
/// unwrapped. Here the helper reads into a zeroed value, which a failed read leaves zero.
#[inline(always)]
pub fn shm_rmid_forced(ipc_ns: *const u8) -> bool {
    let offset = offset!(ipc_ns_shm_rmid_forced);
    if ipc_ns.is_null() || offset == NO_OFFSET {
        return false;
    }
    let field = ipc_ns.wrapping_add(offset as usize) as *const i32;
    if offset!(task_btf) != 0 {
        // SAFETY: a BTF pointer's load; see load_field.
        return unsafe { core::ptr::read(field) } != 0;
    }
    let mut forced: i32 = 0;
    // SAFETY: the helper tolerates any source address; a bad one only fails, leaving 0.
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            (&raw mut forced).cast(),
            core::mem::size_of::<i32>() as u32,
            field.cast(),
        )
    };
    forced != 0
}

/// The identity of the `struct ipc_namespace` at `ipc_ns`, a BTF pointer (zero for NULL).
#[inline(always)]
pub fn ns_ref(ipc_ns: *const u8) -> NsRef {
    NsRef {
        id: load_field::<u64>(ipc_ns, offset!(ipc_ns_id)).unwrap_or(0),
        inum: load_field::<u32>(ipc_ns, offset!(ipc_ns_inum)).unwrap_or(0),
        life: life_of(ipc_ns),
    }
}

/// [`NsRef::life`] of the namespace at `ipc_ns`, on kernels without `ns_id` only (with it,
/// the id tells lives apart and this costs nothing).
#[inline(always)]
fn life_of(ipc_ns: *const u8) -> u32 {
    if ipc_ns.is_null() || offset!(ipc_ns_id) != NO_OFFSET {
        return 0;
    }
    ns_life(address_of(ipc_ns))
}

/// The address `ptr` holds, as a plain number the verifier lets a program compute with (it
/// refuses any arithmetic on a BTF pointer but adding to it): copied out of the stack slot
/// that holds it. 0 for NULL.
#[inline(always)]
pub fn address_of(ptr: *const u8) -> u64 {
    if ptr.is_null() {
        return 0;
    }
    let slot = ptr as u64;
    // SAFETY: reads 8 bytes of this program's own stack.
    unsafe { bpf_probe_read_kernel(&raw const slot) }.unwrap_or(0)
}

/// The IPC namespace of `task` (a `struct task_struct *`).
#[inline(always)]
pub fn ipc_ns_of(task: *const u8) -> NsRef {
    ns_ref(ipc_ns_ptr_of(task))
}

/// The current `struct task_struct *`: a BTF pointer, or before 5.11 a plain address (see
/// [`load_field`]).
#[inline(always)]
pub fn current_task() -> *const u8 {
    if offset!(task_btf) == 0 {
        // SAFETY: no preconditions.
        return unsafe { aya_ebpf::helpers::generated::bpf_get_current_task() } as *const u8;
    }
    // SAFETY: no preconditions.
    unsafe { aya_ebpf::helpers::generated::bpf_get_current_task_btf() as *const u8 }
}

/// `(task->tgid, task->pid)` of `task`, a BTF pointer.
#[inline(always)]
pub fn task_ids(task: *const u8) -> (u32, u32) {
    let tgid = load_field::<u32>(task, offset!(task_tgid)).unwrap_or(0);
    let pid = load_field::<u32>(task, offset!(task_pid)).unwrap_or(0);
    (tgid, pid)
}

/// The pid (tgid) of `task`'s parent (a BTF pointer): `task->real_parent->tgid`, 0 if unread.
#[inline(always)]
pub fn parent_pid(task: *const u8) -> u32 {
    load_field::<*const u8>(task, offset!(task_real_parent))
        .and_then(|parent| load_field::<u32>(parent, offset!(task_tgid)))
        .unwrap_or(0)
}

/// The id of `task`'s cgroup (a BTF pointer) in the hierarchy userspace chose: the
/// `kernfs_node.id` of `task->cgroups->subsys[i]->cgroup` (cgroup v1) or of
/// `task->cgroups->dfl_cgrp` (v2, read through the `cgroup_subsys_state` at its start). 0
/// when the agent does not attribute tasks to cgroups.
#[inline(always)]
pub fn cgroup_of(task: *const u8) -> u64 {
    load_field::<*const u8>(task, offset!(task_cgroups))
        .and_then(|css_set| load_field::<*const u8>(css_set, offset!(css_set_css)))
        .and_then(|css| load_field::<*const u8>(css, offset!(css_cgroup)))
        .and_then(|cgroup| load_field::<*const u8>(cgroup, offset!(cgroup_kn)))
        .and_then(|kn| load_field::<u64>(kn, offset!(kernfs_node_id)))
        .unwrap_or(0)
}
