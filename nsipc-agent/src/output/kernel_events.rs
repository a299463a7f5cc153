//! Kernel events (`--raw`) → JSON objects (one line each), and their human view. Field names
//! are the stream's contract, documented in docs/events.md.

use nsipc_common::{EventKind, NsRef};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::{
    attribution::Attribution,
    containers::Container,
    decode::{Body, KernelEvent, SysResult},
    names::{IpcObject, ctl_cmd_name},
    output::fields::{
        FROM_NS, NS, NsKeys, WallClock, put_container, put_errno, put_key, put_mode, put_ns,
        put_task,
    },
    output::json::{Fields, SerdeFields, key},
    output::pretty::{Head, PrettyLine, Tone, Who},
    output::sink::EventLine,
};

/// The `"event"` name of the kernel events of a record kind, by its ABI id (`agent.lost` names
/// the kinds of the records it counts); "unknown" for an id that is no kind.
pub fn kind_name(id: u32) -> &'static str {
    let Some(kind) = EventKind::from_u32(id) else {
        return "unknown";
    };
    match kind {
        EventKind::MsgGet => "msg.get",
        EventKind::ShmGet => "shm.get",
        EventKind::SemGet => "sem.get",
        EventKind::MsgCtl => "msg.ctl",
        EventKind::ShmCtl => "shm.ctl",
        EventKind::SemCtl => "sem.ctl",
        EventKind::ShmAttach => "shm.shmat",
        EventKind::ShmDetach => "shm.shmdt",
        EventKind::Unshare => "ipc_ns.unshare",
        EventKind::Setns => "ipc_ns.setns",
        EventKind::Clone => "ipc_ns.clone",
        EventKind::ProcessExit => "process.exit",
        EventKind::NsFreed => "ipc_ns.freed",
        EventKind::ShmFreed => "shm.freed",
        EventKind::CgroupMkdir => "cgroup.mkdir",
        EventKind::CgroupRmdir => "cgroup.rmdir",
        // Calls the activity map had no room to count (`--activity-interval`).
        EventKind::MsgSend => "msg.send",
        EventKind::MsgReceive => "msg.receive",
        EventKind::SemOp => "sem.op",
        EventKind::MqueueOpen => "mqueue.mq_open",
        EventKind::MqueueUnlink => "mqueue.mq_unlink",
        EventKind::MqueueEvicted => "mqueue.evicted",
    }
}

/// The `"event"` name of a kernel event.
pub fn event_name(body: &Body) -> &'static str {
    match body {
        Body::Get {
            object: IpcObject::Msg,
            ..
        } => "msg.get",
        Body::Get {
            object: IpcObject::Shm,
            ..
        } => "shm.get",
        Body::Get {
            object: IpcObject::Sem,
            ..
        } => "sem.get",
        Body::Ctl {
            object: IpcObject::Msg,
            ..
        } => "msg.ctl",
        Body::Ctl {
            object: IpcObject::Shm,
            ..
        } => "shm.ctl",
        Body::Ctl {
            object: IpcObject::Sem,
            ..
        } => "sem.ctl",
        Body::ShmAttach { .. } => "shm.shmat",
        Body::ShmDetach { .. } => "shm.shmdt",
        Body::Unshare { .. } => "ipc_ns.unshare",
        Body::Setns { .. } => "ipc_ns.setns",
        Body::Clone { .. } => "ipc_ns.clone",
        Body::ProcessExit { .. } => "process.exit",
        Body::NsFreed => "ipc_ns.freed",
        Body::ShmFreed { .. } => "shm.freed",
        Body::CgroupMkdir { .. } => "cgroup.mkdir",
        Body::CgroupRmdir { .. } => "cgroup.rmdir",
        Body::MqueueOpen { .. } => "mqueue.mq_open",
        Body::MqueueUnlink { .. } => "mqueue.mq_unlink",
        Body::MqueueEvicted { .. } => "mqueue.evicted",
    }
}

/// A kernel event ready to serialize as one JSON object.
pub struct KernelEventJson<'a> {
    pub event: &'a KernelEvent,
    pub clock: &'a WallClock,
    pub attribution: &'a Attribution,
}

/// Writes `ret`, and `errno` (named) on failure.
fn put_result<F: Fields>(f: &mut F, result: &SysResult<i64>) -> Result<(), F::Error> {
    match result {
        Ok(ret) => f.int(key!("ret"), *ret),
        Err(errno) => {
            f.int(key!("ret"), -(*errno as i64))?;
            put_errno(f, *errno)
        }
    }
}

