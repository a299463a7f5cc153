//! Loading the eBPF object into the kernel and attaching its programs, each syscall hook with
//! the backend asked for or the best one the kernel takes ([`hooks`]).

#[cfg(any(test, feature = "bench"))]
mod floor;
mod hooks;
mod kfree_callers;

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
};
pub use hooks::{ACTIVITY_HOOKS, Backend, FreeHooks, HookChoice, KFREE_COPIES};
use hooks::{
    Attempts, COMMON, KFREE_TRACEPOINT, attach_frees, attach_hooks, attach_program, candidates,
    hook_programs, try_frees,
};
pub use kfree_callers::KfreeCallers;
use nsipc_common::{
    ACTIVITY_MAP, AGENT_TGID_GLOBAL, ActivityCount, ActivityKey, CGROUP_HIERARCHY_GLOBAL,
    CGROUP_PATH_LEN, CGROUP_PATHS_MAP, EVENTS_MAP, IPC_ID_SHIFT_GLOBAL, KFREE_CALLERS_GLOBAL,
    KernelOffsets, LOST_MAP, MQUEUE_EVICT_GLOBAL, OFFSETS_GLOBAL, WAKEUP_THRESHOLD_GLOBAL,
};
use serde::Serialize;

/// The probes' map of the paths of new cgroups (see `nsipc_common::CGROUP_PATHS_MAP`).
pub type CgroupPaths = aya::maps::HashMap<MapData, u64, [u8; CGROUP_PATH_LEN]>;

/// The probes, compiled for the bpf target by build.rs.
static PROBES_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nsipc"));

/// Loads the object: its maps are created, its programs not yet. `btf` is the kernel BTF of
/// `--btf`, for the object's relocations as for the programs' attachment: parsed once.
fn load_object(options: &LoadOptions<'_>, btf: &Btf) -> Result<Ebpf> {
    // Force a wakeup once an eighth of the buffer waits: the reader keeps up under bursts
    // without being woken for every record.
    let wakeup_threshold = u64::from(options.ring_buffer_bytes / 8);
    EbpfLoader::new()
        .btf(Some(btf))
        .override_global(OFFSETS_GLOBAL, &options.offsets, true)
        .override_global(KFREE_CALLERS_GLOBAL, &options.kfree_callers.ranges, true)
        .override_global(
            MQUEUE_EVICT_GLOBAL,
            &options.kfree_callers.mqueue_evict,
            true,
        )
        .override_global(AGENT_TGID_GLOBAL, &std::process::id(), true)
        .override_global(IPC_ID_SHIFT_GLOBAL, &crate::kernel::ipc_id_shift(), true)
        .override_global(WAKEUP_THRESHOLD_GLOBAL, &wakeup_threshold, true)
        .override_global(CGROUP_HIERARCHY_GLOBAL, &options.cgroup_hierarchy, true)
        .map_max_entries(EVENTS_MAP, options.ring_buffer_bytes)
        .load(PROBES_OBJECT)
        .context("the kernel refused the eBPF maps or object")
}

/// Whether one program or hook loads and attaches here, and why not.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// One backend on this kernel: whether any hook works with it, and each hook's outcome.
#[derive(Debug, Serialize)]
pub struct BackendReport {
    pub usable: bool,
    pub hooks: BTreeMap<String, Outcome>,
}

/// What `nsipc-agent check` finds by loading and attaching everything, one thing at a time.
#[derive(Debug, Serialize)]
pub struct Capabilities {
    /// The programs every backend needs, and the `kfree` copies.
    pub common: BTreeMap<&'static str, Outcome>,
    pub backends: BTreeMap<Backend, BackendReport>,
    /// Each way of seeing frees ([`FreeHooks`]): whether all its programs attach.
    pub frees: BTreeMap<FreeHooks, Outcome>,
}

impl Capabilities {
    /// What `--backend auto` picks for each hook: the first backend that took it.
    pub fn auto(&self) -> BTreeMap<&str, Backend> {
        let mut picks = BTreeMap::new();
        for (backend, report) in self.backends.iter().rev() {
            for (hook, outcome) in &report.hooks {
                if outcome.ok {
                    picks.insert(hook.as_str(), *backend);
                }
            }
        }
        picks
    }
}

