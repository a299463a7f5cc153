//! Stopping even when the reader stalls. A reader that stops reading without closing the pipe
//! leaves the stdout writer thread blocked in write(2), and once the queue before it is full
//! ([`crate::output::stdout_queue`]), the event loop blocked too; tokio's signal handling then only
//! notes SIGINT or SIGTERM for an event loop that never runs again, and the agent would
//! neither detach nor exit (nor could it write `agent.stop`, which waits behind the stalled
//! lines). A watchdog thread ends the process once a stop signal has come and a write
//! to stdout has been blocked for [`STALL_LIMIT`]: exiting releases every program, link and map
//! (the agent holds them by fds), and what the reader did not take could not be delivered
//! anyway. It says so on stderr and exits 1, without `agent.stop`.

use std::{
    io::{self, StdoutLock, Write},
    sync::{
        OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

/// How long a write may be blocked after a stop signal before the process ends.
const STALL_LIMIT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(100);

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);
/// Milliseconds since [`EPOCH`] plus one at which the current write to stdout began; 0 when no
/// write is under way.
static WRITE_BLOCKED_SINCE: AtomicU64 = AtomicU64::new(0);
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Notes stop signals as they arrive (beside tokio's handling of them) and starts the thread.
pub fn start() -> Result<()> {
    EPOCH.get_or_init(Instant::now);
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the action only stores to an atomic, which is async-signal-safe.
        unsafe {
            signal_hook_registry::register(signal, || {
                STOP_REQUESTED.store(true, Ordering::SeqCst);
            })
        }
        .context("installing the stop signal watchdog")?;
    }
    thread::Builder::new()
        .name("stop-watchdog".into())
        .spawn(watch)
        .context("starting the stop signal watchdog")?;
    Ok(())
}

fn watch() {
    loop {
        thread::sleep(POLL);
        let since = WRITE_BLOCKED_SINCE.load(Ordering::SeqCst);
        if STOP_REQUESTED.load(Ordering::SeqCst)
            && since != 0
            && now_ms().saturating_sub(since) >= STALL_LIMIT.as_millis() as u64
        {
            let message = format!(
                "nsipc-agent: stopping on a signal while the reader of stdout has not read for \
                 {} s: exiting without agent.stop (the kernel releases the probes)\n",
                STALL_LIMIT.as_secs()
            );
            // SAFETY: plain write(2) of a buffer we own, then _exit: nothing else runs, so the
            // main thread's blocked write and held locks do not matter.
            unsafe {
                libc::write(2, message.as_ptr().cast(), message.len());
                libc::_exit(1);
            }
        }
    }
}

/// Stdout, with every write and flush timed for the watchdog.
pub struct WatchedStdout(pub StdoutLock<'static>);

impl WatchedStdout {
    fn timed<T>(&mut self, op: impl FnOnce(&mut StdoutLock<'static>) -> T) -> T {
        WRITE_BLOCKED_SINCE.store(now_ms(), Ordering::SeqCst);
        let result = op(&mut self.0);
        WRITE_BLOCKED_SINCE.store(0, Ordering::SeqCst);
        result
    }
}

impl Write for WatchedStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.timed(|out| out.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.timed(|out| out.flush())
    }
}
