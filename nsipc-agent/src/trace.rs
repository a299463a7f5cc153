//! `nsipc-agent trace`: load, attach, and stream events until a signal or the reader leaves.

use std::{
    io::Write,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use nsipc_common::HOST_IPC_NS_INUM;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval},
};

use crate::{
    agent_events::AgentEvent,
    decode::decode,
    kernel::{self, KernelLayout},
    probes::{LoadOptions, Probes},
    render::{KernelEventJson, Rfc3339, WallClock},
    sink::{JsonLines, SinkState, stdout_reader_gone},
};

/// How often the ring buffer is drained when no forced wakeup came: probes write without
/// waking the reader, so this bounds the latency of a quiet stream.
pub(crate) const IDLE_POLL: Duration = Duration::from_millis(50);

pub struct TraceOptions {
    pub btf_path: PathBuf,
    pub ring_buffer_bytes: u32,
}

/// Counts reported in `agent.stop`.
#[derive(Default)]
struct Counters {
    events: u64,
    lost_reported: u64,
    decode_errors: u64,
}

/// The kernel records → JSON Lines path. `nsipc-agent bench-json` measures it alone.
pub(crate) struct Stream<W: Write> {
    pub(crate) sink: JsonLines<W>,
    clock: WallClock,
    counters: Counters,
}

impl<W: Write> Stream<W> {
    pub(crate) fn new(out: W) -> Self {
        Self {
            sink: JsonLines::new(out),
            clock: WallClock::now(),
            counters: Counters::default(),
        }
    }

    fn now(&self) -> Rfc3339 {
        Rfc3339(SystemTime::now())
    }

    /// Decodes one ring-buffer record and writes its line.
    pub(crate) fn record(&mut self, bytes: &[u8]) -> Result<SinkState> {
        Ok(match decode(bytes) {
            Ok(event) => {
                self.counters.events += 1;
                self.sink.write(&KernelEventJson {
                    event: &event,
                    clock: &self.clock,
                })?
            }
            Err(err) => {
                self.counters.decode_errors += 1;
                let total = self.counters.decode_errors;
                let event = AgentEvent::DecodeError {
                    time: self.now(),
                    error: err.to_string(),
                    total,
                };
                self.sink.write(&event)?
            }
        })
    }

    /// Decodes and writes everything waiting in the ring buffer.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Result<SinkState> {
        while let Some(item) = ring.next() {
            if self.record(&item)? == SinkState::ReaderGone {
                return Ok(SinkState::ReaderGone);
            }
        }
        Ok(SinkState::Open)
    }

    /// Reports records lost since the last report.
    fn report_lost(&mut self, probes: &Probes) -> Result<SinkState> {
        let total = probes.lost_total()?;
        if total <= self.counters.lost_reported {
            return Ok(SinkState::Open);
        }
        let count = total - self.counters.lost_reported;
        self.counters.lost_reported = total;
        Ok(self.sink.write(&AgentEvent::Lost {
            time: self.now(),
            count,
            total,
        })?)
    }

    fn write_agent(&mut self, event: &AgentEvent<'_>) -> Result<SinkState> {
        Ok(self.sink.write(event)?)
    }
}

/// Why the stream ended.
enum Ending {
    Signal(&'static str),
    ReaderGone,
}

pub async fn run(options: TraceOptions) -> Result<()> {
    kernel::check_privileges()?;
    let btf = kernel::load_btf(&options.btf_path)?;
    let layout =
        KernelLayout::from_btf(&btf).context("the kernel's BTF lacks a field the probes read")?;
    drop(btf);
    kernel::ensure_tracefs()?;

    let (mut probes, ring) = Probes::load_and_attach(&LoadOptions {
        layout,
        btf_path: &options.btf_path,
        ring_buffer_bytes: options.ring_buffer_bytes,
    })?;
    // SAFETY: the ring buffer owns its map fd, and AsyncFd owns the ring buffer, so the fd
    // stays open and the same until AsyncFd is dropped.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| err.into_parts().1)
        .context("registering the ring buffer with the event loop")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;

    let mut stream = Stream::new(std::io::stdout().lock());
    let release = kernel::release();
    let ready = AgentEvent::Ready {
        time: stream.now(),
        version: env!("CARGO_PKG_VERSION"),
        backend: "tracepoint",
        kernel: &release,
        programs: probes.attached,
        ns_id: layout.ipc_ns_id.is_some(),
        host_ns: HOST_IPC_NS_INUM,
        ring_buffer_bytes: options.ring_buffer_bytes,
        pid: std::process::id(),
    };
    stream.write_agent(&ready)?;

    let mut tick = interval(IDLE_POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let ending = loop {
        if stream.sink.flush()? == SinkState::ReaderGone {
            break Ending::ReaderGone;
        }
        tokio::select! {
            _ = sigint.recv() => break Ending::Signal("SIGINT"),
            _ = sigterm.recv() => break Ending::Signal("SIGTERM"),
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                let state = stream.drain(guard.get_inner_mut())?;
                guard.clear_ready();
                if state == SinkState::ReaderGone {
                    break Ending::ReaderGone;
                }
            }
            _ = tick.tick() => {
                if stream.drain(ring.get_mut())? == SinkState::ReaderGone
                    || stream.report_lost(&probes)? == SinkState::ReaderGone
                    || stdout_reader_gone()
                {
                    break Ending::ReaderGone;
                }
            }
        }
    };

    // Detach first so nothing new arrives, then drain what the probes already wrote.
    probes.detach();
    match ending {
        // Nobody reads any more: there is nothing to report to.
        Ending::ReaderGone => Ok(()),
        Ending::Signal(signal) => {
            let mut ring = ring.into_inner();
            if stream.drain(&mut ring)? == SinkState::ReaderGone
                || stream.report_lost(&probes)? == SinkState::ReaderGone
            {
                return Ok(());
            }
            let counters = &stream.counters;
            let stop = AgentEvent::Stop {
                time: stream.now(),
                reason: signal,
                events: counters.events,
                lost: counters.lost_reported,
                decode_errors: counters.decode_errors,
            };
            stream.write_agent(&stop)?;
            stream.sink.flush()?;
            Ok(())
        }
    }
}