/// Loads and attaches every program of every backend, each detached again at once.
pub fn capabilities(options: &LoadOptions<'_>) -> Result<Capabilities> {
    let btf = parse_btf(options.btf_path)?;
    let mut ebpf = load_object(options, &btf)?;
    let mut common = BTreeMap::new();
    let kfree = KFREE_COPIES.map(|copy| (copy, KFREE_TRACEPOINT));
    for (name, tracepoint) in COMMON.iter().chain(&kfree) {
        let program = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("the object has no program {name}"))?;
        let result = attach_program(name, program, tracepoint, &btf);
        hooks::unload(program);
        common.insert(
            *name,
            Outcome {
                ok: result.is_ok(),
                function: None,
                why: result.err().map(|err| format!("{err:#}")),
            },
        );
    }
    let mut frees = BTreeMap::new();
    for &hooks in FreeHooks::candidates(Backend::Fentry) {
        let result = try_frees(&mut ebpf, &btf, hooks);
        if result.is_ok() {
            for (name, _) in hooks.programs() {
                hooks::unload(ebpf.program_mut(name).expect("try_frees attached it"));
            }
        }
        frees.insert(
            hooks,
            Outcome {
                ok: result.is_ok(),
                function: None,
                why: result.err(),
            },
        );
    }
    let programs = hook_programs(ebpf.programs().map(|(name, _)| name));
    let mut attempts = Attempts::default();
    let mut backends = BTreeMap::new();
    for backend in Backend::ALL {
        let mut outcomes = BTreeMap::new();
        for (hook, by_backend) in &programs {
            let names = by_backend.get(&backend);
            let result = attempts.try_hook(&mut ebpf, &btf, hook, backend, names);
            // Seen to attach: detached at once.
            for name in names.filter(|_| result.is_ok()).into_iter().flatten() {
                hooks::unload(ebpf.program_mut(name).expect("listed from the object"));
            }
            outcomes.insert(
                hook.clone(),
                Outcome {
                    ok: result.is_ok(),
                    function: (backend != Backend::Tracepoint)
                        .then(|| hooks::kernel_function(hook)),
                    why: result.err(),
                },
            );
        }
        backends.insert(
            backend,
            BackendReport {
                usable: outcomes.values().any(|o| o.ok),
                hooks: outcomes,
            },
        );
    }
    Ok(Capabilities {
        common,
        backends,
        frees,
    })
}

pub struct LoadOptions<'a> {
    pub offsets: KernelOffsets,
    pub kfree_callers: &'a KfreeCallers,
    pub btf_path: &'a Path,
    /// Ring buffer size in bytes: a power of two, a multiple of the page size.
    pub ring_buffer_bytes: u32,
    /// The backend asked for; None for the best the kernel takes, hook by hook.
    pub backend: Option<Backend>,
    /// The `hierarchy_id` of the cgroup hierarchy whose new cgroups are reported (-1: none).
    pub cgroup_hierarchy: i32,
    /// Attach the [`ACTIVITY_HOOKS`] too (`--activity-interval`).
    pub activity: bool,
}

/// The probes' running totals of traffic (see `nsipc_common::ACTIVITY_MAP`).
pub type ActivityMap = aya::maps::HashMap<MapData, ActivityKey, ActivityCount>;

/// Loaded and attached probes. Dropping `programs` detaches and unloads every program; the
/// maps stay readable so what is already in the ring buffer can still be drained.
pub struct Probes {
    programs: Option<Ebpf>,
    lost: PerCpuArray<MapData, u64>,
    /// The paths of cgroups made since load (None for the benchmark floor).
    pub cgroup_paths: Option<CgroupPaths>,
    /// The traffic counters, when activity is counted.
    pub activity: Option<ActivityMap>,
    pub attached: usize,
    /// Each syscall hook's backend.
    pub hooks: BTreeMap<String, HookChoice>,
    /// How frees are seen, and why better ways were refused.
    pub frees: FreeHooks,
    pub frees_refused: BTreeMap<FreeHooks, String>,
}

