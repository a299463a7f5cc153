//! Containers in the engine: who lives in a namespace, how a join is told, `--ipc=host`.

use super::*;

const PRODUCER: ContainerRef = ContainerRef(1);
const CONSUMER: ContainerRef = ContainerRef(2);

fn setns_from(from: NsRef) -> Body {
    Body::Setns {
        fd: 3,
        nstype: 0x0800_0000,
        from,
        result: Ok(0),
    }
}

fn join_of(out: &[Lifecycle]) -> (JoinKind, Vec<ContainerRef>) {
    match out {
        [Lifecycle::NsJoin { kind, members, .. }] => (*kind, members.clone()),
        _ => panic!("not one join: {out:?}"),
    }
}

#[test]
fn joins_are_told_apart_by_the_containers_living_there() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    // The producer's runtime child creates its namespace, from inside its cgroup.
    h.feed_in(PRODUCER, 5, a, unshared());
    // docker exec into the producer.
    let (kind, members) = join_of(&h.feed_in(PRODUCER, 6, a, setns_from(host())));
    assert_eq!((kind, members), (JoinKind::Exec, vec![PRODUCER]));
    // --ipc=container:producer.
    let (kind, members) = join_of(&h.feed_in(CONSUMER, 7, a, setns_from(host())));
    assert_eq!((kind, members), (JoinKind::Share, vec![PRODUCER]));
    // nsenter from the host: no container.
    let (kind, members) = join_of(&h.feed(8, a, setns_from(host())));
    assert_eq!((kind, members), (JoinKind::Setns, vec![PRODUCER, CONSUMER]));
    // Both are named at its end, in the order they came.
    let out = h.freed(a);
    let Some(Lifecycle::NsDestroy { containers, .. }) = out.last() else {
        panic!("{out:?}")
    };
    assert_eq!(containers, &[PRODUCER, CONSUMER]);
}

#[test]
fn a_new_life_of_an_inum_starts_with_no_containers() {
    let mut h = Harness::new();
    let first = ns(NS_A, 0);
    h.feed_in(PRODUCER, 5, first, unshared());
    h.freed(first);
    let second = ns(NS_A, 0);
    h.unshare(6, second);
    let (_, members) = join_of(&h.feed_in(CONSUMER, 7, second, setns_from(host())));
    assert!(members.is_empty(), "{members:?}");
}

#[test]
fn a_failed_get_names_the_containers_where_the_key_lives() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.feed_in(PRODUCER, 5, a, unshared());
    h.feed_in(PRODUCER, 5, a, got(IpcObject::Msg, 0x5eed, 0));
    let b = ns(NS_B, 43);
    h.feed_in(CONSUMER, 6, b, unshared());
    let out = h.feed_in(
        CONSUMER,
        6,
        b,
        Body::Get {
            object: IpcObject::Msg,
            key: 0x5eed,
            flags: 0,
            size: 0,
            result: Err(2),
        },
    );
    let [Lifecycle::GetFailed { key_lives_in, .. }] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        key_lives_in,
        &[KeyHome {
            ns: NsIdent {
                inum: NS_A,
                id: 42,
                generation: 1
            },
            containers: vec![PRODUCER],
        }]
    );
}

#[test]
fn a_container_in_the_hosts_namespace_is_announced_once_before_its_event() {
    let mut h = Harness::new();
    let out = h.feed_in(PRODUCER, 5, host(), got(IpcObject::Msg, 0x77, 0));
    assert_eq!(
        Harness::names(&out),
        ["container.host_ipc", "msg.create"],
        "{out:?}"
    );
    let out = h.feed_in(PRODUCER, 6, host(), got(IpcObject::Sem, 0x78, 0));
    assert_eq!(Harness::names(&out), ["sem.create"]);
    // Host processes are no container; the agent's own tasks are not announced.
    assert_eq!(
        Harness::names(&h.feed(7, host(), got(IpcObject::Shm, 0x79, 0))),
        ["shm.create"]
    );
    let out = h.feed_in(CONSUMER, AGENT_PID, host(), got(IpcObject::Shm, 0x7a, 1));
    assert_eq!(Harness::names(&out), ["shm.create"]);
}

