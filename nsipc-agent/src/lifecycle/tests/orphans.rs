//! Orphans: what a process made, once it exited and nobody has it attached.

use super::*;

fn exit(h: &mut Harness, pid: u32, at: NsRef) -> Vec<Lifecycle> {
    h.feed(pid, at, Body::ProcessExit { rmid_forced: false })
}

/// (name, id, cause) of each orphaned line.
fn orphans(events: &[Lifecycle]) -> Vec<(&'static str, i32, OrphanCause)> {
    events
        .iter()
        .filter_map(|event| match event {
            Lifecycle::ObjectOrphaned { id, cause, .. } => Some((event.name(), *id, *cause)),
            _ => None,
        })
        .collect()
}

const BY_10: OrphanCause = OrphanCause::CreatorExited { pid: 10 };

#[test]
fn the_creators_exit_orphans_what_it_made_and_nobody_holds() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    // Made by pid 10 (Harness::get): a queue, a set, a segment; and a queue made by pid 12.
    h.get(a, IpcObject::Msg, 1, 0);
    h.get(a, IpcObject::Sem, 2, 0);
    h.get(a, IpcObject::Shm, 3, 0);
    h.feed(12, a, got(IpcObject::Msg, 4, 1 << 15));
    // Removed before the exit: nothing to orphan.
    h.get(a, IpcObject::Msg, 5, 2 << 15);
    h.rmid(a, IpcObject::Msg, 2 << 15, false);
    assert!(orphans(&exit(&mut h, 12, a)).len() == 1, "pid 12's queue");
    let out = exit(&mut h, 10, a);
    assert_eq!(
        orphans(&out),
        [
            ("msg.orphaned", 0, BY_10),
            ("shm.orphaned", 0, BY_10),
            ("sem.orphaned", 0, BY_10)
        ]
    );
    let json = to_json(&out[0]);
    assert_eq!(json["cause"], "creator_exited");
    assert_eq!(json["creator_pid"], 10);
    assert_eq!(json["key"], 1);
    assert!(json.get("container").is_none(), "{json}");
    // Once: a second exit of the pid (another process since) orphans nothing.
    assert!(orphans(&exit(&mut h, 10, a)).is_empty());
    // They live on until removed.
    assert_eq!(h.engine.live_counts(), (2, 4));
}

#[test]
fn a_segment_still_attached_is_orphaned_at_its_last_detach() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.get(a, IpcObject::Shm, 3, 0);
    attach(&mut h, 10, a, 0, 0x1000);
    attach(&mut h, 20, a, 0, 0x2000);
    attach(&mut h, 21, a, 0, 0x3000);
    // The creator's own attachment goes with it; others hold the segment.
    assert!(orphans(&exit(&mut h, 10, a)).is_empty());
    assert!(orphans(&detach(&mut h, 20, a, 0x2000)).is_empty());
    let out = exit(&mut h, 21, a);
    assert_eq!(orphans(&out), [("shm.orphaned", 0, BY_10)]);
    assert!(orphans(&exit(&mut h, 21, a)).is_empty(), "once");
}

#[test]
fn a_segment_removed_while_attached_is_never_orphaned() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.get(a, IpcObject::Shm, 3, 0);
    attach(&mut h, 20, a, 0, 0x2000);
    h.rmid(a, IpcObject::Shm, 0, true);
    assert!(orphans(&exit(&mut h, 10, a)).is_empty());
    // Its last detach destroys it, no orphan.
    let out = detach(&mut h, 20, a, 0x2000);
    assert!(orphans(&out).is_empty(), "{out:?}");
}

#[test]
fn a_creator_that_moved_has_its_objects_found_elsewhere() {
    let mut h = Harness::new();
    let (a, b) = (ns(NS_A, 42), ns(NS_B, 43));
    h.unshare(5, a);
    h.unshare(6, b);
    h.get(a, IpcObject::Msg, 1, 0);
    h.get(b, IpcObject::Sem, 2, 0);
    let out = exit(&mut h, 10, b);
    assert_eq!(
        orphans(&out),
        [("msg.orphaned", 0, BY_10), ("sem.orphaned", 0, BY_10)]
    );
}

#[test]
fn objects_seen_only_by_an_inventory_have_no_creator() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.engine.observe_existing(
        h.ts,
        &[listed_ns(NS_A, 42)],
        &[listed(NS_A, IpcObject::Msg, 0, 1)],
        &mut Vec::new(),
    );
    assert!(orphans(&exit(&mut h, 10, a)).is_empty());
    assert!(h.engine.live_by_creator.is_empty());
}