/// Writes a namespace as the kernel names it: a raw event counts no lives, so `_id` where the
/// kernel has one and nothing more.
fn put_ns_ref<F: Fields>(f: &mut F, keys: NsKeys, ns: &NsRef) -> Result<(), F::Error> {
    put_ns(f, keys, ns.inum, (ns.id != 0).then_some(ns.id), None)
}

impl KernelEventJson<'_> {
    fn fields<F: Fields>(&self, f: &mut F) -> Result<(), F::Error> {
        let event = self.event;
        f.name(key!("event"), event_name(&event.body))?;
        f.time(key!("time"), self.clock.wall_time(event.ts_ns))?;
        // Frees run in whatever context the kernel frees in (a kworker, an RCU callback): no
        // process is behind them.
        let has_task = !matches!(event.body, Body::NsFreed | Body::ShmFreed { .. });
        if has_task {
            put_task(f, &event.task, self.attribution)?;
        }
        // An eviction is of a queue in whatever namespace, by whatever task dropped it last.
        if !matches!(event.body, Body::MqueueEvicted { .. }) {
            put_ns_ref(f, NS, &event.ns)?;
            if has_task {
                put_container(f, event.task.container, event.ns.inum, self.attribution)?;
            }
        }
        match &event.body {
            Body::Get {
                object,
                key,
                flags,
                size,
                result,
            } => {
                put_key(f, *key)?;
                f.int(key!("flags"), (*flags).into())?;
                put_mode(f, *flags as u32)?;
                match object {
                    IpcObject::Msg => {}
                    IpcObject::Shm => f.uint(key!("size"), *size)?,
                    IpcObject::Sem => f.uint(key!("nsems"), *size)?,
                }
                if let Ok(id) = result {
                    f.int(key!("id"), *id)?;
                }
                put_result(f, result)?;
            }
            Body::Ctl {
                object,
                id,
                cmd,
                semnum,
                result,
                ..
            } => {
                f.int(key!("id"), (*id).into())?;
                match ctl_cmd_name(*object, *cmd) {
                    Some(name) => f.name(key!("cmd"), name)?,
                    None => f.int(key!("cmd"), (*cmd).into())?,
                }
                if *object == IpcObject::Sem {
                    f.int(key!("semnum"), (*semnum).into())?;
                }
                put_result(f, result)?;
            }
            Body::ShmAttach {
                id,
                requested_addr,
                flags,
                result,
            } => {
                f.int(key!("id"), (*id).into())?;
                f.int(key!("flags"), (*flags).into())?;
                f.uint(key!("requested_addr"), *requested_addr)?;
                match result {
                    Ok(addr) => {
                        f.int(key!("addr"), *addr)?;
                        f.int(key!("ret"), 0)?;
                    }
                    Err(_) => put_result(f, result)?,
                }
            }
            Body::ShmDetach {
                addr,
                rmid_forced,
                result,
            } => {
                f.uint(key!("addr"), *addr)?;
                f.bool(key!("rmid_forced"), *rmid_forced)?;
                put_result(f, result)?;
            }
            Body::Unshare {
                flags,
                from,
                result,
            } => {
                put_ns_ref(f, FROM_NS, from)?;
                f.uint(key!("flags"), *flags)?;
                put_result(f, result)?;
            }
            Body::Setns {
                fd,
                nstype,
                from,
                result,
            } => {
                put_ns_ref(f, FROM_NS, from)?;
                f.int(key!("fd"), (*fd).into())?;
                f.int(key!("nstype"), (*nstype).into())?;
                put_result(f, result)?;
            }
            Body::Clone {
                flags,
                child_pid,
                from,
                result,
            } => {
                put_ns_ref(f, FROM_NS, from)?;
                f.uint(key!("flags"), *flags)?;
                if let Ok(child_tid) = result {
                    f.uint(key!("child_pid"), (*child_pid).into())?;
                    f.int(key!("child_tid"), *child_tid)?;
                }
                put_result(f, result)?;
            }
            Body::ProcessExit { rmid_forced } => f.bool(key!("rmid_forced"), *rmid_forced)?,
            Body::NsFreed => {}
            Body::ShmFreed {
                id,
                key,
                ns_dying,
                ns_freed,
                rmid_forced,
            } => {
                f.int(key!("id"), (*id).into())?;
                put_key(f, *key)?;
                f.bool(key!("ns_dying"), *ns_dying)?;
                f.bool(key!("ns_freed"), *ns_freed)?;
                f.bool(key!("rmid_forced"), *rmid_forced)?;
            }
            Body::CgroupMkdir { cgroup } | Body::CgroupRmdir { cgroup, .. } => {
                f.uint(key!("cgroup"), *cgroup)?;
            }
            Body::MqueueOpen {
                name,
                oflag,
                mode,
                maxmsg,
                msgsize,
                ino,
                result,
            } => {
                f.lossy(key!("name"), name.display().as_bytes())?;
                f.int(key!("oflag"), (*oflag).into())?;
                put_mode(f, *mode)?;
                if *maxmsg != 0 || *msgsize != 0 {
                    f.uint(key!("maxmsg"), *maxmsg)?;
                    f.uint(key!("msgsize"), *msgsize)?;
                }
                if let Ok(fd) = result {
                    f.int(key!("fd"), *fd)?;
                    f.uint(key!("ino"), *ino)?;
                }
                put_result(f, result)?;
            }
            Body::MqueueUnlink { name, result } => {
                f.lossy(key!("name"), name.display().as_bytes())?;
                put_result(f, result)?;
            }
            Body::MqueueEvicted { ino, syscall } => {
                if let Some(ino) = ino {
                    f.uint(key!("ino"), *ino)?;
                }
                f.int(key!("syscall_nr"), *syscall)?;
            }
        }
        Ok(())
    }
}

