//! Children of the harness: reaped with their resource usage, killed if abandoned, and what
//! they print collected line by line.

use std::{
    io::{self, BufRead as _, BufReader, Read},
    process::{Child, Command},
    sync::mpsc::{Receiver, channel},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// How a child ended, with what `wait4` says it used.
pub struct Exit {
    pub status: libc::c_int,
    /// User + system CPU time over the child's whole life.
    pub cpu_ns: u64,
    /// Peak resident set size (`ru_maxrss`, the same as VmHWM).
    pub max_rss_kib: u64,
}

impl Exit {
    pub fn success(&self) -> bool {
        libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0
    }
}

fn timeval_ns(tv: libc::timeval) -> u64 {
    tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000
}

/// A child process the harness started. Reaped with `wait4` (for its rusage); if dropped
/// unreaped (an error path), it is killed and reaped, so no tracer stays attached.
pub struct Process {
    pub child: Child,
    pub what: String,
    reaped: bool,
}

impl Process {
    pub fn spawn(cmd: &mut Command, what: &str) -> Result<Self> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {what} ({cmd:?})"))?;
        Ok(Self {
            child,
            what: what.to_owned(),
            reaped: false,
        })
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    pub fn signal(&self, signal: libc::c_int) -> Result<()> {
        if self.reaped {
            return Ok(());
        }
        // SAFETY: our own unreaped child: the pid cannot have been reused.
        if unsafe { libc::kill(self.pid(), signal) } != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("signalling {}", self.what));
        }
        Ok(())
    }

    /// `wait4` with `flags`; `None` if WNOHANG and still running.
    fn wait4(&mut self, flags: libc::c_int) -> Result<Option<Exit>> {
        let mut status = 0;
        // SAFETY: rusage is plain integers; zeroed is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: valid out-pointers; our own child.
            let ret = unsafe { libc::wait4(self.pid(), &mut status, flags, &mut usage) };
            if ret == 0 {
                return Ok(None);
            }
            if ret == self.pid() {
                self.reaped = true;
                return Ok(Some(Exit {
                    status,
                    cpu_ns: timeval_ns(usage.ru_utime) + timeval_ns(usage.ru_stime),
                    max_rss_kib: usage.ru_maxrss as u64,
                }));
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err).with_context(|| format!("waiting for {}", self.what));
            }
        }
    }

    /// Whether it has exited (and then how), without blocking.
    pub fn try_exit(&mut self) -> Result<Option<Exit>> {
        self.wait4(libc::WNOHANG)
    }

    /// Waits for it to exit, for at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Result<Exit> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.try_exit()? {
                return Ok(exit);
            }
            if Instant::now() > deadline {
                bail!("{} did not exit within {timeout:?}", self.what);
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.signal(libc::SIGKILL);
            let _ = self.wait4(0);
        }
    }
}

/// The lines a child writes on one of its pipes, read by a thread as they come.
pub struct Lines {
    rx: Receiver<String>,
}

impl Lines {
    pub fn new(pipe: impl Read + Send + 'static) -> Self {
        let (tx, rx) = channel();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { rx }
    }

    /// The next line; `None` at end of stream or after `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<String> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Every line until the end of the stream (the writer has exited).
    pub fn rest(&self) -> Vec<String> {
        self.rx.iter().collect()
    }

    /// What arrived so far, without waiting.
    pub fn so_far(&self) -> Vec<String> {
        self.rx.try_iter().collect()
    }
}
