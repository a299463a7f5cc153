//! The human view (`--output pretty`): one aligned line per event, its kind coloured by family,
//! like `tetra getevents -o compact`.
//!
//! ```text
//! 20:15:03.123 shm.create         4026532177 web          1234/ipcmk           key 0x00005eed id 3 mode 0600 size 4096
//! ```
//!
//! Columns: local time of day (HH:MM:SS.mmm), event kind, IPC namespace, the container (its
//! name) or `host` for a task outside containers, pid/comm, then the kind's facts as `label
//! value` pairs: keys in hex and modes in octal, as `ipcs` prints them. `-` where an event has
//! no such thing (frees have no task, agent lines no namespace).
//!
//! The lines are made from the same event values as the JSON ones (each event type's
//! [`EventLine`](crate::output::sink::EventLine) impl writes both), straight into the sink's buffer.
//! The format is for people, not a contract: it may change; the JSON is the stable one.

use std::{
    cell::Cell,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{containers::Container, output::kernel_events::KeyHex};

/// How the lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// ANSI colours on the event kind.
    pub color: bool,
    /// Times of day in UTC rather than the local time zone (tests).
    pub utc: bool,
}

impl Style {
    pub fn new(color: bool) -> Self {
        Self { color, utc: false }
    }
}

/// The family of an event kind, which gives it its colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    /// What exists, syscalls that succeeded: no colour.
    Plain,
    /// Something made: green.
    Create,
    /// Something gone: red.
    Destroy,
    /// Marked for removal (`shm.remove`): magenta.
    Remove,
    /// Entering or leaving a namespace: cyan.
    Join,
    /// Attaching or detaching a segment: blue.
    Attach,
    /// A failure or something to look at (`*.get_failed`, `*.orphaned`, `container.host_ipc`,
    /// a failed syscall, skipped probe runs): yellow.
    Warn,
    /// The agent lost events (`agent.lost`, `agent.decode_error`): bold red.
    Error,
    /// The agent's own bookkeeping (`agent.ready`, `agent.stop`…): dim.
    Agent,
}

impl Tone {
    fn sgr(self) -> Option<&'static str> {
        match self {
            Tone::Plain => None,
            Tone::Create => Some("\x1b[32m"),
            Tone::Destroy => Some("\x1b[31m"),
            Tone::Remove => Some("\x1b[35m"),
            Tone::Join => Some("\x1b[36m"),
            Tone::Attach => Some("\x1b[34m"),
            Tone::Warn => Some("\x1b[33m"),
            Tone::Error => Some("\x1b[1;31m"),
            Tone::Agent => Some("\x1b[2m"),
        }
    }
}

const RESET: &str = "\x1b[0m";

/// Column widths (a longer value pushes the rest of its line right rather than being cut).
const KIND_WIDTH: usize = 18; // container.host_ipc, agent.decode_error
const NS_WIDTH: usize = 10; // 4026531839
const WHO_WIDTH: usize = 12;
const TASK_WIDTH: usize = 20;

/// Who an event is about, for the container column.
pub enum Who<'a> {
    /// Nobody (agent lines, objects in an inventory).
    Nobody,
    /// A task outside any container.
    Host,
    /// The containers the event names (a task's, or those that lived in a namespace).
    Containers(&'a [&'a Container]),
}

/// The first columns of a line.
pub struct Head<'a> {
    pub time: SystemTime,
    pub kind: &'static str,
    pub tone: Tone,
    pub ns: Option<u32>,
    pub who: Who<'a>,
    /// pid and comm.
    pub task: Option<(u32, &'a [u8])>,
}

/// One line being written into `buf` (the sink's), without the newline.
pub struct PrettyLine<'b> {
    buf: &'b mut Vec<u8>,
    style: Style,
    /// Spaces to write before the next fact: the last column's padding after the head (so
    /// that a line without facts has no trailing blanks), else one.
    pending: usize,
}

impl<'b> PrettyLine<'b> {
    pub fn new(buf: &'b mut Vec<u8>, style: Style) -> Self {
        Self {
            buf,
            style,
            pending: 1,
        }
    }

