//! Namespace lives: creation, joins, frees, and inum reuse.

use super::*;

#[test]
fn unshare_creates_a_namespace_with_its_origin() {
    let mut h = Harness::new();
    let out = h.unshare(5, ns(NS_A, 42));
    assert_eq!(out.len(), 1);
    let Lifecycle::NsCreate {
        ns,
        from,
        via,
        child_pid,
        task,
        ..
    } = &out[0]
    else {
        panic!("{out:?}")
    };
    assert_eq!(
        (ns.inum, ns.id, *via, *child_pid),
        (NS_A, 42, Via::Unshare, None)
    );
    assert_eq!(from.inum, HOST_IPC_NS_INUM);
    assert_eq!(task.pid, 5);
}

#[test]
fn clone_creates_a_namespace_naming_the_child() {
    let mut h = Harness::new();
    let out = h.feed(
        5,
        ns(NS_A, 42),
        Body::Clone {
            flags: 0x0800_0011,
            child_pid: 77,
            from: host(),
            result: Ok(77),
        },
    );
    let Lifecycle::NsCreate { via, child_pid, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!((*via, *child_pid), (Via::Clone, Some(77)));
}

#[test]
fn failed_namespace_calls_create_nothing() {
    let mut h = Harness::new();
    assert!(
        h.feed(
            5,
            host(),
            Body::Unshare {
                flags: 0x0800_0000,
                from: host(),
                result: Err(1)
            }
        )
        .is_empty()
    );
    assert!(
        h.feed(
            5,
            host(),
            Body::Clone {
                flags: 0,
                child_pid: 0,
                from: host(),
                result: Err(1)
            }
        )
        .is_empty()
    );
    assert!(
        h.feed(
            5,
            host(),
            Body::Setns {
                fd: 3,
                nstype: 0,
                from: host(),
                result: Err(22)
            }
        )
        .is_empty()
    );
}

#[test]
fn namespace_free_destroys_what_is_left_then_the_namespace() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.get(a, IpcObject::Msg, 1, 0);
    h.get(a, IpcObject::Sem, 2, 0);
    h.get(a, IpcObject::Shm, 3, 0);
    h.get(a, IpcObject::Shm, 4, 1);
    h.rmid(a, IpcObject::Shm, 1, false);
    let out = h.freed(a);
    assert_eq!(
        Harness::names(&out),
        [
            "msg.destroy",
            "shm.destroy",
            "sem.destroy",
            "ipc_ns.destroy"
        ]
    );
    assert!(
        out[..3]
            .iter()
            .all(|e| destroy_reason(e) == DestroyReason::NamespaceTeardown)
    );
    let Lifecycle::NsDestroy {
        destroyed,
        lifetime_ns,
        ..
    } = &out[3]
    else {
        panic!()
    };
    assert_eq!(
        *destroyed,
        ObjectCounts {
            msg: 1,
            shm: 1,
            sem: 1
        }
    );
    assert_eq!(*lifetime_ns, Some(h.ts - 2_000));
    assert_eq!(h.engine.live_counts(), (1, 0), "only the host remains");
    // The segments' RCU-deferred frees come after: already reported.
    assert!(h.shm_freed(a, 0, true).is_empty());
}

