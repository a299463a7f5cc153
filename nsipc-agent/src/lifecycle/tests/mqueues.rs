//! POSIX message queues: create, failed open, unlink, and the end of each queue, where the
//! probes name the evicted queue (fentry, kprobe) and where they cannot (the kfree program).

use super::*;
use crate::decode::MqueueName;

fn name(text: &str) -> MqueueName {
    MqueueName(text.as_bytes().into())
}

/// A successful `mq_open` of `queue` (with `O_CREAT` when `create`), open on inode `ino`.
fn opened(queue: &str, create: bool, ino: u64) -> Body {
    Body::MqueueOpen {
        name: name(queue),
        oflag: if create { 0o102 } else { 0o2 },
        mode: 0o640,
        maxmsg: 4,
        msgsize: 64,
        ino,
        result: Ok(3),
    }
}

/// An `mq_open` of `queue` (no flags) that failed with `errno`.
fn open_failed(queue: &str, errno: i32) -> Body {
    Body::MqueueOpen {
        name: name(queue),
        oflag: 0,
        mode: 0,
        maxmsg: 0,
        msgsize: 0,
        ino: 0,
        result: Err(errno),
    }
}

fn unlinked(queue: &str) -> Body {
    Body::MqueueUnlink {
        name: name(queue),
        result: Ok(0),
    }
}

fn evicted(ino: Option<u64>) -> Body {
    Body::MqueueEvicted { ino, syscall: 3 }
}

/// (name, reason) of an `mqueue.destroy`.
fn destroyed(event: &Lifecycle) -> (String, DestroyReason, Option<u32>) {
    let Lifecycle::MqueueDestroy {
        queue,
        reason,
        task,
        ..
    } = event
    else {
        panic!("not a destroy: {event:?}");
    };
    (queue.name.display(), *reason, task.map(|task| task.pid))
}

#[test]
fn a_queue_is_created_once_and_opened_without_a_line() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    let out = h.feed(5, a, opened("jobs", true, 100));
    let [Lifecycle::MqueueCreate { queue, mode, .. }] = &out[..] else {
        panic!("{out:?}");
    };
    assert_eq!(
        (queue.name.display(), queue.ino, *mode),
        ("/jobs".into(), 100, 0o640)
    );
    let json = to_json(&out[0]);
    assert_eq!(
        (&json["name"], &json["ino"], &json["maxmsg"]),
        (
            &serde_json::json!("/jobs"),
            &serde_json::json!(100),
            &serde_json::json!(4)
        )
    );
    // Opened again, with O_CREAT or not: the same inode, no new queue.
    assert!(h.feed(6, a, opened("jobs", true, 100)).is_empty());
    assert!(h.feed(6, a, opened("jobs", false, 100)).is_empty());
    // An open without O_CREAT of a queue the agent never knew: it predates the agent.
    assert!(h.feed(6, a, opened("old", false, 101)).is_empty());
}

#[test]
fn a_failed_open_says_where_the_name_lives() {
    let mut h = Harness::new();
    let (a, b, c) = (ns(NS_A, 42), ns(NS_B, 43), ns(4026532179, 44));
    h.unshare(5, a);
    h.unshare(6, b);
    h.unshare(7, c);
    h.feed(5, a, opened("jobs", true, 100));
    h.feed(6, b, opened("jobs", true, 200));
    let out = h.feed(7, c, open_failed("jobs", libc::ENOENT));
    let [Lifecycle::MqueueOpenFailed { name_lives_in, .. }] = &out[..] else {
        panic!("{out:?}");
    };
    assert_eq!(inums(name_lives_in), [NS_A, NS_B]);
    // As a value: the namespaces' objects are raw JSON, whose keys serde orders.
    let json = to_json_value(&out[0]);
    assert_eq!(json["errno"], "ENOENT");
    assert_eq!(json["name_lives_in"], serde_json::json!([NS_A, NS_B]));
    // Unlinked in one, the name lives in the other only.
    h.feed(5, a, unlinked("jobs"));
    let out = h.feed(7, c, open_failed("jobs", libc::ENOENT));
    let [Lifecycle::MqueueOpenFailed { name_lives_in, .. }] = &out[..] else {
        panic!("{out:?}");
    };
    assert_eq!(inums(name_lives_in), [NS_B]);
}

