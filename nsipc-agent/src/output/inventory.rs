//! The inventory's lines: `ipc_ns.exists` per namespace, then `msg.exists` / `shm.exists` /
//! `sem.exists` per object (docs/events.md), for `snapshot` and for `trace` at start and at a
//! resynchronisation. What they say is collected by [`crate::inventory`].

use std::{
    collections::HashMap,
    io::{self, Write},
};

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::{
    containers::{Container, MetadataRoots, container_of_cgroup},
    inventory::{FdHolder, Inventory, MountHolder, NamespaceInfo, ObjectDetail, ObjectInfo},
    lifecycle::Lifecycle,
    names::IpcObject,
    output::{
        kernel_events::{KeyHex, ModeOctal, Rfc3339},
        pretty::{Head, PrettyLine, Tone, Who},
        sink::{EventLine, Format, JsonLines, SinkState},
    },
};

/// Status bits the kernel keeps in a segment's mode (include/linux/shm.h): marked for removal
/// at last detach (IPC_RMID while attached), and locked in memory (SHM_LOCK).
const SHM_DEST: u32 = 0o1000;
const SHM_LOCKED: u32 = 0o2000;

/// Writes every line; stops quietly if the reader went away (`| head`).
pub fn write<W: Write>(inventory: &Inventory, out: W, format: Format) -> io::Result<()> {
    let mut sink = JsonLines::new(out).formatting(format);
    if write_lines(inventory, &mut sink, &|_| None)? == SinkState::ReaderGone {
        return Ok(());
    }
    sink.flush().map(drop)
}

/// Writes the inventory's `ipc_ns.exists` and `*.exists` lines into a stream (`snapshot`, and
/// `trace` at start). `generation`: in `trace`, the life of an inum its events name as `ns_gen`
/// where the kernel has no `ns_id`, so these lines carry it too; `snapshot` counts no lives.
pub fn write_lines<W: Write>(
    inventory: &Inventory,
    sink: &mut JsonLines<W>,
    generation: &dyn Fn(u32) -> Option<u32>,
) -> io::Result<SinkState> {
    for line in inventory
        .namespaces
        .iter()
        .map(|ns| NamespaceJson(ns, generation(ns.inum)))
    {
        if sink.write(&line)? == SinkState::ReaderGone {
            return Ok(SinkState::ReaderGone);
        }
    }
    for line in inventory
        .objects
        .iter()
        .map(|object| ObjectJson(object, generation(object.ns)))
    {
        if sink.write(&line)? == SinkState::ReaderGone {
            return Ok(SinkState::ReaderGone);
        }
    }
    Ok(SinkState::Open)
}

/// The entries of an inventory a resynchronisation compared the engine with, by what the
/// engine's `exists` events name: what it found is written as the startup inventory's lines
/// are (with `processes`, `held_by`, the object's owner and mode…), not as a line of its own
/// under the same name.
pub struct Found<'a> {
    namespaces: HashMap<u32, &'a NamespaceInfo>,
    objects: HashMap<(u32, IpcObject, i32), &'a ObjectInfo>,
}

impl<'a> Found<'a> {
    pub fn new(inventory: &'a Inventory) -> Self {
        Self {
            namespaces: inventory
                .namespaces
                .iter()
                .map(|ns| (ns.inum, ns))
                .collect(),
            objects: inventory
                .objects
                .iter()
                .map(|object| ((object.ns, object.object(), object.perm.id), object))
                .collect(),
        }
    }

    /// The inventory's line for an `exists` event of the engine, with the engine's `ns_gen`
    /// where the kernel has no `ns_id`; None for other events (and for what the inventory
    /// does not hold, which the engine does not report found).
    pub fn line(&self, event: &Lifecycle) -> Option<InventoryLine<'a>> {
        match event {
            Lifecycle::NsExists { ns, .. } => self
                .namespaces
                .get(&ns.inum)
                .map(|info| InventoryLine::Namespace(NamespaceJson(info, Some(ns.generation)))),
            Lifecycle::ObjectExists { ns, object, id, .. } => self
                .objects
                .get(&(ns.inum, *object, *id))
                .map(|info| InventoryLine::Object(ObjectJson(info, Some(ns.generation)))),
            _ => None,
        }
    }
}

