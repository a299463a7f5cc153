//! Property tests of the path ring-buffer bytes take: the decoder, the JSON rendering, the
//! lifecycle engine and the stream that ties them, fed malformed and arbitrary records.
//!
//! The probes are trusted to write well-formed records, but a probe bug, probes and agent of
//! different versions, or a record cut short must cost one counted `agent.decode_error` line,
//! never a panic that takes the whole stream down.

use nsipc_common::{COMM_LEN, EventKind, HOST_IPC_NS_INUM, MqueueRecord, NsRef, Record};
use proptest::{collection::vec, prelude::*};
use serde_json::Value;

use crate::{
    attribution::Attribution,
    containers::{Container, Runtime},
    decode::{Body, ContainerRef, DecodeError, KernelEvent, SysResult, decode, tests::bytes_of},
    lifecycle::{DestroyReason, Engine, Lifecycle},
    names::IpcObject,
    output::fields::WallClock,
    output::kernel_events::{KernelEventJson, event_name},
    output::{json::FieldsLine, lifecycle_events::LifecycleJson},
    trace::Stream,
};

/// Records of `racing_creates_and_removals_end_right_in_any_order`: a get and an IPC_RMID
/// for each of 8 objects.
const RACING_RECORDS: usize = 16;

/// Ids the ABI defines, found by asking it (a little past the highest, so new kinds count too).
fn known_kind() -> impl Strategy<Value = u32> + Clone {
    (0u32..=32).prop_filter("a kind the ABI defines", |&k| {
        EventKind::from_record(k).is_some()
    })
}

/// Known kinds and, as often, any other number (a corrupted or future kind).
fn any_kind() -> impl Strategy<Value = u32> + Clone {
    prop_oneof![known_kind(), any::<u32>()]
}

/// Return values: any, plus the edges where negation and errno conversion can go wrong.
fn any_ret() -> impl Strategy<Value = i64> + Clone {
    prop_oneof![
        any::<i64>(),
        -4095i64..=4096,
        Just(i64::MIN),
        Just(i64::MAX),
        Just(-i64::from(i32::MAX) - 1),
    ]
}

fn any_ns() -> impl Strategy<Value = NsRef> + Clone {
    (any::<u64>(), any::<u32>(), any::<u32>()).prop_map(|(id, inum, life)| NsRef { id, inum, life })
}

/// Records whose fields come from these strategies (comm and uid are always arbitrary).
fn records(
    kind: impl Strategy<Value = u32> + Clone,
    task: impl Strategy<Value = u32> + Clone,
    ns: impl Strategy<Value = NsRef> + Clone,
    ret: impl Strategy<Value = i64> + Clone,
    arg: impl Strategy<Value = u64> + Clone,
) -> impl Strategy<Value = Record> + Clone {
    (
        kind,
        (task.clone(), task, any::<u32>()),
        any::<u64>(),
        (ns.clone(), ns),
        ret,
        [arg.clone(), arg.clone(), arg.clone(), arg],
        (any::<[u8; COMM_LEN]>(), any::<u64>(), any::<u32>()),
    )
        .prop_map(
            |(kind, (pid, tid, uid), ts_ns, (ns, other_ns), ret, args, (comm, cgroup, euid))| {
                Record {
                    kind,
                    pid,
                    tid,
                    uid,
                    ts_ns,
                    ns,
                    other_ns,
                    ret,
                    args,
                    comm,
                    cgroup,
                    euid,
                    ppid: 0,
                }
            },
        )
}

/// Records of any content, with a kind that may or may not be known.
fn arbitrary_records() -> impl Strategy<Value = Record> + Clone {
    records(any_kind(), any::<u32>(), any_ns(), any_ret(), any::<u64>())
}

