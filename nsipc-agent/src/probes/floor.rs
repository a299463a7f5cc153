//! The benchmark floor (`nsipc-bench floor`): minimal programs on every hook the probes use,
//! for `cargo xtask bench` to measure the probes against. Built only into `nsipc-bench` and
//! the unit tests; the shipped agent carries none of it.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    EbpfLoader,
    maps::{MapData, RingBuf},
    programs::{RawTracePoint, TracePoint},
};

use super::{
    ACTIVITY_HOOKS, EVENTS_MAP, KFREE_COPIES, KFREE_TRACEPOINT, PROBES_OBJECT, Probes,
    WAKEUP_THRESHOLD_GLOBAL, attach_program, hooks::classify, parse_btf,
};

/// The benchmark floor (`nsipc-ebpf/src/bin/floor.rs`), built next to the probes; only
/// `nsipc-bench` carries it.
static FLOOR_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor"));

/// The floor's programs for the syscall tracepoints (see `nsipc-ebpf/src/bin/floor.rs`).
const FLOOR_ENTER: &str = "floor_enter";
const FLOOR_RAW: &str = "floor_raw";
const FLOOR_EXIT: &str = "floor_exit";

impl Probes {
    /// Loads the benchmark floor and attaches it to every hook the probes use: `floor_enter` on
    /// each `sys_enter_*` tracepoint, `floor_exit` on each `sys_exit_*` one, and the floor's BTF
    /// tracepoint of the same name as each of the probes'. The hook list is read from the
    /// probes object, so the floor cannot drift from the probes. The activity hooks only with
    /// `activity`, as `trace` attaches them, and with the empty program: counting a call
    /// writes no record.
    pub fn load_floor_and_attach(
        btf_path: &Path,
        ring_buffer_bytes: u32,
        activity: bool,
    ) -> Result<(Self, RingBuf<MapData>)> {
        let wakeup_threshold = u64::from(ring_buffer_bytes / 8);
        let btf = parse_btf(btf_path)?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global(WAKEUP_THRESHOLD_GLOBAL, &wakeup_threshold, true)
            .map_max_entries(EVENTS_MAP, ring_buffer_bytes)
            .load(FLOOR_OBJECT)
            .context("the kernel refused the floor's eBPF maps or object")?;
        let raw: &mut RawTracePoint = ebpf
            .program_mut(FLOOR_RAW)
            .ok_or_else(|| anyhow!("the floor object has no program {FLOOR_RAW}"))?
            .try_into()?;
        raw.load()
            .with_context(|| format!("the kernel refused floor program {FLOOR_RAW}"))?;
        for name in [FLOOR_ENTER, FLOOR_EXIT] {
            let tracepoint: &mut TracePoint = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("the floor object has no program {name}"))?
                .try_into()?;
            tracepoint
                .load()
                .with_context(|| format!("the kernel refused floor program {name}"))?;
        }
        let mut attached = 0;
        for hook in probe_hooks(activity)? {
            match hook {
                Hook::Syscall(tracepoint_name) => {
                    let program = if tracepoint_name.starts_with("sys_enter_")
                        || is_activity_hook(&tracepoint_name)
                    {
                        FLOOR_ENTER
                    } else if tracepoint_name.starts_with("sys_exit_") {
                        FLOOR_EXIT
                    } else {
                        bail!(
                            "probe {tracepoint_name} is neither a sys_enter_ nor a sys_exit_ one"
                        );
                    };
                    let tracepoint: &mut TracePoint = ebpf
                        .program_mut(program)
                        .expect("loaded above")
                        .try_into()?;
                    tracepoint
                        .attach("syscalls", &tracepoint_name)
                        .with_context(|| {
                            format!("cannot attach to tracepoint syscalls:{tracepoint_name}")
                        })?;
                }
                Hook::Btf(name) => {
                    let program = ebpf.program_mut(&name).ok_or_else(|| {
                        anyhow!("the floor has no BTF tracepoint {name}, which the probes use")
                    })?;
                    attach_program(&name, program, &name, &btf)?;
                }
                Hook::Raw(tracepoint) => {
                    let raw: &mut RawTracePoint = ebpf
                        .program_mut(FLOOR_RAW)
                        .expect("loaded above")
                        .try_into()?;
                    raw.attach(&tracepoint)
                        .with_context(|| format!("cannot attach to raw tracepoint {tracepoint}"))?;
                }
            }
            attached += 1;
        }
        Self::take_maps(ebpf, attached)
    }
}

