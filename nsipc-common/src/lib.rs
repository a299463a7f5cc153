//! The event ABI shared by the eBPF probes (`nsipc-ebpf`) and the userspace agent.
//!
//! Every probe writes one fixed-size [`Record`] into the `EVENTS` ring buffer. The meaning of
//! `args` and `ret` depends on `kind` (see [`EventKind`]); userspace decodes by copying the bytes
//! into a `Record`, never by casting the ring buffer pointer.
#![no_std]

/// Name of the ring buffer map that carries [`Record`]s.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the per-CPU array counting records the ring buffer had no room for, one `u64` slot
/// per [`EventKind`] id (slot 0 unused; the benchmark floor has only that one).
pub const LOST_MAP: &str = "LOST";
/// Slots of the probes' `LOST` map: every [`EventKind`] id indexes one.
pub const LOST_SLOTS: u32 = EventKind::MqueueEvicted as u32 + 1;

/// Name of the read-only global ([`KernelOffsets`]) userspace fills in before load.
pub const OFFSETS_GLOBAL: &str = "OFFSETS";
/// Name of the read-only global (`u64`): bytes of unread data in the ring buffer past which a
/// probe forces a wakeup.
pub const WAKEUP_THRESHOLD_GLOBAL: &str = "WAKEUP_THRESHOLD";
/// Name of the read-only global (`u32`): the agent's own process id, whose `*ctl` calls (the
/// `IPC_STAT` that completes its inventory) the probes do not record.
pub const AGENT_TGID_GLOBAL: &str = "AGENT_TGID";

/// Name of the read-only global (`i32`): the hierarchy (`cgroup_root.hierarchy_id`, 0 for
/// cgroup v2's) whose new cgroups the probes report; -1 for none.
pub const CGROUP_HIERARCHY_GLOBAL: &str = "CGROUP_HIERARCHY";
/// Name of the LRU hash map: cgroup id → its path (NUL-padded), written as each cgroup of the
/// attributed hierarchy is created, so that a container that comes and goes between two reads
/// of the ring buffer is still known by its path.
pub const CGROUP_PATHS_MAP: &str = "CGROUP_PATHS";
/// Bytes of a path in [`CGROUP_PATHS_MAP`] (longer ones are cut).
pub const CGROUP_PATH_LEN: usize = 256;

/// Name of the read-only global ([`CodeRanges`]): where in the kernel's text a `kfree` of a
/// tracked pointer can be called from.
pub const KFREE_CALLERS_GLOBAL: &str = "KFREE_CALLERS";

/// Name of the read-only global ([`CodeRanges`]): the pieces of `mqueue_evict_inode`, whose
/// `kfree` calls tell the kfree program that a POSIX message queue died (a subset of
/// [`KFREE_CALLERS_GLOBAL`]'s ranges).
pub const MQUEUE_EVICT_GLOBAL: &str = "MQUEUE_EVICT";

/// At most this many code ranges in a [`CodeRanges`].
pub const MAX_CODE_RANGES: usize = 8;

/// Kernel text address ranges, `[start, end)` each; empty ranges (start == end) match nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeRanges {
    pub ranges: [[u64; 2]; MAX_CODE_RANGES],
}

impl CodeRanges {
    /// No address.
    pub const NOWHERE: Self = Self {
        ranges: [[0; 2]; MAX_CODE_RANGES],
    };

    /// Every address: no filtering.
    pub const EVERYWHERE: Self = {
        let mut ranges = [[0; 2]; MAX_CODE_RANGES];
        ranges[0] = [0, u64::MAX];
        Self { ranges }
    };