    /// Time, kind, namespace, container, pid/comm.
    pub fn head(&mut self, head: &Head<'_>) {
        push_time_of_day(self.buf, head.time, self.style.utc);
        self.buf.push(b' ');
        match head.tone.sgr().filter(|_| self.style.color) {
            Some(sgr) => {
                self.buf.extend_from_slice(sgr.as_bytes());
                self.buf.extend_from_slice(head.kind.as_bytes());
                self.buf.extend_from_slice(RESET.as_bytes());
            }
            None => self.buf.extend_from_slice(head.kind.as_bytes()),
        }
        self.pad(head.kind.len(), KIND_WIDTH);
        let start = self.buf.len();
        match head.ns {
            Some(ns) => self.push_uint(ns.into()),
            None => self.buf.push(b'-'),
        }
        let written = self.buf.len() - start;
        self.pad(written, NS_WIDTH);
        let written = match head.who {
            Who::Nobody | Who::Containers([]) => {
                self.buf.push(b'-');
                1
            }
            Who::Host => {
                self.buf.extend_from_slice(b"host");
                4
            }
            Who::Containers(containers) => {
                let mut chars = 0;
                for (i, container) in containers.iter().enumerate() {
                    if i > 0 {
                        self.buf.push(b',');
                        chars += 1;
                    }
                    chars += self.push_container(container);
                }
                chars
            }
        };
        self.pad(written, WHO_WIDTH);
        let written = match head.task {
            Some((pid, comm)) => {
                let start = self.buf.len();
                self.push_uint(pid.into());
                self.buf.push(b'/');
                self.buf.len() - start + push_text(self.buf, comm)
            }
            None => {
                self.buf.push(b'-');
                1
            }
        };
        self.pending = TASK_WIDTH.saturating_sub(written) + 1;
    }

    /// Spaces after a column of `written` characters, up to `width`, and one more between
    /// columns.
    fn pad(&mut self, written: usize, width: usize) {
        let spaces = width.saturating_sub(written) + 1;
        self.buf.extend(std::iter::repeat_n(b' ', spaces));
    }

    /// A container as people name it: its name, else its pod's, else its id's first 12
    /// characters (as `docker ps` shows it). Returns the characters written.
    fn push_container(&mut self, container: &Container) -> usize {
        if let Some(name) = &container.name {
            return push_text(self.buf, name.as_bytes());
        }
        if let Some(pod) = &container.pod {
            let chars = push_text(self.buf, pod.namespace.as_bytes());
            self.buf.push(b'/');
            return chars + 1 + push_text(self.buf, pod.name.as_bytes());
        }
        let id = container.id.as_bytes();
        push_text(self.buf, &id[..id.len().min(12)])
    }

    fn push_uint(&mut self, value: u64) {
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    /// The separator before a fact.
    fn space(&mut self) {
        self.buf.extend(std::iter::repeat_n(b' ', self.pending));
        self.pending = 1;
    }

    /// ` label value`, the value one of the stream's fixed names or numbers' text.
    pub fn name(&mut self, label: &str, value: &str) -> &mut Self {
        self.space();
        self.buf.extend_from_slice(label.as_bytes());
        self.buf.push(b' ');
        self.buf.extend_from_slice(value.as_bytes());
        self
    }

    /// ` label value`, the value text from outside (a comm, an error): control characters are
    /// escaped so that nothing in it can drive the terminal.
    pub fn text(&mut self, label: &str, value: &[u8]) -> &mut Self {
        self.space();
        self.buf.extend_from_slice(label.as_bytes());
        self.buf.push(b' ');
        push_text(self.buf, value);
        self
    }

    pub fn uint(&mut self, label: &str, value: u64) -> &mut Self {
        self.space();
        self.buf.extend_from_slice(label.as_bytes());
        self.buf.push(b' ');
        self.push_uint(value);
        self
    }

    pub fn int(&mut self, label: &str, value: i64) -> &mut Self {
        self.space();
        self.buf.extend_from_slice(label.as_bytes());
        self.buf.push(b' ');
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self
    }

    /// `key 0x00005eed`.
    pub fn key(&mut self, key: i32) -> &mut Self {
        self.name("key", KeyHex::new(key).as_str())
    }

    /// `mode 0600`: the permission bits in octal with a leading 0, as chmod takes them.
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        let mode = mode & 0o777;
        self.space();
        self.buf.extend_from_slice(b"mode 0");
        self.buf.extend_from_slice(&[
            b'0' + (mode >> 6) as u8,
            b'0' + (mode >> 3 & 0o7) as u8,
            b'0' + (mode & 0o7) as u8,
        ]);
        self
    }

