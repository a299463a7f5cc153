//! Which program watches what, under which backend, and attaching a hook's programs.
//!
//! The eBPF object holds every backend's programs, named by convention (nsipc-ebpf's
//! `syscall_hooks!`): `sys_enter_<hook>`/`sys_exit_<hook>` (tracepoint), `kprobe_<hook>`/
//! `kretprobe_<hook>` (kprobe) and `[fentry_<hook>]`/`fexit_<hook>` (fentry), where `<hook>` is
//! the syscall. The other programs ([`COMMON`]) have no alternative and serve every backend.

use std::{collections::BTreeMap, fmt, io, path::Path};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf, Ebpf,
    programs::{
        BtfTracePoint, FEntry, FExit, KProbe, Program, ProgramError, RawTracePoint, TracePoint,
    },
};
use serde::Serialize;

/// How a hook's programs attach to the kernel, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// fentry/fexit on the kernel function through a BPF trampoline: the cheapest, and one
    /// fexit program sees arguments and return value at once.
    Fentry,
    /// kprobe/kretprobe on the kernel function.
    Kprobe,
    /// The `syscalls:sys_{enter,exit}_*` tracepoints: allowed on locked-down kernels.
    Tracepoint,
}

impl Backend {
    /// Best first: the order `auto` tries them in.
    pub const ALL: [Backend; 3] = [Backend::Fentry, Backend::Kprobe, Backend::Tracepoint];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Fentry => "fentry",
            Backend::Kprobe => "kprobe",
            Backend::Tracepoint => "tracepoint",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kernel function a syscall hook's kprobe and fentry programs attach to: the syscall's
/// x86-64 wrapper (nsipc-ebpf/src/syscall.rs says why not the functions behind it).
pub fn kernel_function(hook: &str) -> String {
    format!("__x64_sys_{hook}")
}

/// Programs every backend attaches, and the kernel tracepoint of each: BTF tracepoints for task
/// creation and exit, and for cgroups made and removed.
pub const COMMON: &[(&str, &str)] = &[
    ("task_newtask", "task_newtask"),
    ("sched_process_exit", "sched_process_exit"),
    ("cgroup_mkdir", "cgroup_mkdir"),
    ("cgroup_rmdir", "cgroup_rmdir"),
];

/// The two copies of the raw `kfree` tracepoint program, which sees namespaces and segments die
/// among every kfree of the machine (nsipc-ebpf/src/tracked.rs says why two): a run skipped by
/// one is run by the other, so their `recursion_misses` lose nothing.
pub const KFREE_COPIES: [&str; 2] = ["kfree", "kfree_again"];
/// The raw tracepoint both copies attach to.
pub const KFREE_TRACEPOINT: &str = "kfree";

/// How the probes see namespaces and segments freed (they die without a syscall).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FreeHooks {
    /// fentry on the functions that free them: nothing runs on other frees.
    Fentry,
    /// kprobes on the same functions.
    Kprobe,
    /// The `kfree` raw tracepoint, filtered by call site: two programs run on every kfree of
    /// the machine. What a kernel that refuses fentry and has no kprobes leaves.
    Kfree,
}

/// The kernel functions the exact free hooks attach to, with their fentry and kprobe
/// programs (nsipc-ebpf/src/tracked.rs has their prototypes).
pub const EXACT_FREES: [(&str, &str, &str); 3] = [
    (
        "shm_rcu_free",
        "segment_freed_fentry",
        "segment_freed_kprobe",
    ),
    (
        "shm_exit_ns",
        "namespace_freed_fentry",
        "namespace_freed_kprobe",
    ),
    (
        "mqueue_evict_inode",
        "mqueue_evicted_fentry",
        "mqueue_evicted_kprobe",
    ),
];

