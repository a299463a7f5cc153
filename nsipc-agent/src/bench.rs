//! `nsipc-bench`, the commands `cargo xtask bench` drives: built only with the `bench` feature,
//! so that the shipped `nsipc-agent` carries none of it (nor the counting allocator, nor the
//! floor's eBPF object).
//!
//! - `floor`: the floor tracer. The minimal programs of `nsipc-ebpf/src/bin/floor.rs` on
//!   the probes' hooks, drained by the same kind of event loop as `trace`, which discards.
//! - `json`: the decode + JSON path of `trace` alone, fed records shaped like the ones the
//!   IPC storm workload makes the probes write, into a buffered writer that discards: once as
//!   from a host task and once as from a container's, for the cost of attribution per event.
//! - `memory`: the lifecycle engine's resident set with many live namespaces and objects.

use std::{
    io::{self, Write},
    ops::Range,
    path::PathBuf,
    process::ExitCode,
    time::Instant,
};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use clap::{Parser, Subcommand};
use nsipc_common::{EventKind, HOST_IPC_NS_INUM, NsRef, Record};
use serde_json::json;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval},
};

use crate::{
    alloc_count, allocator,
    attribution::Attribution,
    cli::{OutputFormat, parse_ring_buffer_size},
    containers::{Container, Runtime},
    decode::{Body, ContainerRef, KernelEvent, Task},
    kernel::{self, DEFAULT_BTF_PATH},
    lifecycle::Engine,
    names::IpcObject,
    output::pretty::Style,
    output::sink::Format,
    probes::Probes,
    trace::{IDLE_POLL, Stream},
};

/// The bench binary's allocator counts allocations, as the unit tests' does.
pub use crate::alloc_count::CountingAllocator;

#[derive(Debug, Parser)]
#[command(
    name = "nsipc-bench",
    about = "The commands `cargo xtask bench` drives: the floor tracer, the JSON path alone, the \
             lifecycle engine's memory"
)]
struct BenchCli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The benchmark floor: minimal programs on the probes' hooks, drained by a consumer that
    /// discards (needs root).
    Floor(FloorArgs),
    /// The decode + JSON path alone.
    Json(JsonArgs),
    /// The lifecycle engine's memory with many live namespaces and objects.
    Memory(MemoryArgs),
}

#[derive(Debug, clap::Args)]
struct FloorArgs {
    /// Size of the ring buffer, as for `trace`.
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = parse_ring_buffer_size)]
    ring_buffer_size: u32,

    /// BTF of the running kernel (to attach the BTF tracepoints).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_BTF_PATH)]
    btf: PathBuf,
}

#[derive(Debug, clap::Args)]
struct JsonArgs {
    /// How many records to decode and serialize.
    #[arg(long, default_value_t = 2_000_000)]
    records: u64,

    /// The format to write them in (into a writer that discards).
    #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
    output: OutputFormat,

    /// Colour the pretty lines.
    #[arg(long)]
    color: bool,
}

impl JsonArgs {
    fn format(&self) -> Format {
        match self.output {
            OutputFormat::Json => Format::Json,
            OutputFormat::Pretty => Format::Pretty(Style::new(self.color)),
            OutputFormat::None => Format::None,
        }
    }
}

#[derive(Debug, clap::Args)]
struct MemoryArgs {
    /// Live namespaces to create.
    #[arg(long, default_value_t = 10_000)]
    namespaces: u32,
    /// Live objects to create, spread over the namespaces.
    #[arg(long, default_value_t = 100_000)]
    objects: u32,
}