    /// Reads one range at a time, volatile, stopping at the first match: on the probes' side
    /// `self` is a load-time global that the compiler must not assume it knows, and a copy of
    /// the whole table would go through the stack, which costs a cache miss on a hot path.
    #[inline(always)]
    pub fn contains(&self, address: u64) -> bool {
        let mut i = 0;
        while i < MAX_CODE_RANGES {
            // SAFETY: a reference to an element of self.
            let [start, end] = unsafe { core::ptr::read_volatile(&self.ranges[i]) };
            if address >= start && address < end {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// Byte offsets of the kernel fields the probes read (and one constant, `xa_chunk_shift`), from
/// the running kernel's BTF, never from headers: `ipc_namespace` and `task_struct` are
/// `__randomize_layout`, `ns_common` changed in 6.18. [`NO_OFFSET`] marks a field this kernel
/// does not have.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.nsproxy`
    pub task_nsproxy: u32,
    /// `task_struct.pid`
    pub task_pid: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.comm`
    pub task_comm: u32,
    /// `task_struct.cred`: the subjective credentials
    pub task_cred: u32,
    /// `task_struct.real_parent`
    pub task_real_parent: u32,
    /// `cred.uid.val`
    pub cred_uid: u32,
    /// `cred.euid.val`: the uid the kernel makes an object's owner (`ipc_addid`)
    pub cred_euid: u32,
    /// `task_struct.cgroups`: the task's `struct css_set *`
    pub task_cgroups: u32,
    /// Where in `struct css_set` the cgroup the agent attributes tasks by is reached: the
    /// `struct cgroup_subsys_state *` of one cgroup v1 controller (`subsys[i]`), or on a
    /// cgroup v2 host `dfl_cgrp` (a `struct cgroup *`, whose first member is its own
    /// `cgroup_subsys_state`, so both are read the same way). [`NO_OFFSET`]: not attributed.
    pub css_set_css: u32,
    /// `cgroup_subsys_state.cgroup`
    pub css_cgroup: u32,
    /// `cgroup.kn`
    pub cgroup_kn: u32,
    /// `kernfs_node.id`: on 64-bit kernels the inode number of the cgroup's directory
    pub kernfs_node_id: u32,
    /// `cgroup.root`
    pub cgroup_root: u32,
    /// `cgroup_root.hierarchy_id`
    pub cgroup_root_hierarchy_id: u32,
    /// `nsproxy.ipc_ns`
    pub nsproxy_ipc_ns: u32,
    /// `ipc_namespace.ns.inum`
    pub ipc_ns_inum: u32,
    /// `ipc_namespace.ns.ns_id` (6.18+), or [`NO_OFFSET`]
    pub ipc_ns_id: u32,
    /// `ipc_namespace.ns` reference count (`ns_common.__ns_ref` on 6.18, `count` before): zero
    /// while the namespace is being torn down
    pub ipc_ns_refcount: u32,
    /// `ipc_namespace.shm_rmid_forced`: the namespace's kernel.shm_rmid_forced sysctl
    pub ipc_ns_shm_rmid_forced: u32,
    /// `ipc_namespace.ids`: `struct ipc_ids[3]`, indexed msg, sem, shm
    pub ipc_ns_ids: u32,
    /// `sizeof(struct ipc_ids)`
    pub ipc_ids_size: u32,
    /// `ipc_ids.ipcs_idr.idr_rt.xa_head`: the root of the id → object xarray
    pub ipc_ids_xa_head: u32,
    /// `xa_node.shift`
    pub xa_node_shift: u32,
    /// `xa_node.slots`
    pub xa_node_slots: u32,
    /// Not an offset: `XA_CHUNK_SHIFT`, log2 of the length of `xa_node.slots` (6: 64 slots, on
    /// every kernel without CONFIG_BASE_SMALL), the bits of an index each xarray level takes
    pub xa_chunk_shift: u32,
    /// `kern_ipc_perm.id`
    pub perm_id: u32,
    /// `kern_ipc_perm.key`
    pub perm_key: u32,
    /// `shmid_kernel.shm_perm`
    pub shm_perm: u32,
    /// `msg_queue.q_perm`
    pub msg_perm: u32,
    /// `msg_queue.q_cbytes`: the bytes of the messages in the queue
    pub msg_cbytes: u32,
    /// `msg_queue.q_qbytes`: the most bytes the queue takes (kernel.msgmnb at its creation,
    /// or what IPC_SET made it)
    pub msg_qbytes: u32,
    /// `kern_ipc_perm.rcu`: what shm_rcu_free() is handed
    pub perm_rcu: u32,
    /// `pt_regs.di`: the first syscall argument (x86-64 syscall order: di, si, dx, r10, r8, r9)
    pub pt_regs_di: u32,
    /// `pt_regs.si`: the second syscall argument
    pub pt_regs_si: u32,
    /// `pt_regs.dx`: the third syscall argument
    pub pt_regs_dx: u32,
    /// `pt_regs.r10`: the fourth syscall argument (the syscall ABI's stand-in for `cx`, which
    /// the `syscall` instruction overwrites)
    pub pt_regs_r10: u32,
    /// `pt_regs.orig_ax`: the syscall number, which checks that the registers read are the
    /// current syscall's
    pub pt_regs_orig_ax: u32,
    /// Not an offset: 1 if the kernel has `bpf_get_current_task_btf` (5.11+), whose pointer
    /// the probes read fields through with plain loads; 0 on older kernels, where the probes
    /// take `bpf_get_current_task` and read every field with `bpf_probe_read_kernel`. The
    /// verifier sees the value (frozen `.rodata`) and drops the other path.
    pub task_btf: u32,
    /// Not an offset: 1 if the kernel has `bpf_task_pt_regs` (5.15+); 0 on older kernels,
    /// where a syscall's saved user registers are found at the top of the task's stack
    /// (`task_pt_regs()`: `task->stack + THREAD_SIZE - sizeof(struct pt_regs)`)
    pub task_pt_regs: u32,
    /// Not an offset: 1 if the BTF types the x86-64 syscall wrappers' `regs` argument (a
    /// pointer to `struct pt_regs`), which fentry/fexit programs then read; 0 where it points
    /// to a forward declaration (5.10), which the verifier refuses to let them read: they find
    /// the registers at the top of the task's stack instead, as for `task_pt_regs`
    pub wrapper_regs: u32,
    /// `task_struct.stack`
    pub task_stack: u32,
    /// Not an offset into a struct: `THREAD_SIZE - sizeof(struct pt_regs)`, where in the
    /// task's stack its saved user registers are, for kernels without `bpf_task_pt_regs`
    pub stack_pt_regs: u32,
    /// `task_struct.files`
    pub task_files: u32,
    /// `files_struct.fdt`
    pub files_fdt: u32,
    /// `fdtable.fd`: the `struct file *` array
    pub fdtable_fd: u32,
    /// `file.f_inode`
    pub file_inode: u32,
    /// `inode.i_ino`
    pub inode_ino: u32,
}

impl KernelOffsets {
    /// Every offset unknown: what the probes see if userspace forgot to fill them in.
    pub const UNKNOWN: Self = Self {
        task_nsproxy: NO_OFFSET,
        task_pid: NO_OFFSET,
        task_tgid: NO_OFFSET,
        task_comm: NO_OFFSET,
        task_cred: NO_OFFSET,
        task_real_parent: NO_OFFSET,
        cred_uid: NO_OFFSET,
        cred_euid: NO_OFFSET,
        task_cgroups: NO_OFFSET,
        css_set_css: NO_OFFSET,
        css_cgroup: NO_OFFSET,
        cgroup_kn: NO_OFFSET,
        kernfs_node_id: NO_OFFSET,
        cgroup_root: NO_OFFSET,
        cgroup_root_hierarchy_id: NO_OFFSET,
        nsproxy_ipc_ns: NO_OFFSET,
        ipc_ns_inum: NO_OFFSET,
        ipc_ns_id: NO_OFFSET,
        ipc_ns_refcount: NO_OFFSET,
        ipc_ns_shm_rmid_forced: NO_OFFSET,
        ipc_ns_ids: NO_OFFSET,
        ipc_ids_size: NO_OFFSET,
        ipc_ids_xa_head: NO_OFFSET,
        xa_node_shift: NO_OFFSET,
        xa_node_slots: NO_OFFSET,
        xa_chunk_shift: NO_OFFSET,
        perm_id: NO_OFFSET,
        perm_key: NO_OFFSET,
        shm_perm: NO_OFFSET,
        msg_perm: NO_OFFSET,
        msg_cbytes: NO_OFFSET,
        msg_qbytes: NO_OFFSET,
        perm_rcu: NO_OFFSET,
        pt_regs_di: NO_OFFSET,
        pt_regs_si: NO_OFFSET,
        pt_regs_dx: NO_OFFSET,
        pt_regs_r10: NO_OFFSET,
        pt_regs_orig_ax: NO_OFFSET,
        task_btf: 0,
        task_pt_regs: 0,
        wrapper_regs: 0,
        task_stack: NO_OFFSET,
        stack_pt_regs: NO_OFFSET,
        task_files: NO_OFFSET,
        files_fdt: NO_OFFSET,
        fdtable_fd: NO_OFFSET,
        file_inode: NO_OFFSET,
        inode_ino: NO_OFFSET,
    };
}

/// Index of the msg ids in `ipc_namespace.ids` (`IPC_MSG_IDS` in ipc/util.h).
pub const IPC_MSG_IDS: u32 = 1;
/// Index of the shm ids in `ipc_namespace.ids` (`IPC_SHM_IDS` in ipc/util.h).
pub const IPC_SHM_IDS: u32 = 2;

/// `IPCMNI_SHIFT` (ipc/util.h): a SysV IPC id is `seq << shift | index`, with this shift
/// unless the kernel was booted with `ipcmni_extend`.
pub const IPCMNI_SHIFT: u32 = 15;
/// `IPCMNI_EXTEND_SHIFT`: the shift of a kernel booted with `ipcmni_extend` (indices up to
/// 2^24 - 1).
pub const IPCMNI_EXTEND_SHIFT: u32 = 24;

/// Name of the read-only global (`u32`): the running kernel's shift of the sequence number in
/// SysV IPC ids (the kernel's `ipc_mni_shift`), [`IPCMNI_SHIFT`] or [`IPCMNI_EXTEND_SHIFT`].
pub const IPC_ID_SHIFT_GLOBAL: &str = "IPC_ID_SHIFT";

/// The index part of SysV IPC id `id` (`ipcid_to_idx()`), on a kernel whose ids put the
/// sequence number `shift` bits up.
#[inline(always)]
pub const fn ipc_index(id: i32, shift: u32) -> u32 {
    id as u32 & ((1 << (shift & 31)) - 1)
}

/// Offset value meaning "this kernel has no such field".
pub const NO_OFFSET: u32 = u32::MAX;

/// Inode number of the initial (host) IPC namespace: `PROC_IPC_INIT_INO` in
/// `include/linux/proc_ns.h`, fixed since Linux 3.8.
pub const HOST_IPC_NS_INUM: u32 = 0xEFFF_FFFF;

/// `CLONE_NEWIPC` from `include/uapi/linux/sched.h`.
pub const CLONE_NEWIPC: u64 = 0x0800_0000;

/// What a [`Record`] describes. The numeric ids are part of the ABI: never renumber.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `msgget` returned. args: key, msgflg. ret: id or -errno.
    MsgGet = 1,
    /// `shmget` returned. args: key, size, shmflg. ret: id or -errno.
    ShmGet = 2,
    /// `semget` returned. args: key, nsems, semflg. ret: id or -errno.
    SemGet = 3,
    /// `msgctl` returned. args: msqid, cmd. ret: 0/value or -errno.
    MsgCtl = 4,
    /// `shmctl` returned. args: shmid, cmd, -, and for a successful `IPC_RMID` 1 if the segment
    /// is still listed (attached, so only marked for destruction), 0 if it is gone.
    ShmCtl = 5,
    /// `semctl` returned. args: semid, semnum, cmd. ret: 0/value or -errno.
    SemCtl = 6,
    /// `shmat` returned. args: shmid, requested address, shmflg. ret: address or -errno.
    ShmAttach = 7,
    /// `shmdt` returned. args: address, 1 if the caller's namespace has kernel.shm_rmid_forced
    /// set. ret: 0 or -errno.
    ShmDetach = 8,
    /// `unshare(flags)` with `CLONE_NEWIPC` returned. args: flags. `other_ns`: namespace before.
    Unshare = 9,
    /// `setns` that switched the IPC namespace, or asked to (nstype has `CLONE_NEWIPC`).
    /// args: fd, nstype. `other_ns`: namespace before.
    Setns = 10,
    /// A task was created with `CLONE_NEWIPC` (ret = child tid, args: flags, child tgid; `ns` is
    /// the child's new namespace, `other_ns` the parent's), or such a clone failed (ret -errno).
    Clone = 11,
    /// A task whose IPC namespace is not the host's exited (its namespace reference is about to
    /// be dropped). args: 1 if that namespace has kernel.shm_rmid_forced set.
    ProcessExit = 12,
    /// An IPC namespace the probes had seen was freed (`kfree` of its `ipc_namespace`): it is
    /// really gone, with every object still in it. `ns` is the freed namespace.
    NsFreed = 13,
    /// A shm segment the probes had seen was freed (`kfree` of its `shmid_kernel`).
    /// `ns`: its namespace. args: id, key, where its namespace stood when the free came (0
    /// live, 1 being torn down, 2 already freed: the segment was its namespace's, whose free
    /// came first, even where a new namespace took the inum and the memory), 1 if the
    /// namespace has kernel.shm_rmid_forced set.
    ShmFreed = 14,
    /// A cgroup was made in the hierarchy tasks are attributed by. args: its id. Its path is
    /// in [`CGROUP_PATHS_MAP`].
    CgroupMkdir = 15,
    /// A cgroup of the hierarchy tasks are attributed by was removed (a container ended).
    /// args: its id.
    CgroupRmdir = 16,
    /// Never a record: the kind of the [`ACTIVITY_MAP`] counters of successful `msgsnd` calls
    /// (units: bytes sent), and the `LOST` slot of those the map had no room for.
    MsgSend = 17,
    /// Never a record: [`ACTIVITY_MAP`] counters of successful `msgrcv` calls (units: bytes
    /// received).
    MsgReceive = 18,
    /// Never a record: [`ACTIVITY_MAP`] counters of successful `semop`/`semtimedop` calls
    /// (units: the operations, `nsops`, they made).
    SemOp = 19,
    /// `mq_open` returned. args: oflag, mode, the `mq_maxmsg` and `mq_msgsize` it asked for
    /// (0 without attributes). ret: fd or -errno. An [`MqueueTail`] follows: the name as the
    /// caller passed it, and the inode number of the queue the fd is open on.
    MqueueOpen = 20,
    /// `mq_unlink` returned. ret: 0 or -errno. An [`MqueueTail`] follows: the name (inode 0).
    MqueueUnlink = 21,
    /// A POSIX message queue's inode was evicted: the queue is gone (after its unlink and
    /// last close, or with its namespace's mqueue mount), or an `mq_open` that failed after
    /// making the inode dropped it. `ns` is not read. args: the number of the syscall the
    /// evicting thread is in (`orig_ax`; 0 for a kernel thread, -1 unread). An
    /// [`MqueueTail`] follows, with no name; its inode number is 0 where the hook cannot
    /// see the inode (the kfree program, which only sees that `mqueue_evict_inode` ran):
    /// userspace then finds which queue went.
    MqueueEvicted = 22,
}

impl EventKind {
    /// The kind of a record with this ABI id, if any: the activity kinds are never records.
    pub const fn from_record(id: u32) -> Option<Self> {
        match Self::from_u32(id) {
            Some(Self::MsgSend | Self::MsgReceive | Self::SemOp) => None,
            other => other,
        }
    }

    /// The kind with this ABI id, if any.
    pub const fn from_u32(id: u32) -> Option<Self> {
        Some(match id {
            1 => Self::MsgGet,
            2 => Self::ShmGet,
            3 => Self::SemGet,
            4 => Self::MsgCtl,
            5 => Self::ShmCtl,
            6 => Self::SemCtl,
            7 => Self::ShmAttach,
            8 => Self::ShmDetach,
            9 => Self::Unshare,
            10 => Self::Setns,
            11 => Self::Clone,
            12 => Self::ProcessExit,
            13 => Self::NsFreed,
            14 => Self::ShmFreed,
            15 => Self::CgroupMkdir,
            16 => Self::CgroupRmdir,
            17 => Self::MsgSend,
            18 => Self::MsgReceive,
            19 => Self::SemOp,
            20 => Self::MqueueOpen,
            21 => Self::MqueueUnlink,
            22 => Self::MqueueEvicted,
            _ => return None,
        })
    }
}

/// Name of the hash map ([`ActivityKey`] → [`ActivityCount`]) in which the probes count the
/// traffic through SysV objects (sends, receives, semaphore operations) without writing a
/// record per call; userspace reads it every `--activity-interval`.
pub const ACTIVITY_MAP: &str = "ACTIVITY";
/// Entries of [`ACTIVITY_MAP`]: one per object, process and kind of call. Userspace removes
/// those of ended objects and exited processes once reported.
pub const ACTIVITY_ENTRIES: u32 = 16384;

/// Who did which kind of call on which object, in [`ACTIVITY_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActivityKey {
    /// The namespace of the caller (the object's).
    pub ns: NsRef,
    /// The object's id.
    pub id: i32,
    /// The caller's process (tgid).
    pub pid: u32,
    /// An [`EventKind`] id: [`EventKind::MsgSend`], [`EventKind::MsgReceive`] or
    /// [`EventKind::SemOp`].
    pub kind: u32,
    pub _pad: u32,
}

/// The running totals of one [`ActivityKey`] since the entry was made.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActivityCount {
    /// Successful calls.
    pub calls: u64,
    /// What they moved: bytes for a queue, semaphore operations for a set.
    pub units: u64,
    /// The caller's cgroup at its first call, as [`Record::cgroup`].
    pub cgroup: u64,
    /// The caller's `comm` at its first call.
    pub comm: [u8; COMM_LEN],
    /// msgsnd only: successful sends after which the queue had no room left for another
    /// message of the same size (`q_cbytes + msgsz > q_qbytes`, as read right after the send).
    pub fills: u64,
    /// msgsnd only: sends refused because the queue was full (`EAGAIN`, with `IPC_NOWAIT`).
    pub refused: u64,
    /// msgsnd only: the queue's bytes (`q_cbytes`) at the latest fill or refusal.
    pub queued: u64,
    /// msgsnd only: the queue's limit (`q_qbytes`) then.
    pub limit: u64,
}

/// An IPC namespace as the kernel identifies it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NsRef {
    /// `ns_common.ns_id`: 64-bit, never reused (6.18+); 0 where the kernel has none.
    pub id: u64,
    /// `ns_common.inum`: the number `readlink /proc/PID/ns/ipc` shows; reused at once.
    /// 0 when the task had no namespaces any more (exiting).
    pub inum: u32,
    /// Which life of the inum: a fold of the `struct ipc_namespace *` ([`ns_life`]), 0 where
    /// not known (userspace's inventory). Where the kernel has no `ns_id`, free_ipc_ns()
    /// releases the inum before its kfree(), so a new namespace can take the inum, and its
    /// records come, before the old one's free is recorded; it cannot take the memory before
    /// then (the `kfree` tracepoint fires before the memory is freed), so the address tells
    /// the two lives apart in record order. Never shown: a kernel address.
    pub life: u32,
}

impl NsRef {
    /// Whether `self` and `other` can be one life of one namespace: the same inum, and the
    /// same `ns_id` where both are known, else the same [`Self::life`] where both are known.
    pub fn same_life(&self, other: &NsRef) -> bool {
        self.inum == other.inum
            && if self.id != 0 && other.id != 0 {
                self.id == other.id
            } else {
                self.life == 0 || other.life == 0 || self.life == other.life
            }
    }
}

/// [`NsRef::life`] of the namespace at kernel address `ipc_ns`: both halves folded into 32
/// bits (two namespaces alive at once differ in them), never 0.
pub fn ns_life(ipc_ns: u64) -> u32 {
    ((ipc_ns ^ (ipc_ns >> 32)) as u32).max(1)
}

/// Length of `task_struct.comm`.
pub const COMM_LEN: usize = 16;
/// Number of syscall arguments a record carries.
pub const RECORD_ARGS: usize = 4;

/// One event, as written by a probe into the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Record {
    /// An [`EventKind`] id.
    pub kind: u32,
    /// Thread group id (what userspace calls the pid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Real uid of the task.
    pub uid: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    pub ts_ns: u64,
    /// IPC namespace of the task at the moment of the event (after the call, for syscalls).
    pub ns: NsRef,
    /// The other namespace of a switch: before `unshare`/`setns`, the parent's for `clone`.
    pub other_ns: NsRef,
    /// Syscall return value (negative errno on failure); see [`EventKind`].
    pub ret: i64,
    /// Syscall arguments, as described by [`EventKind`].
    pub args: [u64; RECORD_ARGS],
    /// `task_struct.comm`, NUL-padded, any bytes.
    pub comm: [u8; COMM_LEN],
    /// The task's cgroup in the hierarchy the agent attributes tasks by (see
    /// [`KernelOffsets::css_set_css`]): its `kernfs_node.id`, the inode number of the cgroup's
    /// directory; 0 when not read.
    pub cgroup: u64,
    /// Effective uid of the task.
    pub euid: u32,
    /// Pid (tgid) of the task's parent (`real_parent`: the reaper once the parent is gone);
    /// 0 when not read.
    pub ppid: u32,
}

impl Record {
    /// Size of a record in the ring buffer.
    pub const SIZE: usize = core::mem::size_of::<Record>();

