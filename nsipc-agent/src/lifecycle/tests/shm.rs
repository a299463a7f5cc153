//! Shared memory: attach and detach, removal while attached, and how a segment's free is told.

use super::*;

#[test]
fn shm_rmid_while_attached_marks_then_last_detach_destroys() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.get(a, IpcObject::Shm, 0x55, 4);
    let out = h.feed(
        12,
        a,
        Body::ShmAttach {
            id: 4,
            requested_addr: 0,
            flags: 0,
            result: Ok(0x7f00),
        },
    );
    let Lifecycle::ShmAttach { id, key, addr, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!((*id, *key, *addr), (4, Some(0x55), 0x7f00));

    let out = h.rmid(a, IpcObject::Shm, 4, true);
    assert_eq!(Harness::names(&out), ["shm.remove"]);
    assert!(h.rmid(a, IpcObject::Shm, 4, true).is_empty(), "marked once");

    let out = h.feed(
        12,
        a,
        Body::ShmDetach {
            addr: 0x7f00,
            rmid_forced: false,
            result: Ok(0),
        },
    );
    let Lifecycle::ShmDetach { id, key, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!((*id, *key), (Some(4), Some(0x55)));
    // The kernel made the removed segment's key private: nobody can find it by key any more.
    let out = h.feed(
        8,
        ns(NS_B, 43),
        Body::Get {
            object: IpcObject::Shm,
            key: 0x55,
            flags: 0,
            size: 0,
            result: Err(2),
        },
    );
    let Lifecycle::GetFailed { key_lives_in, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert!(key_lives_in.is_empty());

    let out = h.shm_freed(a, 4, false);
    assert_eq!(Harness::names(&out), ["shm.destroy"]);
    assert_eq!(destroy_reason(&out[0]), DestroyReason::LastDetach);
    assert!(h.shm_freed(a, 4, false).is_empty(), "destroyed once");
}

#[test]
fn shm_rmid_unattached_destroys_at_once_and_ignores_the_later_free() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.get(a, IpcObject::Shm, 0x55, 4);
    let out = h.rmid(a, IpcObject::Shm, 4, false);
    assert_eq!(destroy_reason(&out[0]), DestroyReason::Rmid);
    assert!(h.shm_freed(a, 4, false).is_empty());
}

#[test]
fn shm_freed_without_rmid_is_rmid_forced_or_teardown() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    for id in 1..=3 {
        h.get(a, IpcObject::Shm, id, i64::from(id));
    }
    let forced = h.shm_freed_forced(a, 1, false, true);
    assert_eq!(destroy_reason(&forced[0]), DestroyReason::RmidForced);
    assert_eq!(
        destroy_reason(&h.shm_freed(a, 2, true)[0]),
        DestroyReason::NamespaceTeardown
    );
    // Without shm_rmid_forced, only a teardown destroys a segment nobody removed.
    assert_eq!(
        destroy_reason(&h.shm_freed(a, 3, false)[0]),
        DestroyReason::NamespaceTeardown
    );
}

#[test]
fn a_removed_segment_freed_while_its_namespace_dies_died_at_its_last_detach() {
    // Its last detach (say at exit) destroyed it; the kfree came a grace period later, when the
    // namespace was already going.
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.get(a, IpcObject::Shm, 5, 5);
    h.rmid(a, IpcObject::Shm, 5, true);
    assert_eq!(
        destroy_reason(&h.shm_freed(a, 5, true)[0]),
        DestroyReason::LastDetach
    );
    // Or the namespace's own free comes first.
    h.get(a, IpcObject::Shm, 6, 6);
    h.rmid(a, IpcObject::Shm, 6, true);
    let out = h.freed(a);
    assert_eq!(Harness::names(&out), ["shm.destroy", "ipc_ns.destroy"]);
    assert_eq!(destroy_reason(&out[0]), DestroyReason::LastDetach);
    let Lifecycle::NsDestroy { destroyed, .. } = &out[1] else {
        panic!()
    };
    assert_eq!(destroyed.shm, 0, "not destroyed by the teardown");
}