#[test]
fn inum_reuse_starts_a_new_life_with_ns_id() {
    let mut h = Harness::new();
    h.unshare(5, ns(NS_A, 42));
    h.get(ns(NS_A, 42), IpcObject::Msg, 1, 0);
    // A free of the first life arrives only after the same inum was handed out again: the new
    // life's objects must not be touched by the old life's free. The old life is ended at the
    // new one's birth (an inum names one namespace at a time), so it never stays open in the
    // stream: freed (only free_ipc_ns() gives an inum back), with its objects, all late.
    let out = h.unshare(6, ns(NS_A, 50));
    assert_eq!(
        Harness::names(&out),
        ["msg.destroy", "ipc_ns.destroy", "ipc_ns.create"]
    );
    assert_eq!(destroy_reason(&out[0]), DestroyReason::NamespaceTeardown);
    assert_eq!(destroy_reason(&out[1]), DestroyReason::Freed);
    assert!(out[..2].iter().all(is_late), "{out:?}");
    let Lifecycle::NsCreate {
        ns: second_life, ..
    } = &out[2]
    else {
        panic!("{out:?}")
    };
    assert_eq!(second_life.id, 50);
    assert_eq!(
        Harness::names(&h.get(ns(NS_A, 50), IpcObject::Msg, 1, 0)),
        ["msg.create"],
        "a new object"
    );
    assert!(
        h.freed(ns(NS_A, 42)).is_empty(),
        "stale free of the old life"
    );
    assert!(h.shm_freed(ns(NS_A, 42), 0, true).is_empty());
    assert_eq!(h.engine.live_counts().1, 1);
}

#[test]
fn inum_reuse_without_ns_id_counts_generations() {
    let mut h = Harness::new();
    let a = ns(NS_A, 0);
    let out = h.unshare(5, a);
    let Lifecycle::NsCreate { ns: first, .. } = &out[0] else {
        panic!()
    };
    assert_eq!(first.generation, 1);
    h.freed(a);
    let out = h.unshare(6, a);
    let Lifecycle::NsCreate { ns: second, .. } = &out[0] else {
        panic!()
    };
    assert_eq!((second.inum, second.id, second.generation), (NS_A, 0, 2));
    // Rendered as ns_gen where there is no ns_id.
    let json = to_json(&out[0]);
    assert_eq!(json["ns_gen"], 2);
    assert!(json.get("ns_id").is_none());
}

#[test]
fn join_reports_origin_and_entering_the_host() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    let out = h.feed(
        7,
        a,
        Body::Setns {
            fd: 3,
            nstype: 0x0800_0000,
            from: host(),
            result: Ok(0),
        },
    );
    let Lifecycle::NsJoin {
        into_host, from, ..
    } = &out[0]
    else {
        panic!("{out:?}")
    };
    assert_eq!((*into_host, from.inum), (false, HOST_IPC_NS_INUM));
    let out = h.feed(
        7,
        host(),
        Body::Setns {
            fd: 4,
            nstype: 0,
            from: a,
            result: Ok(0),
        },
    );
    let Lifecycle::NsJoin { into_host, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert!(*into_host, "a task leaving a namespace for the host's");
    assert!(
        h.feed(
            7,
            a,
            Body::Setns {
                fd: 3,
                nstype: 0,
                from: a,
                result: Ok(0)
            }
        )
        .is_empty(),
        "no change"
    );
    assert!(
        h.feed(
            AGENT_PID,
            a,
            Body::Setns {
                fd: 3,
                nstype: 0,
                from: host(),
                result: Ok(0)
            }
        )
        .is_empty(),
        "the agent's own inventory threads"
    );
    // Another nsipc-agent's (a `snapshot` run meanwhile, say): its helper thread's name.
    let mut event = h.event(
        4242,
        a,
        Body::Setns {
            fd: 3,
            nstype: 0,
            from: host(),
            result: Ok(0),
        },
    );
    event.task.comm = [0; 16];
    event.task.comm[..HELPER_THREAD_NAME.len()].copy_from_slice(HELPER_THREAD_NAME.as_bytes());
    let mut out = Vec::new();
    h.engine.apply(&event, &mut out);
    assert!(out.is_empty(), "another agent's inventory thread: {out:?}");
}

