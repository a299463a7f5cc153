//! `nsipc-bench json`: the decode + attribution + lifecycle + JSON path of `trace` alone, fed
//! records shaped like the IPC storm's.

use std::{
    io::{self, Write},
    ops::Range,
    time::Instant,
};

use anyhow::Result;
use nsipc_common::{EventKind, HOST_IPC_NS_INUM, NsRef, Record};
use serde_json::json;

use super::{HOST_NS_ID, print_line};
use crate::{
    alloc_count,
    attribution::Attribution,
    containers::{Container, Runtime},
    output::sink::Format,
    trace::Stream,
};

/// A writer that only counts bytes, so the benchmark measures formatting, not I/O.
#[derive(Default)]
pub(super) struct ByteCounter {
    pub(super) bytes: u64,
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
pub(super) const CREATE_FLAGS: u64 = 0o1600;
/// `IPC_RMID`.
pub(super) const IPC_RMID: u64 = 0;

/// The host namespace as the probes report it.
pub(super) const HOST_NS: NsRef = NsRef {
    id: HOST_NS_ID,
    inum: HOST_IPC_NS_INUM,
    life: 0,
};

/// The cgroup id of the host task's records: 0, not read, as the probes write it when the
/// agent does not attribute (the path then costs what it did before attribution).
pub(super) const HOST_CGROUP: u64 = 0;
/// The cgroup id of the container task's records; [`json_attribution`] knows its container.
pub(super) const CONTAINER_CGROUP: u64 = 8_421;

/// The container of [`CONTAINER_CGROUP`], as a Docker container's metadata names it.
pub(super) fn bench_container() -> Container {
    Container {
        id: "9c1f3b6e0a2d4c8e7f5a1b3d9e0c2f4a6b8d0e1f3a5c7e9b2d4f6a8c0e1b3d5f".into(),
        runtime: Runtime::Docker,
        name: Some("nsipc-bench-wl".into()),
        pod: None,
    }
}

/// What the JSON path attributes: [`CONTAINER_CGROUP`] to [`bench_container`], learnt once as
/// `trace` learns a cgroup at its first event, so every event after costs what `trace`'s do.
pub(super) fn json_attribution() -> Attribution {
    let mut attribution = Attribution::none();
    attribution.assign(CONTAINER_CGROUP, bench_container());
    attribution
}

/// The default `trace` path: decode, attribution, lifecycle engine, JSON (or `format`).
pub(super) fn json_stream<W: Write>(out: W, format: Format) -> Stream<W> {
    Stream::new(out, false)
        .attributing(json_attribution())
        .formatting(format)
}

/// The bytes a probe writes for one record of the benchmark's workload process, in cgroup
/// `cgroup`.
pub(super) fn record_bytes(
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
pub(super) fn storm_records(count: usize, cgroup: u64) -> Vec<[u8; Record::SIZE]> {
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
pub(super) fn json_path(records: u64, format: Format) -> Result<()> {
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