    /// ` label 0x…` in lowercase hex (addresses, clone flags).
    pub fn hex(&mut self, label: &str, value: u64) -> &mut Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.space();
        self.buf.extend_from_slice(label.as_bytes());
        self.buf.extend_from_slice(b" 0x");
        let digits = (64 - value.leading_zeros()).div_ceil(4).max(1);
        for i in (0..digits).rev() {
            self.buf.push(HEX[(value >> (4 * i) & 0xf) as usize]);
        }
        self
    }

    /// ` label 01600`: flags in octal with a leading 0.
    pub fn octal(&mut self, label: &str, value: u64) -> &mut Self {
        self.space();
        self.buf.extend_from_slice(label.as_bytes());
        self.buf.extend_from_slice(b" 0");
        let digits = (64 - value.leading_zeros()).div_ceil(3).max(1);
        for i in (0..digits).rev() {
            self.buf.push(b'0' + (value >> (3 * i) & 0o7) as u8);
        }
        self
    }

    /// A namespace switch: ` 4026531839→4026532177`.
    pub fn switch(&mut self, from: u32, to: u32) -> &mut Self {
        self.space();
        self.push_uint(from.into());
        self.buf.extend_from_slice("→".as_bytes());
        self.push_uint(to.into());
        self
    }

    /// ` word`, for a flag that is set (`late`, `dest`).
    pub fn flag(&mut self, word: &str) -> &mut Self {
        self.space();
        self.buf.extend_from_slice(word.as_bytes());
        self
    }

    /// ` lifetime 1.234s`: a duration in ns, to about three significant digits.
    pub fn duration(&mut self, label: &str, ns: u64) -> &mut Self {
        self.space();
        self.buf.extend_from_slice(label.as_bytes());
        self.buf.push(b' ');
        let (unit, per) = match ns {
            0..1_000 => ("ns", 1),
            1_000..1_000_000 => ("µs", 1_000),
            1_000_000..1_000_000_000 => ("ms", 1_000_000),
            _ => ("s", 1_000_000_000),
        };
        self.push_uint(ns / per);
        if per > 1 {
            // Three decimals of the unit, trailing zeros dropped.
            let mut fraction = (ns % per) * 1000 / per;
            if fraction > 0 {
                let mut digits = *b".000";
                for digit in digits[1..].iter_mut().rev() {
                    *digit = b'0' + (fraction % 10) as u8;
                    fraction /= 10;
                }
                let mut len = 4;
                while digits[len - 1] == b'0' {
                    len -= 1;
                }
                self.buf.extend_from_slice(&digits[..len]);
            }
        }
        self.buf.extend_from_slice(unit.as_bytes());
        self
    }

    /// ` label a,b,c`: containers by name.
    pub fn containers(&mut self, label: &str, containers: &[&Container]) -> &mut Self {
        self.space();
        self.buf.extend_from_slice(label.as_bytes());
        self.buf.push(b' ');
        for (i, container) in containers.iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            self.push_container(container);
        }
        self
    }

    /// Writes free text as it comes (` (…)`, `,`), for facts of several parts.
    pub fn raw(&mut self, text: &str) -> &mut Self {
        self.buf.extend_from_slice(text.as_bytes());
        self
    }

    /// A number as it comes, for facts of several parts.
    pub fn raw_uint(&mut self, value: u64) -> &mut Self {
        self.push_uint(value);
        self
    }

    /// A container's name as it comes, for facts of several parts.
    pub fn raw_container(&mut self, container: &Container) -> &mut Self {
        self.push_container(container);
        self
    }

    /// Text from outside as it comes, escaped, for facts of several parts.
    pub fn raw_text(&mut self, text: &[u8]) -> &mut Self {
        push_text(self.buf, text);
        self
    }
}

