//! Loading the eBPF object into the kernel and attaching its programs (tracepoint backend).

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, Program, RawTracePoint, TracePoint},
};
use nsipc_common::{EVENTS_MAP, KernelOffsets, LOST_MAP, OFFSETS_GLOBAL, WAKEUP_THRESHOLD_GLOBAL};

/// The probes, compiled for the bpf target by build.rs.
static PROBES_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nsipc"));

/// The tracefs category of a tracepoint program, from its name: `sys_enter_*`/`sys_exit_*` are
/// syscall tracepoints.
fn tracepoint_category(program: &str) -> Option<&'static str> {
    match program {
        name if name.starts_with("sys_") => Some("syscalls"),
        _ => None,
    }
}

/// The benchmark floor (`nsipc-ebpf/src/bin/floor.rs`), built next to the probes.
static FLOOR_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor"));

pub struct LoadOptions<'a> {
    pub offsets: KernelOffsets,
    pub btf_path: &'a Path,
    /// Ring buffer size in bytes: a power of two, a multiple of the page size.
    pub ring_buffer_bytes: u32,
}

/// Loaded and attached probes. Dropping `programs` detaches and unloads every program; the
/// maps stay readable so what is already in the ring buffer can still be drained.
pub struct Probes {
    programs: Option<Ebpf>,
    lost: PerCpuArray<MapData, u64>,
    pub attached: usize,
}

impl Probes {
    /// Loads, attaches, and hands back the probes with the ring buffer they write to.
    pub fn load_and_attach(options: &LoadOptions<'_>) -> Result<(Self, RingBuf<MapData>)> {
        // Force a wakeup once an eighth of the buffer waits: the reader keeps up under bursts
        // without being woken for every record.
        let wakeup_threshold = u64::from(options.ring_buffer_bytes / 8);
        let mut ebpf = EbpfLoader::new()
            .override_global(OFFSETS_GLOBAL, &options.offsets, true)
            .override_global(WAKEUP_THRESHOLD_GLOBAL, &wakeup_threshold, true)
            .map_max_entries(EVENTS_MAP, options.ring_buffer_bytes)
            .load(PROBES_OBJECT)
            .context("the kernel refused the eBPF maps or object")?;

        let btf = parse_btf(options.btf_path)?;
        let mut attached = 0;
        for (name, program) in ebpf.programs_mut() {
            attach(name, program, &btf)?;
            attached += 1;
        }
        Self::take_maps(ebpf, attached)
    }

