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
        "key_hex",
        "owner_uid",
        "mode",
        "mode_octal",
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
            rmid_forced: false,
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
        assert_readable_forms(&json);
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

/// `key_hex` is on every line with a `key`, and is that key; `mode_octal` likewise for `mode`.
fn assert_readable_forms(json: &serde_json::Value) {
    match json.get("key").and_then(serde_json::Value::as_i64) {
        Some(key) => assert_eq!(
            json["key_hex"],
            format!("0x{:08x}", key as i32 as u32),
            "{json}"
        ),
        None => assert!(json.get("key_hex").is_none(), "{json}"),
    }
    match json.get("mode").and_then(serde_json::Value::as_i64) {
        Some(mode) => assert_eq!(json["mode_octal"], format!("{mode:03o}"), "{json}"),
        None => assert!(json.get("mode_octal").is_none(), "{json}"),
    }
}

/// Issue 14: keys in hex and modes in octal, as `ipcs` prints them, beside the numbers.
#[test]
fn create_exists_destroy_and_get_failed_lines_carry_the_key_in_hex() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    // A queue found by looking (after lost records): msg.exists.
    let (_, mut out) = h.resync(
        &[listed_ns(HOST_IPC_NS_INUM, 1), listed_ns(NS_A, 42)],
        &[listed(NS_A, IpcObject::Msg, 9, 0x1234)],
        &[],
    );
    let made = |key, flags, id| Body::Get {
        object: IpcObject::Msg,
        key,
        flags,
        size: 0,
        result: Ok(id),
    };
    out.extend(h.feed(10, a, made(0x5eed, 0o1666, 0)));
    out.extend(h.feed(10, a, made(0, 0o1600, 1)));
    out.extend(h.feed(10, a, made(-1, 0o1644, 2)));
    out.extend(h.feed(10, a, made(7, 0o1044, 3)));
    out.extend(h.feed(
        10,
        a,
        Body::Get {
            object: IpcObject::Sem,
            key: -2,
            flags: 0,
            size: 0,
            result: Err(2),
        },
    ));
    out.extend(h.rmid(a, IpcObject::Msg, 2, false));
    let lines: Vec<serde_json::Value> = out.iter().map(to_json).collect();
    let readable: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                l["event"].as_str().unwrap(),
                l["key_hex"].as_str().unwrap(),
                l.get("mode_octal").and_then(serde_json::Value::as_str),
            )
        })
        .collect();
    assert_eq!(
        readable,
        [
            ("msg.exists", "0x00001234", None),
            ("msg.create", "0x00005eed", Some("666")),
            ("msg.create", "0x00000000", Some("600")),
            ("msg.create", "0xffffffff", Some("644")),
            ("msg.create", "0x00000007", Some("044")),
            ("sem.get_failed", "0xfffffffe", None),
            ("msg.destroy", "0xffffffff", None),
        ]
    );
    for line in &lines {
        assert_readable_forms(line);
    }
    // The numbers stay as they were: the new fields are beside them.
    assert_eq!(lines[1]["key"], 0x5eed);
    assert_eq!(lines[1]["mode"], 0o666);
    assert_eq!(lines[3]["key"], -1);
}