/// Decodable records drawn from a small world (3 processes, 3 namespaces with 2 lives each,
/// a few ids, keys, commands and addresses), so that successive events meet the same
/// namespaces and objects and drive the engine through its states.
fn small_world_records() -> impl Strategy<Value = Record> + Clone {
    let ns = (
        prop::sample::select(vec![HOST_IPC_NS_INUM, 4026532177, 4026532178, 0]),
        0u64..=2,
    )
        .prop_map(|(inum, id)| NsRef { id, inum, life: 0 });
    let ret = prop_oneof![0i64..=3, -22i64..=-1, any::<i64>()];
    // IPC_RMID, IPC_RMID | IPC_64, IPC_STAT, CLONE_NEWIPC, small ids, keys and addresses.
    let arg = prop_oneof![
        prop::sample::select(vec![0u64, 1, 2, 3, 0x100, 0x0800_0000, u64::MAX]),
        any::<u64>(),
    ];
    records(known_kind(), 1u32..=3, ns, ret, arg)
}

/// An attribution that knows two containers (refs 1 and 2).
fn two_containers() -> Attribution {
    let mut attribution = Attribution::none();
    for id in ["a", "b"] {
        attribution.intern(Container {
            id: id.to_owned(),
            runtime: Runtime::Docker,
            name: Some(format!("c-{id}")),
            pod: None,
        });
    }
    attribution
}

/// The container a record's task is in, from its cgroup: none, or one of [`two_containers`].
fn container_of(record: &Record) -> ContainerRef {
    ContainerRef((record.cgroup % 3) as u32)
}

/// What a probe would write for `event`: the decoder's inverse, written from the ABI's
/// description in nsipc-common, so that decoding it again must give `event` back.
fn encode(event: &KernelEvent) -> Record {
    let ret_of = |result: SysResult<i64>| match result {
        Ok(value) => value,
        Err(errno) => -i64::from(errno),
    };
    // `int` syscall arguments are the low 32 bits of their 8-byte slot.
    let int = |value: i32| u64::from(value as u32);
    let none = NsRef::default();
    let (kind, args, other_ns, ret) = match event.body.clone() {
        Body::Get {
            object,
            key,
            flags,
            size,
            result,
        } => match object {
            IpcObject::Msg => (
                EventKind::MsgGet,
                [int(key), int(flags), 0, 0],
                none,
                result,
            ),
            IpcObject::Shm => (
                EventKind::ShmGet,
                [int(key), size, int(flags), 0],
                none,
                result,
            ),
            IpcObject::Sem => (
                EventKind::SemGet,
                [int(key), size, int(flags), 0],
                none,
                result,
            ),
        },
        Body::Ctl {
            object,
            id,
            cmd,
            semnum,
            still_listed,
            result,
        } => match object {
            IpcObject::Msg => (EventKind::MsgCtl, [int(id), int(cmd), 0, 0], none, result),
            IpcObject::Shm => (
                EventKind::ShmCtl,
                [int(id), int(cmd), 0, u64::from(still_listed)],
                none,
                result,
            ),
            IpcObject::Sem => (
                EventKind::SemCtl,
                [int(id), int(semnum), int(cmd), 0],
                none,
                result,
            ),
        },
        Body::ShmAttach {
            id,
            requested_addr,
            flags,
            result,
        } => (
            EventKind::ShmAttach,
            [int(id), requested_addr, int(flags), 0],
            none,
            result,
        ),
        Body::ShmDetach {
            addr,
            rmid_forced,
            result,
        } => (
            EventKind::ShmDetach,
            [addr, u64::from(rmid_forced), 0, 0],
            none,
            result,
        ),
        Body::Unshare {
            flags,
            from,
            result,
        } => (EventKind::Unshare, [flags, 0, 0, 0], from, result),
        Body::Setns {
            fd,
            nstype,
            from,
            result,
        } => (EventKind::Setns, [int(fd), int(nstype), 0, 0], from, result),
        Body::Clone {
            flags,
            child_pid,
            from,
            result,
        } => (
            EventKind::Clone,
            [flags, u64::from(child_pid), 0, 0],
            from,
            result,
        ),
        Body::ProcessExit { rmid_forced } => (
            EventKind::ProcessExit,
            [u64::from(rmid_forced), 0, 0, 0],
            none,
            Ok(0),
        ),
        Body::NsFreed => (EventKind::NsFreed, [0; 4], none, Ok(0)),
        Body::ShmFreed {
            id,
            key,
            ns_dying,
            ns_freed,
            rmid_forced,
        } => (
            EventKind::ShmFreed,
            [
                int(id),
                int(key),
                if ns_freed { 2 } else { u64::from(ns_dying) },
                u64::from(rmid_forced),
            ],
            none,
            Ok(0),
        ),
        Body::CgroupMkdir { cgroup } => (EventKind::CgroupMkdir, [cgroup, 0, 0, 0], none, Ok(0)),
        Body::CgroupRmdir { cgroup, .. } => {
            (EventKind::CgroupRmdir, [cgroup, 0, 0, 0], none, Ok(0))
        }
        // The tail (name, inode) is what `bytes_of` writes.
        Body::MqueueOpen {
            oflag,
            mode,
            maxmsg,
            msgsize,
            result,
            ..
        } => (
            EventKind::MqueueOpen,
            [int(oflag), u64::from(mode), maxmsg, msgsize],
            none,
            result,
        ),
        Body::MqueueUnlink { result, .. } => (EventKind::MqueueUnlink, [0; 4], none, result),
        Body::MqueueEvicted { syscall, .. } => (
            EventKind::MqueueEvicted,
            [syscall as u64, 0, 0, 0],
            none,
            Ok(0),
        ),
    };
    Record {
        kind: kind as u32,
        pid: event.task.pid,
        tid: event.task.tid,
        uid: event.task.uid,
        ts_ns: event.ts_ns,
        ns: event.ns,
        other_ns,
        ret: ret_of(ret),
        args,
        comm: event.task.comm,
        cgroup: event.task.cgroup,
        euid: event.task.euid,
        ppid: 0,
    }
}