impl FreeHooks {
    pub fn name(self) -> &'static str {
        match self {
            FreeHooks::Fentry => "fentry",
            FreeHooks::Kprobe => "kprobe",
            FreeHooks::Kfree => "kfree",
        }
    }

    /// The free hooks to try, best first, when the syscall hooks' best backend is `backend`:
    /// the exact functions by the same means, else `kfree`. The tracepoint backend, for
    /// locked-down kernels or when asked for, keeps to tracepoints.
    pub fn candidates(backend: Backend) -> &'static [FreeHooks] {
        match backend {
            Backend::Fentry => &[FreeHooks::Fentry, FreeHooks::Kprobe, FreeHooks::Kfree],
            Backend::Kprobe => &[FreeHooks::Kprobe, FreeHooks::Kfree],
            Backend::Tracepoint => &[FreeHooks::Kfree],
        }
    }

    /// `(program, kernel function or tracepoint)` of each program these hooks attach.
    pub fn programs(self) -> Vec<(&'static str, &'static str)> {
        match self {
            FreeHooks::Fentry => EXACT_FREES
                .iter()
                .map(|&(f, fentry, _)| (fentry, f))
                .collect(),
            FreeHooks::Kprobe => EXACT_FREES
                .iter()
                .map(|&(f, _, kprobe)| (kprobe, f))
                .collect(),
            FreeHooks::Kfree => KFREE_COPIES
                .iter()
                .map(|&c| (c, KFREE_TRACEPOINT))
                .collect(),
        }
    }
}

/// Attaches all of `hooks`' programs, or none of them (then says why).
pub fn try_frees(ebpf: &mut Ebpf, btf: &Btf, hooks: FreeHooks) -> Result<(), String> {
    let programs = hooks.programs();
    for (done, &(name, target)) in programs.iter().enumerate() {
        let Some(program) = ebpf.program_mut(name) else {
            return Err(format!("the object has no program {name}"));
        };
        if let Err(err) = attach_program(name, program, target, btf) {
            for &(name, _) in &programs[..=done] {
                if let Some(program) = ebpf.program_mut(name) {
                    unload(program);
                }
            }
            return Err(format!("{err:#}"));
        }
    }
    Ok(())
}

/// Attaches the first of `candidates` the kernel takes; returns it, and why each one before it
/// was refused.
pub fn attach_frees(
    ebpf: &mut Ebpf,
    btf: &Btf,
    candidates: &[FreeHooks],
) -> Result<(FreeHooks, BTreeMap<FreeHooks, String>)> {
    let mut refused = BTreeMap::new();
    for &hooks in candidates {
        match try_frees(ebpf, btf, hooks) {
            Ok(()) => return Ok((hooks, refused)),
            Err(why) => {
                refused.insert(hooks, why);
            }
        }
    }
    let reasons: Vec<String> = refused
        .iter()
        .map(|(hooks, why)| format!("{}: {why}", hooks.name()))
        .collect();
    Err(anyhow!(
        "the probes cannot see frees here: {}",
        reasons.join("; ")
    ))
}

/// The hook and backend of a program, from its name; None for the [`COMMON`] ones.
pub fn classify(program: &str) -> Option<(&str, Backend)> {
    const PREFIXES: &[(&str, Backend)] = &[
        ("sys_enter_", Backend::Tracepoint),
        ("sys_exit_", Backend::Tracepoint),
        ("kprobe_", Backend::Kprobe),
        ("kretprobe_", Backend::Kprobe),
        ("fentry_", Backend::Fentry),
        ("fexit_", Backend::Fentry),
    ];
    PREFIXES
        .iter()
        .find_map(|(prefix, backend)| program.strip_prefix(prefix).map(|hook| (hook, *backend)))
}

/// Every syscall hook → backend → its programs, from the object's program names.
pub fn hook_programs<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<String, BTreeMap<Backend, Vec<String>>> {
    let mut hooks: BTreeMap<String, BTreeMap<Backend, Vec<String>>> = BTreeMap::new();
    for name in names {
        if let Some((hook, backend)) = classify(name) {
            hooks
                .entry(hook.to_owned())
                .or_default()
                .entry(backend)
                .or_default()
                .push(name.to_owned());
        }
    }
    for backends in hooks.values_mut() {
        for programs in backends.values_mut() {
            // Entry programs first: an exit program attached alone would wait for calls that
            // were never remembered, which is harmless, but the other way round would lose the
            // first calls' exits.
            programs.sort_by_key(|name| !is_entry(name));
        }
    }
    hooks
}