/// Writes text from outside: invalid UTF-8 as U+FFFD, control characters (C0, DEL, C1) as
/// `\xNN` / `\u{NN}`, so that a comm or a container name cannot move the cursor or change
/// colours. Returns the characters written.
fn push_text(buf: &mut Vec<u8>, text: &[u8]) -> usize {
    if text.iter().all(|&b| b.is_ascii_graphic() || b == b' ') {
        buf.extend_from_slice(text);
        return text.len();
    }
    let mut chars = 0;
    for chunk in text.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                let escaped = if (c as u32) < 0x80 {
                    format!("\\x{:02x}", c as u32)
                } else {
                    format!("\\u{{{:x}}}", c as u32)
                };
                chars += escaped.len();
                buf.extend_from_slice(escaped.as_bytes());
            } else {
                let mut bytes = [0; 4];
                buf.extend_from_slice(c.encode_utf8(&mut bytes).as_bytes());
                chars += 1;
            }
        }
        if !chunk.invalid().is_empty() {
            buf.extend_from_slice("\u{fffd}".as_bytes());
            chars += 1;
        }
    }
    chars
}

thread_local! {
    /// The last second written and its `HH:MM:SS.` (local time): lines come many to a second,
    /// and finding the local time asks libc about the time zone.
    static LAST_SECOND: Cell<(u64, bool, [u8; 9])> = const { Cell::new((u64::MAX, false, [0; 9])) };
}

/// `HH:MM:SS.mmm` of `time`, in the local time zone unless `utc`.
fn push_time_of_day(buf: &mut Vec<u8>, time: SystemTime, utc: bool) {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let prefix = LAST_SECOND.with(|last| match last.get() {
        (second, was_utc, prefix) if second == secs && was_utc == utc => prefix,
        _ => {
            let prefix = second_of_day(secs, utc);
            last.set((secs, utc, prefix));
            prefix
        }
    });
    buf.extend_from_slice(&prefix);
    let millis = since_epoch.subsec_millis();
    buf.extend_from_slice(&[
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
    ]);
}

/// `HH:MM:SS.` of a second since the epoch.
fn second_of_day(secs: u64, utc: bool) -> [u8; 9] {
    let in_day = if utc {
        secs % 86_400
    } else {
        local_second_of_day(secs).unwrap_or(secs % 86_400)
    };
    let (h, m, s) = (in_day / 3600, in_day / 60 % 60, in_day % 60);
    let digit = |v: u64| b'0' + v as u8;
    [
        digit(h / 10),
        digit(h % 10),
        b':',
        digit(m / 10),
        digit(m % 10),
        b':',
        digit(s / 10),
        digit(s % 10),
        b'.',
    ]
}