/// A teardown free that comes before the namespace's own free (the kworker between
/// shm_exit_ns() and kfree(ns) was held up for a grace period) is reported at once, and the
/// namespace's destroy still counts it: objects_destroyed equals the namespace_teardown destroys
/// of that namespace.
#[test]
fn an_early_teardown_free_is_counted_in_the_namespace_destroy() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.get(a, IpcObject::Shm, 7, 1);
    h.get(a, IpcObject::Shm, 8, 2);
    let early = h.shm_freed(a, 1, true);
    assert_eq!(destroy_reason(&early[0]), DestroyReason::NamespaceTeardown);
    let out = h.freed(a);
    assert_eq!(Harness::names(&out), ["shm.destroy", "ipc_ns.destroy"]);
    let Lifecycle::NsDestroy { destroyed, .. } = &out[1] else {
        panic!()
    };
    assert_eq!(destroyed.shm, 2, "both segments died with the namespace");
    // A later life of the inum starts from nothing.
    let b = ns(NS_A, 43);
    h.unshare(6, b);
    h.get(b, IpcObject::Sem, 9, 0);
    let out = h.freed(b);
    let Lifecycle::NsDestroy { destroyed, .. } = out.last().unwrap() else {
        panic!()
    };
    assert_eq!(
        *destroyed,
        ObjectCounts {
            msg: 0,
            shm: 0,
            sem: 1
        }
    );
}