fn is_entry(program: &str) -> bool {
    ["sys_enter_", "kprobe_", "fentry_"]
        .iter()
        .any(|prefix| program.starts_with(prefix))
}

/// Why a backend cannot attach a hook. `backend_wide`: the backend works for no hook on this
/// kernel, so the others need not be tried.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub why: String,
    pub backend_wide: bool,
}

/// Where kprobes come from: without this PMU (CONFIG_KPROBES off) no kprobe can attach.
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

/// Loads and attaches `programs` (one hook's, under `backend`); on failure unloads whatever of
/// them got attached, so the hook can go to another backend.
pub fn attach_hook(
    ebpf: &mut Ebpf,
    btf: &Btf,
    hook: &str,
    backend: Backend,
    programs: &[String],
) -> Result<(), Refusal> {
    let function = (backend != Backend::Tracepoint).then(|| kernel_function(hook));
    for (done, name) in programs.iter().enumerate() {
        let program = ebpf.program_mut(name).expect("listed from the object");
        let target = function.as_deref().unwrap_or(name);
        if let Err(err) = attach_program(name, program, target, btf) {
            for name in &programs[..=done] {
                if let Some(program) = ebpf.program_mut(name) {
                    unload(program);
                }
            }
            return Err(refusal(backend, function.as_deref(), &err));
        }
    }
    Ok(())
}

/// Says why an attach failed, in the terms of what the kernel lacks.
fn refusal(backend: Backend, function: Option<&str>, err: &anyhow::Error) -> Refusal {
    let detail = format!("{err:#}");
    match backend {
        Backend::Kprobe if !Path::new(KPROBE_PMU).exists() => Refusal {
            why: format!(
                "kprobes unavailable on this kernel (CONFIG_KPROBES off: no {KPROBE_PMU})"
            ),
            backend_wide: true,
        },
        Backend::Fentry if let Some(load_error) = load_permission_error(err) => Refusal {
            why: format!(
                "fentry/fexit programs refused by this kernel (BPF_PROG_LOAD: {load_error}; BPF \
                 trampolines unavailable or forbidden)"
            ),
            backend_wide: true,
        },
        Backend::Kprobe | Backend::Fentry
            if function.is_some_and(|f| kallsyms_lacks(f).unwrap_or(false)) =>
        {
            Refusal {
                why: format!(
                    "kernel function {} not in /proc/kallsyms (inlined or renamed on this \
                     kernel)",
                    function.unwrap_or_default()
                ),
                backend_wide: false,
            }
        }
        _ => Refusal {
            why: detail,
            backend_wide: false,
        },
    }
}

/// A program load the kernel refused with EPERM or EOPNOTSUPP: the program type is not
/// allowed here (fentry on a kernel without trampolines, or locked down).
fn load_permission_error(err: &anyhow::Error) -> Option<&io::Error> {
    err.chain()
        .find_map(|cause| match cause.downcast_ref::<ProgramError>() {
            Some(ProgramError::LoadError { io_error, .. })
                if matches!(
                    io_error.raw_os_error(),
                    Some(libc::EPERM | libc::EOPNOTSUPP)
                ) =>
            {
                Some(io_error)
            }
            _ => None,
        })
}

/// Whether /proc/kallsyms has no function of this exact name.
fn kallsyms_lacks(function: &str) -> io::Result<bool> {
    let symbols = std::fs::read_to_string("/proc/kallsyms")?;
    Ok(!symbols
        .lines()
        .any(|line| line.split_whitespace().nth(2) == Some(function)))
}