/// The fields every kind carries verbatim.
#[allow(clippy::type_complexity)]
fn header(record: &Record) -> (u32, u32, u32, u32, u32, u64, NsRef, [u8; COMM_LEN], u64) {
    (
        record.kind,
        record.pid,
        record.tid,
        record.uid,
        record.euid,
        record.ts_ns,
        record.ns,
        record.comm,
        record.cgroup,
    )
}

/// Serializes `value` as the sink would and parses the line back: it must be one JSON object.
fn json_line(value: &impl serde::Serialize) -> Result<Value, TestCaseError> {
    let line = serde_json::to_string(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(!line.contains('\n'), "not one line: {line}");
    let parsed: Value =
        serde_json::from_str(&line).map_err(|e| TestCaseError::fail(format!("{e}: {line}")))?;
    prop_assert!(parsed.is_object(), "not an object: {line}");
    Ok(parsed)
}

/// What the decoder must say about `bytes`, from the ABI alone.
fn expected_decode(bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.len() < Record::SIZE {
        return Err(DecodeError::BadLength(bytes.len()));
    }
    let id = u32::from_ne_bytes(bytes[..4].try_into().expect("4 bytes"));
    let kind = EventKind::from_record(id).ok_or(DecodeError::UnknownKind(id))?;
    match (kind.has_mqueue_tail(), bytes.len()) {
        (true, MqueueRecord::SIZE) | (false, Record::SIZE) => Ok(()),
        (true, len) => Err(DecodeError::BadMqueueLength(kind, len)),
        (false, len) => Err(DecodeError::BadLength(len)),
    }
}

/// One ring-buffer item: a record's bytes, cut short, grown, or replaced by noise.
fn ring_items() -> impl Strategy<Value = Vec<u8>> + Clone {
    let record = arbitrary_records().prop_map(|record| bytes_of(&record));
    prop_oneof![
        4 => record.clone(),
        1 => (record.clone(), 0..Record::SIZE).prop_map(|(bytes, len)| bytes[..len].to_vec()),
        1 => (record, vec(any::<u8>(), 1..=16)).prop_map(|(mut bytes, extra)| {
            bytes.extend(extra);
            bytes
        }),
        1 => vec(any::<u8>(), 0..=2 * Record::SIZE),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any bytes: an error exactly when the length or the kind is wrong, and no panic.
    #[test]
    fn decode_fails_exactly_on_bad_length_or_kind(bytes in ring_items()) {
        prop_assert_eq!(decode(&bytes).map(drop), expected_decode(&bytes));
    }

    /// A record of a known kind decodes whatever its other fields hold; the header comes
    /// through verbatim, and the event encodes back to bytes that decode to the same event.
    #[test]
    fn valid_records_round_trip(record in records(
        known_kind(), any::<u32>(), any_ns(), any_ret(), any::<u64>(),
    )) {
        let event = decode(&bytes_of(&record)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let encoded = encode(&event);
        prop_assert_eq!(header(&encoded), header(&record));
        // Errors are -1..=-4095; any return value that fits an errno comes back as it was
        // (kinds that are not syscalls have none).
        let syscall = !matches!(
            event.body,
            Body::ProcessExit { .. }
                | Body::NsFreed
                | Body::ShmFreed { .. }
                | Body::CgroupMkdir { .. }
                | Body::CgroupRmdir { .. }
                | Body::MqueueEvicted { .. }
        );
        if syscall && record.ret >= -i64::from(i32::MAX) {
            prop_assert_eq!(encoded.ret, record.ret);
        }
        prop_assert_eq!(decode(&bytes_of(&encoded)), Ok(event));
    }

    /// Every decodable record renders as one JSON object naming its event.
    #[test]
    fn raw_events_render_as_json(record in arbitrary_records()) {
        let Ok(event) = decode(&bytes_of(&record)) else {
            return Ok(());
        };
        let clock = WallClock::now();
        let attribution = two_containers();
        let mut event = event;
        event.task.container = container_of(&record);
        let json = json_line(&KernelEventJson { event: &event, clock: &clock, attribution: &attribution })?;
        prop_assert_eq!(&json["event"], event_name(&event.body));
        // An eviction is of a queue in whatever namespace: it has none.
        if !matches!(event.body, Body::MqueueEvicted { .. }) {
            prop_assert_eq!(&json["ns"], &Value::from(record.ns.inum));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any sequence of decoded events: the engine never panics and what it derives renders
    /// as JSON objects naming their event.
    #[test]
    fn the_engine_takes_any_event_sequence(records in vec(small_world_records(), 1..150)) {
        let clock = WallClock::now();
        let attribution = two_containers();
        let mut engine = Engine::new(2);
        engine.keep_shm_sizes();
        let mut derived = Vec::new();
        for record in &records {
            let mut event = decode(&bytes_of(record)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            event.task.container = container_of(record);
            derived.clear();
            engine.apply(&event, &mut derived);
            for lifecycle in &derived {
                let lifecycle_json = LifecycleJson { event: lifecycle, clock: &clock, attribution: &attribution };
                let json = json_line(&lifecycle_json)?;
                prop_assert_eq!(&json["event"], lifecycle.name());
                // The hot path writes what serde writes (keys, modes, containers and all; as
                // values: serde orders a container's own keys as its maps do).
                let mut fast = Vec::new();
                lifecycle_json.write_json(&mut fast);
                let fast: Value = serde_json::from_slice(&fast).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(fast, json);
            }
        }
    }

    /// Records of racing threads in any order: queues and segments made by one thread and
    /// removed by another (a segment possibly while attached), each record placed anywhere,
    /// the removal's before the create's included. Whatever the order, each object is created
    /// once and removed once, and what lives at the end is what the kernel has: the segments
    /// removed while attached, marked removed.
    #[test]
    fn racing_creates_and_removals_end_right_in_any_order(
        order in Just((0..RACING_RECORDS).collect::<Vec<usize>>()).prop_shuffle(),
    ) {
        let ns = NsRef { id: 42, inum: 4026532177, life: 0 };
        let mut engine = Engine::new(2);
        engine.keep_shm_sizes();
        let mut out = Vec::new();
        let task = |pid| crate::decode::Task {
            pid, tid: pid, ppid: 1, uid: 0, euid: 0, comm: [b'x'; COMM_LEN], cgroup: 0,
            container: ContainerRef::NONE,
        };
        let event = |ts, pid, body| KernelEvent { ts_ns: ts, task: task(pid), ns, body };
        engine.apply(&event(1, 5, Body::Unshare {
            flags: 0x0800_0000,
            from: NsRef { id: 1, inum: HOST_IPC_NS_INUM, life: 0 },
            result: Ok(0),
        }), &mut out);
        // Object i: a queue (even i) or a segment (odd i), the odd segments among those
        // removed while attached. Record 2i makes it, record 2i + 1 removes it.
        let object = |i: usize| if i.is_multiple_of(2) { IpcObject::Msg } else { IpcObject::Shm };
        let attached = |i: usize| i % 4 == 3;
        for (ts, &record) in order.iter().enumerate() {
            let i = record / 2;
            let body = if record.is_multiple_of(2) {
                Body::Get { object: object(i), key: 0, flags: 0o1600, size: 4096, result: Ok(i as i64) }
            } else {
                Body::Ctl {
                    object: object(i), id: i as i32, cmd: 0, semnum: 0,
                    still_listed: attached(i), result: Ok(0),
                }
            };
            engine.apply(&event(10 + ts as u64, 100 + record as u32 % 2, body), &mut out);
            engine.check_indexes().map_err(TestCaseError::fail)?;
        }
        for i in 0..RACING_RECORDS / 2 {
            let said = |name: &str| out.iter().filter(|l| l.name() == name && match l {
                Lifecycle::ObjectCreate { id, .. }
                | Lifecycle::ObjectDestroy { id, .. }
                | Lifecycle::ShmRemove { id, .. } => *id == i as i32,
                _ => false,
            }).count();
            let kind = if object(i) == IpcObject::Msg { "msg" } else { "shm" };
            prop_assert_eq!(said(&format!("{kind}.create")), 1, "object {}: {:?}", i, out);
            let (destroys, removes) = if attached(i) { (0, 1) } else { (1, 0) };
            prop_assert_eq!(said(&format!("{kind}.destroy")), destroys, "object {}: {:?}", i, out);
            prop_assert_eq!(said("shm.remove"), removes, "object {}: {:?}", i, out);
        }
        let expected: Vec<_> = (0..RACING_RECORDS / 2)
            .filter(|&i| attached(i))
            .map(|i| (ns.inum, IpcObject::Shm, i as i32))
            .collect();
        prop_assert_eq!(engine.live_objects(), expected);
    }

    /// A namespace's records from racing threads in any order: its creator's `unshare`, a
    /// second process's `setns` into it and its get there, and a third process leaving it for
    /// the host's. Whatever the order (a join or a get read before the creation's record
    /// included), the namespace is created once and never destroyed, the second process joins
    /// it once, the third goes into the host, and the queue is created once.
    #[test]
    fn a_namespaces_racing_records_tell_one_story_in_any_order(
        order in Just((0..4).collect::<Vec<usize>>()).prop_shuffle(),
    ) {
        let host = NsRef { id: 1, inum: HOST_IPC_NS_INUM, life: 0 };
        let ns = NsRef { id: 42, inum: 4026532177, life: 0 };
        let mut engine = Engine::new(2);
        engine.keep_shm_sizes();
        let mut out = Vec::new();
        let task = |pid| crate::decode::Task {
            pid, tid: pid, ppid: 1, uid: 0, euid: 0, comm: [b'x'; COMM_LEN], cgroup: 0,
            container: ContainerRef::NONE,
        };
        for (ts, &record) in order.iter().enumerate() {
            let (pid, at, body) = match record {
                0 => (5, ns, Body::Unshare { flags: 0x0800_0000, from: host, result: Ok(0) }),
                1 => (6, ns, Body::Setns { fd: 3, nstype: 0, from: host, result: Ok(0) }),
                2 => (6, ns, Body::Get {
                    object: IpcObject::Msg, key: 7, flags: 0o1600, size: 0, result: Ok(0),
                }),
                _ => (7, host, Body::Setns { fd: 3, nstype: 0, from: ns, result: Ok(0) }),
            };
            let event = KernelEvent { ts_ns: 10 + ts as u64, task: task(pid), ns: at, body };
            engine.apply(&event, &mut out);
            engine.check_indexes().map_err(TestCaseError::fail)?;
        }
        let count = |name: &str, pred: &dyn Fn(&Lifecycle) -> bool| {
            out.iter().filter(|l| l.name() == name && pred(l)).count()
        };
        let in_ns = |l: &Lifecycle| l.ns().inum == ns.inum;
        prop_assert_eq!(count("ipc_ns.create", &in_ns), 1, "{:?}", out);
        prop_assert_eq!(count("ipc_ns.exists", &in_ns), 0, "{:?}", out);
        prop_assert_eq!(count("ipc_ns.destroy", &|_| true), 0, "{:?}", out);
        prop_assert_eq!(count("msg.create", &in_ns), 1, "{:?}", out);
        let joins = |pid: u32, inum: u32| count("ipc_ns.join", &|l: &Lifecycle| {
            l.task().is_some_and(|t| t.pid == pid) && l.ns().inum == inum
        });
        prop_assert_eq!(joins(6, ns.inum), 1, "{:?}", out);
        prop_assert_eq!(joins(7, HOST_IPC_NS_INUM), 1, "{:?}", out);
    }

    /// Any sequence of events keeps the engine's indexes equal to their recomputation and its
    /// objects to what its own stream says lives: it destroys only objects it reported, and a
    /// namespace's end (its free, or another life of its inum) destroys exactly the objects it
    /// held, before the namespace itself.
    #[test]
    fn the_engine_state_follows_its_stream(records in vec(small_world_records(), 1..150)) {
        let mut engine = Engine::new(2);
        engine.keep_shm_sizes();
        let mut derived = Vec::new();
        let mut reported = std::collections::BTreeSet::new();
        for record in &records {
            let event = decode(&bytes_of(record)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let live_before = engine.live_objects();
            derived.clear();
            engine.apply(&event, &mut derived);
            let mut destroyed = Vec::new();
            for lifecycle in &derived {
                match *lifecycle {
                    Lifecycle::ObjectCreate { ns, object, id, .. }
                    | Lifecycle::ObjectExists { ns, object, id, .. } => {
                        reported.insert((ns.inum, object, id));
                    }
                    Lifecycle::ObjectDestroy { ns, object, id, .. } => {
                        prop_assert!(reported.remove(&(ns.inum, object, id)), "{:?}", lifecycle);
                        destroyed.push((ns.inum, object, id));
                    }
                    Lifecycle::NsDestroy { ns, reason, late, .. } => {
                        // Freed by its free; or ended unseen, when an event shows another
                        // life of its inum: freed then too (only a free gives an inum back),
                        // but late.
                        prop_assert!(
                            (event.body == Body::NsFreed && !late)
                                || (reason == DestroyReason::Freed && late),
                            "{:?} after {:?}", lifecycle, event.body
                        );
                        // One event can end two lives (a setns between two inums that both
                        // start new ones): compare this namespace's objects only.
                        let mut ended: Vec<_> =
                            destroyed.iter().copied().filter(|o| o.0 == ns.inum).collect();
                        ended.sort_unstable();
                        let held: Vec<_> =
                            live_before.iter().copied().filter(|o| o.0 == ns.inum).collect();
                        prop_assert_eq!(&ended, &held);
                    }
                    _ => {}
                }
            }
            engine.check_indexes().map_err(TestCaseError::fail)?;
            let live = engine.live_objects();
            prop_assert!(live.iter().all(|o| reported.contains(o)), "{:?} ⊄ {:?}", live, reported);
        }
    }

    /// The agent's record path: every item that does not decode becomes one
    /// `agent.decode_error` line, counted in order, and every line stays JSON.
    #[test]
    fn the_stream_counts_every_decode_error(items in vec(
        prop_oneof![small_world_records().prop_map(|record| bytes_of(&record)), ring_items()],
        1..60,
    )) {
        let mut stream = Stream::new(Vec::new(), true);
        for item in &items {
            stream.record(item).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        stream.sink.flush().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let expected: Vec<String> = items
            .iter()
            .filter_map(|item| expected_decode(item).err())
            .map(|err| err.to_string())
            .collect();
        let output = String::from_utf8(stream.sink.get_ref().clone())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut errors = Vec::new();
        for line in output.lines() {
            let json: Value = serde_json::from_str(line)
                .map_err(|e| TestCaseError::fail(format!("{e}: {line}")))?;
            if json["event"] == "agent.decode_error" {
                errors.push(json);
            }
        }
        prop_assert_eq!(errors.len(), expected.len());
        for (n, (json, error)) in errors.iter().zip(&expected).enumerate() {
            prop_assert_eq!(&json["error"], error.as_str());
            prop_assert_eq!(&json["total"], &Value::from(n + 1));
        }
    }
}