/// A namespace's free destroys its own objects, whatever their ids and keys share with other
/// namespaces' objects, and nothing else: the others stay alive, findable by key, and
/// destroyable.
#[test]
fn a_namespace_free_destroys_exactly_its_own_objects() {
    let mut h = Harness::new();
    let (a, b) = (ns(NS_A, 42), ns(NS_B, 43));
    h.unshare(5, a);
    h.unshare(6, b);
    // The same ids and keys in A, B and the host.
    for at in [a, b, host()] {
        for (i, object) in IpcObject::ALL.into_iter().enumerate() {
            for seq in 0..3 {
                h.get(at, object, 0x100 + i as i32, seq << 15);
            }
        }
    }
    h.engine.check_indexes().unwrap();
    let before = h.engine.live_objects();
    assert_eq!(before.len(), 27);
    let out = h.freed(a);
    let Some((Lifecycle::NsDestroy { ns, destroyed, .. }, objects)) = out.split_last() else {
        panic!("{out:?}")
    };
    assert_eq!(
        (ns.inum, destroyed.msg + destroyed.shm + destroyed.sem),
        (NS_A, 9)
    );
    let mut destroyed: Vec<(u32, IpcObject, i32)> = objects
        .iter()
        .map(|event| match event {
            Lifecycle::ObjectDestroy { ns, object, id, .. } => (ns.inum, *object, *id),
            other => panic!("{other:?}"),
        })
        .collect();
    destroyed.sort_unstable();
    let (of_a, others): (Vec<_>, Vec<_>) = before.into_iter().partition(|o| o.0 == NS_A);
    assert_eq!(destroyed, of_a);
    assert_eq!(h.engine.live_objects(), others);
    h.engine.check_indexes().unwrap();
    // B's objects are still there: found by key from elsewhere, destroyed by IPC_RMID.
    let out = h.feed(
        8,
        host(),
        Body::Get {
            object: IpcObject::Sem,
            key: 0x102,
            flags: 0,
            size: 0,
            result: Err(2),
        },
    );
    let Lifecycle::GetFailed { key_lives_in, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(inums(key_lives_in), [NS_B]);
    assert_eq!(
        Harness::names(&h.rmid(b, IpcObject::Sem, 1 << 15, false)),
        ["sem.destroy"]
    );
    assert_eq!(h.engine.live_counts(), (2, 17));
}

/// Issue 10, defect 3: where the kernel has no ns_id, a namespace's inum goes to the next one
/// at once, while the frees of its segments come an RCU grace period after its own. A late
/// free of the dead namespace's segment 0 must not destroy the new namespace's segment 0: the
/// probes say its namespace was freed already (they tag each namespace life they track).
#[test]
fn a_dead_namespaces_late_segment_free_spares_the_next_life() {
    let mut h = Harness::new();
    let a = ns(NS_A, 0);
    h.unshare(5, a);
    h.get(a, IpcObject::Shm, 0, 0);
    assert_eq!(
        Harness::names(&h.freed(a)),
        ["shm.destroy", "ipc_ns.destroy"]
    );
    h.unshare(6, a);
    h.get(a, IpcObject::Shm, 0, 0);
    let late = |ns_freed| Body::ShmFreed {
        id: 0,
        key: 0,
        ns_dying: true,
        ns_freed,
        rmid_forced: false,
    };
    assert!(h.feed(0, a, late(true)).is_empty());
    assert_eq!(h.engine.live_objects(), [(NS_A, IpcObject::Shm, 0)]);
    // What the engine would otherwise have done: the inum's new life lost its segment.
    assert_eq!(Harness::names(&h.feed(0, a, late(false))), ["shm.destroy"]);
}

fn is_late(event: &Lifecycle) -> bool {
    matches!(
        event,
        Lifecycle::ObjectDestroy { late: true, .. } | Lifecycle::NsDestroy { late: true, .. }
    )
}

/// Where the kernel has no ns_id, free_ipc_ns() gives the inum back before its kfree(): a new
/// namespace's records can come before the old one's free (seen on 6.12 under qemu: a
/// `clone(CLONE_NEWIPC)` child's get before its parent's record, and the old free after both,
/// which then destroyed the new namespace). The probes' life tag (from the namespace's address)
/// tells them apart: the old life ends freed and late at the first record of the new one, and
/// its free's record, when it comes, changes nothing.
#[test]
fn a_new_life_before_the_old_ones_free_is_told_by_its_address() {
    let mut h = Harness::new();
    let old = NsRef {
        id: 0,
        inum: NS_A,
        life: 0x1000,
    };
    let new = NsRef {
        life: 0x2000,
        ..old
    };
    h.unshare(5, old);
    h.get(old, IpcObject::Msg, 1, 0);
    let out = h.get(new, IpcObject::Sem, 2, 0);
    assert_eq!(
        Harness::names(&out),
        ["msg.destroy", "ipc_ns.destroy", "sem.create"]
    );
    assert_eq!(destroy_reason(&out[0]), DestroyReason::NamespaceTeardown);
    assert_eq!(destroy_reason(&out[1]), DestroyReason::Freed);
    assert!(out[..2].iter().all(is_late), "{out:?}");
    // The creation's record announces the life the get already named.
    assert_eq!(Harness::names(&h.unshare(6, new)), ["ipc_ns.create"]);
    assert!(h.freed(old).is_empty(), "the old life's free is stale");
    assert_eq!(h.engine.live_objects(), [(NS_A, IpcObject::Sem, 0)]);
    // A record without a tag (as the inventory knows namespaces) is of the life alive.
    assert_eq!(
        Harness::names(&h.get(ns(NS_A, 0), IpcObject::Shm, 3, 0)),
        ["shm.create"]
    );
    assert_eq!(
        Harness::names(&h.freed(new)),
        ["shm.destroy", "sem.destroy", "ipc_ns.destroy"]
    );
}

/// With records lost since the last resynchronisation, a life replaced unseen may have lost
/// objects unseen too: what was left in it ends `unknown`.
#[test]
fn a_life_replaced_after_lost_records_ends_unknown() {
    let mut h = Harness::new();
    h.unshare(5, ns(NS_A, 42));
    h.get(ns(NS_A, 42), IpcObject::Msg, 1, 0);
    h.engine.records_lost();
    let out = h.unshare(6, ns(NS_A, 50));
    assert_eq!(
        Harness::names(&out),
        ["msg.destroy", "ipc_ns.destroy", "ipc_ns.create"]
    );
    assert_eq!(destroy_reason(&out[0]), DestroyReason::Unknown);
    assert_eq!(destroy_reason(&out[1]), DestroyReason::Unknown);
    assert!(!out.iter().any(is_late), "{out:?}");
}