#[test]
fn container_fields_are_written_with_the_task() {
    let mut attribution = Attribution::none();
    let producer = attribution.intern(crate::containers::Container {
        id: "0123".into(),
        runtime: crate::containers::Runtime::Docker,
        name: Some("producer".into()),
        pod: None,
    });
    let mut h = Harness::new();
    let out = h.feed_in(producer, 5, host(), got(IpcObject::Msg, 0x77, 0));
    let json = |event: &Lifecycle| {
        serde_json::to_value(LifecycleJson {
            event,
            clock: &WallClock::with_offset(0),
            attribution: &attribution,
        })
        .unwrap()
    };
    for event in &out {
        let line = json(event);
        assert_eq!(
            line["container"],
            serde_json::json!({"id": "0123", "runtime": "docker", "name": "producer"}),
            "{line}"
        );
        assert_eq!(line["host_ipc"], true);
    }
    let a = ns(NS_A, 42);
    let out = h.feed_in(producer, 5, a, unshared());
    assert_eq!(json(&out[0])["host_ipc"], false);
    let out = h.feed(9, a, setns_from(host()));
    let line = json(&out[0]);
    assert!(line.get("container").is_none() && line.get("host_ipc").is_none());
    assert_eq!(line["join"], "setns");
    assert_eq!(line["ns_containers"][0]["name"], "producer");
}

/// A removed cgroup whose container made objects in the host's namespace (`--ipc=host`):
/// what is still there is orphaned, once; what was removed, or made elsewhere or by others,
/// is not.
#[test]
fn what_a_host_ipc_container_leaves_behind_is_orphaned_when_it_ends() {
    let mut h = Harness::new();
    let rmdir = |container| Body::CgroupRmdir {
        cgroup: 77,
        container,
    };
    h.feed_in(PRODUCER, 5, host(), got(IpcObject::Msg, 0x77, 0));
    h.feed_in(PRODUCER, 5, host(), got(IpcObject::Shm, 0x78, 3));
    h.feed_in(PRODUCER, 5, host(), got(IpcObject::Sem, 0x79, 4));
    h.rmid(host(), IpcObject::Sem, 4, false);
    h.feed_in(CONSUMER, 6, host(), got(IpcObject::Msg, 0x7a, 1));
    h.feed(7, host(), got(IpcObject::Msg, 0x7b, 2));
    let a = ns(NS_A, 42);
    h.feed_in(PRODUCER, 5, a, unshared());
    h.feed_in(PRODUCER, 5, a, got(IpcObject::Msg, 0x7c, 0));
    // The end of a cgroup that was no container, and of one that made nothing.
    assert!(h.feed(1, ns(0, 0), rmdir(ContainerRef::NONE)).is_empty());
    assert!(h.feed(1, ns(0, 0), rmdir(ContainerRef(9))).is_empty());
    let out = h.feed(1, ns(0, 0), rmdir(PRODUCER));
    assert_eq!(Harness::names(&out), ["msg.orphaned", "shm.orphaned"]);
    let ids: Vec<(i32, i32)> = out
        .iter()
        .map(|event| match event {
            Lifecycle::ObjectOrphaned {
                id,
                key,
                container,
                ns,
                ..
            } => {
                assert_eq!((*container, ns.inum), (PRODUCER, HOST_IPC_NS_INUM));
                (*id, *key)
            }
            _ => panic!("{event:?}"),
        })
        .collect();
    assert_eq!(ids, [(0, 0x77), (3, 0x78)]);
    assert!(h.feed(1, ns(0, 0), rmdir(PRODUCER)).is_empty(), "once");
    // The orphans live on until removed.
    assert_eq!(
        Harness::names(&h.rmid(host(), IpcObject::Msg, 0, false)),
        ["msg.destroy"]
    );
}