/// Where the probes name the evicted queue: an unlink with nothing open ends it there (its
/// eviction recorded before the unlink's record, reported after it); an unlinked queue ends at
/// its last close; at a teardown, the linked queues evicted then end with the namespace, and
/// one held open lives on, nameless, until its last close.
#[test]
fn named_evictions_end_each_queue_exactly() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.feed(5, a, opened("gone", true, 100));
    h.feed(5, a, opened("held", true, 101));
    h.feed(5, a, opened("left", true, 102));
    h.feed(5, a, opened("open_at_end", true, 103));

    // The eviction inside the unlink comes first, by the unlinking thread.
    assert!(h.feed(5, host(), evicted(Some(100))).is_empty());
    let out = h.feed(5, a, unlinked("gone"));
    assert_eq!(Harness::names(&out), ["mqueue.unlink", "mqueue.destroy"]);
    assert_eq!(
        destroyed(&out[1]),
        ("/gone".into(), DestroyReason::Unlink, Some(5))
    );

    // Unlinked while open: no end until the last close.
    let out = h.feed(5, a, unlinked("held"));
    assert_eq!(Harness::names(&out), ["mqueue.unlink"]);
    let out = h.feed(8, host(), evicted(Some(101)));
    assert_eq!(
        destroyed(&out[0]),
        ("/held".into(), DestroyReason::LastClose, Some(8))
    );

    // The teardown evicts what nothing holds open, then the namespace is freed.
    h.feed(0, host(), evicted(Some(102)));
    let out = h.freed(a);
    assert_eq!(Harness::names(&out), ["mqueue.destroy", "ipc_ns.destroy"]);
    assert_eq!(
        destroyed(&out[0]),
        ("/left".into(), DestroyReason::NamespaceTeardown, None)
    );
    // The one still open outlives its namespace, and ends at its last close.
    let out = h.feed(9, host(), evicted(Some(103)));
    assert_eq!(
        destroyed(&out[0]),
        ("/open_at_end".into(), DestroyReason::LastClose, Some(9))
    );
    // The namespace's root directory, or any inode the agent never knew: nothing.
    assert!(h.feed(0, host(), evicted(Some(1))).is_empty());
}

/// Where the probes cannot name the evicted queue: an eviction by the unlinking thread is its
/// unlink's queue; at a teardown every linked queue ends; any other eviction waits for the
/// look, which reports the unlinked queues no process holds open, by the eviction's task and
/// at its time when one went for one.
#[test]
fn unnamed_evictions_are_explained_by_unlinks_teardowns_and_a_look() {
    let mut h = Harness::new();
    h.engine.mqueue_evictions_unnamed();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.feed(5, a, opened("gone", true, 100));
    h.feed(5, a, opened("held", true, 101));
    h.feed(5, a, opened("open", true, 102));
    h.feed(5, a, opened("left", true, 103));

    // Another thread's eviction does not end the unlinked queue.
    h.feed(8, host(), evicted(None));
    let evicted_at = h.ts;
    h.feed(5, host(), evicted(None));
    let out = h.feed(5, a, unlinked("gone"));
    assert_eq!(Harness::names(&out), ["mqueue.unlink", "mqueue.destroy"]);
    assert_eq!(destroyed(&out[1]).1, DestroyReason::Unlink);

    h.feed(5, a, unlinked("held"));
    h.feed(5, a, unlinked("open"));
    // The look: only thread 8's eviction, made before `before`, is explained by it.
    let before = h.ts;
    let looked_for = h.engine.mqueues_to_look_for(before).unwrap();
    assert_eq!(looked_for, [101, 102]);
    assert!(h.engine.mqueues_to_look_for(evicted_at).is_none());
    let mut out = Vec::new();
    h.engine.mqueues_looked(
        &looked_for,
        &HashSet::from([102]),
        before,
        h.ts + 5,
        &mut out,
    );
    let [destroy] = &out[..] else {
        panic!("{out:?}");
    };
    assert_eq!(
        destroyed(destroy),
        ("/held".into(), DestroyReason::LastClose, Some(8))
    );
    assert_eq!(destroy.ts(), evicted_at, "at the eviction's time");
    assert!(
        h.engine.mqueues_to_look_for(u64::MAX).is_none(),
        "explained"
    );

    // The teardown ends the linked queue; its own eviction does not call for a look.
    h.feed(0, host(), evicted(None));
    let out = h.freed(a);
    assert_eq!(Harness::names(&out), ["mqueue.destroy", "ipc_ns.destroy"]);
    assert_eq!(
        destroyed(&out[0]),
        ("/left".into(), DestroyReason::NamespaceTeardown, None)
    );
    assert!(h.engine.mqueues_to_look_for(u64::MAX).is_none());
    // The unlinked queue still open outlived it: its end is found by the next look.
    h.feed(9, host(), evicted(None));
    let looked_for = h.engine.mqueues_to_look_for(u64::MAX).unwrap();
    assert_eq!(looked_for, [102]);
    let mut out = Vec::new();
    h.engine
        .mqueues_looked(&looked_for, &HashSet::new(), u64::MAX, h.ts + 5, &mut out);
    assert_eq!(
        destroyed(&out[0]),
        ("/open".into(), DestroyReason::LastClose, Some(9))
    );
}

