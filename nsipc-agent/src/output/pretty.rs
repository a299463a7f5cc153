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

use crate::{containers::Container, names::errno_name, output::fields::KeyHex};

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

    /// ` errno ENOENT`: a failed call's error by its name, or its number if it has none here.
    pub fn errno(&mut self, errno: i32) -> &mut Self {
        match errno_name(errno) {
            Some(name) => self.name("errno", name),
            None => self.int("errno", errno.into()),
        }
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
mod tests;

/// Whole lines of the human view, from the event values the stream writes, through the sink.
#[cfg(test)]
mod event_lines;
