//! Kernel events → JSON objects (one line each). Field names are the stream's contract,
//! documented in docs/events.md.

use nsipc_common::{EventKind, HOST_IPC_NS_INUM};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::{
    attribution::Attribution,
    containers::Container,
    decode::{Body, KernelEvent, SysResult, Task},
    names::{IpcObject, ctl_cmd_name, errno_name},
    output::fields::{KeyHex, ModeOctal, Rfc3339, WallClock},
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
        Body::ProcessExit => "process.exit",
        Body::NsFreed => "ipc_ns.freed",
        Body::ShmFreed { .. } => "shm.freed",
        Body::CgroupMkdir { .. } => "cgroup.mkdir",
        Body::CgroupRmdir { .. } => "cgroup.rmdir",
    }
}

/// A kernel event ready to serialize as one JSON object.
pub struct KernelEventJson<'a> {
    pub event: &'a KernelEvent,
    pub clock: &'a WallClock,
    pub attribution: &'a Attribution,
}

/// Writes the fields of the task an event is about.
pub fn put_task<M: SerializeMap>(map: &mut M, task: &Task) -> Result<(), M::Error> {
    map.serialize_entry("pid", &task.pid)?;
    map.serialize_entry("tid", &task.tid)?;
    if task.ppid != 0 {
        map.serialize_entry("ppid", &task.ppid)?;
    }
    map.serialize_entry("uid", &task.uid)?;
    map.serialize_entry("comm", &String::from_utf8_lossy(task.comm_bytes()))
}

/// Writes `ret`, and `errno` (named) on failure.
fn put_result<M: SerializeMap>(map: &mut M, result: &SysResult<i64>) -> Result<(), M::Error> {
    match result {
        Ok(ret) => map.serialize_entry("ret", ret),
        Err(errno) => {
            map.serialize_entry("ret", &-(*errno as i64))?;
            match errno_name(*errno) {
                Some(name) => map.serialize_entry("errno", name),
                None => map.serialize_entry("errno", errno),
            }
        }
    }
}

/// Writes a namespace as `<prefix>` (inum) and `<prefix>_id` (64-bit id, where the kernel has one).
fn put_ns<M: SerializeMap>(
    map: &mut M,
    inum_key: &'static str,
    id_key: &'static str,
    ns: &nsipc_common::NsRef,
) -> Result<(), M::Error> {
    map.serialize_entry(inum_key, &ns.inum)?;
    if ns.id != 0 {
        map.serialize_entry(id_key, &ns.id)?;
    }
    Ok(())
}