    /// Writes this record to `out` (a ring buffer reservation) a word at a time. The probes
    /// use this: a struct store clears the zero fields with calls to a byte-at-a-time
    /// memset, which the eBPF target has no instruction for.
    ///
    /// # Safety
    /// `out` must be valid for writing `Record::SIZE` bytes and 8-byte aligned.
    #[inline(always)]
    pub unsafe fn store(self, out: *mut Record) {
        // SAFETY: Record is plain integers with no padding (16 words, checked below).
        let words = unsafe { core::mem::transmute::<Record, [u64; Record::SIZE / 8]>(self) };
        let out = out.cast::<u64>();
        let mut i = 0;
        while i < words.len() {
            // SAFETY: inside the record, per the caller's promise.
            unsafe { out.add(i).write_volatile(words[i]) };
            i += 1;
        }
    }

    /// The bytes of this record as a probe writes them into the ring buffer.
    pub fn to_bytes(&self) -> [u8; Record::SIZE] {
        // SAFETY: Record is plain integers with no padding (checked below: 128 bytes, the sum
        // of its fields), so every byte is initialised.
        unsafe { core::mem::transmute_copy(self) }
    }
}

/// Bytes of a queue name an [`MqueueTail`] holds: `NAME_MAX` and its NUL.
pub const MQUEUE_NAME_LEN: usize = 256;

/// What follows the [`Record`] of an mqueue kind ([`EventKind::MqueueOpen`],
/// [`EventKind::MqueueUnlink`], [`EventKind::MqueueEvicted`]) in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MqueueTail {
    /// `inode.i_ino` of the queue, 0 where not known.
    pub ino: u64,
    /// The name as the caller passed it (no leading `/`), NUL-terminated; what follows the
    /// NUL is not cleared.
    pub name: [u8; MQUEUE_NAME_LEN],
}

