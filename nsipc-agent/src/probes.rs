//! Loading the eBPF object into the kernel and attaching its programs (tracepoint backend).

use std::path::Path;

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, Program, TracePoint},
};
use nsipc_common::{EVENTS_MAP, KernelOffsets, LOST_MAP, OFFSETS_GLOBAL, WAKEUP_THRESHOLD_GLOBAL};

/// The probes, compiled for the bpf target by build.rs.
static PROBES_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nsipc"));

/// The tracefs category of a tracepoint program, from its name: `sys_enter_*`/`sys_exit_*` are
/// syscall tracepoints, `kfree` is `kmem:kfree`.
fn tracepoint_category(program: &str) -> Option<&'static str> {
    match program {
        name if name.starts_with("sys_") => Some("syscalls"),
        "kfree" => Some("kmem"),
        _ => None,
    }
}

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

        let btf = Btf::parse_file(options.btf_path, aya::Endianness::default())
            .with_context(|| format!("reading kernel BTF from {}", options.btf_path.display()))?;
        let mut attached = 0;
        for (name, program) in ebpf.programs_mut() {
            attach(name, program, &btf)?;
            attached += 1;
        }

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
            && let Some(Program::TracePoint(kfree)) = ebpf.program_mut("kfree")
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
/// of that name ([`tracepoint_category`]), BTF tracepoints on the kernel tracepoint of that name.
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
        other => {
            return Err(anyhow!(
                "probe {name} has an unexpected type {:?}",
                other.prog_type()
            ));
        }
    }
    Ok(())
}
