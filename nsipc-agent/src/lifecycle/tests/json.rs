//! Lifecycle lines as the stream writes them.

use super::*;

#[test]
fn lifecycle_json_has_the_documented_fields() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    let out = h.get(a, IpcObject::Sem, 0x77, 3);
    let json = to_json(&out[0]);
    for field in [
        "event",
        "time",
        "pid",
        "tid",
        "uid",
        "comm",
        "ns",
        "ns_id",
        "id",
        "key",
        "owner_uid",
        "mode",
        "nsems",
    ] {
        assert!(
            json.get(field).is_some(),
            "sem.create lacks {field}: {json}"
        );
    }
    let out = h.freed(a);
    let json = to_json(&out[0]);
    assert_eq!(json["reason"], "namespace_teardown");
    assert!(
        json.get("pid").is_none(),
        "a teardown has no process behind it"
    );
    let json = to_json(&out[1]);
    assert_eq!(
        json["objects_destroyed"],
        serde_json::json!({"msg": 0, "shm": 0, "sem": 1})
    );
}

/// Issue 10, defect 7: docs/events.md promises `time` on every line. Every kind of line the
/// engine makes, the ones a resynchronisation and an unseen end make included, carries one.
#[test]
fn every_lifecycle_line_has_a_time() {
    let mut h = Harness::new();
    let mut out = Vec::new();
    // What an inventory found (as at startup; `trace` prints the inventory's own lines then).
    h.engine.observe_existing(
        h.ts,
        &[listed_ns(NS_B, 0)],
        &[listed(NS_B, IpcObject::Msg, 0, 1)],
        &mut out,
    );
    let a = ns(NS_A, 42);
    out.extend(h.unshare(5, a));
    out.extend(h.feed(
        6,
        host(),
        Body::Setns {
            fd: 3,
            nstype: 0,
            from: a,
            result: Ok(0),
        },
    ));
    for object in IpcObject::ALL {
        out.extend(h.get(a, object, 0x10, 0));
    }
    out.extend(h.get(a, IpcObject::Shm, 0x11, 1));
    out.extend(h.feed(
        7,
        a,
        Body::Get {
            object: IpcObject::Msg,
            key: 0x12,
            flags: 0,
            size: 0,
            result: Err(2),
        },
    ));
    out.extend(h.feed(
        7,
        a,
        Body::ShmAttach {
            id: 1,
            requested_addr: 0,
            flags: 0,
            result: Ok(0x9000),
        },
    ));
    out.extend(h.rmid(a, IpcObject::Shm, 1, true));
    out.extend(h.feed(
        7,
        a,
        Body::ShmDetach {
            addr: 0x9000,
            result: Ok(0),
        },
    ));
    out.extend(h.shm_freed(a, 1, false));
    out.extend(h.rmid(a, IpcObject::Msg, 0, false));
    // Lost records: a resynchronisation finds the queue of NS_B and the semaphore set gone, a
    // namespace and objects it did not know, and NS_B gone.
    let (_, resynced) = h.resync(
        &[
            listed_ns(HOST_IPC_NS_INUM, 0),
            listed_ns(NS_A, 42),
            listed_ns(0xF000_0001, 0),
        ],
        &[
            listed(NS_A, IpcObject::Shm, 0, 0x10),
            listed(NS_A, IpcObject::Msg, 5, 0x13),
            listed(0xF000_0001, IpcObject::Sem, 0, 0x14),
        ],
        &[],
    );
    assert_eq!(
        Harness::names(&resynced),
        [
            "msg.destroy",
            "ipc_ns.destroy",
            "sem.destroy",
            "ipc_ns.exists",
            "msg.exists",
            "sem.exists"
        ],
        "{resynced:?}"
    );
    // What the resynchronisation found is stamped with when it looked.
    let clock = WallClock::with_offset(0);
    let looked = serde_json::to_value(Rfc3339(clock.wall_time(h.ts))).unwrap();
    for event in &resynced {
        let json = to_json(event);
        assert_eq!(json.get("time"), Some(&looked), "{json}");
        assert!(json.get("lifetime_ns").is_none(), "not known: {json}");
    }
    out.extend(resynced);
    // A new life of NS_A's inum before the old one's free came, records lost meanwhile: the
    // old life ended unseen, how not known.
    h.engine.records_lost();
    out.extend(h.get(ns(NS_A, 43), IpcObject::Msg, 0x15, 0));
    out.extend(h.freed(ns(NS_A, 43)));
    let mut kinds = std::collections::BTreeSet::new();
    for event in &out {
        let json = to_json(event);
        assert!(
            json.get("time").is_some_and(serde_json::Value::is_string),
            "{} lacks time: {json}",
            event.name()
        );
        kinds.insert(match event {
            Lifecycle::ObjectDestroy { reason, .. } | Lifecycle::NsDestroy { reason, .. } => {
                format!("{} {}", event.name(), reason.as_str())
            }
            _ => event.name().to_owned(),
        });
    }
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "ipc_ns.create",
            "ipc_ns.destroy freed",
            "ipc_ns.destroy unknown",
            "ipc_ns.exists",
            "ipc_ns.join",
            "msg.create",
            "msg.destroy namespace_teardown",
            "msg.destroy rmid",
            "msg.destroy unknown",
            "msg.exists",
            "msg.get_failed",
            "sem.create",
            "sem.destroy unknown",
            "sem.exists",
            "shm.attach",
            "shm.create",
            "shm.destroy last_detach",
            "shm.destroy unknown",
            "shm.detach",
            "shm.remove",
        ],
        "every kind of line, every destroy reason but rmid_forced (the same line)"
    );
}