/// A [`Record`] of an mqueue kind with its [`MqueueTail`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MqueueRecord {
    pub record: Record,
    pub tail: MqueueTail,
}

impl MqueueRecord {
    /// Size of such a record in the ring buffer.
    pub const SIZE: usize = core::mem::size_of::<MqueueRecord>();
}

impl EventKind {
    /// Whether records of this kind are [`MqueueRecord`]s.
    pub const fn has_mqueue_tail(self) -> bool {
        matches!(
            self,
            Self::MqueueOpen | Self::MqueueUnlink | Self::MqueueEvicted
        )
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for Record {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for NsRef {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelOffsets {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for CodeRanges {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for ActivityKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for ActivityCount {}

// The ABI must not change size or alignment by accident: userspace rejects records of any other
// length, and the ring buffer aligns records to 8 bytes.
const _: () = assert!(Record::SIZE == 128);
const _: () = assert!(core::mem::align_of::<Record>() == 8);
const _: () = assert!(MqueueRecord::SIZE == Record::SIZE + 8 + MQUEUE_NAME_LEN);
// Map keys and values are compared and copied as bytes: no padding the compiler leaves.
const _: () = assert!(core::mem::size_of::<ActivityKey>() == 32);
const _: () = assert!(core::mem::size_of::<ActivityCount>() == 72);