/// One line of an inventory.
pub enum InventoryLine<'a> {
    Namespace(NamespaceJson<'a>),
    Object(ObjectJson<'a>),
}

impl EventLine for InventoryLine<'_> {
    fn json(&self, buf: &mut Vec<u8>) -> serde_json::Result<()> {
        match self {
            InventoryLine::Namespace(line) => line.json(buf),
            InventoryLine::Object(line) => line.json(buf),
        }
    }

    fn pretty(&self, line: &mut PrettyLine<'_>) {
        match self {
            InventoryLine::Namespace(ns) => ns.pretty(line),
            InventoryLine::Object(object) => object.pretty(line),
        }
    }
}

/// A namespace, and the `ns_gen` to write where it has no `ns_id`.
pub struct NamespaceJson<'a>(&'a NamespaceInfo, Option<u32>);

#[derive(serde::Serialize)]
struct HeldBy<'a> {
    fds: &'a [FdHolder],
    mounts: &'a [MountHolder],
}

/// Writes `ns` and, where the kernel has one, `ns_id`, else the `ns_gen` given, like the trace
/// events.
fn put_ns<M: SerializeMap>(
    map: &mut M,
    inum: u32,
    id: Option<u64>,
    generation: Option<u32>,
) -> Result<(), M::Error> {
    map.serialize_entry("ns", &inum)?;
    match (id, generation) {
        (Some(id), _) => map.serialize_entry("ns_id", &id),
        (None, Some(generation)) => map.serialize_entry("ns_gen", &generation),
        (None, None) => Ok(()),
    }
}

impl Serialize for NamespaceJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let ns = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("event", "ipc_ns.exists")?;
        map.serialize_entry("time", &Rfc3339(ns.seen_at))?;
        put_ns(&mut map, ns.inum, ns.ns_id, self.1)?;
        map.serialize_entry("processes", &ns.processes)?;
        map.serialize_entry("containers", &self.containers())?;
        map.serialize_entry(
            "held_by",
            &HeldBy {
                fds: &ns.fds,
                mounts: &ns.mounts,
            },
        )?;
        if let Some(limits) = &ns.limits {
            map.serialize_entry("limits", limits)?;
        }
        map.end()
    }
}

impl NamespaceJson<'_> {
    /// The containers of the namespace's processes, each once.
    fn containers(&self) -> Vec<Container> {
        let mut containers: Vec<Container> = Vec::new();
        for container in self
            .0
            .container_cgroups
            .iter()
            .filter_map(|path| container_of_cgroup(path, &MetadataRoots::default()))
        {
            if !containers.iter().any(|known| known.id == container.id) {
                containers.push(container);
            }
        }
        containers
    }
}

/// Processes named in an `ipc_ns.exists` line of the human view; the rest are counted.
const PRETTY_PROCESSES: usize = 3;

impl EventLine for NamespaceJson<'_> {
    fn json(&self, buf: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(buf, self)
    }

    fn pretty(&self, line: &mut PrettyLine<'_>) {
        let ns = self.0;
        let containers = self.containers();
        let containers: Vec<&Container> = containers.iter().collect();
        line.head(&Head {
            time: ns.seen_at,
            kind: "ipc_ns.exists",
            tone: Tone::Plain,
            ns: Some(ns.inum),
            who: Who::Containers(&containers),
            task: None,
        });
        // `processes 2: 42/sleep 43/perl`, the first few of them.
        line.uint("processes", ns.processes.len() as u64);
        for (i, process) in ns.processes.iter().take(PRETTY_PROCESSES).enumerate() {
            line.raw(if i == 0 { ": " } else { " " })
                .raw_uint(process.pid.into())
                .raw("/")
                .raw_text(process.comm.as_bytes());
        }
        if ns.processes.len() > PRETTY_PROCESSES {
            line.raw(" +")
                .raw_uint((ns.processes.len() - PRETTY_PROCESSES) as u64);
        }
        if !ns.fds.is_empty() {
            line.uint("fds", ns.fds.len() as u64);
        }
        if !ns.mounts.is_empty() {
            line.uint("mounts", ns.mounts.len() as u64);
            for (i, mount) in ns.mounts.iter().enumerate() {
                line.raw(if i == 0 { ": " } else { " " })
                    .raw_text(mount.mount_point.as_os_str().as_encoded_bytes());
            }
        }
    }
}