    /// Loads the benchmark floor and attaches it to every hook the probes use: `floor_enter` on
    /// each `sys_enter_*` tracepoint, `floor_exit` on each `sys_exit_*` one, and the floor's BTF
    /// tracepoint of the same name as each of the probes'. The hook list is read from the
    /// probes object, so the floor cannot drift from the probes.
    pub fn load_floor_and_attach(
        btf_path: &Path,
        ring_buffer_bytes: u32,
    ) -> Result<(Self, RingBuf<MapData>)> {
        let wakeup_threshold = u64::from(ring_buffer_bytes / 8);
        let mut ebpf = EbpfLoader::new()
            .override_global(WAKEUP_THRESHOLD_GLOBAL, &wakeup_threshold, true)
            .map_max_entries(EVENTS_MAP, ring_buffer_bytes)
            .load(FLOOR_OBJECT)
            .context("the kernel refused the floor's eBPF maps or object")?;
        let btf = parse_btf(btf_path)?;
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
        for hook in probe_hooks()? {
            match hook {
                Hook::Syscall(tracepoint_name) => {
                    let program = if tracepoint_name.starts_with("sys_enter_") {
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
                    attach(&name, program, &btf)?;
                }
            }
            attached += 1;
        }
        Self::take_maps(ebpf, attached)
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
        Ok((
            Self {
                programs: Some(ebpf),
                lost,
                attached,
            },
            ring,
        ))
    }

    /// Detaches and unloads every program. Idempotent.
    ///
    /// `kfree` goes first: it reports deaths that come without a syscall, and the others go one
    /// by one in no set order, tens of milliseconds apart. Were `kfree` still attached once
    /// `sys_exit_shmctl` is gone, every segment removed by IPC_RMID meanwhile would be reported
    /// as dying of something else (`namespace_teardown`, in a namespace still alive).
    pub fn detach(&mut self) {
        if let Some(ebpf) = &mut self.programs
            && let Some(Program::RawTracePoint(kfree)) = ebpf.program_mut("kfree")
        {
            let _ = kfree.unload();
        }
        self.programs = None;
    }

    /// Records the probes could not write because the ring buffer was full, since load.
    pub fn lost_total(&self) -> Result<u64> {
        let per_cpu = self
            .lost
            .get(&0, 0)
            .context("reading the lost-record counters")?;
        Ok(per_cpu.iter().sum())
    }
}

/// Loads one program and attaches it where its name says: tracepoint programs on the tracepoint
/// of that name ([`tracepoint_category`]), BTF and raw tracepoints on the kernel tracepoint of
/// that name.
fn attach(name: &str, program: &mut Program, btf: &Btf) -> Result<()> {
    let refused = || format!("the kernel refused probe {name}");
    match program {
        Program::TracePoint(tracepoint) => {
            let tracepoint: &mut TracePoint = tracepoint;
            let category = tracepoint_category(name)
                .ok_or_else(|| anyhow!("probe {name} names no known tracepoint"))?;
            tracepoint.load().with_context(refused)?;
            tracepoint
                .attach(category, name)
                .with_context(|| format!("cannot attach to tracepoint {category}:{name}"))?;
        }
        Program::BtfTracePoint(tracepoint) => {
            let tracepoint: &mut BtfTracePoint = tracepoint;
            tracepoint.load(name, btf).with_context(refused)?;
            tracepoint
                .attach()
                .with_context(|| format!("cannot attach to BTF tracepoint {name}"))?;
        }
        Program::RawTracePoint(tracepoint) => {
            let tracepoint: &mut RawTracePoint = tracepoint;
            tracepoint.load().with_context(refused)?;
            tracepoint
                .attach(name)
                .with_context(|| format!("cannot attach to raw tracepoint {name}"))?;
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

/// The floor's programs for the syscall tracepoints (see `nsipc-ebpf/src/bin/floor.rs`).
const FLOOR_ENTER: &str = "floor_enter";
const FLOOR_EXIT: &str = "floor_exit";

fn parse_btf(path: &Path) -> Result<Btf> {
    Btf::parse_file(path, aya::Endianness::default())
        .with_context(|| format!("reading kernel BTF from {}", path.display()))
}

/// Where one of the probes attaches.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Hook {
    /// `syscalls:<name>`.
    Syscall(String),
    /// The BTF tracepoint `<name>`.
    Btf(String),
}

/// Every hook of the probes where they write records, read from the object file without
/// loading it. `kfree` (a raw tracepoint) is left out: there the probes only look a pointer up
/// and almost never write, so a floor writing a record per kfree on the machine would be no
/// floor; its cost stays in the agent's overhead.
fn probe_hooks() -> Result<Vec<Hook>> {
    let object = aya_obj::Object::parse(PROBES_OBJECT).context("parsing the probes object")?;
    let mut hooks = object
        .programs
        .into_iter()
        .filter(|(name, _)| name != "kfree")
        .map(|(name, program)| match program.section {
            aya_obj::ProgramSection::TracePoint => Ok(Hook::Syscall(name)),
            aya_obj::ProgramSection::BtfTracePoint => Ok(Hook::Btf(name)),
            other => Err(anyhow!("probe {name} has an unexpected type {other:?}")),
        })
        .collect::<Result<Vec<_>>>()?;
    hooks.sort();
    Ok(hooks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_covers_every_hook_of_the_probes() {
        let hooks = probe_hooks().unwrap();
        assert!(hooks.contains(&Hook::Syscall("sys_enter_msgget".into())));
        assert!(hooks.contains(&Hook::Syscall("sys_exit_msgget".into())));
        assert!(hooks.contains(&Hook::Btf("task_newtask".into())));
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
