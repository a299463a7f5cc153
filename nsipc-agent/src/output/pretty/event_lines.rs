use std::{collections::BTreeMap, time::Duration};

use nsipc_common::EventKind;

use super::*;
use crate::{
    attribution::Attribution,
    containers::Runtime,
    decode::{ContainerRef, Task, decode, tests::record_bytes},
    lifecycle::{DestroyReason, JoinKind, KeyHome, Lifecycle, NsIdent, ObjectCounts},
    limits::LimitHit,
    names::IpcObject,
    output::agent_events::AgentEvent,
    output::fields::{Rfc3339, WallClock},
    output::kernel_events::KernelEventJson,
    output::lifecycle_events::LifecycleJson,
    output::sink::{EventLine, Format, JsonLines},
};

/// Monotonic ns 5 000 is 2023-11-14T22:13:20.000005Z.
const CLOCK_OFFSET: i128 = 1_700_000_000_000_000_000;

fn ns(inum: u32) -> NsIdent {
    NsIdent {
        inum,
        id: 0,
        generation: 1,
    }
}

fn task(pid: u32, comm: &[u8], container: ContainerRef) -> Task {
    let mut bytes = [0; 16];
    bytes[..comm.len()].copy_from_slice(comm);
    Task {
        pid,
        tid: pid,
        ppid: 1,
        uid: 1000,
        euid: 1000,
        comm: bytes,
        cgroup: 0,
        container,
    }
}

fn container(name: &str) -> Container {
    Container {
        id: format!("{name:0>64}"),
        runtime: Runtime::Docker,
        name: Some(name.into()),
        pod: None,
    }
}

/// The sink's output for `value`, plain and coloured.
fn both(value: &dyn EventLine) -> (String, String) {
    let write = |color| {
        let style = Style { color, utc: true };
        let mut sink = JsonLines::new(Vec::new()).formatting(Format::Pretty(style));
        sink.write(value).unwrap();
        sink.flush().unwrap();
        let out = String::from_utf8(sink.get_ref().clone()).unwrap();
        out.strip_suffix('\n').expect("one line").to_owned()
    };
    (write(false), write(true))
}

fn lifecycle(event: &Lifecycle, attribution: &Attribution) -> (String, String) {
    let clock = WallClock::with_offset(CLOCK_OFFSET);
    both(&LifecycleJson {
        event,
        clock: &clock,
        attribution,
    })
}

#[test]
fn an_object_made_on_the_host() {
    let event = Lifecycle::ObjectCreate {
        ts: 5_000,
        task: task(1234, b"ipcmk", ContainerRef::NONE),
        ns: ns(4026532177),
        object: IpcObject::Shm,
        id: 3,
        key: 0x5eed,
        mode: 0o600,
        size: 4096,
    };
    let (plain, colour) = lifecycle(&event, &Attribution::none());
    assert_eq!(
        plain,
        "22:13:20.000 shm.create         4026532177 host         1234/ipcmk           \
         key 0x00005eed id 3 mode 0600 size 4096"
    );
    assert_eq!(
        colour,
        "22:13:20.000 \x1b[32mshm.create\x1b[0m         4026532177 host         \
         1234/ipcmk           key 0x00005eed id 3 mode 0600 size 4096"
    );
}

#[test]
fn a_failed_get_names_where_the_key_lives() {
    let mut attribution = Attribution::none();
    let consumer = attribution.assign(1, container("consumer"));
    let producer = attribution.assign(2, container("producer"));
    let event = Lifecycle::GetFailed {
        ts: 5_000,
        task: task(77, b"consumer", consumer),
        ns: ns(4026532177),
        object: IpcObject::Msg,
        key: 0x5eed,
        flags: 0o600,
        errno: libc::ENOENT,
        limit: None,
        key_lives_in: vec![
            KeyHome {
                ns: ns(4026532178),
                containers: vec![producer],
            },
            KeyHome {
                ns: ns(4026531839),
                containers: vec![],
            },
        ],
    };
    let (plain, colour) = lifecycle(&event, &attribution);
    assert_eq!(
        plain,
        "22:13:20.000 msg.get_failed     4026532177 consumer     77/consumer          \
         key 0x00005eed errno ENOENT key_lives_in 4026532178(producer),4026531839"
    );
    assert!(
        colour.starts_with("22:13:20.000 \x1b[33mmsg.get_failed\x1b[0m     4026532177 "),
        "{colour:?}"
    );
}

#[test]
fn a_failed_get_names_the_limit_it_hit() {
    let attribution = Attribution::none();
    let failed = |object, errno, limit| Lifecycle::GetFailed {
        ts: 5_000,
        task: task(77, b"ipcmk", ContainerRef::NONE),
        ns: ns(4026532177),
        object,
        key: 0,
        flags: 0o1644,
        errno,
        limit: Some(limit),
        key_lives_in: Vec::new(),
    };
    let (plain, _) = lifecycle(
        &failed(
            IpcObject::Msg,
            libc::ENOSPC,
            LimitHit {
                asked: None,
                name: "msgmni",
                used: Some(2),
                value: 2,
            },
        ),
        &attribution,
    );
    assert!(
        plain.ends_with("key 0x00000000 errno ENOSPC limit msgmni=2 used 2"),
        "{plain:?}"
    );
    let (plain, _) = lifecycle(
        &failed(
            IpcObject::Shm,
            libc::EINVAL,
            LimitHit {
                asked: Some(16384),
                name: "shmmax",
                used: None,
                value: 8192,
            },
        ),
        &attribution,
    );
    assert!(
        plain.ends_with("errno EINVAL limit shmmax=8192 asked 16384"),
        "{plain:?}"
    );
}

