//! What the running kernel offers: privileges, BTF, tracefs, and the struct layout the probes
//! read. Every check fails with one sentence that says what is missing.

use std::{collections::BTreeMap, fs, path::Path};

use anyhow::{Context as _, Result, bail};

use nsipc_common::{IPCMNI_EXTEND_SHIFT, IPCMNI_SHIFT, KernelOffsets, NO_OFFSET};

use crate::{
    attribution::{CgroupHierarchy, HierarchyKind},
    btf::Btf,
};

pub const DEFAULT_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
const TRACEFS: &str = "/sys/kernel/tracing";

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set of this process (`CapEff` in /proc/self/status).
fn effective_capabilities() -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .context("/proc/self/status has no CapEff line")?;
    u64::from_str_radix(hex.trim(), 16).context("parsing CapEff")
}

/// Loading tracing programs needs CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN (which older kernels
/// require and which mounting tracefs needs anyway).
pub fn check_privileges() -> Result<()> {
    let caps = effective_capabilities()?;
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    bail!(
        "nsipc-agent needs root: loading eBPF programs requires CAP_BPF and CAP_PERFMON \
         (or CAP_SYS_ADMIN), which this process does not have; run it with sudo"
    )
}

/// What `trace` and `snapshot` need besides loading programs, and why; found by running the
/// agent with one of them dropped (nsipc-agent/tests/packaging.rs). CAP_SYS_ADMIN also allows
/// loading the programs, as CAP_BPF and CAP_PERFMON do.
const INVENTORY_CAPABILITIES: [(u32, &str, &str); 3] = [
    (
        CAP_SYS_ADMIN,
        "CAP_SYS_ADMIN",
        "joining other IPC namespaces with setns to read their objects, and loading the \
         probes (as CAP_BPF with CAP_PERFMON would)",
    ),
    (
        CAP_SYS_PTRACE,
        "CAP_SYS_PTRACE",
        "reading other processes' namespace links and open files in /proc; without it, \
         namespaces held by other processes would go unseen",
    ),
    (
        CAP_DAC_READ_SEARCH,
        "CAP_DAC_READ_SEARCH",
        "reading container metadata that root does not own: rootless Podman's, in its \
         user's home",
    ),
];

/// `trace` and `snapshot` inventory every namespace and object through /proc and setns: a
/// capability missing would leave some out, silently, so its absence is an error.
pub fn check_inventory_privileges(command: &str) -> Result<()> {
    let caps = effective_capabilities()?;
    let missing: Vec<String> = INVENTORY_CAPABILITIES
        .iter()
        .filter(|(cap, ..)| caps & (1 << cap) == 0)
        .map(|(_, name, why)| format!("{name}, for {why}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    bail!(
        "`{command}` needs root, or at least what this process lacks: {}. Run it with sudo",
        missing.join("; ")
    )
}

/// Reads and parses the kernel's BTF.
pub fn load_btf(path: &Path) -> Result<Btf> {
    let data = match fs::read(path) {
        Ok(data) => data,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
            "this kernel has no BTF ({} is missing): nsipc-agent needs a kernel built with \
             CONFIG_DEBUG_INFO_BTF=y",
            path.display()
        ),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    Btf::parse(&data).with_context(|| format!("parsing the kernel BTF in {}", path.display()))
}

/// Where tracepoint ids live. Mounts tracefs if nothing has (it is not mounted at boot on
/// some machines, and aya looks for it only at these paths).
pub fn ensure_tracefs() -> Result<()> {
    let mounted = |dir: &str| Path::new(dir).join("events").is_dir();
    if mounted(TRACEFS) || mounted("/sys/kernel/debug/tracing") {
        return Ok(());
    }
    let target = std::ffi::CString::new(TRACEFS).expect("no NUL in path");
    let fstype = c"tracefs";
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!("tracefs is not mounted and mounting it on {TRACEFS} failed: {err}");
    }
    Ok(())
}