/// The `nsipc-bench` command.
pub fn main() -> ExitCode {
    // The agent's allocator settings, so that the memory measured is the agent's.
    allocator::return_freed_memory_promptly();
    let cli = BenchCli::parse();
    let result = match cli.command {
        BenchCommand::Floor(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the event loop")
            .and_then(|runtime| {
                runtime.block_on(floor(FloorOptions {
                    btf_path: args.btf,
                    ring_buffer_bytes: args.ring_buffer_size,
                }))
            }),
        BenchCommand::Json(args) => json_path(args.records, args.format()),
        BenchCommand::Memory(args) => engine_memory(args.namespaces, args.objects),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => crate::fail(&err),
    }
}

struct FloorOptions {
    pub btf_path: PathBuf,
    pub ring_buffer_bytes: u32,
}

fn print_line(value: &serde_json::Value) -> Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush().context("writing to stdout")
}

/// Takes every waiting record out of the ring buffer and throws it away.
fn discard(ring: &mut RingBuf<MapData>) -> u64 {
    let mut records = 0;
    while ring.next().is_some() {
        records += 1;
    }
    records
}

/// Runs the floor until SIGINT/SIGTERM. Prints `floor.ready` once attached and `floor.stop`
/// with the records drained and the records the kernel could not buffer.
async fn floor(options: FloorOptions) -> Result<()> {
    kernel::check_privileges()?;
    kernel::ensure_tracefs()?;
    let (mut probes, ring) =
        Probes::load_floor_and_attach(&options.btf_path, options.ring_buffer_bytes)?;
    // SAFETY: as in `trace::run`: AsyncFd owns the ring buffer, which owns its map fd.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| err.into_parts().1)
        .context("registering the ring buffer with the event loop")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    print_line(&json!({
        "event": "floor.ready",
        "programs": probes.attached,
        "ring_buffer_bytes": options.ring_buffer_bytes,
        "pid": std::process::id(),
    }))?;

    let mut records = 0;
    let mut tick = interval(IDLE_POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                records += discard(guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = tick.tick() => records += discard(ring.get_mut()),
        }
    }
    probes.detach();
    records += discard(&mut ring.into_inner());
    print_line(&json!({
        "event": "floor.stop",
        "records": records,
        "lost": probes.lost_per_slot()?.iter().sum::<u64>(),
    }))
}

/// A writer that only counts bytes, so the benchmark measures formatting, not I/O.
#[derive(Default)]
struct ByteCounter {
    bytes: u64,
}

impl Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `IPC_CREAT | 0600`, as the storm workload passes it.
const CREATE_FLAGS: u64 = 0o1600;
/// `IPC_RMID`.
const IPC_RMID: u64 = 0;
/// The host IPC namespace's `ns_id` on the 6.18 development machine.
const HOST_NS_ID: u64 = 4098;

/// The host namespace as the probes report it.
const HOST_NS: NsRef = NsRef {
    id: HOST_NS_ID,
    inum: HOST_IPC_NS_INUM,
    life: 0,
};

/// The cgroup id of the host task's records: 0, not read, as the probes write it when the
/// agent does not attribute (the path then costs what it did before attribution).
const HOST_CGROUP: u64 = 0;
/// The cgroup id of the container task's records; [`json_attribution`] knows its container.
const CONTAINER_CGROUP: u64 = 8_421;

/// The container of [`CONTAINER_CGROUP`], as a Docker container's metadata names it.
fn bench_container() -> Container {
    Container {
        id: "9c1f3b6e0a2d4c8e7f5a1b3d9e0c2f4a6b8d0e1f3a5c7e9b2d4f6a8c0e1b3d5f".into(),
        runtime: Runtime::Docker,
        name: Some("nsipc-bench-wl".into()),
        pod: None,
    }
}

/// What the JSON path attributes: [`CONTAINER_CGROUP`] to [`bench_container`], learnt once as
/// `trace` learns a cgroup at its first event, so every event after costs what `trace`'s do.
fn json_attribution() -> Attribution {
    let mut attribution = Attribution::none();
    attribution.assign(CONTAINER_CGROUP, bench_container());
    attribution
}