/// The second of the local day (`TZ`, /etc/localtime), as `localtime_r` finds it.
fn local_second_of_day(secs: u64) -> Option<u64> {
    let time = libc::time_t::try_from(secs).ok()?;
    // SAFETY: tm is plain data that localtime_r fills; both pointers are valid.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let filled = unsafe { libc::localtime_r(&time, &mut tm) };
    if filled.is_null() {
        return None;
    }
    Some(tm.tm_hour as u64 * 3600 + tm.tm_min as u64 * 60 + tm.tm_sec as u64)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::containers::{Pod, Runtime};

    const PLAIN: Style = Style {
        color: false,
        utc: true,
    };

    fn line(style: Style, write: impl FnOnce(&mut PrettyLine<'_>)) -> String {
        let mut buf = Vec::new();
        write(&mut PrettyLine::new(&mut buf, style));
        String::from_utf8(buf).unwrap()
    }

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn times_of_day_in_milliseconds() {
        for (time, text) in [
            (at(0, 0), "00:00:00.000"),
            (at(1_700_000_000, 5_000), "22:13:20.000"),
            (at(1_700_000_000, 999_999_999), "22:13:20.999"),
            (at(1_700_000_001, 12_345_678), "22:13:21.012"),
            (at(86_399, 100_000_000), "23:59:59.100"),
        ] {
            let mut buf = Vec::new();
            push_time_of_day(&mut buf, time, true);
            assert_eq!(String::from_utf8(buf).unwrap(), text);
        }
    }

    #[test]
    fn local_time_follows_the_time_zone_libc_has() {
        // Whatever the zone, the minutes past the hour of a whole-hour zone, and the local
        // second of day, are what localtime_r says.
        let secs = 1_700_000_000;
        let mut buf = Vec::new();
        push_time_of_day(&mut buf, at(secs, 0), false);
        let local = local_second_of_day(secs).unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            format!(
                "{:02}:{:02}:{:02}.000",
                local / 3600,
                local / 60 % 60,
                local % 60
            )
        );
    }

    #[test]
    fn columns_are_padded_to_line_up() {
        let head = |kind, ns, who, task| {
            line(PLAIN, |l| {
                l.head(&Head {
                    time: at(1_700_000_000, 0),
                    kind,
                    tone: Tone::Create,
                    ns,
                    who,
                    task,
                });
                l.uint("id", 3);
            })
        };
        assert_eq!(
            head(
                "msg.create",
                Some(4026532177),
                Who::Host,
                Some((1234, &b"ipcmk"[..]))
            ),
            "22:13:20.000 msg.create         4026532177 host         1234/ipcmk           id 3"
        );
        assert_eq!(
            head("agent.ready", None, Who::Nobody, None),
            "22:13:20.000 agent.ready        -          -            -                    id 3"
        );
        // Longer than its column: the rest moves right, nothing is cut.
        let long = Container {
            id: "ab".repeat(32),
            runtime: Runtime::Docker,
            name: Some("a-rather-long-name".into()),
            pod: None,
        };
        assert_eq!(
            head(
                "container.host_ipc",
                Some(4026531839),
                Who::Containers(&[&long]),
                Some((4_194_304, &b"postgres: walwr"[..]))
            ),
            "22:13:20.000 container.host_ipc 4026531839 a-rather-long-name 4194304/postgres: walwr id 3"
        );
    }

    #[test]
    fn containers_by_name_then_pod_then_short_id() {
        let unnamed = Container {
            id: "9c1f3b6e0a2d4c8e7f5a1b3d9e0c2f4a6b8d0e1f3a5c7e9b2d4f6a8c0e1b3d5f".into(),
            runtime: Runtime::Containerd,
            name: None,
            pod: None,
        };
        let in_pod = Container {
            pod: Some(Pod {
                name: "db-0".into(),
                namespace: "prod".into(),
                uid: String::new(),
            }),
            ..unnamed.clone()
        };
        let named = Container {
            name: Some("web".into()),
            ..in_pod.clone()
        };
        assert_eq!(
            line(PLAIN, |l| {
                l.containers("containers", &[&named, &in_pod, &unnamed]);
            }),
            " containers web,prod/db-0,9c1f3b6e0a2d"
        );
    }

    #[test]
    fn facts_in_the_units_people_read() {
        assert_eq!(
            line(PLAIN, |l| {
                l.key(0x5eed).key(-1).mode(0o1600).mode(0o44);
                l.hex("addr", 0x7f00_0000_1000).hex("flags", 0);
                l.octal("flags", 0o1600).octal("flags", 0);
                l.switch(4026531839, 4026532177).flag("late");
            }),
            " key 0x00005eed key 0xffffffff mode 0600 mode 0044 addr 0x7f0000001000 flags 0x0 \
             flags 01600 flags 00 4026531839→4026532177 late"
        );
        let durations: Vec<String> = [
            0,
            999,
            1_000,
            1_500,
            12_345_678,
            1_000_000_000,
            1_234_000_000,
            90_000_000_001,
        ]
        .into_iter()
        .map(|ns| {
            line(PLAIN, |l| {
                l.duration("t", ns);
            })
        })
        .collect();
        assert_eq!(
            durations,
            [
                " t 0ns",
                " t 999ns",
                " t 1µs",
                " t 1.5µs",
                " t 12.345ms",
                " t 1s",
                " t 1.234s",
                " t 90s"
            ]
        );
    }

    #[test]
    fn text_from_outside_cannot_drive_the_terminal() {
        assert_eq!(
            line(PLAIN, |l| {
                l.text("comm", b"evil\x1b[2J\x07\x7f\xc2\x9b\xff");
            }),
            " comm evil\\x1b[2J\\x07\\x7f\\u{9b}\u{fffd}"
        );
        // Its width counts the escapes as written.
        let mut buf = Vec::new();
        assert_eq!(push_text(&mut buf, b"a\x1bb"), 6);
        assert_eq!(push_text(&mut buf, "pé".as_bytes()), 2);
    }

    #[test]
    fn colour_only_on_the_kind_and_only_when_asked() {
        let head = |color, tone| {
            line(Style { color, utc: true }, |l| {
                l.head(&Head {
                    time: at(0, 0),
                    kind: "x.y",
                    tone,
                    ns: None,
                    who: Who::Nobody,
                    task: None,
                })
            })
        };
        assert_eq!(
            head(true, Tone::Destroy),
            "00:00:00.000 \x1b[31mx.y\x1b[0m                -          -            -"
        );
        assert_eq!(
            head(true, Tone::Plain),
            "00:00:00.000 x.y                -          -            -"
        );
        assert_eq!(head(false, Tone::Error), head(true, Tone::Plain));
    }
}