/// The running kernel's release string (`uname -r`).
pub fn release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The shift of the sequence number in this kernel's SysV IPC ids (the kernel's
/// `ipc_mni_shift`): [`IPCMNI_EXTEND_SHIFT`] when it was booted with `ipcmni_extend`, else
/// [`IPCMNI_SHIFT`]. The variable itself cannot be read from here: the kernel's BTF describes
/// only its per-CPU variables, and /proc/kallsyms lists no data symbols without
/// CONFIG_KALLSYMS_ALL (neither has `ipc_mni_shift` on this project's 6.18 machines). So it is
/// read where the kernel takes it from, the boot command line; the parameter exists only with
/// CONFIG_SYSVIPC_SYSCTL (ipc/ipc_sysctl.c), whose sysctls include kernel.shmmni.
pub fn ipc_id_shift() -> u32 {
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    ipc_id_shift_of(&cmdline, Path::new("/proc/sys/kernel/shmmni").exists())
}

/// [`ipc_id_shift`] for this command line, on a kernel with or without the IPC sysctls.
fn ipc_id_shift_of(cmdline: &str, ipc_sysctls: bool) -> u32 {
    // What follows `--` is init's; the kernel treats `-` and `_` in a name alike (parameq) and
    // runs an early parameter's handler whatever its value.
    let extended = cmdline
        .split_ascii_whitespace()
        .take_while(|arg| *arg != "--")
        .map(|arg| arg.split_once('=').map_or(arg, |(name, _)| name))
        .any(|name| name.replace('-', "_") == "ipcmni_extend");
    if extended && ipc_sysctls {
        IPCMNI_EXTEND_SHIFT
    } else {
        IPCMNI_SHIFT
    }
}

/// Where the probes find a task's cgroup in `hierarchy`: (`task_struct.cgroups`, the css
/// pointer in `css_set`, `cgroup_subsys_state.cgroup`, `cgroup.kn`, `kernfs_node.id`). None
/// when the kernel's BTF lacks one of them (tasks are then attributed to no container).
fn cgroup_offsets(btf: &Btf, hierarchy: &CgroupHierarchy) -> Option<[u32; 7]> {
    let css_set_css = match hierarchy.kind {
        HierarchyKind::V1 { subsys_id, .. } => {
            btf.member_offset("css_set", "subsys").ok()? + 8 * subsys_id
        }
        HierarchyKind::V2 => btf.member_offset("css_set", "dfl_cgrp").ok()?,
    };
    // dfl_cgrp is a `struct cgroup *`, read as the `cgroup_subsys_state` it starts with.
    if btf.member_offset("cgroup", "self").ok()? != 0 {
        return None;
    }
    Some([
        btf.member_offset("task_struct", "cgroups").ok()?,
        css_set_css,
        btf.member_offset("cgroup_subsys_state", "cgroup").ok()?,
        btf.member_offset("cgroup", "kn").ok()?,
        btf.member_offset("kernfs_node", "id").ok()?,
        btf.member_offset("cgroup", "root").ok()?,
        btf.member_offset("cgroup_root", "hierarchy_id").ok()?,
    ])
}

/// `XA_CHUNK_SHIFT`: the bits of an index each level of an xarray takes, log2 of the
/// `XA_CHUNK_SIZE` slots of `struct xa_node` (64 slots, shift 6; 16 slots, shift 4 with
/// CONFIG_BASE_SMALL). BTF has no macros, but it has the array they size.
fn xa_chunk_shift(btf: &Btf) -> Result<u32> {
    let slots = btf.member_array_len("xa_node", "slots")?;
    chunk_shift_of(slots)
}

/// log2 of `slots`, the length of `xa_node.slots`, which the kernel makes a power of two.
fn chunk_shift_of(slots: u32) -> Result<u32> {
    if !slots.is_power_of_two() {
        bail!(
            "the kernel's struct xa_node member slots has {slots} elements, not a power of \
             two: its xarrays are not the radix tree the probes walk"
        );
    }
    Ok(slots.trailing_zeros())
}