/// The default `trace` path: decode, attribution, lifecycle engine, JSON (or `format`).
fn json_stream<W: Write>(out: W, format: Format) -> Stream<W> {
    Stream::new(out, false)
        .attributing(json_attribution())
        .formatting(format)
}

/// The bytes a probe writes for one record of the benchmark's workload process, in cgroup
/// `cgroup`.
fn record_bytes(
    kind: EventKind,
    ts_ns: u64,
    (ns, other_ns): (NsRef, NsRef),
    ret: i64,
    args: [u64; 4],
    cgroup: u64,
) -> [u8; Record::SIZE] {
    let mut comm = [0u8; 16];
    comm[..14].copy_from_slice(b"nsipc-bench-wl");
    Record {
        kind: kind as u32,
        pid: 48_213,
        tid: 48_213,
        uid: 0,
        ts_ns,
        ns,
        other_ns,
        ret,
        args,
        comm,
        cgroup,
        euid: 0,
        ppid: 0,
    }
    .to_bytes()
}

/// `count` records as the probes write them for the storm workload: msgget, msgctl(IPC_RMID),
/// shmget, shmctl(IPC_RMID), semget, semctl(IPC_RMID) in turn, with ids, timestamps and
/// return values that change from record to record as they do for real; in cgroup `cgroup`.
fn storm_records(count: usize, cgroup: u64) -> Vec<[u8; Record::SIZE]> {
    (0..count)
        .map(|i| {
            // The kernel's ids are (seq << 15) + index; every create takes the next seq.
            let id = ((i / 2) as u64 % 65_536) << 15;
            let (kind, ret, args) = match i % 6 {
                0 => (EventKind::MsgGet, id as i64, [0, CREATE_FLAGS, 0, 0]),
                1 => (EventKind::MsgCtl, 0, [id, IPC_RMID, 0, 0]),
                2 => (EventKind::ShmGet, id as i64, [0, 4096, CREATE_FLAGS, 0]),
                3 => (EventKind::ShmCtl, 0, [id, IPC_RMID, 0, 0]),
                4 => (EventKind::SemGet, id as i64, [0, 1, CREATE_FLAGS, 0]),
                _ => (EventKind::SemCtl, 0, [id, 0, IPC_RMID, 0]),
            };
            let ts_ns = 1_533_000_000_000 + i as u64 * 2_347;
            record_bytes(kind, ts_ns, (HOST_NS, NsRef::default()), ret, args, cgroup)
        })
        .collect()
}

fn thread_cpu_ns() -> u64 {
    crate::output::fields::clock_ns(libc::CLOCK_THREAD_CPUTIME_ID) as u64
}

/// Rounds a run is cut into, the host's and the container's in turn: load from others on a
/// shared machine, or a change of clock speed, falls on both alike.
const ROUNDS: u64 = 10;

/// What feeding one stream cost, over all its rounds.
#[derive(Default)]
struct Cost {
    ns: u64,
    cpu_ns: u64,
    allocations: u64,
}

/// Feeds records `records` of `samples` (round and round) to `stream`, and flushes it.
fn feed(
    stream: &mut Stream<ByteCounter>,
    samples: &[[u8; Record::SIZE]],
    records: Range<u64>,
    cost: &mut Cost,
) -> Result<()> {
    let start = Instant::now();
    let start_cpu = thread_cpu_ns();
    let start_allocations = alloc_count::allocations();
    for i in records {
        stream.record(&samples[i as usize % samples.len()])?;
    }
    stream.sink.flush()?;
    cost.allocations += alloc_count::allocations() - start_allocations;
    cost.cpu_ns += thread_cpu_ns() - start_cpu;
    cost.ns += start.elapsed().as_nanos() as u64;
    Ok(())
}

