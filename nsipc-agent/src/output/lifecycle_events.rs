//! The lifecycle engine's events as lines: JSON (documented in docs/events.md) on the hot
//! path through [`Line`], and the human view.

use serde::ser::{Serialize, SerializeMap, Serializer};

use nsipc_common::HOST_IPC_NS_INUM;

use crate::{
    attribution::Attribution,
    containers::Container,
    decode::ContainerRef,
    lifecycle::{KeyHome, Lifecycle, MqueueIdent, NsIdent, OrphanCause, Via},
    limits::LimitHit,
    names::IpcObject,
    output::fields::{
        FROM_NS, NS, NsKeys, WallClock, put_container, put_errno, put_key, put_mode, put_ns,
        put_task,
    },
    output::json::{Fields, FieldsLine, Key, Line, SerdeFields, key},
    output::pretty::{Head, PrettyLine, Tone, Who},
    output::sink::EventLine,
};

/// Writes a namespace identity with the keys given: its `_id` where the kernel has one, else
/// the life the engine counted (`_gen`).
fn put_ident<F: Fields>(f: &mut F, keys: NsKeys, ns: &NsIdent) -> Result<(), F::Error> {
    put_ns(
        f,
        keys,
        ns.inum,
        (ns.id != 0).then_some(ns.id),
        Some(ns.generation),
    )
}

/// Writes a list of containers as their objects.
fn put_containers<F: Fields>(
    f: &mut F,
    key: Key,
    containers: &[ContainerRef],
    attribution: &Attribution,
) -> Result<(), F::Error> {
    f.raw_list(
        key,
        containers
            .iter()
            .filter_map(|&c| attribution.get(c))
            .map(|known| known.json.as_str()),
    )
}

/// A lifecycle event ready to serialize as one JSON object.
pub struct LifecycleJson<'a> {
    pub event: &'a Lifecycle,
    pub clock: &'a WallClock,
    pub attribution: &'a Attribution,
}