/// The field offsets the probes need, from the running kernel's BTF; tasks' cgroups are read
/// in `hierarchy` (None: not read).
pub fn kernel_offsets(btf: &Btf, hierarchy: Option<&CgroupHierarchy>) -> Result<KernelOffsets> {
    let [
        task_cgroups,
        css_set_css,
        css_cgroup,
        cgroup_kn,
        kernfs_node_id,
        cgroup_root,
        cgroup_root_hierarchy_id,
    ] = hierarchy
        .and_then(|hierarchy| cgroup_offsets(btf, hierarchy))
        .unwrap_or([NO_OFFSET; 7]);
    let ns = btf.member_offset("ipc_namespace", "ns")?;
    let xa_head = btf.member_offset("ipc_ids", "ipcs_idr")?
        + btf.member_offset("idr", "idr_rt")?
        + btf.member_offset("xarray", "xa_head")?;
    Ok(KernelOffsets {
        task_nsproxy: btf.member_offset("task_struct", "nsproxy")?,
        task_pid: btf.member_offset("task_struct", "pid")?,
        task_tgid: btf.member_offset("task_struct", "tgid")?,
        task_comm: btf.member_offset("task_struct", "comm")?,
        task_cred: btf.member_offset("task_struct", "cred")?,
        task_real_parent: btf.member_offset("task_struct", "real_parent")?,
        // kuid_t is `typedef struct { uid_t val; } kuid_t;`: val is at its start.
        cred_uid: btf.member_offset("cred", "uid")?,
        cred_euid: btf.member_offset("cred", "euid")?,
        task_cgroups,
        css_set_css,
        css_cgroup,
        cgroup_kn,
        kernfs_node_id,
        cgroup_root,
        cgroup_root_hierarchy_id,
        nsproxy_ipc_ns: btf.member_offset("nsproxy", "ipc_ns")?,
        ipc_ns_inum: ns + btf.member_offset("ns_common", "inum")?,
        ipc_ns_id: btf
            .member_offset("ns_common", "ns_id")
            .map_or(NO_OFFSET, |id| ns + id),
        ipc_ns_refcount: ipc_ns_refcount(btf, ns)?,
        ipc_ns_shm_rmid_forced: btf.member_offset("ipc_namespace", "shm_rmid_forced")?,
        ipc_ns_ids: btf.member_offset("ipc_namespace", "ids")?,
        ipc_ids_size: btf.struct_size("ipc_ids")?,
        ipc_ids_xa_head: xa_head,
        xa_node_shift: btf.member_offset("xa_node", "shift")?,
        xa_node_slots: btf.member_offset("xa_node", "slots")?,
        xa_chunk_shift: xa_chunk_shift(btf)?,
        perm_id: btf.member_offset("kern_ipc_perm", "id")?,
        perm_key: btf.member_offset("kern_ipc_perm", "key")?,
        shm_perm: btf.member_offset("shmid_kernel", "shm_perm")?,
        msg_perm: btf.member_offset("msg_queue", "q_perm")?,
        msg_cbytes: btf.member_offset("msg_queue", "q_cbytes")?,
        msg_qbytes: btf.member_offset("msg_queue", "q_qbytes")?,
        perm_rcu: btf.member_offset("kern_ipc_perm", "rcu")?,
        // The user registers the x86-64 entry code saves; a syscall's arguments are in di, si,
        // dx, r10 (r10 for cx, which the `syscall` instruction overwrites with the return
        // address).
        pt_regs_di: btf.member_offset("pt_regs", "di")?,
        pt_regs_si: btf.member_offset("pt_regs", "si")?,
        pt_regs_dx: btf.member_offset("pt_regs", "dx")?,
        pt_regs_r10: btf.member_offset("pt_regs", "r10")?,
        pt_regs_orig_ax: btf.member_offset("pt_regs", "orig_ax")?,
        task_btf: btf.has_enumerator("BPF_FUNC_get_current_task_btf").into(),
        task_pt_regs: btf.has_enumerator("BPF_FUNC_task_pt_regs").into(),
        // Every wrapper has the one prototype; msgget stands for all.
        wrapper_regs: btf
            .param_points_to_struct("__x64_sys_msgget", 0)
            .unwrap_or(false)
            .into(),
        task_stack: btf.member_offset("task_struct", "stack")?,
        stack_pt_regs: thread_size(btf) - btf.struct_size("pt_regs")?,
        // What an mq_open's descriptor is open on: task->files->fdt->fd[fd]->f_inode->i_ino.
        task_files: btf.member_offset("task_struct", "files")?,
        files_fdt: btf.member_offset("files_struct", "fdt")?,
        fdtable_fd: btf.member_offset("fdtable", "fd")?,
        file_inode: btf.member_offset("file", "f_inode")?,
        inode_ino: btf.member_offset("inode", "i_ino")?,
    })
}