/// Feeds `records` records through `trace`'s decode + attribution + lifecycle + JSON path on
/// this thread twice, as from a host task and as from a task of a container the path knows
/// (the same records, in another cgroup), and prints `{"records", "ns", "cpu_ns", "bytes",
/// "allocations"}` for the host run and the same with `container_` for the container's: wall
/// time, and this thread's CPU time, which is what one core would need on a machine not shared
/// with anything else, and the heap allocations the path made (the hot path should make none).
/// The difference is what attributing an event to its container costs.
///
/// `format`: what the lines are (`--output pretty`: the human view's cost, on the same path).
fn json_path(records: u64, format: Format) -> Result<()> {
    // More distinct records than fit in the CPU's L1 cache, fewer than would test the memory.
    let host_samples = storm_records(6 * 1024, HOST_CGROUP);
    let container_samples = storm_records(6 * 1024, CONTAINER_CGROUP);
    let mut host = json_stream(ByteCounter::default(), format);
    let mut container = json_stream(ByteCounter::default(), format);
    let (mut host_cost, mut container_cost) = (Cost::default(), Cost::default());
    for round in 0..ROUNDS {
        let part = records * round / ROUNDS..records * (round + 1) / ROUNDS;
        feed(&mut host, &host_samples, part.clone(), &mut host_cost)?;
        feed(
            &mut container,
            &container_samples,
            part,
            &mut container_cost,
        )?;
    }
    print_line(&json!({
        "records": records,
        "ns": host_cost.ns,
        "cpu_ns": host_cost.cpu_ns,
        "bytes": host.sink.get_ref().bytes,
        "allocations": host_cost.allocations,
        "container_ns": container_cost.ns,
        "container_cpu_ns": container_cost.cpu_ns,
        "container_bytes": container.sink.get_ref().bytes,
        "container_allocations": container_cost.allocations,
    }))
}

/// This process's resident set (`VmRSS`), in bytes.
fn rss_bytes() -> Result<u64> {
    status_bytes("VmRSS:")
}

/// A size line of /proc/self/status (`VmRSS:`, `VmHWM:`…), in bytes.
fn status_bytes(field: &str) -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .with_context(|| format!("no {field} in /proc/self/status"))?;
    Ok(kib * 1024)
}

