//! The metrics' gauges: each live namespace's objects by type, its segments' bytes, and the
//! container it belongs to, as objects come and go.

use super::*;

fn gauge_of(h: &Harness, inum: u32) -> Option<NamespaceGauge> {
    let mut gauges = Vec::new();
    h.engine.namespace_gauges(&mut gauges);
    gauges.into_iter().find(|gauge| gauge.inum == inum)
}

#[test]
fn gauges_follow_objects_sizes_and_containers() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.feed_in(ContainerRef(3), 5, a, unshared());
    h.get(a, IpcObject::Msg, 1, 0);
    h.get(a, IpcObject::Msg, 2, 1);
    h.get(a, IpcObject::Sem, 3, 0);
    h.feed(
        10,
        a,
        Body::Get {
            object: IpcObject::Shm,
            key: 4,
            flags: 0o1600,
            size: 10_000,
            result: Ok(7),
        },
    );
    // Opening the segment again with another size creates nothing and changes no size.
    h.feed(
        10,
        a,
        Body::Get {
            object: IpcObject::Shm,
            key: 4,
            flags: 0o600,
            size: 1,
            result: Ok(7),
        },
    );
    h.get(a, IpcObject::Shm, 5, 8); // 4096 bytes
    let gauge = gauge_of(&h, NS_A).unwrap();
    assert_eq!(
        gauge.objects,
        ObjectCounts {
            msg: 2,
            shm: 2,
            sem: 1
        }
    );
    assert_eq!(gauge.shm_bytes, 14_096);
    assert_eq!(gauge.container, ContainerRef(3));

    h.rmid(a, IpcObject::Shm, 7, false);
    h.rmid(a, IpcObject::Msg, 1, false);
    let gauge = gauge_of(&h, NS_A).unwrap();
    assert_eq!(
        gauge.objects,
        ObjectCounts {
            msg: 1,
            shm: 1,
            sem: 1
        }
    );
    assert_eq!(gauge.shm_bytes, 4096);
    h.engine.check_indexes().unwrap();

    // The host's namespace belongs to no container; a dead namespace has no gauge.
    let host_gauge = gauge_of(&h, HOST_IPC_NS_INUM).unwrap();
    assert_eq!(host_gauge.container, ContainerRef::NONE);
    assert_eq!(host_gauge.objects, ObjectCounts::default());
    h.freed(a);
    assert_eq!(gauge_of(&h, NS_A), None);
    h.engine.check_indexes().unwrap();
}

#[test]
fn inventoried_segments_count_their_size() {
    let mut h = Harness::new();
    let mut out = Vec::new();
    h.engine.observe_existing(
        h.ts,
        &[listed_ns(NS_B, 0)],
        &[
            ExistingObject {
                size: 65_536,
                ..listed(NS_B, IpcObject::Shm, 3, 9)
            },
            listed(NS_B, IpcObject::Sem, 0, 9),
        ],
        &mut out,
    );
    let gauge = gauge_of(&h, NS_B).unwrap();
    assert_eq!(gauge.shm_bytes, 65_536);
    assert_eq!(
        gauge.objects,
        ObjectCounts {
            msg: 0,
            shm: 1,
            sem: 1
        }
    );
    // Found gone by a resynchronisation: its bytes go with it.
    let (counts, _) = h.resync(
        &[listed_ns(NS_B, 0)],
        &[listed(NS_B, IpcObject::Sem, 0, 9)],
        &[],
    );
    assert_eq!(counts.objects_gone, 1);
    assert_eq!(gauge_of(&h, NS_B).unwrap().shm_bytes, 0);
    h.engine.check_indexes().unwrap();
}

#[test]
fn sizes_are_kept_only_when_asked() {
    let mut engine = Engine::new(AGENT_PID);
    let mut out = Vec::new();
    engine.observe_existing(
        0,
        &[listed_ns(NS_B, 0)],
        &[ExistingObject {
            size: 65_536,
            ..listed(NS_B, IpcObject::Shm, 3, 9)
        }],
        &mut out,
    );
    let mut gauges = Vec::new();
    engine.namespace_gauges(&mut gauges);
    assert_eq!(gauges[0].objects.shm, 1);
    assert_eq!(gauges[0].shm_bytes, 0, "no size kept without metrics");
    engine.check_indexes().unwrap();
}