impl FieldsLine for LifecycleJson<'_> {
    fn fields<F: Fields>(&self, f: &mut F) -> Result<(), F::Error> {
        let event = self.event;
        f.name(key!("event"), event.name())?;
        f.time(key!("time"), self.clock.wall_time(event.ts()))?;
        if let Some(task) = event.task() {
            put_task(f, task, self.attribution)?;
        }
        put_ident(f, NS, event.ns())?;
        if let Some(task) = event.task() {
            put_container(f, task.container, event.ns().inum, self.attribution)?;
        }
        match event {
            Lifecycle::NsExists { .. } | Lifecycle::ContainerHostIpc { .. } => {}
            Lifecycle::NsCreate {
                from,
                via,
                child_pid,
                limits,
                ..
            } => {
                put_ident(f, FROM_NS, from)?;
                f.name(
                    key!("via"),
                    match via {
                        Via::Unshare => "unshare",
                        Via::Clone => "clone",
                    },
                )?;
                if let Some(child_pid) = child_pid {
                    f.uint(key!("child_pid"), (*child_pid).into())?;
                }
                if let Some(limits) = limits {
                    let json = serde_json::to_string(limits).expect("numbers serialize");
                    f.raw(key!("limits"), &json)?;
                }
            }
            Lifecycle::NsJoin {
                from,
                into_host,
                kind,
                members,
                ..
            } => {
                put_ident(f, FROM_NS, from)?;
                f.bool(key!("into_host"), *into_host)?;
                f.name(key!("join"), kind.as_str())?;
                put_containers(f, key!("ns_containers"), members, self.attribution)?;
            }
            Lifecycle::NsDestroy {
                lifetime_ns,
                destroyed,
                reason,
                containers,
                late,
                ..
            } => {
                put_containers(f, key!("containers"), containers, self.attribution)?;
                f.name(key!("reason"), reason.as_str())?;
                if let Some(lifetime_ns) = lifetime_ns {
                    f.uint(key!("lifetime_ns"), *lifetime_ns)?;
                }
                f.counts(
                    key!("objects_destroyed"),
                    &[
                        (key!("msg"), destroyed.msg.into()),
                        (key!("shm"), destroyed.shm.into()),
                        (key!("sem"), destroyed.sem.into()),
                    ],
                )?;
                if *late {
                    f.bool(key!("late"), true)?;
                }
            }
            Lifecycle::ObjectExists { id, key, .. } => {
                f.int(key!("id"), (*id).into())?;
                put_key(f, *key)?;
            }
            Lifecycle::ObjectCreate {
                object,
                id,
                key,
                mode,
                size,
                task,
                ..
            } => {
                f.int(key!("id"), (*id).into())?;
                put_key(f, *key)?;
                // The kernel makes the creator's effective uid the owner (ipc/util.c:
                // ipc_addid() sets cuid and uid from current_euid()).
                f.uint(key!("owner_uid"), task.euid.into())?;
                put_mode(f, *mode as u32)?;
                match object {
                    IpcObject::Msg => {}
                    IpcObject::Shm => f.uint(key!("size"), *size)?,
                    IpcObject::Sem => f.uint(key!("nsems"), *size)?,
                }
            }
            Lifecycle::ObjectDestroy {
                id,
                key,
                reason,
                lifetime_ns,
                late,
                ..
            } => {
                f.int(key!("id"), (*id).into())?;
                put_key(f, *key)?;
                f.name(key!("reason"), reason.as_str())?;
                if let Some(lifetime_ns) = lifetime_ns {
                    f.uint(key!("lifetime_ns"), *lifetime_ns)?;
                }
                if *late {
                    f.bool(key!("late"), true)?;
                }
            }
            Lifecycle::ObjectOrphaned {
                ns,
                id,
                key,
                container,
                cause,
                ..
            } => {
                f.int(key!("id"), (*id).into())?;
                put_key(f, *key)?;
                f.name(key!("cause"), cause.as_str())?;
                if let OrphanCause::CreatorExited { pid } = cause {
                    f.uint(key!("creator_pid"), (*pid).into())?;
                }
                put_container(f, *container, ns.inum, self.attribution)?;
            }
            Lifecycle::ShmRemove { id, key, .. } => {
                f.int(key!("id"), (*id).into())?;
                put_key(f, *key)?;
            }
            Lifecycle::ShmAttach { id, key, addr, .. } => {
                f.int(key!("id"), (*id).into())?;
                if let Some(key) = key {
                    put_key(f, *key)?;
                }
                f.uint(key!("addr"), *addr)?;
            }
            Lifecycle::ShmDetach { id, key, addr, .. } => {
                if let Some(id) = id {
                    f.int(key!("id"), (*id).into())?;
                }
                if let Some(key) = key {
                    put_key(f, *key)?;
                }
                f.uint(key!("addr"), *addr)?;
            }
            Lifecycle::GetFailed {
                key,
                flags,
                errno,
                key_lives_in,
                limit,
                ..
            } => {
                put_key(f, *key)?;
                f.int(key!("flags"), (*flags).into())?;
                put_errno(f, *errno)?;
                put_homes(
                    f,
                    [key!("key_lives_in"), key!("key_lives_in_ns")],
                    key_lives_in,
                    self.attribution,
                )?;
                put_limit(f, limit)?;
            }
            Lifecycle::MqueueCreate {
                task,
                queue,
                mode,
                maxmsg,
                msgsize,
                ..
            } => {
                put_mqueue(f, queue)?;
                // The kernel makes the creator's effective uid the owner (ipc/mqueue.c:
                // mqueue_get_inode() takes current_fsuid(), the euid unless changed).
                f.uint(key!("owner_uid"), task.euid.into())?;
                put_mode(f, *mode)?;
                if *maxmsg != 0 || *msgsize != 0 {
                    f.uint(key!("maxmsg"), *maxmsg)?;
                    f.uint(key!("msgsize"), *msgsize)?;
                }
            }
            Lifecycle::MqueueOpenFailed {
                name,
                oflag,
                errno,
                name_lives_in,
                limit,
                ..
            } => {
                f.lossy(key!("name"), name.display().as_bytes())?;
                f.int(key!("oflag"), (*oflag).into())?;
                put_errno(f, *errno)?;
                put_homes(
                    f,
                    [key!("name_lives_in"), key!("name_lives_in_ns")],
                    name_lives_in,
                    self.attribution,
                )?;
                put_limit(f, limit)?;
            }
            Lifecycle::MqueueUnlink { queue, .. } => put_mqueue(f, queue)?,
            Lifecycle::MqueueDestroy {
                queue,
                reason,
                lifetime_ns,
                late,
                ..
            } => {
                put_mqueue(f, queue)?;
                f.name(key!("reason"), reason.as_str())?;
                if let Some(lifetime_ns) = lifetime_ns {
                    f.uint(key!("lifetime_ns"), *lifetime_ns)?;
                }
                if *late {
                    f.bool(key!("late"), true)?;
                }
            }
        }
        Ok(())
    }
}