/// Feeds the lifecycle engine the events that create `namespaces` namespaces holding `objects`
/// objects in all, then the frees that destroy them, and prints the resident set at each
/// stage: `{"namespaces", "objects", "rss_start", "rss_live", "rss_dead", "rss_released",
/// "rss_after", "rss_peak", "bytes_per_object"}`. `rss_dead`: once all died, the engine still
/// alive; `rss_released`: then once the allocator gave its free memory back, as `trace` has it
/// do after mass deaths (what `trace` keeps); `rss_after`: the engine dropped; `rss_peak`: the
/// process's high-water mark (`VmHWM`, table growth included). `bytes_per_object` charges the
/// whole growth to the objects (namespaces included).
fn engine_memory(namespaces: u32, objects: u32) -> Result<()> {
    let mut engine = Engine::new(std::process::id());
    let mut out = Vec::new();
    let mut comm = [0u8; 16];
    comm[..5].copy_from_slice(b"bench");
    let task = Task {
        pid: 1,
        tid: 1,
        ppid: 1,
        uid: 0,
        euid: 0,
        comm,
        cgroup: 0,
        container: ContainerRef::NONE,
    };
    let host = NsRef {
        id: HOST_NS_ID,
        inum: HOST_IPC_NS_INUM,
        life: 0,
    };
    // Far from any inum or id the host hands out; every namespace distinct.
    let ns = |i: u32| NsRef {
        id: 1_000_000 + u64::from(i),
        inum: 0xE000_0000 + i,
        life: 0,
    };
    let rss_start = rss_bytes()?;
    for i in 0..namespaces {
        let body = Body::Unshare {
            flags: 0x0800_0000,
            from: host,
            result: Ok(0),
        };
        engine.apply(
            &KernelEvent {
                ts_ns: 1,
                task,
                ns: ns(i),
                body,
            },
            &mut out,
        );
        out.clear();
    }
    let objects_kinds = [IpcObject::Msg, IpcObject::Shm, IpcObject::Sem];
    for j in 0..objects {
        let object = objects_kinds[j as usize % 3];
        let key = j as i32 + 1;
        let body = Body::Get {
            object,
            key,
            flags: 0o1600,
            size: 4096,
            result: Ok(i64::from(j / namespaces.max(1)) << 15),
        };
        engine.apply(
            &KernelEvent {
                ts_ns: 2,
                task,
                ns: ns(j % namespaces.max(1)),
                body,
            },
            &mut out,
        );
        out.clear();
    }
    let rss_live = rss_bytes()?;
    for i in 0..namespaces {
        engine.apply(
            &KernelEvent {
                ts_ns: 3,
                task,
                ns: ns(i),
                body: Body::NsFreed,
            },
            &mut out,
        );
        out.clear();
    }
    // The engine's big maps give their memory back by themselves; the object maps of dead
    // namespaces are small allocations that glibc keeps until told otherwise.
    let rss_dead = rss_bytes()?;
    allocator::release_freed_memory();
    let rss_released = rss_bytes()?;
    drop(engine);
    let rss_after = rss_bytes()?;
    print_line(&json!({
        "namespaces": namespaces,
        "objects": objects,
        "rss_start": rss_start,
        "rss_live": rss_live,
        "rss_dead": rss_dead,
        "rss_released": rss_released,
        "rss_after": rss_after,
        "rss_peak": status_bytes("VmHWM:")?,
        "bytes_per_object": (rss_live.saturating_sub(rss_start)) / u64::from(objects.max(1)),
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// One round of a workload that goes through every kind of event and most of the engine:
    /// objects created with and without keys and destroyed, a failed get, a segment attached,
    /// removed while attached and detached, a namespace created by unshare and by clone,
    /// joined, left, and freed with an object still in it. Every round ends as it began.
    fn mixed_round(round: u64, cgroup: u64) -> Vec<[u8; Record::SIZE]> {
        use EventKind::*;
        let record = |kind, ts, ns, ret, args| record_bytes(kind, ts, ns, ret, args, cgroup);
        let ts = 2_000_000_000_000 + round * 1_000_000;
        let child = |inum: u32, id: u64| NsRef { id, inum, life: 0 };
        // New namespaces reuse their inums, as the kernel does, with new ids.
        let a = child(0xF000_0100, 10_000 + 2 * round);
        let b = child(0xF000_0101, 10_001 + 2 * round);
        let host = (HOST_NS, NsRef::default());
        let id = |seq: u64| (((round % 1000) * 8 + seq) << 15) as i64;
        let mut records = vec![
            record(MsgGet, ts, host, id(0), [0x5eed, CREATE_FLAGS, 0, 0]),
            record(ShmGet, ts + 1, host, id(1), [0, 8192, CREATE_FLAGS, 0]),
            record(SemGet, ts + 2, host, id(2), [0x5eee, 3, CREATE_FLAGS, 0]),
            // ENOENT for a key that lives nowhere else.
            record(MsgGet, ts + 3, host, -2, [0x7777, 0, 0, 0]),
            record(
                ShmAttach,
                ts + 4,
                host,
                0x7f00_0000_0000,
                [id(1) as u64, 0, 0, 0],
            ),
            // IPC_RMID while attached, then the last detach and the segment's free.
            record(ShmCtl, ts + 5, host, 0, [id(1) as u64, IPC_RMID, 0, 1]),
            record(ShmDetach, ts + 6, host, 0, [0x7f00_0000_0000, 0, 0, 0]),
            record(ShmFreed, ts + 7, host, 0, [id(1) as u64, 0, 0, 0]),
            record(MsgCtl, ts + 8, host, 0, [id(0) as u64, IPC_RMID, 0, 0]),
            record(SemCtl, ts + 9, host, 0, [id(2) as u64, 0, IPC_RMID, 0]),
            // A command that changes nothing.
            record(MsgCtl, ts + 10, host, 0, [id(0) as u64, 2, 0, 0]),
            record(Unshare, ts + 11, (a, HOST_NS), 0, [0x0800_0000, 0, 0, 0]),
            record(
                SemGet,
                ts + 12,
                (a, NsRef::default()),
                0,
                [0x5eee, 1, CREATE_FLAGS, 0],
            ),
            record(Clone, ts + 13, (b, a), 4242, [0x0800_0011, 4242, 0, 0]),
            record(Setns, ts + 14, (b, a), 0, [3, 0x0800_0000, 0, 0]),
            record(Setns, ts + 15, (HOST_NS, b), 0, [3, 0x0800_0000, 0, 0]),
            record(ProcessExit, ts + 16, (a, NsRef::default()), 0, [0; 4]),
        ];
        for ns in [a, b] {
            records.push(record(NsFreed, ts + 17, (ns, NsRef::default()), 0, [0; 4]));
        }
        records
    }

    /// Allocations `stream` makes for `records`.
    fn allocations_for(stream: &mut Stream<ByteCounter>, records: &[[u8; Record::SIZE]]) -> u64 {
        let start = alloc_count::allocations();
        for bytes in records {
            stream.record(bytes).unwrap();
        }
        alloc_count::allocations() - start
    }

    /// The target: no allocation per event on the JSON path, once its buffers and maps
    /// have grown to what the workload needs; for a container's tasks as for the host's.
    #[test]
    fn the_json_path_does_not_allocate_in_its_steady_state() {
        for (cgroup, per_mixed_round) in [
            (HOST_CGROUP, 0),
            // A namespace a container lives in keeps the list of its containers, and a join
            // into it carries a copy: one list for each of the round's two namespaces, one
            // copy for its join into the second. Per namespace, not per event.
            (CONTAINER_CGROUP, 3),
        ] {
            let mut stream = json_stream(ByteCounter::default(), Format::Json);
            let storm = storm_records(6 * 64, cgroup);
            for round in 0..50 {
                allocations_for(&mut stream, &mixed_round(round, cgroup));
                allocations_for(&mut stream, &storm);
            }
            for round in 50..150 {
                let mixed = mixed_round(round, cgroup);
                let context = format!("cgroup {cgroup}, round {round}");
                assert_eq!(
                    allocations_for(&mut stream, &mixed),
                    per_mixed_round,
                    "{context}"
                );
                assert_eq!(allocations_for(&mut stream, &storm), 0, "{context}");
            }
            stream.sink.flush().unwrap();
            assert!(stream.sink.get_ref().bytes > 0);
        }
        // The counter does count this thread's allocations.
        let start = alloc_count::allocations();
        drop(std::hint::black_box(Vec::<u8>::with_capacity(10)));
        assert_eq!(alloc_count::allocations(), start + 1);
    }

    /// The human view writes the storm's lines without allocating either: a line per record,
    /// as the JSON path.
    #[test]
    fn the_pretty_path_does_not_allocate_for_the_storm() {
        let format = Format::Pretty(crate::output::pretty::Style::new(true));
        for cgroup in [HOST_CGROUP, CONTAINER_CGROUP] {
            let storm = storm_records(6 * 64, cgroup);
            let mut stream = json_stream(ByteCounter::default(), format);
            for _ in 0..20 {
                allocations_for(&mut stream, &storm);
            }
            for round in 0..50 {
                assert_eq!(
                    allocations_for(&mut stream, &storm),
                    0,
                    "cgroup {cgroup}, round {round}"
                );
            }

            let mut stream = json_stream(Vec::new(), format);
            feed_lines(&mut stream, &storm);
            stream.sink.flush().unwrap();
            let out = String::from_utf8(stream.sink.get_ref().clone()).unwrap();
            let lines: Vec<&str> = out
                .lines()
                .filter(|line| !line.contains("container.host_ipc"))
                .collect();
            assert_eq!(lines.len(), storm.len(), "a line per storm record");
            let last = lines.last().unwrap();
            assert!(last.contains("\x1b[31msem.destroy\x1b[0m"), "{last}");
            assert!(last.contains("/nsipc-bench-wl"), "{last}");
            let who = if cgroup == HOST_CGROUP {
                " host "
            } else {
                " nsipc-bench-wl "
            };
            assert!(last.contains(who), "{last}");
        }
    }

    fn feed_lines(stream: &mut Stream<Vec<u8>>, records: &[[u8; Record::SIZE]]) {
        for bytes in records {
            stream.record(bytes).unwrap();
        }
    }

    #[test]
    fn mixed_rounds_go_through_every_lifecycle_event() {
        let mut stream = Stream::new(Vec::new(), false);
        for round in 0..2 {
            for bytes in mixed_round(round, HOST_CGROUP) {
                stream.record(&bytes).unwrap();
            }
        }
        stream.sink.flush().unwrap();
        let out = String::from_utf8(stream.sink.get_ref().clone()).unwrap();
        let names: Vec<String> = out
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["event"].to_string())
            .collect();
        for expected in [
            "msg.create",
            "msg.destroy",
            "shm.create",
            "shm.attach",
            "shm.remove",
            "shm.detach",
            "shm.destroy",
            "sem.create",
            "sem.destroy",
            "msg.get_failed",
            "ipc_ns.create",
            "ipc_ns.join",
            "ipc_ns.destroy",
        ] {
            let count = names
                .iter()
                .filter(|n| n.trim_matches('"') == expected)
                .count();
            assert!(count >= 2, "{expected}: {count} in {names:?}");
        }
    }

    /// The lines of six storm records in cgroup `cgroup`, through the benchmark's path.
    fn storm_lines(cgroup: u64) -> Vec<Value> {
        let mut stream = json_stream(Vec::new(), Format::Json);
        for bytes in storm_records(6, cgroup) {
            stream.record(&bytes).unwrap();
        }
        stream.sink.flush().unwrap();
        let out = String::from_utf8(stream.sink.get_ref().clone()).unwrap();
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn names(events: &[Value]) -> Vec<&str> {
        events
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect()
    }

    const STORM_EVENTS: [&str; 6] = [
        "msg.create",
        "msg.destroy",
        "shm.create",
        "shm.destroy",
        "sem.create",
        "sem.destroy",
    ];

    #[test]
    fn storm_records_decode_to_the_storm_events() {
        let events = storm_lines(HOST_CGROUP);
        assert_eq!(names(&events), STORM_EVENTS);
        assert_eq!(events[0]["key"], 0);
        assert_eq!(events[0]["mode"], 0o600);
        assert_eq!(events[1]["reason"], "rmid");
        assert_eq!(events[2]["size"], 4096);
        assert_eq!(events[5]["reason"], "rmid");
        assert_eq!(events[5]["comm"], "nsipc-bench-wl");
        assert!(events.iter().all(|e| e.get("container").is_none()));
    }

    /// The container run measures attribution: each of its lines names the container.
    #[test]
    fn container_storm_records_carry_their_container() {
        let events = storm_lines(CONTAINER_CGROUP);
        // Once, before its first event: a container in the host's namespace (`--ipc=host`).
        assert_eq!(names(&events[..1]), ["container.host_ipc"]);
        assert_eq!(names(&events[1..]), STORM_EVENTS);
        let container = bench_container();
        for event in &events {
            assert_eq!(event["container"]["id"], container.id.as_str(), "{event}");
            assert_eq!(event["container"]["name"], "nsipc-bench-wl", "{event}");
            assert_eq!(event["container"]["runtime"], "docker", "{event}");
            assert_eq!(event["host_ipc"], true, "{event}");
        }
    }
}