#[test]
fn a_join_shows_both_namespaces() {
    let mut attribution = Attribution::none();
    let web = attribution.assign(1, container("web"));
    let db = attribution.assign(2, container("db"));
    let event = Lifecycle::NsJoin {
        ts: 5_000,
        task: task(88, b"runc:[2:INIT]", web),
        ns: ns(4026532177),
        from: ns(4026531839),
        into_host: false,
        kind: JoinKind::Share,
        members: vec![db],
    };
    let (plain, colour) = lifecycle(&event, &attribution);
    assert_eq!(
        plain,
        "22:13:20.000 ipc_ns.join        4026532177 web          88/runc:[2:INIT]     \
         4026531839→4026532177 join share ns_containers db"
    );
    assert!(colour.contains("\x1b[36mipc_ns.join\x1b[0m"), "{colour:?}");
}

#[test]
fn ends_without_a_task() {
    let mut attribution = Attribution::none();
    let web = attribution.assign(1, container("web"));
    let db = attribution.assign(2, container("db"));
    let (plain, colour) = lifecycle(
        &Lifecycle::ObjectDestroy {
            ts: 5_000,
            task: None,
            ns: ns(4026532177),
            object: IpcObject::Sem,
            id: 32768,
            key: 0,
            reason: DestroyReason::NamespaceTeardown,
            lifetime_ns: Some(1_500_000_000),
            late: true,
        },
        &attribution,
    );
    assert_eq!(
        plain,
        "22:13:20.000 sem.destroy        4026532177 -            -                    \
         key 0x00000000 id 32768 reason namespace_teardown lifetime 1.5s late"
    );
    assert!(colour.contains("\x1b[31msem.destroy\x1b[0m"), "{colour:?}");
    let (plain, _) = lifecycle(
        &Lifecycle::NsDestroy {
            ts: 5_000,
            ns: ns(4026532177),
            containers: vec![web, db],
            lifetime_ns: Some(12_345_678),
            destroyed: ObjectCounts {
                msg: 1,
                shm: 0,
                sem: 2,
            },
            reason: DestroyReason::Freed,
            late: false,
        },
        &attribution,
    );
    assert_eq!(
        plain,
        "22:13:20.000 ipc_ns.destroy     4026532177 web,db       -                    \
         reason freed lifetime 12.345ms objects_destroyed msg=1,shm=0,sem=2"
    );
}

#[test]
fn a_containers_object_in_the_hosts_namespace_says_so() {
    let mut attribution = Attribution::none();
    let web = attribution.assign(1, container("web"));
    let (plain, _) = lifecycle(
        &Lifecycle::ShmAttach {
            ts: 5_000,
            task: task(9, b"postgres", web),
            ns: ns(4026531839),
            id: 7,
            key: Some(0x79c9_8b9f),
            addr: 0x7f3a_2c00_0000,
        },
        &attribution,
    );
    assert_eq!(
        plain,
        "22:13:20.000 shm.attach         4026531839 web          9/postgres           \
         key 0x79c98b9f id 7 addr 0x7f3a2c000000 host_ipc"
    );
}

#[test]
fn agent_lines_are_dim_and_losses_stand_out() {
    let time = || Rfc3339(UNIX_EPOCH + Duration::new(1_700_000_000, 5_000));
    let (plain, colour) = both(&AgentEvent::Lost {
        time: time(),
        count: 3,
        total: 10,
        kinds: BTreeMap::from([("msg.get", 2), ("shm.freed", 1)]),
    });
    assert_eq!(
        plain,
        "22:13:20.000 agent.lost         -          -            -                    \
         count 3 total 10 kinds msg.get=2,shm.freed=1"
    );
    assert!(colour.contains("\x1b[1;31magent.lost\x1b[0m"), "{colour:?}");
    let (plain, colour) = both(&AgentEvent::Stop {
        time: time(),
        reason: "SIGINT",
        events: 42,
        lost: 0,
        missed: 0,
        decode_errors: 0,
        late_destroys: 1,
        kfree_skipped: 0,
    });
    assert_eq!(
        plain,
        "22:13:20.000 agent.stop         -          -            -                    \
         reason SIGINT events 42 lost 0 missed 0 decode_errors 0 late_destroys 1 \
         kfree_skipped 0"
    );
    assert!(colour.contains("\x1b[2magent.stop\x1b[0m"), "{colour:?}");
}

#[test]
fn raw_syscalls_stand_out_when_they_fail() {
    let clock = WallClock::with_offset(CLOCK_OFFSET);
    let line = |kind, ret, args| {
        let event = decode(&record_bytes(kind, ret, args)).unwrap();
        both(&KernelEventJson {
            event: &event,
            clock: &clock,
            attribution: &Attribution::none(),
        })
    };
    // The test record's comm is `ipcmk\xff`: invalid UTF-8 shows as U+FFFD.
    let (plain, colour) = line(EventKind::ShmGet, -2, [0x5eed, 4096, 0o600, 0]);
    assert_eq!(
        plain,
        "22:13:20.000 shm.get            4026532177 host         100/ipcmk\u{fffd}           \
         key 0x00005eed flags 0600 size 4096 errno ENOENT"
    );
    assert!(colour.contains("\x1b[33mshm.get\x1b[0m"), "{colour:?}");
    let (plain, colour) = line(EventKind::Setns, 0, [3, 0x0800_0000, 0, 0]);
    assert_eq!(
        plain,
        "22:13:20.000 ipc_ns.setns       4026532177 host         100/ipcmk\u{fffd}           \
         4026531839→4026532177 fd 3 nstype 0x8000000"
    );
    assert_eq!(colour, plain, "a syscall that worked is not coloured");
}
