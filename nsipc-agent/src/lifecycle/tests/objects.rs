//! Objects: creation, opening, and destruction by IPC_RMID.

use super::*;

#[test]
fn get_creates_once_then_opens() {
    let mut h = Harness::new();
    h.unshare(5, ns(NS_A, 42));
    for object in IpcObject::ALL {
        let out = h.get(ns(NS_A, 42), object, 0x1234, 7);
        assert_eq!(out.len(), 1, "{object:?} create");
        let Lifecycle::ObjectCreate {
            id,
            key,
            mode,
            size,
            ns: created_in,
            ..
        } = &out[0]
        else {
            panic!("{out:?}")
        };
        // The get's size argument as the kernel took it: a set's nsems, a segment's bytes.
        assert_eq!(
            (*id, *key, *mode, *size, created_in.inum),
            (7, 0x1234, 0o600, 4096, NS_A)
        );
        assert!(
            h.get(ns(NS_A, 42), object, 0x1234, 7).is_empty(),
            "{object:?}: a second get opens"
        );
    }
    assert_eq!(
        h.engine.live_counts(),
        (2, 3),
        "host (as origin) + A; three objects"
    );
}

#[test]
fn the_same_id_in_two_namespaces_is_two_objects() {
    let mut h = Harness::new();
    h.unshare(5, ns(NS_A, 42));
    h.unshare(6, ns(NS_B, 43));
    assert_eq!(
        Harness::names(&h.get(ns(NS_A, 42), IpcObject::Msg, 1, 0)),
        ["msg.create"]
    );
    assert_eq!(
        Harness::names(&h.get(ns(NS_B, 43), IpcObject::Msg, 1, 0)),
        ["msg.create"]
    );
    let out = h.rmid(ns(NS_A, 42), IpcObject::Msg, 0, false);
    assert_eq!(Harness::names(&out), ["msg.destroy"]);
    assert_eq!(h.engine.live_counts().1, 1, "B's queue lives on");
}

#[test]
fn rmid_destroys_msg_and_sem_with_the_caller() {
    let mut h = Harness::new();
    h.unshare(5, ns(NS_A, 42));
    for object in [IpcObject::Msg, IpcObject::Sem] {
        h.get(ns(NS_A, 42), object, 9, 3);
        let out = h.rmid(ns(NS_A, 42), object, 3, false);
        assert_eq!(out.len(), 1);
        let Lifecycle::ObjectDestroy {
            reason,
            task,
            key,
            lifetime_ns,
            ..
        } = &out[0]
        else {
            panic!("{out:?}")
        };
        assert_eq!((*reason, *key), (DestroyReason::Rmid, 9));
        assert_eq!(task.map(|t| t.pid), Some(11));
        assert_eq!(*lifetime_ns, Some(1_000));
    }
    assert_eq!(h.engine.live_counts().1, 0);
}

#[test]
fn rmid_of_an_unknown_object_is_not_a_ghost() {
    let mut h = Harness::new();
    assert!(h.rmid(ns(NS_A, 42), IpcObject::Sem, 3, false).is_empty());
}