/// An object, and the `ns_gen` to write where its namespace has no `ns_id`.
pub struct ObjectJson<'a>(&'a ObjectInfo, Option<u32>);

impl EventLine for ObjectJson<'_> {
    fn json(&self, buf: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(buf, self)
    }

    fn pretty(&self, line: &mut PrettyLine<'_>) {
        let object = self.0;
        let perm = &object.perm;
        line.head(&Head {
            time: object.seen_at,
            kind: match object.detail {
                ObjectDetail::Msg { .. } => "msg.exists",
                ObjectDetail::Shm { .. } => "shm.exists",
                ObjectDetail::Sem { .. } => "sem.exists",
            },
            tone: Tone::Plain,
            ns: Some(object.ns),
            who: Who::Nobody,
            task: None,
        });
        line.key(perm.key)
            .int("id", perm.id.into())
            .mode(perm.mode)
            .uint("uid", perm.uid.into());
        match object.detail {
            ObjectDetail::Msg { cbytes, qnum, .. } => {
                line.uint("qnum", qnum).uint("cbytes", cbytes);
            }
            ObjectDetail::Shm { size, nattch, cpid } => {
                line.uint("size", size)
                    .uint("nattch", nattch)
                    .uint("cpid", cpid.into());
                if perm.mode & SHM_DEST != 0 {
                    line.flag("dest");
                }
                if perm.mode & SHM_LOCKED != 0 {
                    line.flag("locked");
                }
            }
            ObjectDetail::Sem { nsems } => drop(line.uint("nsems", nsems.into())),
        }
    }
}

impl Serialize for ObjectJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let object = self.0;
        let perm = &object.perm;
        let mut map = serializer.serialize_map(None)?;
        let event = match object.detail {
            ObjectDetail::Msg { .. } => "msg.exists",
            ObjectDetail::Shm { .. } => "shm.exists",
            ObjectDetail::Sem { .. } => "sem.exists",
        };
        map.serialize_entry("event", event)?;
        map.serialize_entry("time", &Rfc3339(object.seen_at))?;
        put_ns(&mut map, object.ns, object.ns_id, self.1)?;
        map.serialize_entry("id", &perm.id)?;
        map.serialize_entry("key", &perm.key)?;
        map.serialize_entry("key_hex", &KeyHex::new(perm.key))?;
        map.serialize_entry("uid", &perm.uid)?;
        map.serialize_entry("gid", &perm.gid)?;
        map.serialize_entry("cuid", &perm.cuid)?;
        map.serialize_entry("cgid", &perm.cgid)?;
        map.serialize_entry("mode", &(perm.mode & 0o777))?;
        map.serialize_entry("mode_octal", &ModeOctal::new(perm.mode))?;
        match object.detail {
            ObjectDetail::Msg {
                cbytes,
                qnum,
                qbytes,
            } => {
                map.serialize_entry("qnum", &qnum)?;
                map.serialize_entry("cbytes", &cbytes)?;
                if let Some(qbytes) = qbytes {
                    map.serialize_entry("qbytes", &qbytes)?;
                }
            }
            ObjectDetail::Shm { size, nattch, cpid } => {
                map.serialize_entry("size", &size)?;
                map.serialize_entry("nattch", &nattch)?;
                map.serialize_entry("cpid", &cpid)?;
                map.serialize_entry("dest", &(perm.mode & SHM_DEST != 0))?;
                map.serialize_entry("locked", &(perm.mode & SHM_LOCKED != 0))?;
            }
            ObjectDetail::Sem { nsems } => map.serialize_entry("nsems", &nsems)?,
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, time::SystemTime};

    use serde_json::{Value, json};

    use super::*;
    use crate::inventory::{IpcPerm, ProcessInfo};

    fn lines(inventory: &Inventory) -> Vec<Value> {
        let mut out = Vec::new();
        write(inventory, &mut out, Format::Json).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
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
}
