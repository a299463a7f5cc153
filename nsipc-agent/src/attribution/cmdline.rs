//! Which process, when `comm` is ambiguous: every PostgreSQL process is `postgres`, but its
//! command line says `postgres: checkpointer`. Read from /proc/PID/cmdline when a record of the
//! process comes, and kept for [`FRESH_NS`]: long enough that a busy process costs one read a
//! second, short enough to follow a process that retitles itself (PostgreSQL's backends write
//! what they do into their command line) and to not outlive a pid's reuse for long. The read
//! is checked against the record's `comm` (a reused pid, or an exec since, reads as unknown),
//! and a process gone before the agent read its records has no command line in the stream.

use std::{collections::HashMap, fs};

use crate::decode::Task;

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// How long a command line read is used for the process's later events (monotonic ns).
const FRESH_NS: u64 = 1_000_000_000;
/// Processes remembered at most; past it, the stale ones are forgotten (then all).
const MAX_PROCESSES: usize = 8192;
/// The longest command line written, in bytes (cut at a character boundary).
pub const MAX_CMDLINE: usize = 256;

#[derive(Default)]
pub struct Cmdlines {
    /// Off: `--no-cmdline` (command lines can carry secrets).
    enabled: bool,
    by_pid: Map<u32, Read>,
}

struct Read {
    /// When it was read, on the records' clock.
    at_ns: u64,
    comm: [u8; 16],
    cmdline: Option<Box<str>>,
}

impl Cmdlines {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            by_pid: Map::default(),
        }
    }

    /// Reads the command line of `task`'s process unless a fresh read of it is kept; `ts_ns`
    /// is the record's time.
    pub fn note(&mut self, task: &Task, ts_ns: u64) {
        if !self.enabled || task.pid == 0 {
            return;
        }
        if let Some(read) = self.by_pid.get(&task.pid)
            && read.comm == task.comm
            && ts_ns.saturating_sub(read.at_ns) < FRESH_NS
        {
            return;
        }
        if self.by_pid.len() >= MAX_PROCESSES {
            self.by_pid
                .retain(|_, read| ts_ns.saturating_sub(read.at_ns) < FRESH_NS);
            if self.by_pid.len() >= MAX_PROCESSES {
                self.by_pid.clear();
            }
        }
        let mut cmdline = read_cmdline(task.pid, task.comm_bytes()).map(String::into_boxed_str);
        if cmdline.is_none() {
            // Gone since (its records are read after it made them): what was read of this pid
            // under this comm is still the best there is.
            cmdline = self
                .by_pid
                .remove(&task.pid)
                .filter(|read| read.comm == task.comm)
                .and_then(|read| read.cmdline);
        }
        self.by_pid.insert(
            task.pid,
            Read {
                at_ns: ts_ns,
                comm: task.comm,
                cmdline,
            },
        );
    }

    /// The command line last read for `task`'s process, if it was that process's.
    pub fn get(&self, task: &Task) -> Option<&str> {
        self.by_pid
            .get(&task.pid)
            .filter(|read| read.comm == task.comm)
            .and_then(|read| read.cmdline.as_deref())
    }
}

/// /proc/`pid`/cmdline, its arguments joined by spaces, if /proc/`pid`/comm is still `comm`
/// (else the pid went to another process, or this one exec'd since). None for a process
/// without one (a kernel thread, a zombie).
fn read_cmdline(pid: u32, comm: &[u8]) -> Option<String> {
    let now_comm = fs::read(format!("/proc/{pid}/comm")).ok()?;
    if now_comm.strip_suffix(b"\n").unwrap_or(&now_comm) != comm {
        return None;
    }
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    cmdline_text(&raw)
}