impl Probes {
    /// Loads, attaches, and hands back the probes with the ring buffer they write to.
    pub fn load_and_attach(options: &LoadOptions<'_>) -> Result<(Self, RingBuf<MapData>)> {
        let btf = parse_btf(options.btf_path)?;
        let mut ebpf = load_object(options, &btf)?;
        for (name, tracepoint) in COMMON {
            let program = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("the object has no program {name}"))?;
            attach_program(name, program, tracepoint, &btf)?;
        }
        // Before the syscall hooks, which start tracking what the free hooks report on.
        let (frees, frees_refused) = attach_frees(
            &mut ebpf,
            &btf,
            FreeHooks::candidates(options.backend.unwrap_or(Backend::Fentry)),
        )?;
        let skipped: &[&str] = if options.activity {
            &[]
        } else {
            &ACTIVITY_HOOKS
        };
        let hooks = attach_hooks(&mut ebpf, &btf, &candidates(options.backend), skipped)?;
        if let Some(wanted) = options.backend
            && !hooks.values().any(|choice| choice.backend == wanted)
        {
            // Not one hook took the backend asked for: the kernel lacks it altogether.
            let why = hooks
                .values()
                .find_map(|choice| choice.refused.get(&wanted))
                .map_or("no hook could use it", String::as_str);
            bail!("the {wanted} backend cannot run here: {why}");
        }
        // aya's parse of the kernel BTF (about 16 MB) goes before the ring buffer is mapped, so
        // the two never count together in the peak RSS.
        drop(btf);
        let attached = ebpf.programs().filter(|(_, p)| p.fd().is_ok()).count();
        let (mut probes, ring) = Self::take_maps(ebpf, attached)?;
        if !options.activity {
            probes.activity = None;
        }
        probes.hooks = hooks;
        probes.frees = frees;
        probes.frees_refused = frees_refused;
        Ok((probes, ring))
    }

    /// The backend most hooks use when no hook was refused one better; the best backend any
    /// hook got otherwise (the others are listed in [`Self::degraded`]).
    pub fn backend(&self) -> Backend {
        self.hooks
            .values()
            .map(|choice| choice.backend)
            .min()
            .unwrap_or(Backend::Tracepoint)
    }

    /// Hooks on a lesser backend than [`Self::backend`], with why the better ones refused.
    pub fn degraded(&self) -> BTreeMap<&str, &HookChoice> {
        let best = self.backend();
        self.hooks
            .iter()
            .filter(|(_, choice)| choice.backend != best)
            .map(|(hook, choice)| (hook.as_str(), choice))
            .collect()
    }

    /// How many times the kernel skipped one of the programs since load, because a BPF program
    /// was already running on that CPU (`recursion_misses` in the program's info: the `kfree`
    /// raw tracepoint, say, interrupted by an RCU callback's kfree). Each may be a lost record.
    pub fn missed_total(&self) -> Result<u64> {
        // A kfree skipped by one copy ran in the other: nothing was missed there.
        self.recursion_misses_of(|name| !KFREE_COPIES.contains(&name))
    }

    /// Runs of the `kfree` copies the kernel skipped (each copy's skips are runs of the
    /// other: reported in `agent.stop`, not as `agent.missed`).
    pub fn kfree_skipped(&self) -> Result<u64> {
        self.recursion_misses_of(|name| KFREE_COPIES.contains(&name))
    }

    /// The sum of `recursion_misses` over the programs whose names `counted` accepts.
    fn recursion_misses_of(&self, counted: impl Fn(&str) -> bool) -> Result<u64> {
        let Some(ebpf) = &self.programs else {
            return Ok(0);
        };
        let mut total = 0;
        for (name, program) in ebpf.programs().filter(|(name, _)| counted(name)) {
            if let Ok(fd) = program.fd() {
                total += recursion_misses(fd.as_fd().as_raw_fd())
                    .with_context(|| format!("reading the statistics of probe {name}"))?;
            }
        }
        Ok(total)
    }

    /// Keeps the programs and takes out the ring buffer and the lost-record counter.
    fn take_maps(mut ebpf: Ebpf, attached: usize) -> Result<(Self, RingBuf<MapData>)> {
        let ring = RingBuf::try_from(
            ebpf.take_map(EVENTS_MAP)
                .ok_or_else(|| anyhow!("the object has no {EVENTS_MAP} map"))?,
        )?;
        let lost = PerCpuArray::try_from(
            ebpf.take_map(LOST_MAP)
                .ok_or_else(|| anyhow!("the object has no {LOST_MAP} map"))?,
        )?;
        let cgroup_paths = ebpf
            .take_map(CGROUP_PATHS_MAP)
            .map(CgroupPaths::try_from)
            .transpose()?;
        let activity = ebpf
            .take_map(ACTIVITY_MAP)
            .map(ActivityMap::try_from)
            .transpose()?;
        Ok((
            Self {
                programs: Some(ebpf),
                lost,
                cgroup_paths,
                activity,
                attached,
                hooks: BTreeMap::new(),
                frees: FreeHooks::Kfree,
                frees_refused: BTreeMap::new(),
            },
            ring,
        ))
    }

    /// Detaches and unloads every program. Idempotent.
    ///
    /// The free hooks go first: they report deaths that come without a syscall, and the others
    /// go one by one in no set order, tens of milliseconds apart. Were they still attached once
    /// `sys_exit_shmctl` is gone, every segment removed by IPC_RMID meanwhile would be reported
    /// as dying of something else (`namespace_teardown`, in a namespace still alive).
    pub fn detach(&mut self) {
        let frees = self.frees;
        if let Some(ebpf) = &mut self.programs {
            for (name, _) in frees.programs() {
                if let Some(program) = ebpf.program_mut(name) {
                    hooks::unload(program);
                }
            }
        }
        self.programs = None;
    }

    /// Records the probes could not write because the ring buffer was full, since load, per
    /// slot of the `LOST` map: the probes count each under its kind's id.
    pub fn lost_per_slot(&self) -> Result<Vec<u64>> {
        (0..self.lost.len())
            .map(|slot| {
                let per_cpu = self
                    .lost
                    .get(&slot, 0)
                    .context("reading the lost-record counters")?;
                Ok(per_cpu.iter().sum())
            })
            .collect()
    }
}

