//! The differential test's workers: perl processes, each in a namespace of the workload's, that
//! make its syscalls one command at a time and hold what it holds; and the programs run beside
//! them.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{Receiver, channel},
    thread,
    time::{Duration, Instant},
};

use crate::support::WAIT;

/// A worker: one command per line on stdin, one reply per line on stdout. Workers hold
/// namespaces (by being in them), attachments, forked children and namespace fds for as long as
/// the test wants them, and make the syscalls with perl's builtins (or `syscall` where perl has
/// none).
pub const WORKER_PL: &str = include_str!("workload.pl");

/// clone(CLONE_NEWIPC | SIGCHLD) with fork semantics (SYS_clone = 56), the child execs a worker
/// and this launcher waits for it.
pub const CLONE_LAUNCHER_PL: &str = r#"
my $pid = syscall(56, 0x08000011, 0, 0, 0, 0);
die "clone: $!" if $pid < 0;
if ($pid == 0) { exec('perl', @ARGV); exit 127 }
waitpid($pid, 0);
exit($? >> 8);
"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub addr: u64,
    pub ns: usize,
    pub id: i64,
}

pub struct Kid {
    pub pid: u32,
    pub ns: usize,
    pub attachments: Vec<Attachment>,
}

pub struct Worker {
    pub name: String,
    pub pid: u32,
    pub child: Child,
    stdin: ChildStdin,
    replies: Receiver<String>,
    pub ns: usize,
    pub attachments: Vec<Attachment>,
    pub kids: Vec<Kid>,
}

impl Worker {
    pub fn spawn(name: String, mut command: Command) -> (Worker, u64) {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, replies) = channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut worker = Worker {
            name,
            pid: 0,
            child,
            stdin,
            replies,
            ns: 0,
            attachments: Vec::new(),
            kids: Vec::new(),
        };
        let ready = worker.reply("start");
        let fields: Vec<&str> = ready.split_whitespace().collect();
        assert!(
            fields.len() == 3 && fields[0] == "READY",
            "{}: {ready}",
            worker.name
        );
        worker.pid = fields[1].parse().unwrap();
        (worker, fields[2].parse().unwrap())
    }

    fn reply(&mut self, after: &str) -> String {
        self.replies.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!(
                "worker {} (pid {}) did not answer {after:?} within {WAIT:?}",
                self.name, self.pid
            )
        })
    }

    /// Sends one command: `Ok(fields after OK)` or `Err(errno)`.
    pub fn call(&mut self, command: &str) -> Result<Vec<String>, i32> {
        writeln!(self.stdin, "{command}").expect("writing to a worker");
        self.stdin.flush().unwrap();
        let reply = self.reply(command);
        let mut fields = reply.split_whitespace().map(str::to_owned);
        match fields.next().as_deref() {
            Some("OK") => Ok(fields.collect()),
            Some("ERR") => Err(fields.next().and_then(|e| e.parse().ok()).unwrap_or(-1)),
            _ => panic!(
                "worker {}: unexpected reply {reply:?} to {command:?}",
                self.name
            ),
        }
    }

    pub fn call_number(&mut self, command: &str) -> Result<i64, i32> {
        self.call(command).map(|fields| {
            fields
                .first()
                .and_then(|f| f.parse().ok())
                .unwrap_or_else(|| panic!("{}: no number in reply to {command:?}", self.name))
        })
    }

    pub fn kill(&mut self) {
        // SAFETY: plain kill(2) on a process this test started.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `pid` has exited (gone or a zombie: its memory and namespaces are released).
pub fn wait_exited(pid: u32) -> bool {
    let deadline = Instant::now() + WAIT;
    loop {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat) => {
                let state = stat.rsplit(')').next().unwrap_or_default().trim_start();
                if state.starts_with('Z') || state.starts_with('X') {
                    return true;
                }
            }
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

pub fn run(command: &mut Command) -> (bool, String) {
    let output = command.output().expect("running a program");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text.trim().to_owned())
}

/// Unmounts a namespace's bind mount; lazily when an fd opened through it keeps it busy (the fd
/// then still holds the namespace).
pub fn umount(path: &Path) -> &'static str {
    let (ok, out) = run(Command::new("umount").arg(path));
    let how = if ok {
        "umount"
    } else {
        assert!(out.contains("busy"), "umount {path:?}: {out}");
        let (ok, out) = run(Command::new("umount").arg("-l").arg(path));
        assert!(ok, "umount -l {path:?}: {out}");
        "umount -l"
    };
    let _ = fs::remove_file(path);
    how
}