/// Where one of the probes attaches.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Hook {
    /// `syscalls:<name>`.
    Syscall(String),
    /// The BTF tracepoint `<name>`.
    Btf(String),
    /// The raw tracepoint `<name>`.
    Raw(String),
}

/// Whether a syscall tracepoint is one of the activity hooks'.
fn is_activity_hook(tracepoint: &str) -> bool {
    classify(tracepoint).is_some_and(|(hook, _)| ACTIVITY_HOOKS.contains(&hook))
}

/// Every hook of the tracepoint backend, read from the object file without loading it (the
/// floor is measured against that backend); the activity hooks with `activity` only. A raw
/// tracepoint (`kfree`) is listed once, however many copies of the program the probes attach
/// there.
fn probe_hooks(activity: bool) -> Result<Vec<Hook>> {
    let object = aya_obj::Object::parse(PROBES_OBJECT).context("parsing the probes object")?;
    let mut hooks: Vec<Hook> = object
        .programs
        .into_iter()
        .filter_map(|(name, program)| match program.section {
            aya_obj::ProgramSection::TracePoint => {
                (activity || !is_activity_hook(&name)).then_some(Hook::Syscall(name))
            }
            aya_obj::ProgramSection::BtfTracePoint => Some(Hook::Btf(name)),
            aya_obj::ProgramSection::RawTracePoint => KFREE_COPIES
                .contains(&name.as_str())
                .then(|| Hook::Raw(KFREE_TRACEPOINT.to_owned())),
            _ => None,
        })
        .collect();
    hooks.sort();
    hooks.dedup();
    Ok(hooks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_covers_every_hook_of_the_probes() {
        let hooks = probe_hooks(false).unwrap();
        assert!(hooks.contains(&Hook::Syscall("sys_enter_setns".into())));
        assert!(hooks.contains(&Hook::Syscall("sys_exit_msgget".into())));
        // The activity hooks only when asked for, as `trace` attaches them.
        assert!(!hooks.contains(&Hook::Syscall("sys_exit_msgsnd".into())));
        let with_activity = probe_hooks(true).unwrap();
        let added: Vec<&Hook> = with_activity
            .iter()
            .filter(|h| !hooks.contains(h))
            .collect();
        assert_eq!(
            added,
            ["msgrcv", "msgsnd", "semop", "semtimedop"]
                .map(|hook| Hook::Syscall(format!("sys_exit_{hook}")))
                .iter()
                .collect::<Vec<_>>()
        );
        assert!(hooks.contains(&Hook::Btf("task_newtask".into())));
        // Two copies of the kfree program, one hook.
        assert_eq!(
            hooks
                .iter()
                .filter(|h| matches!(h, Hook::Raw(_)))
                .collect::<Vec<_>>(),
            [&Hook::Raw("kfree".into())]
        );
        let floor = aya_obj::Object::parse(FLOOR_OBJECT).unwrap();
        for hook in &hooks {
            match hook {
                Hook::Syscall(name) => assert!(
                    name.starts_with("sys_enter_") || name.starts_with("sys_exit_"),
                    "{name}"
                ),
                Hook::Btf(name) => assert!(
                    matches!(
                        floor.programs.get(name).map(|p| &p.section),
                        Some(aya_obj::ProgramSection::BtfTracePoint)
                    ),
                    "the floor lacks BTF tracepoint {name}"
                ),
                Hook::Raw(_) => assert!(matches!(
                    floor.programs.get(FLOOR_RAW).map(|p| &p.section),
                    Some(aya_obj::ProgramSection::RawTracePoint)
                )),
            }
        }
        for name in [FLOOR_ENTER, FLOOR_EXIT] {
            assert!(matches!(
                floor.programs.get(name).map(|p| &p.section),
                Some(aya_obj::ProgramSection::TracePoint)
            ));
        }
    }
}
