use std::{path::PathBuf, time::SystemTime};

use serde_json::{Value, json};

use super::*;
use crate::inventory::{IpcPerm, ProcessInfo};

fn lines(inventory: &Inventory) -> Vec<Value> {
    let mut out = Vec::new();
    write(inventory, &mut out, Format::Json).unwrap();
    let text = String::from_utf8(out).unwrap();
    // The sink writes an object's line through `Line`; serde writes the same bytes.
    let object_lines = text.lines().skip(inventory.namespaces.len());
    for (line, object) in object_lines.zip(&inventory.objects) {
        let serde_line = serde_json::to_string(&ObjectJson(object, None)).unwrap();
        assert_eq!(line, serde_line, "the hot path writes what serde writes");
    }
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn perm(id: i32, key: i32, mode: u32) -> IpcPerm {
    IpcPerm {
        id,
        key,
        uid: 1000,
        gid: 100,
        cuid: 0,
        cgid: 0,
        mode,
    }
}

#[test]
fn namespaces_then_objects_with_their_fields() {
    let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let object = |detail, perm| ObjectInfo {
        ns: 4026532177,
        ns_id: Some(4105),
        seen_at: at,
        perm,
        detail,
    };
    let inventory = Inventory {
        namespaces: vec![NamespaceInfo {
            inum: 4026532177,
            ns_id: Some(4105),
            seen_at: at,
            processes: vec![
                ProcessInfo {
                    pid: 42,
                    tids: None,
                    comm: "sleep".into(),
                    uid: 0,
                    container: Some("ab".repeat(32)),
                },
                ProcessInfo {
                    pid: 43,
                    tids: Some(vec![44]),
                    comm: "perl".into(),
                    uid: 1000,
                    container: None,
                },
            ],
            container_cgroups: vec![format!("/docker/{}", "ab".repeat(32))],
            fds: vec![FdHolder {
                pid: 50,
                comm: "sh".into(),
                fd: 3,
            }],
            mounts: vec![MountHolder {
                pid: 1,
                mnt_ns: 4026531841,
                mount_point: PathBuf::from("/run/ipc/x"),
            }],
            limits: None,
        }],
        objects: vec![
            object(
                ObjectDetail::Msg {
                    cbytes: 5,
                    qnum: 1,
                    qbytes: Some(16384),
                },
                perm(0, 0x1234, 0o600),
            ),
            object(
                ObjectDetail::Shm {
                    size: 4096,
                    nattch: 1,
                    cpid: 42,
                },
                perm(1, 0, 0o1640),
            ),
            object(ObjectDetail::Sem { nsems: 3 }, perm(2, -5, 0o600)),
        ],
        unreadable: vec![1],
        mqueues: Vec::new(),
        mqueues_unlisted: Vec::new(),
    };
    let lines = lines(&inventory);
    assert_eq!(lines.len(), 4);
    let time = "2023-11-14T22:13:20.000000000Z";
    assert_eq!(
        lines[0],
        json!({
            "event": "ipc_ns.exists", "time": time, "ns": 4026532177u32, "ns_id": 4105,
            "processes": [
                {"pid": 42, "comm": "sleep", "uid": 0, "container": "ab".repeat(32)},
                {"pid": 43, "tids": [44], "comm": "perl", "uid": 1000},
            ],
            // Its runtime's files are not on this machine: the cgroup's form names it.
            "containers": [{"id": "ab".repeat(32), "runtime": "docker"}],
            "held_by": {
                "fds": [{"pid": 50, "comm": "sh", "fd": 3}],
                "mounts": [{"pid": 1, "mnt_ns": 4026531841u32, "mount_point": "/run/ipc/x"}],
            },
        })
    );
    let common = json!({"time": time, "ns": 4026532177u32, "ns_id": 4105,
                        "uid": 1000, "gid": 100, "cuid": 0, "cgid": 0});
    let with_common = |mut v: Value| {
        v.as_object_mut()
            .unwrap()
            .extend(common.as_object().unwrap().clone());
        v
    };
    assert_eq!(
        lines[1],
        with_common(
            json!({"event": "msg.exists", "id": 0, "key": 0x1234, "key_hex": "0x00001234",
                           "mode": 0o600, "mode_octal": "600",
                           "qnum": 1, "cbytes": 5, "qbytes": 16384})
        )
    );
    assert_eq!(
        lines[2],
        with_common(
            json!({"event": "shm.exists", "id": 1, "key": 0, "key_hex": "0x00000000",
                           // SHM_DEST is `dest`, not a permission bit
                           "mode": 0o640, "mode_octal": "640",
                           "size": 4096, "nattch": 1, "cpid": 42,
                           "dest": true, "locked": false})
        )
    );
    assert_eq!(
        lines[3],
        with_common(
            json!({"event": "sem.exists", "id": 2, "key": -5, "key_hex": "0xfffffffb",
                           "mode": 0o600, "mode_octal": "600",
                           "nsems": 3})
        )
    );
}

/// The human view of the same values, in UTC.
fn pretty_lines(inventory: &Inventory) -> Vec<String> {
    let mut out = Vec::new();
    let style = crate::output::pretty::Style {
        color: false,
        utc: true,
    };
    write(inventory, &mut out, Format::Pretty(style)).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_human_view_has_a_line_per_namespace_and_object() {
    let at = SystemTime::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5_000_000);
    let process = |pid, comm: &str| ProcessInfo {
        pid,
        tids: None,
        comm: comm.into(),
        uid: 0,
        container: None,
    };
    let object = |detail, perm| ObjectInfo {
        ns: 4026532177,
        ns_id: None,
        seen_at: at,
        perm,
        detail,
    };
    let inventory = Inventory {
        namespaces: vec![NamespaceInfo {
            inum: 4026532177,
            ns_id: None,
            seen_at: at,
            processes: ["a", "b", "c", "d", "e"]
                .iter()
                .enumerate()
                .map(|(i, comm)| process(40 + i as u32, comm))
                .collect(),
            container_cgroups: vec![format!("/docker/{}", "ab".repeat(32))],
            fds: vec![FdHolder {
                pid: 50,
                comm: "sh".into(),
                fd: 3,
            }],
            mounts: vec![MountHolder {
                pid: 1,
                mnt_ns: 4026531841,
                mount_point: PathBuf::from("/run/ipc/x"),
            }],
            limits: None,
        }],
        objects: vec![
            object(
                ObjectDetail::Shm {
                    size: 4096,
                    nattch: 2,
                    cpid: 42,
                },
                perm(1, 0x5eed, 0o1640),
            ),
            object(
                ObjectDetail::Msg {
                    cbytes: 5,
                    qnum: 1,
                    qbytes: None,
                },
                perm(0, -1, 0o600),
            ),
            object(ObjectDetail::Sem { nsems: 3 }, perm(2, 0, 0o44)),
        ],
        unreadable: Vec::new(),
        mqueues: Vec::new(),
        mqueues_unlisted: Vec::new(),
    };
    assert_eq!(
        pretty_lines(&inventory),
        [
            // The container has no name on this machine: its id's first 12 digits.
            "22:13:20.005 ipc_ns.exists      4026532177 abababababab -                    \
             processes 5: 40/a 41/b 42/c +2 fds 1 mounts 1: /run/ipc/x",
            "22:13:20.005 shm.exists         4026532177 -            -                    \
             key 0x00005eed id 1 mode 0640 uid 1000 size 4096 nattch 2 cpid 42 dest",
            "22:13:20.005 msg.exists         4026532177 -            -                    \
             key 0xffffffff id 0 mode 0600 uid 1000 qnum 1 cbytes 5",
            "22:13:20.005 sem.exists         4026532177 -            -                    \
             key 0x00000000 id 2 mode 0044 uid 1000 nsems 3",
        ]
    );
}

#[test]
fn absent_optional_fields_are_left_out() {
    let inventory = Inventory {
        namespaces: vec![NamespaceInfo {
            inum: 4026531839,
            ns_id: None,
            seen_at: SystemTime::now(),
            processes: Vec::new(),
            container_cgroups: Vec::new(),
            fds: Vec::new(),
            mounts: Vec::new(),
            limits: None,
        }],
        objects: vec![ObjectInfo {
            ns: 4026531839,
            ns_id: None,
            seen_at: SystemTime::now(),
            perm: perm(0, 1, 0o600),
            detail: ObjectDetail::Msg {
                cbytes: 0,
                qnum: 0,
                qbytes: None,
            },
        }],
        unreadable: Vec::new(),
        mqueues: Vec::new(),
        mqueues_unlisted: Vec::new(),
    };
    let lines = lines(&inventory);
    assert!(lines[0].get("ns_id").is_none());
    assert_eq!(lines[0]["held_by"], json!({"fds": [], "mounts": []}));
    assert!(lines[1].get("ns_id").is_none());
    assert!(lines[1].get("qbytes").is_none());
}

/// Found by tests/differential.rs under `cargo xtask vm-test` on 6.12: `trace`'s startup
/// lines had neither `ns_id` nor `ns_gen` on kernels without ns_id, so they could not be
/// tied to the events that followed, which carry `ns_gen`.
#[test]
fn trace_lines_carry_the_generation_where_there_is_no_ns_id() {
    let namespace = |inum, ns_id| NamespaceInfo {
        inum,
        ns_id,
        seen_at: SystemTime::now(),
        processes: Vec::new(),
        container_cgroups: Vec::new(),
        fds: Vec::new(),
        mounts: Vec::new(),
        limits: None,
    };
    let inventory = Inventory {
        namespaces: vec![namespace(4026532177, None), namespace(4026532178, Some(9))],
        objects: vec![ObjectInfo {
            ns: 4026532177,
            ns_id: None,
            seen_at: SystemTime::now(),
            perm: perm(0, 1, 0o600),
            detail: ObjectDetail::Sem { nsems: 1 },
        }],
        unreadable: Vec::new(),
        mqueues: Vec::new(),
        mqueues_unlisted: Vec::new(),
    };
    let mut out = Vec::new();
    let mut sink = JsonLines::new(&mut out);
    write_lines(&inventory, &mut sink, &|inum| {
        (inum == 4026532177 || inum == 4026532178).then_some(1)
    })
    .unwrap();
    sink.flush().unwrap();
    drop(sink);
    let lines_of = lines;
    let lines: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["ns_gen"], 1);
    assert!(lines[0].get("ns_id").is_none());
    assert_eq!(lines[1]["ns_id"], 9, "ns_id where the kernel has it");
    assert!(lines[1].get("ns_gen").is_none());
    assert_eq!(lines[2]["event"], "sem.exists");
    assert_eq!(lines[2]["ns_gen"], 1);
    // `snapshot` itself counts no lives.
    assert!(lines_of(&inventory)[0].get("ns_gen").is_none());
}
