//! The inventory's lines: `ipc_ns.exists` per namespace, then `msg.exists` / `shm.exists` /
//! `sem.exists` per object (docs/events.md), for `snapshot` and for `trace` at start and at a
//! resynchronisation; then, in `snapshot`, `mqueue.exists` per POSIX message queue. What they
//! say is collected by [`crate::inventory`].

use std::{
    collections::HashMap,
    io::{self, Write},
};

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::{
    containers::{Container, MetadataRoots, container_of_cgroup},
    inventory::{
        FdHolder, Inventory, MountHolder, MqueueInfo, NamespaceInfo, ObjectDetail, ObjectInfo,
    },
    lifecycle::Lifecycle,
    names::IpcObject,
    output::{
        fields::{NS, Rfc3339, put_key, put_mode, put_ns},
        json::{Fields, FieldsLine, SerdeFields, key},
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
    for line in inventory
        .mqueues
        .iter()
        .map(|queue| MqueueJson(queue, generation(queue.ns)))
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

impl Serialize for NamespaceJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let ns = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("event", "ipc_ns.exists")?;
        map.serialize_entry("time", &Rfc3339(ns.seen_at))?;
        put_ns(&mut SerdeFields(&mut map), NS, ns.inum, ns.ns_id, self.1)?;
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
        self.write_json(buf);
        Ok(())
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

impl FieldsLine for ObjectJson<'_> {
    /// The line's fields, the same through [`Line`] (what the sink writes) and serde.
    fn fields<F: Fields>(&self, f: &mut F) -> Result<(), F::Error> {
        let object = self.0;
        let perm = &object.perm;
        let event = match object.detail {
            ObjectDetail::Msg { .. } => "msg.exists",
            ObjectDetail::Shm { .. } => "shm.exists",
            ObjectDetail::Sem { .. } => "sem.exists",
        };
        f.name(key!("event"), event)?;
        f.time(key!("time"), object.seen_at)?;
        put_ns(f, NS, object.ns, object.ns_id, self.1)?;
        f.int(key!("id"), perm.id.into())?;
        put_key(f, perm.key)?;
        f.uint(key!("uid"), perm.uid.into())?;
        f.uint(key!("gid"), perm.gid.into())?;
        f.uint(key!("cuid"), perm.cuid.into())?;
        f.uint(key!("cgid"), perm.cgid.into())?;
        put_mode(f, perm.mode)?;
        match object.detail {
            ObjectDetail::Msg {
                cbytes,
                qnum,
                qbytes,
            } => {
                f.uint(key!("qnum"), qnum)?;
                f.uint(key!("cbytes"), cbytes)?;
                if let Some(qbytes) = qbytes {
                    f.uint(key!("qbytes"), qbytes)?;
                }
            }
            ObjectDetail::Shm { size, nattch, cpid } => {
                f.uint(key!("size"), size)?;
                f.uint(key!("nattch"), nattch)?;
                f.uint(key!("cpid"), cpid.into())?;
                f.bool(key!("dest"), perm.mode & SHM_DEST != 0)?;
                f.bool(key!("locked"), perm.mode & SHM_LOCKED != 0)?;
            }
            ObjectDetail::Sem { nsems } => f.uint(key!("nsems"), nsems.into())?,
        }
        Ok(())
    }
}

impl Serialize for ObjectJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.fields(&mut SerdeFields(&mut map))?;
        map.end()
    }
}

/// A POSIX message queue, and the `ns_gen` to write where its namespace has no `ns_id`.
pub struct MqueueJson<'a>(&'a MqueueInfo, Option<u32>);

impl FieldsLine for MqueueJson<'_> {
    /// The line's fields, the same through [`Line`] (what the sink writes) and serde.
    fn fields<F: Fields>(&self, f: &mut F) -> Result<(), F::Error> {
        let queue = self.0;
        f.name(key!("event"), "mqueue.exists")?;
        f.time(key!("time"), queue.seen_at)?;
        put_ns(f, NS, queue.ns, queue.ns_id, self.1)?;
        f.lossy(key!("name"), queue.name.as_bytes())?;
        f.uint(key!("ino"), queue.ino)?;
        f.uint(key!("uid"), queue.uid.into())?;
        f.uint(key!("gid"), queue.gid.into())?;
        put_mode(f, queue.mode)?;
        f.uint(key!("qsize"), queue.qsize)?;
        f.uint(key!("notify_pid"), queue.notify_pid.into())?;
        if let Some(attr) = queue.attr {
            f.uint(key!("maxmsg"), attr.maxmsg)?;
            f.uint(key!("msgsize"), attr.msgsize)?;
            f.uint(key!("curmsgs"), attr.curmsgs)?;
        }
        Ok(())
    }
}

impl EventLine for MqueueJson<'_> {
    fn json(&self, buf: &mut Vec<u8>) -> serde_json::Result<()> {
        self.write_json(buf);
        Ok(())
    }

    fn pretty(&self, line: &mut PrettyLine<'_>) {
        let queue = self.0;
        line.head(&Head {
            time: queue.seen_at,
            kind: "mqueue.exists",
            tone: Tone::Plain,
            ns: Some(queue.ns),
            who: Who::Nobody,
            task: None,
        });
        line.text("name", queue.name.as_bytes())
            .mode(queue.mode)
            .uint("uid", queue.uid.into());
        if let Some(attr) = queue.attr {
            line.uint("curmsgs", attr.curmsgs)
                .uint("maxmsg", attr.maxmsg)
                .uint("msgsize", attr.msgsize);
        }
        line.uint("qsize", queue.qsize);
        if queue.notify_pid != 0 {
            line.uint("notify_pid", queue.notify_pid.into());
        }
    }
}

impl Serialize for MqueueJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.fields(&mut SerdeFields(&mut map))?;
        map.end()
    }
}

#[cfg(test)]
mod tests;
