//! Records out of order: what was done in a namespace or to an object before its creation's
//! record came.

use super::*;

/// The creation record of a namespace can come after records of what was done in it (a clone
/// whose child works before the parent's exit is recorded): it still announces the namespace.
#[test]
fn a_creation_after_the_namespace_was_named_announces_it() {
    for id in [0, 42] {
        let mut h = Harness::new();
        let a = ns(NS_A, id);
        h.get(a, IpcObject::Msg, 1, 0);
        assert_eq!(
            Harness::names(&h.unshare(5, a)),
            ["ipc_ns.create"],
            "ns_id {id}"
        );
        assert_eq!(
            h.engine.live_counts(),
            (2, 1),
            "the host's and one life of A, its queue kept"
        );
        // With ids, the same creation again is not news (without, it is the inum's next life).
        if id != 0 {
            assert_eq!(Harness::names(&h.unshare(5, a)), [""; 0], "announced once");
        }
    }
}

/// Records reach the ring buffer in reservation order, from every CPU: one thread's IPC_RMID
/// can come before the record of the get, on another CPU, that created the object. The
/// object then dies as soon as its create comes, by that removal.
#[test]
fn a_removal_before_its_objects_create_still_ends_it() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    assert!(h.rmid(a, IpcObject::Msg, 7, false).is_empty());
    let out = h.get(a, IpcObject::Msg, 0x55, 7);
    assert_eq!(Harness::names(&out), ["msg.create", "msg.destroy"]);
    let Lifecycle::ObjectDestroy {
        reason,
        task,
        lifetime_ns,
        ..
    } = &out[1]
    else {
        panic!("{out:?}")
    };
    assert_eq!(*reason, DestroyReason::Rmid);
    assert_eq!(task.map(|t| t.pid), Some(11), "the remover");
    assert_eq!(
        *lifetime_ns,
        Some(0),
        "removed as soon as made, as far as anyone saw"
    );
    // A segment removed while attached, before its create: created, then marked removed.
    assert!(h.rmid(a, IpcObject::Shm, 8, true).is_empty());
    assert_eq!(
        Harness::names(&h.get(a, IpcObject::Shm, 0x56, 8)),
        ["shm.create", "shm.remove"]
    );
    assert_eq!(h.engine.live_objects(), [(NS_A, IpcObject::Shm, 8)]);
    // Removals whose creates never come are forgotten with their namespace.
    assert!(h.rmid(a, IpcObject::Sem, 9, false).is_empty());
    h.freed(a);
    h.unshare(5, ns(NS_A, 43));
    assert_eq!(
        Harness::names(&h.get(ns(NS_A, 43), IpcObject::Sem, 0x57, 9)),
        ["sem.create"]
    );
    h.engine.check_indexes().unwrap();
}