/// What the probes do instead where the running kernel lacks a helper they would rather use:
/// helper → its stand-in. Empty on 5.15 and later. Nothing is lost either way (the matrix runs
/// the same tests on 5.10); the stand-ins cost a little more per record.
pub fn fallbacks(offsets: &KernelOffsets) -> BTreeMap<&'static str, &'static str> {
    let mut fallbacks = BTreeMap::new();
    if offsets.task_btf == 0 {
        fallbacks.insert(
            "bpf_get_current_task_btf",
            "kernel structures read with bpf_probe_read_kernel (before 5.11)",
        );
    }
    if offsets.task_pt_regs == 0 {
        fallbacks.insert(
            "bpf_task_pt_regs",
            "syscall arguments read at the top of the task's kernel stack, checked against \
             the syscall number (before 5.15; tracepoint backend)",
        );
    }
    if offsets.wrapper_regs == 0 {
        fallbacks.insert(
            "btf_syscall_wrapper_regs",
            "fentry and fexit read syscall arguments at the top of the task's kernel stack, \
             checked against the syscall number (the BTF declares the wrappers' struct \
             pt_regs but does not define it: 5.10)",
        );
    }
    fallbacks
}

/// Where the namespace's reference count is: `ns_common.__ns_ref` (6.18), `ns_common.count`
/// (5.11 to 6.17), or `ipc_namespace.count` (before 5.11, when each namespace kind kept its
/// own), given `ns`, the offset of `ipc_namespace.ns`.
fn ipc_ns_refcount(btf: &Btf, ns: u32) -> Result<u32> {
    if let Ok(count) = btf
        .member_offset("ns_common", "__ns_ref")
        .or_else(|_| btf.member_offset("ns_common", "count"))
    {
        return Ok(ns + count);
    }
    Ok(btf.member_offset("ipc_namespace", "count")?)
}