/// A queue the startup inventory listed is followed: its unlink ends it.
#[test]
fn a_listed_queue_is_followed() {
    let mut h = Harness::new();
    let mut out = Vec::new();
    h.engine.observe_existing(
        0,
        &[ExistingNamespace { inum: NS_A, id: 42 }],
        &[],
        &mut out,
    );
    let listed = crate::inventory::mqueue::MqueueInfo {
        ns: NS_A,
        ns_id: Some(42),
        seen_at: std::time::UNIX_EPOCH,
        name: "/jobs".into(),
        ino: 100,
        uid: 0,
        gid: 0,
        mode: 0o600,
        qsize: 0,
        notify_pid: 0,
        attr: None,
    };
    h.engine.observe_existing_mqueues(&[listed]);
    h.feed(5, ns(NS_A, 42), evicted(Some(100)));
    let out = h.feed(5, ns(NS_A, 42), unlinked("jobs"));
    assert_eq!(Harness::names(&out), ["mqueue.unlink", "mqueue.destroy"]);
    let Lifecycle::MqueueDestroy { lifetime_ns, .. } = &out[1] else {
        panic!("{out:?}");
    };
    assert_eq!(*lifetime_ns, None, "its creation was not seen");
}

/// A create refused by the namespace's `fs.mqueue.queues_max` says so, with the queues the
/// namespace has (an unlinked one still open counts, as the kernel counts it).
#[test]
fn a_create_refused_by_queues_max_names_the_limit() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.feed(5, a, opened("one", true, 100));
    h.feed(5, a, opened("two", true, 101));
    h.feed(5, a, unlinked("two"));
    let refused = Body::MqueueOpen {
        name: name("three"),
        oflag: 0o102,
        mode: 0o600,
        maxmsg: 0,
        msgsize: 0,
        ino: 0,
        result: Err(libc::ENOSPC),
    };
    let limits = crate::limits::Limits {
        mq_queues_max: Some(2),
        ..crate::limits::Limits::default()
    };
    let event = h.event(5, a, refused);
    let mut out = Vec::new();
    h.engine.apply_with_limits(&event, Some(limits), &mut out);
    let [Lifecycle::MqueueOpenFailed { limit, .. }] = &out[..] else {
        panic!("{out:?}");
    };
    let limit = limit.expect("a limit");
    assert_eq!(
        (limit.name, limit.value, limit.used),
        ("mq_queues_max", 2, Some(2))
    );
    assert_eq!(
        to_json_value(&out[0])["limit"],
        serde_json::json!({"name": "mq_queues_max", "value": 2, "used": 2})
    );
}

/// A lifecycle event as a JSON value (where raw JSON inside makes serde order keys).
fn to_json_value(event: &Lifecycle) -> serde_json::Value {
    serde_json::to_value(LifecycleJson {
        event,
        clock: &WallClock::with_offset(0),
        attribution: &Attribution::none(),
    })
    .unwrap()
}

/// The inode a failed `mq_open` made and dropped is evicted inside that call: it never was a
/// queue, and the same thread's next unlink (of a queue still open) does not end anything.
#[test]
fn a_failed_creates_own_eviction_is_no_queue_ending() {
    let mut h = Harness::new();
    h.engine.mqueue_evictions_unnamed();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.feed(5, a, opened("held", true, 100));
    let in_mq_open = Body::MqueueEvicted {
        ino: None,
        syscall: 240,
    };
    assert!(h.feed(5, host(), in_mq_open).is_empty());
    h.feed(5, a, open_failed("big", libc::EINVAL));
    let out = h.feed(5, a, unlinked("held"));
    assert_eq!(Harness::names(&out), ["mqueue.unlink"], "still open");
    assert!(h.engine.mqueues_to_look_for(u64::MAX).is_none());
}