/// Writes where a name or key lives: the namespaces' inums (`keys[0]`), then each namespace
/// with its containers as an object (`keys[1]`).
fn put_homes<F: Fields>(
    f: &mut F,
    keys: [Key; 2],
    homes: &[KeyHome],
    attribution: &Attribution,
) -> Result<(), F::Error> {
    let inums: Vec<u32> = homes.iter().map(|home| home.ns.inum).collect();
    f.u32_list(keys[0], &inums)?;
    // Each home as its own object (rare: a failed call for a name that lives elsewhere),
    // then the list of them.
    let mut objects: Vec<Vec<u8>> = Vec::with_capacity(homes.len());
    for home in homes {
        let mut line = Vec::new();
        let mut object = Line::start(&mut line);
        let Ok(()) = put_ident(&mut object, NS, &home.ns);
        let Ok(()) = put_containers(
            &mut object,
            key!("containers"),
            &home.containers,
            attribution,
        );
        object.end();
        objects.push(line);
    }
    f.raw_list(
        keys[1],
        objects
            .iter()
            .map(|line| std::str::from_utf8(line).expect("JSON is UTF-8")),
    )
}

/// Writes the limit a failed call hit, if any.
fn put_limit<F: Fields>(f: &mut F, limit: &Option<LimitHit>) -> Result<(), F::Error> {
    match limit {
        Some(limit) => {
            let json = serde_json::to_string(limit).expect("numbers and a name serialize");
            f.raw(key!("limit"), &json)
        }
        None => Ok(()),
    }
}

/// Writes a queue's name (with its `/`, as `mq_open(3)` takes it) and inode number.
fn put_mqueue<F: Fields>(f: &mut F, queue: &MqueueIdent) -> Result<(), F::Error> {
    f.lossy(key!("name"), queue.name.display().as_bytes())?;
    f.uint(key!("ino"), queue.ino)
}

impl Serialize for LifecycleJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.fields(&mut SerdeFields(&mut map))?;
        map.end()
    }
}