fn parse_btf(path: &Path) -> Result<Btf> {
    Btf::parse_file(path, aya::Endianness::default())
        .with_context(|| format!("reading kernel BTF from {}", path.display()))
}

/// `recursion_misses` of the program behind `fd` (BPF_OBJ_GET_INFO_BY_FD; Linux 5.12+, zero
/// on older kernels, which do not count them).
fn recursion_misses(fd: i32) -> std::io::Result<u64> {
    /// The `info` member of `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
    #[repr(C)]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    let attr = InfoByFd {
        bpf_fd: fd as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: std::ptr::from_mut(&mut info) as u64,
    };
    // SAFETY: `attr` points at `info`, which outlives the call and is `info_len` bytes long;
    // the kernel writes at most that much.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<InfoByFd>() as u32,
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(info.recursion_misses)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every syscall hook can go to every backend, and every backend's programs of a hook are
    /// an entry/exit pair or a lone exit program.
    #[test]
    fn every_hook_has_a_program_for_every_backend() {
        let object = aya_obj::Object::parse(PROBES_OBJECT).unwrap();
        let hooks = hook_programs(object.programs.keys().map(String::as_str));
        assert_eq!(hooks.len(), 18, "{hooks:?}");
        for hook in ACTIVITY_HOOKS {
            assert!(hooks.contains_key(hook), "{hook}");
        }
        for (hook, backends) in &hooks {
            assert_eq!(
                backends.keys().copied().collect::<Vec<_>>(),
                Backend::ALL.to_vec(),
                "{hook}"
            );
            let exit = format!("sys_exit_{hook}");
            assert!(
                backends[&Backend::Tracepoint] == [exit.clone()]
                    || backends[&Backend::Tracepoint] == [format!("sys_enter_{hook}"), exit],
                "{hook}: {:?}",
                backends[&Backend::Tracepoint]
            );
            assert_eq!(
                backends[&Backend::Kprobe],
                [format!("kprobe_{hook}"), format!("kretprobe_{hook}")]
            );
            let fexit = format!("fexit_{hook}");
            assert!(
                backends[&Backend::Fentry] == [fexit.clone()]
                    || backends[&Backend::Fentry] == [format!("fentry_{hook}"), fexit],
                "{hook}: {:?}",
                backends[&Backend::Fentry]
            );
        }
        let frees: Vec<&str> = [FreeHooks::Fentry, FreeHooks::Kprobe, FreeHooks::Kfree]
            .iter()
            .flat_map(|hooks| hooks.programs())
            .map(|(name, _)| name)
            .collect();
        for name in COMMON
            .iter()
            .map(|(name, _)| *name)
            .chain(frees.iter().copied())
        {
            assert!(object.programs.contains_key(name), "{name}");
        }
        let classified = object
            .programs
            .keys()
            .filter(|name| hooks::classify(name).is_some())
            .count();
        assert_eq!(
            classified + COMMON.len() + frees.len(),
            object.programs.len()
        );
    }
}