/// Whole lines of the human view, from the event values the stream writes, through the sink.
#[cfg(test)]
mod event_lines {
    use std::{collections::BTreeMap, time::Duration};

    use nsipc_common::EventKind;

    use super::*;
    use crate::{
        attribution::Attribution,
        containers::Runtime,
        decode::{ContainerRef, Task, decode, tests::record_bytes},
        lifecycle::{
            DestroyReason, JoinKind, KeyHome, Lifecycle, LifecycleJson, NsIdent, ObjectCounts,
        },
        limits::LimitHit,
        names::IpcObject,
        output::agent_events::AgentEvent,
        output::kernel_events::{KernelEventJson, Rfc3339, WallClock},
        output::sink::{EventLine, Format, JsonLines},
    };

    /// Monotonic ns 5 000 is 2023-11-14T22:13:20.000005Z.
    const CLOCK_OFFSET: i128 = 1_700_000_000_000_000_000;

    fn ns(inum: u32) -> NsIdent {
        NsIdent {
            inum,
            id: 0,
            generation: 1,
        }
    }

    fn task(pid: u32, comm: &[u8], container: ContainerRef) -> Task {
        let mut bytes = [0; 16];
        bytes[..comm.len()].copy_from_slice(comm);
        Task {
            pid,
            tid: pid,
            ppid: 1,
            uid: 1000,
            euid: 1000,
            comm: bytes,
            cgroup: 0,
            container,
        }
    }

    fn container(name: &str) -> Container {
        Container {
            id: format!("{name:0>64}"),
            runtime: Runtime::Docker,
            name: Some(name.into()),
            pod: None,
        }
    }

    /// The sink's output for `value`, plain and coloured.
    fn both(value: &dyn EventLine) -> (String, String) {
        let write = |color| {
            let style = Style { color, utc: true };
            let mut sink = JsonLines::new(Vec::new()).formatting(Format::Pretty(style));
            sink.write(value).unwrap();
            sink.flush().unwrap();
            let out = String::from_utf8(sink.get_ref().clone()).unwrap();
            out.strip_suffix('\n').expect("one line").to_owned()
        };
        (write(false), write(true))
    }

    fn lifecycle(event: &Lifecycle, attribution: &Attribution) -> (String, String) {
        let clock = WallClock::with_offset(CLOCK_OFFSET);
        both(&LifecycleJson {
            event,
            clock: &clock,
            attribution,
        })
    }

    #[test]
    fn an_object_made_on_the_host() {
        let event = Lifecycle::ObjectCreate {
            ts: 5_000,
            task: task(1234, b"ipcmk", ContainerRef::NONE),
            ns: ns(4026532177),
            object: IpcObject::Shm,
            id: 3,
            key: 0x5eed,
            mode: 0o600,
            size: 4096,
        };
        let (plain, colour) = lifecycle(&event, &Attribution::none());
        assert_eq!(
            plain,
            "22:13:20.000 shm.create         4026532177 host         1234/ipcmk           \
             key 0x00005eed id 3 mode 0600 size 4096"
        );
        assert_eq!(
            colour,
            "22:13:20.000 \x1b[32mshm.create\x1b[0m         4026532177 host         \
             1234/ipcmk           key 0x00005eed id 3 mode 0600 size 4096"
        );
    }