impl EventLine for LifecycleJson<'_> {
    fn json(&self, buf: &mut Vec<u8>) -> serde_json::Result<()> {
        self.write_json(buf);
        Ok(())
    }

    fn pretty(&self, line: &mut PrettyLine<'_>) {
        let event = self.event;
        let known = |c: ContainerRef| self.attribution.get(c).map(|known| &known.container);
        let task_container = event.task().and_then(|task| known(task.container));
        // The containers a namespace's end names; else the one the event is about (without
        // allocating: the storm's lines are of this kind).
        let one: [&Container; 1];
        let many: Vec<&Container>;
        let named: &[&Container] = match event {
            Lifecycle::NsDestroy { containers, .. } => {
                many = containers.iter().filter_map(|&c| known(c)).collect();
                &many
            }
            Lifecycle::ObjectOrphaned { container, .. } => match known(*container) {
                Some(container) => {
                    one = [container];
                    &one
                }
                None => &[],
            },
            _ => match task_container {
                Some(container) => {
                    one = [container];
                    &one
                }
                None => &[],
            },
        };
        let who = match event.task() {
            Some(_) if task_container.is_none() => Who::Host,
            _ => Who::Containers(named),
        };
        line.head(&Head {
            time: self.clock.wall_time(event.ts()),
            kind: event.name(),
            tone: event.tone(),
            ns: Some(event.ns().inum),
            who,
            task: event.task().map(|task| (task.pid, task.comm_bytes())),
        });
        match event {
            Lifecycle::NsExists { .. } | Lifecycle::ContainerHostIpc { .. } => {}
            Lifecycle::NsCreate {
                ns,
                from,
                via,
                child_pid,
                ..
            } => {
                line.switch(from.inum, ns.inum).name(
                    "via",
                    match via {
                        Via::Unshare => "unshare",
                        Via::Clone => "clone",
                    },
                );
                if let Some(child_pid) = child_pid {
                    line.uint("child", (*child_pid).into());
                }
            }
            Lifecycle::NsJoin {
                ns,
                from,
                into_host,
                kind,
                members,
                ..
            } => {
                line.switch(from.inum, ns.inum).name("join", kind.as_str());
                if *into_host {
                    line.flag("into_host");
                }
                let members: Vec<&Container> = members.iter().filter_map(|&c| known(c)).collect();
                if !members.is_empty() {
                    line.containers("ns_containers", &members);
                }
            }
            Lifecycle::NsDestroy {
                lifetime_ns,
                destroyed,
                reason,
                late,
                ..
            } => {
                line.name("reason", reason.as_str());
                if let Some(lifetime_ns) = lifetime_ns {
                    line.duration("lifetime", *lifetime_ns);
                }
                line.name("objects_destroyed", "msg=")
                    .raw_uint(destroyed.msg.into())
                    .raw(",shm=")
                    .raw_uint(destroyed.shm.into())
                    .raw(",sem=")
                    .raw_uint(destroyed.sem.into());
                if *late {
                    line.flag("late");
                }
            }
            Lifecycle::ObjectExists { id, key, .. } | Lifecycle::ShmRemove { id, key, .. } => {
                line.key(*key).int("id", (*id).into());
            }
            Lifecycle::ObjectCreate {
                object,
                id,
                key,
                mode,
                size,
                ..
            } => {
                line.key(*key).int("id", (*id).into()).mode(*mode as u32);
                match object {
                    IpcObject::Msg => {}
                    IpcObject::Shm => drop(line.uint("size", *size)),
                    IpcObject::Sem => drop(line.uint("nsems", *size)),
                }
            }
            Lifecycle::ObjectDestroy {
                id,
                key,
                reason,
                lifetime_ns,
                late,
                ..
            } => {
                line.key(*key)
                    .int("id", (*id).into())
                    .name("reason", reason.as_str());
                if let Some(lifetime_ns) = lifetime_ns {
                    line.duration("lifetime", *lifetime_ns);
                }
                if *late {
                    line.flag("late");
                }
            }
            Lifecycle::ObjectOrphaned { id, key, cause, .. } => {
                line.key(*key)
                    .int("id", (*id).into())
                    .name("cause", cause.as_str());
                if let OrphanCause::CreatorExited { pid } = cause {
                    line.uint("creator_pid", (*pid).into());
                }
            }
            Lifecycle::ShmAttach { id, key, addr, .. } => {
                if let Some(key) = key {
                    line.key(*key);
                }
                line.int("id", (*id).into()).hex("addr", *addr);
            }
            Lifecycle::ShmDetach { id, key, addr, .. } => {
                if let Some(key) = key {
                    line.key(*key);
                }
                if let Some(id) = id {
                    line.int("id", (*id).into());
                }
                line.hex("addr", *addr);
            }
            Lifecycle::GetFailed {
                key,
                errno,
                key_lives_in,
                limit,
                ..
            } => {
                line.key(*key);
                line.errno(*errno);
                pretty_limit(line, limit);
                pretty_homes(line, "key_lives_in", key_lives_in, &known);
            }
            Lifecycle::MqueueCreate { queue, mode, .. } => {
                line.text("name", queue.name.display().as_bytes())
                    .mode(*mode);
            }
            Lifecycle::MqueueOpenFailed {
                name,
                errno,
                name_lives_in,
                limit,
                ..
            } => {
                line.text("name", name.display().as_bytes());
                line.errno(*errno);
                pretty_limit(line, limit);
                pretty_homes(line, "name_lives_in", name_lives_in, &known);
            }
            Lifecycle::MqueueUnlink { queue, .. } => {
                line.text("name", queue.name.display().as_bytes());
            }
            Lifecycle::MqueueDestroy {
                queue,
                reason,
                lifetime_ns,
                late,
                ..
            } => {
                line.text("name", queue.name.display().as_bytes())
                    .name("reason", reason.as_str());
                if let Some(lifetime_ns) = lifetime_ns {
                    line.duration("lifetime", *lifetime_ns);
                }
                if *late {
                    line.flag("late");
                }
            }
        }
        // A container's task in the host's namespace (`--ipc=host`), as `host_ipc` says in
        // the JSON; `container.host_ipc` says it by its kind.
        if task_container.is_some()
            && event.ns().inum == HOST_IPC_NS_INUM
            && !matches!(event, Lifecycle::ContainerHostIpc { .. })
        {
            line.flag("host_ipc");
        }
    }
}