#[test]
fn detach_of_an_unknown_attachment_still_reports_the_address() {
    let mut h = Harness::new();
    let out = h.feed(
        12,
        host(),
        Body::ShmDetach {
            addr: 0x9000,
            rmid_forced: false,
            result: Ok(0),
        },
    );
    let Lifecycle::ShmDetach { id, key, addr, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!((*id, *key, *addr), (None, None, 0x9000));
}

/// Found by tests/differential.rs (seeds 3 and 5): in a namespace with kernel.shm_rmid_forced
/// set, the creator of an unattached segment exits as the namespace's last holder. exit_shm()
/// destroys the segment, exit_task_namespaces() drops the last reference, and the segment's
/// RCU-deferred kfree comes while the namespace is dying but not yet freed, ~4-12 ms before the
/// namespace's own kfree. The engine called it `namespace_teardown`, on its own, and the
/// namespace's destroy then said `objects_destroyed.shm: 0`. The probe now reads
/// shm_rmid_forced while the namespace's memory is there, dying or not.
#[test]
fn a_forced_destroy_freed_while_the_namespace_dies_is_rmid_forced() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.get(a, IpcObject::Shm, 7, 1);
    h.get(a, IpcObject::Msg, 8, 0);
    let out = h.shm_freed_forced(a, 1, true, true);
    assert_eq!(Harness::names(&out), ["shm.destroy"]);
    assert_eq!(destroy_reason(&out[0]), DestroyReason::RmidForced);
    let out = h.freed(a);
    assert_eq!(Harness::names(&out), ["msg.destroy", "ipc_ns.destroy"]);
    let Lifecycle::NsDestroy { destroyed, .. } = &out[1] else {
        panic!()
    };
    assert_eq!(
        *destroyed,
        ObjectCounts {
            msg: 1,
            shm: 0,
            sem: 0
        },
        "the segment died before the teardown"
    );
}

#[test]
fn a_removed_segment_awaits_its_free_once_no_known_attachment_holds_it() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.get(a, IpcObject::Shm, 0x55, 4);
    h.get(a, IpcObject::Shm, 0x56, 5);
    attach(&mut h, 12, a, 4, 0x7f00);
    attach(&mut h, 13, a, 4, 0x7f00);
    assert!(h.engine.awaiting_free().is_empty(), "not removed");
    h.rmid(a, IpcObject::Shm, 4, true);
    assert!(h.engine.awaiting_free().is_empty(), "still attached twice");
    detach(&mut h, 12, a, 0x7f00);
    assert!(h.engine.awaiting_free().is_empty(), "pid 13 still attached");
    h.feed(13, a, Body::ProcessExit { rmid_forced: false });
    assert_eq!(h.engine.awaiting_free(), [(NS_A, 4)]);
    h.freed(a);
    assert!(
        h.engine.awaiting_free().is_empty(),
        "gone with its namespace"
    );
}

#[test]
fn a_removed_segment_found_gone_is_destroyed_late_by_its_last_detach() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.get(a, IpcObject::Shm, 0x55, 4);
    h.get(a, IpcObject::Shm, 0x56, 5);
    attach(&mut h, 12, a, 4, 0x7f00);
    h.rmid(a, IpcObject::Shm, 4, true);
    detach(&mut h, 12, a, 0x7f00);

    let mut out = Vec::new();
    h.engine.found_gone(NS_A, 5, 9_000_000, &mut out);
    assert!(
        out.is_empty(),
        "a segment never removed is not awaiting its free"
    );
    h.engine.found_gone(NS_A, 4, 9_000_000, &mut out);
    let json = to_json(&out[0]);
    assert_eq!(json["event"], "shm.destroy", "{json}");
    assert_eq!(json["reason"], "last_detach", "{json}");
    assert_eq!(json["late"], true, "{json}");
    assert!(h.engine.awaiting_free().is_empty());
    // Its free, should it come after all, changes nothing.
    assert!(h.shm_freed(a, 4, false).is_empty());
    let mut again = Vec::new();
    h.engine.found_gone(NS_A, 4, 9_000_001, &mut again);
    assert!(again.is_empty(), "destroyed once");
}