    #[test]
    fn a_failed_get_names_where_the_key_lives() {
        let mut attribution = Attribution::none();
        let consumer = attribution.assign(1, container("consumer"));
        let producer = attribution.assign(2, container("producer"));
        let event = Lifecycle::GetFailed {
            ts: 5_000,
            task: task(77, b"consumer", consumer),
            ns: ns(4026532177),
            object: IpcObject::Msg,
            key: 0x5eed,
            flags: 0o600,
            errno: libc::ENOENT,
            limit: None,
            key_lives_in: vec![
                KeyHome {
                    ns: ns(4026532178),
                    containers: vec![producer],
                },
                KeyHome {
                    ns: ns(4026531839),
                    containers: vec![],
                },
            ],
        };
        let (plain, colour) = lifecycle(&event, &attribution);
        assert_eq!(
            plain,
            "22:13:20.000 msg.get_failed     4026532177 consumer     77/consumer          \
             key 0x00005eed errno ENOENT key_lives_in 4026532178(producer),4026531839"
        );
        assert!(
            colour.starts_with("22:13:20.000 \x1b[33mmsg.get_failed\x1b[0m     4026532177 "),
            "{colour:?}"
        );
    }

    #[test]
    fn a_failed_get_names_the_limit_it_hit() {
        let attribution = Attribution::none();
        let failed = |object, errno, limit| Lifecycle::GetFailed {
            ts: 5_000,
            task: task(77, b"ipcmk", ContainerRef::NONE),
            ns: ns(4026532177),
            object,
            key: 0,
            flags: 0o1644,
            errno,
            limit: Some(limit),
            key_lives_in: Vec::new(),
        };
        let (plain, _) = lifecycle(
            &failed(
                IpcObject::Msg,
                libc::ENOSPC,
                LimitHit {
                    asked: None,
                    name: "msgmni",
                    used: Some(2),
                    value: 2,
                },
            ),
            &attribution,
        );
        assert!(
            plain.ends_with("key 0x00000000 errno ENOSPC limit msgmni=2 used 2"),
            "{plain:?}"
        );
        let (plain, _) = lifecycle(
            &failed(
                IpcObject::Shm,
                libc::EINVAL,
                LimitHit {
                    asked: Some(16384),
                    name: "shmmax",
                    used: None,
                    value: 8192,
                },
            ),
            &attribution,
        );
        assert!(
            plain.ends_with("errno EINVAL limit shmmax=8192 asked 16384"),
            "{plain:?}"
        );
    }

    #[test]
    fn a_join_shows_both_namespaces() {
        let mut attribution = Attribution::none();
        let web = attribution.assign(1, container("web"));
        let db = attribution.assign(2, container("db"));
        let event = Lifecycle::NsJoin {
            ts: 5_000,
            task: task(88, b"runc:[2:INIT]", web),
            ns: ns(4026532177),
            from: ns(4026531839),
            into_host: false,
            kind: JoinKind::Share,
            members: vec![db],
        };
        let (plain, colour) = lifecycle(&event, &attribution);
        assert_eq!(
            plain,
            "22:13:20.000 ipc_ns.join        4026532177 web          88/runc:[2:INIT]     \
             4026531839→4026532177 join share ns_containers db"
        );
        assert!(colour.contains("\x1b[36mipc_ns.join\x1b[0m"), "{colour:?}");
    }