impl Serialize for KernelEventJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.fields(&mut SerdeFields(&mut map))?;
        map.end()
    }
}

/// A syscall's failure in the human view: ` errno ENOENT`; nothing on success.
fn pretty_result<T>(line: &mut PrettyLine<'_>, result: &SysResult<T>) {
    if let Err(errno) = result {
        line.errno(*errno);
    }
}

impl EventLine for KernelEventJson<'_> {
    fn json(&self, buf: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(buf, self)
    }

    fn pretty(&self, line: &mut PrettyLine<'_>) {
        let event = self.event;
        let has_task = !matches!(event.body, Body::NsFreed | Body::ShmFreed { .. });
        let container = self
            .attribution
            .get(event.task.container)
            .map(|known| &known.container);
        let containers: [&Container; 1];
        let failed = match &event.body {
            Body::Get { result, .. }
            | Body::Ctl { result, .. }
            | Body::ShmAttach { result, .. }
            | Body::ShmDetach { result, .. }
            | Body::Unshare { result, .. }
            | Body::Setns { result, .. }
            | Body::Clone { result, .. }
            | Body::MqueueOpen { result, .. }
            | Body::MqueueUnlink { result, .. } => result.is_err(),
            Body::MqueueEvicted { .. }
            | Body::ProcessExit { .. }
            | Body::NsFreed
            | Body::ShmFreed { .. }
            | Body::CgroupMkdir { .. }
            | Body::CgroupRmdir { .. } => false,
        };
        line.head(&Head {
            time: self.clock.wall_time(event.ts_ns),
            kind: event_name(&event.body),
            // Syscalls as they came: only failures stand out.
            tone: if failed { Tone::Warn } else { Tone::Plain },
            ns: (!matches!(event.body, Body::MqueueEvicted { .. })).then_some(event.ns.inum),
            who: match (has_task, container) {
                (false, _) => Who::Nobody,
                (true, None) => Who::Host,
                (true, Some(container)) => {
                    containers = [container];
                    Who::Containers(&containers)
                }
            },
            task: has_task.then(|| (event.task.pid, event.task.comm_bytes())),
        });
        match &event.body {
            Body::Get {
                object,
                key,
                flags,
                size,
                result,
            } => {
                line.key(*key).octal("flags", *flags as u32 as u64);
                match object {
                    IpcObject::Msg => {}
                    IpcObject::Shm => drop(line.uint("size", *size)),
                    IpcObject::Sem => drop(line.uint("nsems", *size)),
                }
                if let Ok(id) = result {
                    line.int("id", *id);
                }
                pretty_result(line, result);
            }
            Body::Ctl {
                object,
                id,
                cmd,
                semnum,
                result,
                ..
            } => {
                line.int("id", (*id).into());
                match ctl_cmd_name(*object, *cmd) {
                    Some(name) => line.name("cmd", name),
                    None => line.int("cmd", (*cmd).into()),
                };
                if *object == IpcObject::Sem {
                    line.int("semnum", (*semnum).into());
                }
                pretty_result(line, result);
            }
            Body::ShmAttach { id, result, .. } => {
                line.int("id", (*id).into());
                match result {
                    Ok(addr) => drop(line.hex("addr", *addr as u64)),
                    Err(_) => pretty_result(line, result),
                }
            }
            Body::ShmDetach { addr, result, .. } => {
                line.hex("addr", *addr);
                pretty_result(line, result);
            }
            Body::Unshare {
                flags,
                from,
                result,
            } => {
                line.switch(from.inum, event.ns.inum).hex("flags", *flags);
                pretty_result(line, result);
            }
            Body::Setns {
                fd,
                nstype,
                from,
                result,
            } => {
                line.switch(from.inum, event.ns.inum)
                    .int("fd", (*fd).into())
                    .hex("nstype", *nstype as u32 as u64);
                pretty_result(line, result);
            }
            Body::Clone {
                flags,
                child_pid,
                from,
                result,
            } => {
                line.switch(from.inum, event.ns.inum).hex("flags", *flags);
                if result.is_ok() {
                    line.uint("child", (*child_pid).into());
                }
                pretty_result(line, result);
            }
            Body::ProcessExit { .. } | Body::NsFreed => {}
            Body::ShmFreed {
                id,
                key,
                ns_dying,
                ns_freed,
                rmid_forced,
            } => {
                line.key(*key).int("id", (*id).into());
                for (set, word) in [
                    (*ns_dying, "ns_dying"),
                    (*ns_freed, "ns_freed"),
                    (*rmid_forced, "rmid_forced"),
                ] {
                    if set {
                        line.flag(word);
                    }
                }
            }
            Body::CgroupMkdir { cgroup } | Body::CgroupRmdir { cgroup, .. } => {
                line.uint("cgroup", *cgroup);
            }
            Body::MqueueOpen {
                name,
                oflag,
                result,
                ..
            } => {
                line.text("name", name.display().as_bytes())
                    .octal("oflag", *oflag as u32 as u64);
                pretty_result(line, result);
            }
            Body::MqueueUnlink { name, result } => {
                line.text("name", name.display().as_bytes());
                pretty_result(line, result);
            }
            Body::MqueueEvicted { ino, syscall } => {
                if let Some(ino) = ino {
                    line.uint("ino", *ino);
                }
                line.int("syscall_nr", *syscall);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use nsipc_common::LOST_SLOTS;
    use serde_json::{Value, json};

    use super::*;
    use crate::decode::{decode, tests::record_bytes};

    #[test]
    fn kind_names_are_the_event_names_of_their_records() {
        assert_eq!(kind_name(0), "unknown");
        for id in 1..LOST_SLOTS {
            // The activity kinds are counted, never recorded: named for `agent.lost` only.
            let Some(kind) = EventKind::from_record(id) else {
                assert!(EventKind::from_u32(id).is_some(), "kind {id}");
                continue;
            };
            let event = decode(&record_bytes(kind, 0, [0; 4])).unwrap();
            assert_eq!(kind_name(id), event_name(&event.body), "kind {id}");
        }
        assert_eq!(kind_name(LOST_SLOTS), "unknown");
    }

    fn render(kind: EventKind, ret: i64, args: [u64; 4]) -> Value {
        let event = decode(&record_bytes(kind, ret, args)).unwrap();
        let clock = WallClock::with_offset(1_700_000_000_000_000_000);
        let line = serde_json::to_string(&KernelEventJson {
            event: &event,
            clock: &clock,
            attribution: &Attribution::none(),
        })
        .unwrap();
        assert!(!line.contains('\n'), "one line per event");
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn common_fields_on_every_kernel_event() {
        let v = render(EventKind::ProcessExit, 0, [0; 4]);
        assert_eq!(v["event"], "process.exit");
        assert_eq!(v["pid"], 100);
        assert_eq!(v["tid"], 101);
        assert_eq!(v["uid"], 1000);
        // invalid UTF-8 in comm becomes U+FFFD, the line stays valid JSON
        assert_eq!(v["comm"], "ipcmk\u{fffd}");
        assert_eq!(v["ns"], 4026532177u32);
        assert_eq!(v["ns_id"], 42);
        assert_eq!(v["time"], "2023-11-14T22:13:20.000005000Z");
    }

    #[test]
    fn get_success_and_failure() {
        let v = render(EventKind::MsgGet, 3, [0x1234, 0o1600, 0, 0]);
        assert_eq!(v["event"], "msg.get");
        assert_eq!(v["key"], 0x1234);
        assert_eq!(v["flags"], 0o1600);
        assert_eq!(v["mode"], 0o600);
        assert_eq!(v["key_hex"], "0x00001234");
        assert_eq!(v["mode_octal"], "600", "IPC_CREAT is not a permission bit");
        assert_eq!(v["id"], 3);
        assert_eq!(v["ret"], 3);
        assert!(v.get("errno").is_none());

        let v = render(EventKind::ShmGet, -2, [7, 4096, 0o600, 0]);
        assert_eq!(v["event"], "shm.get");
        assert_eq!(v["size"], 4096);
        assert_eq!(v["errno"], "ENOENT");
        assert_eq!(v["ret"], -2);
        assert!(v.get("id").is_none());

        let v = render(EventKind::SemGet, 0, [0, 3, 0o1600, 0]);
        assert_eq!(v["nsems"], 3);
        assert_eq!(v["key"], 0, "IPC_PRIVATE is key 0");
        assert_eq!(v["key_hex"], "0x00000000");

        // A negative key: ipcs prints its 32 bits.
        let v = render(EventKind::MsgGet, 4, [u64::MAX, 0o1666, 0, 0]);
        assert_eq!(v["key"], -1);
        assert_eq!(v["key_hex"], "0xffffffff");
        assert_eq!(v["mode"], 0o666);
        assert_eq!(v["mode_octal"], "666");
    }

    #[test]
    fn a_segment_freed_carries_its_key_in_hex() {
        let v = render(EventKind::ShmFreed, 0, [3, 0x5eed, 0, 0]);
        assert_eq!(v["event"], "shm.freed");
        assert_eq!(v["key"], 0x5eed);
        assert_eq!(v["key_hex"], "0x00005eed");
        assert!(v.get("mode_octal").is_none(), "no mode on a free");
    }

    #[test]
    fn ctl_commands_are_named() {
        let v = render(EventKind::MsgCtl, 0, [3, 0, 0, 0]);
        assert_eq!(
            v,
            json!({
                "event": "msg.ctl", "time": v["time"], "pid": 100, "tid": 101, "ppid": 99, "uid": 1000,
                "comm": "ipcmk\u{fffd}", "ns": 4026532177u32, "ns_id": 42,
                "id": 3, "cmd": "IPC_RMID", "ret": 0,
            })
        );
        let v = render(EventKind::SemCtl, -1, [9, 2, 16, 0]);
        assert_eq!(v["cmd"], "SETVAL");
        assert_eq!(v["semnum"], 2);
        assert_eq!(v["errno"], "EPERM");
        let v = render(EventKind::ShmCtl, 0, [9, 77, 0, 0]);
        assert_eq!(v["cmd"], 77, "unknown commands stay numbers");
    }

    #[test]
    fn namespace_switches_carry_both_namespaces() {
        let v = render(EventKind::Setns, 0, [3, 0x0800_0000, 0, 0]);
        assert_eq!(v["event"], "ipc_ns.setns");
        assert_eq!(v["ns"], 4026532177u32);
        assert_eq!(v["from_ns"], 4026531839u32);
        assert_eq!(v["fd"], 3);
        assert_eq!(v["nstype"], 0x0800_0000);
        let v = render(EventKind::Clone, 200, [0x0800_0011, 199, 0, 0]);
        assert_eq!(v["event"], "ipc_ns.clone");
        assert_eq!(v["child_pid"], 199);
        assert_eq!(v["child_tid"], 200);
        let v = render(EventKind::Unshare, -1, [0x0800_0000, 0, 0, 0]);
        assert_eq!(v["errno"], "EPERM");
    }

    #[test]
    fn shm_attach_reports_the_address() {
        let v = render(EventKind::ShmAttach, 0x7f00_0000_0000, [5, 0, 0, 0]);
        assert_eq!(v["addr"], 0x7f00_0000_0000u64);
        assert_eq!(v["ret"], 0);
        let v = render(EventKind::ShmAttach, -13, [5, 0, 0, 0]);
        assert_eq!(v["errno"], "EACCES");
        assert!(v.get("addr").is_none());
    }
}
