//! A failed get given its namespace's limits says which it hit, with the namespace's use as
//! the engine counts it.

use super::*;
use crate::limits::{self, LimitHit, Limits};

fn lowered() -> Limits {
    Limits {
        msgmni: 2,
        shmmax: 8192,
        shmmni: 3,
        semmni: 1,
        ..limits::sample(true)
    }
}

/// Feeds a failed get by pid 8 in `at`, with `limits`, and returns its `limit`.
fn failed_get(
    h: &mut Harness,
    at: NsRef,
    object: IpcObject,
    size: u64,
    errno: i32,
    given: Option<Limits>,
) -> Option<LimitHit> {
    let event = h.event(
        8,
        at,
        Body::Get {
            object,
            key: 0x77,
            flags: 0o1600,
            size,
            result: Err(errno),
        },
    );
    let mut out = Vec::new();
    h.engine.apply_with_limits(&event, given, &mut out);
    let [Lifecycle::GetFailed { limit, .. }] = out.as_slice() else {
        panic!("{out:?}")
    };
    *limit
}

#[test]
fn enospc_names_msgmni_with_the_queues_of_its_namespace_only() {
    let mut h = Harness::new();
    let (a, b) = (ns(NS_A, 42), ns(NS_B, 43));
    h.feed(5, a, unshared());
    h.feed(6, b, unshared());
    h.feed(5, a, got(IpcObject::Msg, 0x1, 0));
    h.feed(5, a, got(IpcObject::Msg, 0x2, 1));
    // Another namespace's queues, and another type's objects, are not its use.
    h.feed(6, b, got(IpcObject::Msg, 0x1, 0));
    h.feed(5, a, got(IpcObject::Shm, 0x1, 0));
    let hit = failed_get(&mut h, a, IpcObject::Msg, 0, libc::ENOSPC, Some(lowered()));
    assert_eq!(
        hit,
        Some(LimitHit {
            name: "msgmni",
            value: 2,
            used: Some(2),
            asked: None
        })
    );
    let json = to_json(&h.out_of_last_get(a, Some(lowered())));
    assert_eq!(
        json["limit"],
        serde_json::json!({"name": "msgmni", "value": 2, "used": 2})
    );
    // A removal is seen: one queue in use.
    h.feed(
        5,
        a,
        Body::Ctl {
            object: IpcObject::Msg,
            id: 1,
            cmd: 0,
            semnum: 0,
            still_listed: false,
            result: Ok(0),
        },
    );
    let hit = failed_get(&mut h, a, IpcObject::Msg, 0, libc::ENOSPC, Some(lowered()));
    assert_eq!(hit.and_then(|hit| hit.used), Some(1));
}

#[test]
fn shm_and_sem_limits_with_use_and_sizes() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.feed(5, a, unshared());
    for id in 0..3 {
        h.feed(5, a, got(IpcObject::Shm, 0x10 + id as i32, id));
    }
    let hit = failed_get(
        &mut h,
        a,
        IpcObject::Shm,
        100,
        libc::ENOSPC,
        Some(lowered()),
    )
    .unwrap();
    assert_eq!((hit.name, hit.value, hit.used), ("shmmni", 3, Some(3)));
    let hit = failed_get(
        &mut h,
        a,
        IpcObject::Shm,
        9000,
        libc::EINVAL,
        Some(lowered()),
    )
    .unwrap();
    assert_eq!(
        (hit.name, hit.value, hit.used, hit.asked),
        ("shmmax", 8192, None, Some(9000))
    );
    // shmall, with the segments' sizes the engine keeps (3 × 4096 bytes: 3 pages).
    let mut few_pages = lowered();
    few_pages.shmmni = 100;
    few_pages.shmall = 4;
    let hit = failed_get(
        &mut h,
        a,
        IpcObject::Shm,
        8192,
        libc::ENOSPC,
        Some(few_pages),
    )
    .unwrap();
    assert_eq!(
        (hit.name, hit.value, hit.used, hit.asked),
        ("shmall", 4, Some(3), Some(2))
    );
    h.feed(5, a, got(IpcObject::Sem, 0x20, 0));
    let hit = failed_get(&mut h, a, IpcObject::Sem, 2, libc::ENOSPC, Some(lowered())).unwrap();
    assert_eq!((hit.name, hit.used), ("semmni", Some(1)));
}

#[test]
fn no_limit_without_limits_or_for_other_errors() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.feed(5, a, unshared());
    assert_eq!(
        failed_get(&mut h, a, IpcObject::Msg, 0, libc::ENOSPC, None),
        None
    );
    assert_eq!(
        failed_get(&mut h, a, IpcObject::Msg, 0, libc::ENOENT, Some(lowered())),
        None
    );
    // Limits given for one event are not kept for the next.
    failed_get(&mut h, a, IpcObject::Msg, 0, libc::ENOENT, Some(lowered()));
    assert_eq!(
        failed_get(&mut h, a, IpcObject::Msg, 0, libc::ENOSPC, None),
        None
    );
}

impl Harness {
    /// The `msg.get_failed` (ENOSPC) a get in `at` makes now, with `given` limits.
    fn out_of_last_get(&mut self, at: NsRef, given: Option<Limits>) -> Lifecycle {
        let event = self.event(
            8,
            at,
            Body::Get {
                object: IpcObject::Msg,
                key: 0x77,
                flags: 0o1600,
                size: 0,
                result: Err(libc::ENOSPC),
            },
        );
        let mut out = Vec::new();
        self.engine.apply_with_limits(&event, given, &mut out);
        out.pop().unwrap()
    }
}