#[test]
fn a_detach_names_the_segments_namespace_not_the_callers() {
    let mut h = Harness::new();
    let (a, b) = (ns(NS_A, 42), ns(NS_B, 43));
    h.unshare(5, a);
    h.unshare(6, b);
    h.get(a, IpcObject::Shm, 0x55, 4);
    attach(&mut h, 12, a, 4, 0x7f00);
    // The attacher moved to namespace b (setns) before it detached.
    let out = detach(&mut h, 12, b, 0x7f00);
    let Lifecycle::ShmDetach { ns, id, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!((ns.inum, *id), (NS_A, Some(4)));
    // An address the engine does not know is reported where the caller is.
    let out = detach(&mut h, 12, b, 0x9000);
    let Lifecycle::ShmDetach { ns, id, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!((ns.inum, *id), (NS_B, None));
}

fn exit_forced(h: &mut Harness, pid: u32, at: NsRef, rmid_forced: bool) -> Vec<Lifecycle> {
    h.feed(pid, at, Body::ProcessExit { rmid_forced })
}

fn detach_forced(h: &mut Harness, pid: u32, at: NsRef, addr: u64) -> Vec<Lifecycle> {
    h.feed(
        pid,
        at,
        Body::ShmDetach {
            addr,
            rmid_forced: true,
            result: Ok(0),
        },
    )
}

/// With kernel.shm_rmid_forced, the kernel destroys a segment once nothing is attached after
/// its creator's exit or after any detach: the engine then awaits its free as it awaits a
/// removed segment's, and one found gone died of the sysctl, `late`.
#[test]
fn a_forced_segment_awaits_its_free_once_its_creator_or_last_attachment_goes() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    // Made by pid 10 (the harness's getter): 4 unattached, 5 attached by 12, 6 by 13.
    for id in 4..=6 {
        h.get(a, IpcObject::Shm, 0x50 + id as i32, id);
    }
    attach(&mut h, 12, a, 5, 0x7f00);
    attach(&mut h, 13, a, 6, 0x7e00);
    // pid 13 detaches while the creator lives: the last detach destroys in such a namespace.
    detach_forced(&mut h, 13, a, 0x7e00);
    assert_eq!(h.engine.awaiting_free(), [(NS_A, 6)]);
    exit_forced(&mut h, 10, a, true);
    assert_eq!(
        h.engine.awaiting_free(),
        [(NS_A, 4), (NS_A, 6)],
        "5 is still attached"
    );
    exit_forced(&mut h, 12, a, true);
    assert_eq!(h.engine.awaiting_free(), [(NS_A, 4), (NS_A, 5), (NS_A, 6)]);

    // The free of 4 comes; 5 is found gone by a look; 6 by a resync.
    let out = h.shm_freed_forced(a, 4, false, true);
    assert_eq!(destroy_reason(&out[0]), DestroyReason::RmidForced);
    let mut out = Vec::new();
    h.engine.found_gone(NS_A, 5, 9_000_000, &mut out);
    let json = to_json(&out[0]);
    assert_eq!(
        (&json["event"], &json["id"], &json["reason"], &json["late"]),
        (
            &"shm.destroy".into(),
            &5.into(),
            &"rmid_forced".into(),
            &true.into()
        ),
        "{json}"
    );
    let (counts, out) = h.resync(
        &[listed_ns(HOST_IPC_NS_INUM, 0), listed_ns(NS_A, 42)],
        &[],
        &[],
    );
    assert_eq!(counts.objects_gone, 1, "{out:?}");
    let json = to_json(&out[0]);
    assert_eq!(
        (&json["id"], &json["reason"], &json["late"]),
        (&6.into(), &"rmid_forced".into(), &true.into()),
        "{json}"
    );
    assert!(h.engine.awaiting_free().is_empty());
}

/// Without the sysctl (or once a record says it was turned off), an exit or a detach destroys
/// nothing: no free is awaited, and a look finds nothing to report.
#[test]
fn without_shm_rmid_forced_no_free_is_awaited() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.get(a, IpcObject::Shm, 0x54, 4);
    h.get(a, IpcObject::Shm, 0x55, 5);
    attach(&mut h, 12, a, 5, 0x7f00);
    detach(&mut h, 12, a, 0x7f00);
    exit_forced(&mut h, 10, a, false);
    assert!(h.engine.awaiting_free().is_empty());
    let mut out = Vec::new();
    h.engine.found_gone(NS_A, 4, 9_000_000, &mut out);
    assert!(out.is_empty(), "{out:?}");

    // Set, then unset: what was awaited is not any more.
    let b = ns(NS_B, 43);
    h.unshare(6, b);
    h.feed(20, b, got(IpcObject::Shm, 0x56, 6));
    exit_forced(&mut h, 20, b, true);
    assert_eq!(h.engine.awaiting_free(), [(NS_B, 6)]);
    exit_forced(&mut h, 21, b, false);
    assert!(h.engine.awaiting_free().is_empty());
}