/// The text of a raw /proc/PID/cmdline: NUL-separated arguments joined by spaces, without
/// trailing spaces (PostgreSQL pads the titles it writes there), at most [`MAX_CMDLINE`]
/// bytes, invalid UTF-8 replaced. None when empty.
fn cmdline_text(raw: &[u8]) -> Option<String> {
    let end = raw
        .iter()
        .rposition(|&b| b != 0 && b != b' ')
        .map_or(0, |last| last + 1);
    let raw = &raw[..end];
    if raw.is_empty() {
        return None;
    }
    let joined: Vec<u8> = raw.iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
    let mut text = String::from_utf8_lossy(&joined).into_owned();
    if text.len() > MAX_CMDLINE {
        let mut end = MAX_CMDLINE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::ContainerRef;

    fn task(pid: u32, comm: &[u8]) -> Task {
        crate::decode::tests::task(pid, comm, ContainerRef::NONE)
    }

    #[test]
    fn arguments_are_joined_and_cut() {
        assert_eq!(
            cmdline_text(b"postgres: checkpointer     \0\0").as_deref(),
            Some("postgres: checkpointer")
        );
        assert_eq!(cmdline_text(b"ipcmk\0-Q\0").as_deref(), Some("ipcmk -Q"));
        assert_eq!(cmdline_text(b""), None);
        assert_eq!(cmdline_text(b"\0"), None);
        assert_eq!(cmdline_text(b"a\0\0b\0").as_deref(), Some("a  b"));
        let long = "é".repeat(200);
        let cut = cmdline_text(long.as_bytes()).unwrap();
        assert!(cut.len() <= MAX_CMDLINE && cut.len() >= MAX_CMDLINE - 1);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(
            cmdline_text(b"a\xffb").as_deref(),
            Some("a\u{fffd}b"),
            "invalid UTF-8 stays readable"
        );
    }

    #[test]
    fn this_process_is_read_once_while_fresh_and_checked_by_comm() {
        let pid = std::process::id();
        let comm = fs::read(format!("/proc/{pid}/comm")).unwrap();
        let comm = comm.strip_suffix(b"\n").unwrap();
        let me = task(pid, comm);
        let mut cmdlines = Cmdlines::new(true);
        cmdlines.note(&me, 10);
        let expected = cmdline_text(&fs::read("/proc/self/cmdline").unwrap());
        assert_eq!(cmdlines.get(&me).map(str::to_owned), expected);
        assert!(cmdlines.get(&me).is_some());
        // Another comm under this pid (a reused pid, an exec): not this command line.
        let other = task(pid, b"someone-else");
        assert_eq!(cmdlines.get(&other), None);
        cmdlines.note(&other, 20);
        assert_eq!(cmdlines.get(&other), None, "/proc says the comm differs");
        // Kept while fresh, read again after.
        cmdlines.note(&me, 30);
        assert!(cmdlines.get(&me).is_some());
        cmdlines.by_pid.get_mut(&pid).unwrap().cmdline = Some("stale".into());
        cmdlines.note(&me, 30 + FRESH_NS / 2);
        assert_eq!(cmdlines.get(&me), Some("stale"));
        cmdlines.note(&me, 30 + FRESH_NS);
        assert_eq!(cmdlines.get(&me).map(str::to_owned), expected);
    }

    #[test]
    fn a_process_gone_keeps_what_was_read_of_it() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let sleeper = task(child.id(), b"sleep");
        // Until the child's exec is done, /proc shows the test's comm, then an empty command
        // line for a moment (the new comm is set before the arguments are copied).
        for _ in 0..200 {
            if read_cmdline(child.id(), b"sleep").is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let mut cmdlines = Cmdlines::new(true);
        cmdlines.note(&sleeper, 10);
        assert_eq!(cmdlines.get(&sleeper), Some("sleep 30"));
        child.kill().unwrap();
        child.wait().unwrap();
        cmdlines.note(&sleeper, 10 + FRESH_NS);
        assert_eq!(cmdlines.get(&sleeper), Some("sleep 30"));
    }

    #[test]
    fn off_reads_nothing() {
        let pid = std::process::id();
        let comm = fs::read(format!("/proc/{pid}/comm")).unwrap();
        let me = task(pid, comm.strip_suffix(b"\n").unwrap());
        let mut cmdlines = Cmdlines::new(false);
        cmdlines.note(&me, 10);
        assert_eq!(cmdlines.get(&me), None);
    }
}