impl Serialize for KernelEventJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let event = self.event;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("event", event_name(&event.body))?;
        map.serialize_entry("time", &Rfc3339(self.clock.wall_time(event.ts_ns)))?;
        // Frees run in whatever context the kernel frees in (a kworker, an RCU callback): no
        // process is behind them.
        let has_task = !matches!(event.body, Body::NsFreed | Body::ShmFreed { .. });
        if has_task {
            put_task(&mut map, &event.task)?;
            if let Some(cmdline) = self.attribution.cmdline(&event.task) {
                map.serialize_entry("cmdline", cmdline)?;
            }
        }
        put_ns(&mut map, "ns", "ns_id", &event.ns)?;
        if has_task && let Some(container) = self.attribution.get(event.task.container) {
            let container: serde_json::Value =
                serde_json::from_str(&container.json).map_err(serde::ser::Error::custom)?;
            map.serialize_entry("container", &container)?;
            map.serialize_entry("host_ipc", &(event.ns.inum == HOST_IPC_NS_INUM))?;
        }
        match &event.body {
            Body::Get {
                object,
                key,
                flags,
                size,
                result,
            } => {
                map.serialize_entry("key", key)?;
                map.serialize_entry("key_hex", &KeyHex::new(*key))?;
                map.serialize_entry("flags", flags)?;
                map.serialize_entry("mode", &(flags & 0o777))?;
                map.serialize_entry("mode_octal", &ModeOctal::new(*flags as u32))?;
                match object {
                    IpcObject::Msg => {}
                    IpcObject::Shm => map.serialize_entry("size", size)?,
                    IpcObject::Sem => map.serialize_entry("nsems", size)?,
                }
                if let Ok(id) = result {
                    map.serialize_entry("id", id)?;
                }
                put_result(&mut map, result)?;
            }
            Body::Ctl {
                object,
                id,
                cmd,
                semnum,
                result,
                ..
            } => {
                map.serialize_entry("id", id)?;
                match ctl_cmd_name(*object, *cmd) {
                    Some(name) => map.serialize_entry("cmd", name)?,
                    None => map.serialize_entry("cmd", cmd)?,
                }
                if *object == IpcObject::Sem {
                    map.serialize_entry("semnum", semnum)?;
                }
                put_result(&mut map, result)?;
            }
            Body::ShmAttach {
                id,
                requested_addr,
                flags,
                result,
            } => {
                map.serialize_entry("id", id)?;
                map.serialize_entry("flags", flags)?;
                map.serialize_entry("requested_addr", requested_addr)?;
                match result {
                    Ok(addr) => {
                        map.serialize_entry("addr", addr)?;
                        map.serialize_entry("ret", &0)?;
                    }
                    Err(_) => put_result(&mut map, result)?,
                }
            }
            Body::ShmDetach { addr, result } => {
                map.serialize_entry("addr", addr)?;
                put_result(&mut map, result)?;
            }
            Body::Unshare {
                flags,
                from,
                result,
            } => {
                put_ns(&mut map, "from_ns", "from_ns_id", from)?;
                map.serialize_entry("flags", flags)?;
                put_result(&mut map, result)?;
            }
            Body::Setns {
                fd,
                nstype,
                from,
                result,
            } => {
                put_ns(&mut map, "from_ns", "from_ns_id", from)?;
                map.serialize_entry("fd", fd)?;
                map.serialize_entry("nstype", nstype)?;
                put_result(&mut map, result)?;
            }
            Body::Clone {
                flags,
                child_pid,
                from,
                result,
            } => {
                put_ns(&mut map, "from_ns", "from_ns_id", from)?;
                map.serialize_entry("flags", flags)?;
                if let Ok(child_tid) = result {
                    map.serialize_entry("child_pid", child_pid)?;
                    map.serialize_entry("child_tid", child_tid)?;
                }
                put_result(&mut map, result)?;
            }
            Body::ProcessExit | Body::NsFreed => {}
            Body::ShmFreed {
                id,
                key,
                ns_dying,
                ns_freed,
                rmid_forced,
            } => {
                map.serialize_entry("id", id)?;
                map.serialize_entry("key", key)?;
                map.serialize_entry("key_hex", &KeyHex::new(*key))?;
                map.serialize_entry("ns_dying", ns_dying)?;
                map.serialize_entry("ns_freed", ns_freed)?;
                map.serialize_entry("rmid_forced", rmid_forced)?;
            }
            Body::CgroupMkdir { cgroup } | Body::CgroupRmdir { cgroup, .. } => {
                map.serialize_entry("cgroup", cgroup)?;
            }
        }
        map.end()
    }
}

/// A syscall's failure in the human view: ` errno ENOENT`; nothing on success.
fn pretty_result<T>(line: &mut PrettyLine<'_>, result: &SysResult<T>) {
    if let Err(errno) = result {
        match errno_name(*errno) {
            Some(name) => line.name("errno", name),
            None => line.int("errno", (*errno).into()),
        };
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
            | Body::Clone { result, .. } => result.is_err(),
            Body::ProcessExit
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
            ns: Some(event.ns.inum),
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
            Body::ShmDetach { addr, result } => {
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
            Body::ProcessExit | Body::NsFreed => {}
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
            let kind = EventKind::from_u32(id).unwrap();
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