    #[test]
    fn ends_without_a_task() {
        let mut attribution = Attribution::none();
        let web = attribution.assign(1, container("web"));
        let db = attribution.assign(2, container("db"));
        let (plain, colour) = lifecycle(
            &Lifecycle::ObjectDestroy {
                ts: 5_000,
                task: None,
                ns: ns(4026532177),
                object: IpcObject::Sem,
                id: 32768,
                key: 0,
                reason: DestroyReason::NamespaceTeardown,
                lifetime_ns: Some(1_500_000_000),
                late: true,
            },
            &attribution,
        );
        assert_eq!(
            plain,
            "22:13:20.000 sem.destroy        4026532177 -            -                    \
             key 0x00000000 id 32768 reason namespace_teardown lifetime 1.5s late"
        );
        assert!(colour.contains("\x1b[31msem.destroy\x1b[0m"), "{colour:?}");
        let (plain, _) = lifecycle(
            &Lifecycle::NsDestroy {
                ts: 5_000,
                ns: ns(4026532177),
                containers: vec![web, db],
                lifetime_ns: Some(12_345_678),
                destroyed: ObjectCounts {
                    msg: 1,
                    shm: 0,
                    sem: 2,
                },
                reason: DestroyReason::Freed,
                late: false,
            },
            &attribution,
        );
        assert_eq!(
            plain,
            "22:13:20.000 ipc_ns.destroy     4026532177 web,db       -                    \
             reason freed lifetime 12.345ms objects_destroyed msg=1,shm=0,sem=2"
        );
    }

    #[test]
    fn a_containers_object_in_the_hosts_namespace_says_so() {
        let mut attribution = Attribution::none();
        let web = attribution.assign(1, container("web"));
        let (plain, _) = lifecycle(
            &Lifecycle::ShmAttach {
                ts: 5_000,
                task: task(9, b"postgres", web),
                ns: ns(4026531839),
                id: 7,
                key: Some(0x79c9_8b9f),
                addr: 0x7f3a_2c00_0000,
            },
            &attribution,
        );
        assert_eq!(
            plain,
            "22:13:20.000 shm.attach         4026531839 web          9/postgres           \
             key 0x79c98b9f id 7 addr 0x7f3a2c000000 host_ipc"
        );
    }

    #[test]
    fn agent_lines_are_dim_and_losses_stand_out() {
        let time = || Rfc3339(UNIX_EPOCH + Duration::new(1_700_000_000, 5_000));
        let (plain, colour) = both(&AgentEvent::Lost {
            time: time(),
            count: 3,
            total: 10,
            kinds: BTreeMap::from([("msg.get", 2), ("shm.freed", 1)]),
        });
        assert_eq!(
            plain,
            "22:13:20.000 agent.lost         -          -            -                    \
             count 3 total 10 kinds msg.get=2,shm.freed=1"
        );
        assert!(colour.contains("\x1b[1;31magent.lost\x1b[0m"), "{colour:?}");
        let (plain, colour) = both(&AgentEvent::Stop {
            time: time(),
            reason: "SIGINT",
            events: 42,
            lost: 0,
            missed: 0,
            decode_errors: 0,
            late_destroys: 1,
            kfree_skipped: 0,
        });
        assert_eq!(
            plain,
            "22:13:20.000 agent.stop         -          -            -                    \
             reason SIGINT events 42 lost 0 missed 0 decode_errors 0 late_destroys 1 \
             kfree_skipped 0"
        );
        assert!(colour.contains("\x1b[2magent.stop\x1b[0m"), "{colour:?}");
    }

    #[test]
    fn raw_syscalls_stand_out_when_they_fail() {
        let clock = WallClock::with_offset(CLOCK_OFFSET);
        let line = |kind, ret, args| {
            let event = decode(&record_bytes(kind, ret, args)).unwrap();
            both(&KernelEventJson {
                event: &event,
                clock: &clock,
                attribution: &Attribution::none(),
            })
        };
        // The test record's comm is `ipcmk\xff`: invalid UTF-8 shows as U+FFFD.
        let (plain, colour) = line(EventKind::ShmGet, -2, [0x5eed, 4096, 0o600, 0]);
        assert_eq!(
            plain,
            "22:13:20.000 shm.get            4026532177 host         100/ipcmk\u{fffd}           \
             key 0x00005eed flags 0600 size 4096 errno ENOENT"
        );
        assert!(colour.contains("\x1b[33mshm.get\x1b[0m"), "{colour:?}");
        let (plain, colour) = line(EventKind::Setns, 0, [3, 0x0800_0000, 0, 0]);
        assert_eq!(
            plain,
            "22:13:20.000 ipc_ns.setns       4026532177 host         100/ipcmk\u{fffd}           \
             4026531839→4026532177 fd 3 nstype 0x8000000"
        );
        assert_eq!(colour, plain, "a syscall that worked is not coloured");
    }
}
