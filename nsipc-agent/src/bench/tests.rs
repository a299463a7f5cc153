//! The JSON path's tests: its records decode to the storm's events, and it does not allocate.
use nsipc_common::{EventKind, NsRef, Record};
use serde_json::Value;

use super::json::*;
use crate::{alloc_count, output::sink::Format, trace::Stream};

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