/// Loads one program and attaches it to `target`: the tracepoint of that name for syscall, BTF
/// and raw tracepoints, the kernel function of that name for kprobes and fentry.
pub fn attach_program(name: &str, program: &mut Program, target: &str, btf: &Btf) -> Result<()> {
    let refused = || format!("the kernel refused probe {name}");
    match program {
        Program::TracePoint(tracepoint) => {
            let tracepoint: &mut TracePoint = tracepoint;
            tracepoint.load().with_context(refused)?;
            tracepoint
                .attach("syscalls", target)
                .with_context(|| format!("cannot attach to tracepoint syscalls:{target}"))?;
        }
        Program::KProbe(kprobe) => {
            let kprobe: &mut KProbe = kprobe;
            let function = target;
            kprobe.load().with_context(refused)?;
            kprobe
                .attach(function, 0)
                .with_context(|| format!("cannot attach {name} to {function}"))?;
        }
        Program::FEntry(fentry) => {
            let fentry: &mut FEntry = fentry;
            let function = target;
            fentry.load(function, btf).with_context(refused)?;
            fentry
                .attach()
                .with_context(|| format!("cannot attach {name} to {function}"))?;
        }
        Program::FExit(fexit) => {
            let fexit: &mut FExit = fexit;
            let function = target;
            fexit.load(function, btf).with_context(refused)?;
            fexit
                .attach()
                .with_context(|| format!("cannot attach {name} to {function}"))?;
        }
        Program::BtfTracePoint(tracepoint) => {
            let tracepoint: &mut BtfTracePoint = tracepoint;
            tracepoint.load(target, btf).with_context(refused)?;
            tracepoint
                .attach()
                .with_context(|| format!("cannot attach to BTF tracepoint {target}"))?;
        }
        Program::RawTracePoint(tracepoint) => {
            let tracepoint: &mut RawTracePoint = tracepoint;
            tracepoint.load().with_context(refused)?;
            tracepoint
                .attach(target)
                .with_context(|| format!("cannot attach to raw tracepoint {target}"))?;
        }
        other => {
            return Err(anyhow!(
                "probe {name} has an unexpected type {:?}",
                other.prog_type()
            ));
        }
    }
    Ok(())
}

/// Detaches and unloads a program, whatever its type; one never loaded is left as it is.
pub fn unload(program: &mut Program) {
    let _ = match program {
        Program::TracePoint(p) => p.unload(),
        Program::KProbe(p) => p.unload(),
        Program::FEntry(p) => p.unload(),
        Program::FExit(p) => p.unload(),
        Program::BtfTracePoint(p) => p.unload(),
        Program::RawTracePoint(p) => p.unload(),
        _ => Ok(()),
    };
}

/// The backend each hook ended up on, and why not on a better one.
#[derive(Debug, Clone, Serialize)]
pub struct HookChoice {
    pub backend: Backend,
    /// The backends tried before, and why each refused.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<Backend, String>,
}

/// Which backends to try for every hook, in order.
pub fn candidates(wanted: Option<Backend>) -> Vec<Backend> {
    match wanted {
        None => Backend::ALL.to_vec(),
        // A hook the wanted backend cannot attach (a function inlined on this kernel) falls
        // back to its tracepoints rather than stopping the agent; agent.ready says so.
        Some(backend) => {
            let mut order = vec![backend];
            if backend != Backend::Tracepoint {
                order.push(Backend::Tracepoint);
            }
            order
        }
    }
}

/// Attach attempts that remember which backends are refused for every hook, so that those are
/// not tried again (loading a kprobe program only to see it refused costs a verifier run).
#[derive(Default)]
pub struct Attempts {
    unavailable: BTreeMap<Backend, String>,
}

impl Attempts {
    /// Attaches `hook` with `backend` (its `programs`, None if the object has none).
    pub fn try_hook(
        &mut self,
        ebpf: &mut Ebpf,
        btf: &Btf,
        hook: &str,
        backend: Backend,
        programs: Option<&Vec<String>>,
    ) -> Result<(), String> {
        if let Some(why) = self.unavailable.get(&backend) {
            return Err(why.clone());
        }
        let programs = programs.ok_or_else(|| "no such program in the object".to_owned())?;
        attach_hook(ebpf, btf, hook, backend, programs).map_err(|refusal| {
            if refusal.backend_wide {
                self.unavailable.insert(backend, refusal.why.clone());
            }
            refusal.why
        })
    }
}