/// The limit a failed call hit: `limit msgmni=2 used 2`, `limit shmmax=4096 asked 8192`.
fn pretty_limit(line: &mut PrettyLine<'_>, limit: &Option<LimitHit>) {
    if let Some(limit) = limit {
        line.name("limit", limit.name)
            .raw("=")
            .raw_uint(limit.value);
        if let Some(used) = limit.used {
            line.uint("used", used);
        }
        if let Some(asked) = limit.asked {
            line.uint("asked", asked);
        }
    }
}

/// Where a name or key does live, and who lives there: `key_lives_in 4026532177(web)`.
fn pretty_homes<'c>(
    line: &mut PrettyLine<'_>,
    label: &str,
    homes: &[KeyHome],
    known: &dyn Fn(ContainerRef) -> Option<&'c Container>,
) {
    for (i, home) in homes.iter().enumerate() {
        if i == 0 {
            line.uint(label, home.ns.inum.into());
        } else {
            line.raw(",").raw_uint(home.ns.inum.into());
        }
        let mut containers = home.containers.iter().filter_map(|&c| known(c));
        if let Some(first) = containers.next() {
            line.raw("(").raw_container(first);
            for container in containers {
                line.raw(",").raw_container(container);
            }
            line.raw(")");
        }
    }
}

impl Lifecycle {
    /// The family of the event's kind, for its colour in the human view.
    fn tone(&self) -> Tone {
        match self {
            Lifecycle::NsExists { .. } | Lifecycle::ObjectExists { .. } => Tone::Plain,
            Lifecycle::NsCreate { .. }
            | Lifecycle::ObjectCreate { .. }
            | Lifecycle::MqueueCreate { .. } => Tone::Create,
            Lifecycle::NsDestroy { .. }
            | Lifecycle::ObjectDestroy { .. }
            | Lifecycle::MqueueDestroy { .. } => Tone::Destroy,
            Lifecycle::ShmRemove { .. } | Lifecycle::MqueueUnlink { .. } => Tone::Remove,
            Lifecycle::NsJoin { .. } => Tone::Join,
            Lifecycle::ShmAttach { .. } | Lifecycle::ShmDetach { .. } => Tone::Attach,
            Lifecycle::GetFailed { .. }
            | Lifecycle::MqueueOpenFailed { .. }
            | Lifecycle::ContainerHostIpc { .. }
            | Lifecycle::ObjectOrphaned { .. } => Tone::Warn,
        }
    }
}