/// x86-64's `THREAD_SIZE`, the size of a task's kernel stack: `PAGE_SIZE << (2 +
/// KASAN_STACK_ORDER)` (arch/x86/include/asm/page_64_types.h), where KASAN_STACK_ORDER is 1
/// on a kernel built with KASAN, whose BTF then has `kasan_report`. Only kernels without
/// `bpf_task_pt_regs` (before 5.15) need it, and on those the stack's top has no padding
/// (`TOP_OF_KERNEL_STACK_PADDING` is 0 on x86-64 before FRED, 6.9).
fn thread_size(btf: &Btf) -> u32 {
    const PAGE_SIZE: u32 = 4096;
    let kasan_stack_order = u32::from(btf.has_function("kasan_report"));
    PAGE_SIZE << (2 + kasan_stack_order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_the_running_kernel() {
        let Ok(btf) = load_btf(Path::new(DEFAULT_BTF_PATH)) else {
            eprintln!("no kernel BTF here; nothing to check");
            return;
        };
        let hierarchy = CgroupHierarchy::of_this_host();
        let offsets = kernel_offsets(&btf, hierarchy.as_ref()).unwrap();
        if hierarchy.is_some() {
            assert_ne!(offsets.css_set_css, NO_OFFSET, "cgroups are read here");
            assert_ne!(offsets.kernfs_node_id, NO_OFFSET);
        }
        assert_ne!(offsets.cred_euid, offsets.cred_uid);
        // pid and tgid are adjacent ints in every kernel since 2.6.
        assert_eq!(offsets.task_tgid, offsets.task_pid + 4);
        assert!(offsets.task_nsproxy > offsets.task_tgid);
        assert!(offsets.ipc_ns_inum > 0);
        // ids[3] comes first in struct ipc_namespace; the slots follow the node header.
        assert_eq!(offsets.ipc_ns_ids, 0);
        assert!(offsets.ipc_ids_size > offsets.ipc_ids_xa_head);
        assert!(offsets.xa_node_slots > offsets.xa_node_shift);
        // q_perm first, then three time64_t, then q_cbytes, q_qnum and q_qbytes in a row.
        assert_eq!(offsets.msg_perm, 0);
        assert_eq!(offsets.msg_qbytes, offsets.msg_cbytes + 16);
        // x86-64's pt_regs (PUSH_REGS order, the same since the 64-bit port): what the probes
        // hard-coded before issue 9.
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                [
                    offsets.pt_regs_di,
                    offsets.pt_regs_si,
                    offsets.pt_regs_dx,
                    offsets.pt_regs_r10
                ],
                [112, 104, 96, 56]
            );
        }
        // 64 slots per node: every distribution kernel (CONFIG_BASE_SMALL=n), this one too.
        assert_eq!(offsets.xa_chunk_shift, 6);
        // This host runs 6.18: both helpers are there (5.11, 5.15).
        assert_eq!(
            (offsets.task_btf, offsets.task_pt_regs, offsets.wrapper_regs),
            (1, 1, 1)
        );
        assert_eq!(offsets.pt_regs_orig_ax, 120);
        // 16 KiB of stack without KASAN, less the 168 bytes of pt_regs.
        assert_eq!(offsets.stack_pt_regs, 16384 - 168);
    }

    #[test]
    fn the_xarray_chunk_shift_is_log2_of_the_slots() {
        assert_eq!(chunk_shift_of(64).unwrap(), 6);
        assert_eq!(chunk_shift_of(16).unwrap(), 4);
        for slots in [0, 48, 65] {
            let msg = format!("{:#}", chunk_shift_of(slots).unwrap_err());
            assert!(
                msg.contains("xa_node") && msg.contains("slots") && msg.contains("power of two"),
                "{msg}"
            );
        }
    }

    /// Issue 10, defect 5: with `ipcmni_extend` (shift 24) the index goes up to 2^24 - 1.
    #[test]
    fn an_ids_index_is_what_lies_below_its_kernels_shift() {
        use nsipc_common::ipc_index;
        // ipc_idr_alloc(): new->id = (new->seq << ipcmni_seq_shift()) + idx
        let id = |seq: u32, index: u32, shift: u32| ((seq << shift) + index) as i32;
        for (seq, index) in [(0, 0), (1, 0), (5, 7), (511, 32767), (65535, 32767)] {
            let id = id(seq, index, 15);
            assert_eq!(ipc_index(id, 15), index, "id {id:#x}, shift 15");
        }
        for (seq, index) in [
            (0, 0),
            (1, 32767),
            (1, 32768),
            (3, 40000),
            (127, (1 << 24) - 1),
        ] {
            let id = id(seq, index, 24);
            assert_eq!(ipc_index(id, 24), index, "id {id:#x}, shift 24");
        }
    }

    #[test]
    fn the_id_shift_is_the_boot_parameters() {
        let shift = |cmdline| ipc_id_shift_of(cmdline, true);
        assert_eq!(shift("console=ttyS0 quiet"), 15);
        assert_eq!(shift("console=ttyS0 ipcmni_extend quiet"), 24);
        assert_eq!(shift("ipcmni-extend"), 24);
        assert_eq!(shift("root=/dev/vda ipcmni_extend=1"), 24);
        assert_eq!(shift("quiet -- ipcmni_extend"), 15, "init's argument");
        assert_eq!(shift("foo.ipcmni_extend xipcmni_extend"), 15);
        assert_eq!(
            ipc_id_shift_of("ipcmni_extend", false),
            15,
            "no CONFIG_SYSVIPC_SYSCTL: the parameter does not exist"
        );
        // This machine's: no ipcmni_extend on its command line.
        let here = fs::read_to_string("/proc/cmdline").unwrap_or_default();
        if !here.contains("ipcmni") {
            assert_eq!(ipc_id_shift(), 15);
        }
    }

    #[test]
    fn missing_btf_is_one_clear_sentence() {
        let err = load_btf(Path::new("/nonexistent/vmlinux")).err().unwrap();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("no BTF") && msg.contains("CONFIG_DEBUG_INFO_BTF"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
    }
}