/// The syscall hooks that count activity (nsipc-ebpf/src/activity.rs), attached only when it
/// is asked for: they run on every msgsnd, msgrcv and semop of the host.
pub const ACTIVITY_HOOKS: [&str; 4] = ["msgsnd", "msgrcv", "semop", "semtimedop"];

/// Attaches every syscall hook but those in `skipped` with the first of `order` that takes it.
/// Returns each hook's choice.
pub fn attach_hooks(
    ebpf: &mut Ebpf,
    btf: &Btf,
    order: &[Backend],
    skipped: &[&str],
) -> Result<BTreeMap<String, HookChoice>> {
    let mut attempts = Attempts::default();
    let mut chosen = BTreeMap::new();
    let hooks = hook_programs(ebpf.programs().map(|(name, _)| name));
    for (hook, backends) in hooks
        .iter()
        .filter(|(hook, _)| !skipped.contains(&hook.as_str()))
    {
        let mut refused = BTreeMap::new();
        let mut choice = None;
        for &backend in order {
            match attempts.try_hook(ebpf, btf, hook, backend, backends.get(&backend)) {
                Ok(()) => {
                    choice = Some(backend);
                    break;
                }
                Err(why) => {
                    refused.insert(backend, why);
                }
            }
        }
        let Some(backend) = choice else {
            let reasons: Vec<String> = refused
                .iter()
                .map(|(backend, why)| format!("{backend}: {why}"))
                .collect();
            return Err(anyhow!(
                "cannot attach the {hook} hook: {}",
                reasons.join("; ")
            ));
        };
        chosen.insert(hook.clone(), HookChoice { backend, refused });
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_names_say_hook_and_backend() {
        assert_eq!(
            classify("sys_enter_msgget"),
            Some(("msgget", Backend::Tracepoint))
        );
        assert_eq!(
            classify("kretprobe_clone3"),
            Some(("clone3", Backend::Kprobe))
        );
        assert_eq!(classify("fexit_shmat"), Some(("shmat", Backend::Fentry)));
        assert_eq!(classify("kfree"), None);
        assert_eq!(classify("task_newtask"), None);
    }

    #[test]
    fn frees_follow_the_backend_and_fall_back_to_kfree() {
        assert_eq!(
            FreeHooks::candidates(Backend::Fentry),
            [FreeHooks::Fentry, FreeHooks::Kprobe, FreeHooks::Kfree]
        );
        assert_eq!(
            FreeHooks::candidates(Backend::Kprobe),
            [FreeHooks::Kprobe, FreeHooks::Kfree]
        );
        assert_eq!(
            FreeHooks::candidates(Backend::Tracepoint),
            [FreeHooks::Kfree]
        );
        assert_eq!(
            FreeHooks::Fentry.programs(),
            [
                ("segment_freed_fentry", "shm_rcu_free"),
                ("namespace_freed_fentry", "shm_exit_ns"),
                ("mqueue_evicted_fentry", "mqueue_evict_inode")
            ]
        );
        assert_eq!(
            FreeHooks::Kfree.programs(),
            [("kfree", "kfree"), ("kfree_again", "kfree")]
        );
        // None of them passes for a syscall hook's program.
        for hooks in [FreeHooks::Fentry, FreeHooks::Kprobe, FreeHooks::Kfree] {
            for (name, _) in hooks.programs() {
                assert_eq!(classify(name), None, "{name}");
            }
        }
    }

    #[test]
    fn an_explicit_backend_falls_back_to_tracepoints_only() {
        assert_eq!(candidates(None), Backend::ALL.to_vec());
        assert_eq!(
            candidates(Some(Backend::Kprobe)),
            vec![Backend::Kprobe, Backend::Tracepoint]
        );
        assert_eq!(
            candidates(Some(Backend::Tracepoint)),
            vec![Backend::Tracepoint]
        );
    }
}
