//! `nsipc-agent trace`: load, attach, and stream events until a signal or the reader leaves.
//!
//! This file loads the probes, writes the startup inventory and `agent.ready`, and runs the
//! event loop until a signal (`agent.stop`) or the reader leaving. What the loop drives lives
//! beside it: [`Stream`] turns records into lines (stream.rs), counters.rs reports losses and
//! the totals, kfree.rs watches the `kfree` probes, resync.rs makes the state right again.

mod activity;
mod counters;
mod kfree;
mod resync;
mod stream;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use nsipc_common::{HOST_IPC_NS_INUM, NO_OFFSET};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval},
};

pub(crate) use self::stream::Stream;
use crate::{
    allocator,
    attribution::{Attribution, CgroupHierarchy, attributed_hierarchy},
    containers::MetadataRoots,
    filter::FilterSpec,
    inventory, kernel,
    lifecycle::Lifecycle,
    metrics::Metrics,
    output,
    output::agent_events::AgentEvent,
    output::fields::clock_ns,
    output::sink::{Format, SinkState, stdout_reader_gone},
    output::stdout_queue::QueuedWriter,
    probes::{Backend, FreeHooks, KfreeCallers, LoadOptions, Probes},
    stop_watchdog::{self, WatchedStdout},
};

/// How often the ring buffer is drained when no forced wakeup came: probes write without
/// waking the reader, so this bounds the latency of a quiet stream.
pub(crate) const IDLE_POLL: Duration = Duration::from_millis(50);

/// CLOCK_MONOTONIC in ns, the clock of the records' `ts_ns` (`bpf_ktime_get_ns`).
fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

pub struct TraceOptions {
    pub btf_path: PathBuf,
    pub ring_buffer_bytes: u32,
    /// Print the raw kernel events too.
    pub raw: bool,
    /// Write processes' command lines (`cmdline`).
    pub cmdline: bool,
    /// The backend asked for; None for the best per hook.
    pub backend: Option<Backend>,
    /// Which lines to write.
    pub filter: FilterSpec,
    /// How the lines are written: JSON, pretty, or none at all (metrics only).
    pub format: Format,
    /// Where to serve `/metrics`, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Seconds between activity reports; 0: no activity counted.
    pub activity_interval: u64,
}

/// Why the stream ended.
enum Ending {
    Signal(&'static str),
    ReaderGone,
}

pub async fn run(options: TraceOptions) -> Result<()> {
    // First: a stop signal that comes while the probes load (seconds on a slow machine) is
    // kept for the loop, which then stops at once, detaching and ending with `agent.stop`,
    // rather than killing the process half-loaded.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    // The inventory's needs first: they include what loading the probes needs.
    kernel::check_inventory_privileges("trace")?;
    kernel::check_privileges()?;
    // Bound before anything loads: an address in use fails the start, not a stream later.
    let metrics = options.metrics_addr.map(Metrics::serve).transpose()?;
    let btf = kernel::load_btf(&options.btf_path)?;
    let hierarchy = CgroupHierarchy::of_this_host();
    let offsets = kernel::kernel_offsets(&btf, hierarchy.as_ref())
        .context("the kernel's BTF lacks a field the probes read")?;
    let cgroup_hierarchy = attributed_hierarchy(hierarchy.as_ref(), &offsets);
    drop(btf);
    kernel::ensure_tracefs()?;

    let (mut probes, ring) = Probes::load_and_attach(&LoadOptions {
        offsets,
        kfree_callers: &KfreeCallers::from_kallsyms(),
        btf_path: &options.btf_path,
        ring_buffer_bytes: options.ring_buffer_bytes,
        backend: options.backend,
        cgroup_hierarchy: hierarchy
            .as_ref()
            .filter(|_| cgroup_hierarchy.is_some())
            .map_or(-1, |hierarchy| hierarchy.hierarchy_id),
        activity: options.activity_interval > 0,
    })?;
    allocator::release_freed_memory();
    // SAFETY: the ring buffer owns its map fd, and AsyncFd owns the ring buffer, so the fd
    // stays open and the same until AsyncFd is dropped.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| err.into_parts().1)
        .context("registering the ring buffer with the event loop")?;

    stop_watchdog::start()?;
    let attribution = Attribution::new(
        hierarchy.filter(|_| cgroup_hierarchy.is_some()),
        MetadataRoots::default(),
    )
    .with_made_paths(probes.cgroup_paths.take())
    .with_cmdlines(options.cmdline);
    // Lines go out on a thread of their own, so that a slow reader does not hold up the loop.
    let stdout = QueuedWriter::start(|| WatchedStdout(std::io::stdout().lock()))
        .context("starting the stdout writer thread")?;
    let mut stream = Stream::new(stdout, options.raw)
        .attributing(attribution)
        .filtering(options.filter)
        .formatting(options.format);
    if metrics.is_some() {
        stream.engine.keep_shm_sizes();
    }
    if probes.frees == FreeHooks::Kfree {
        stream.engine.mqueue_evictions_unnamed();
    }
    if options.activity_interval > 0 {
        stream = stream.reporting_activity(Duration::from_secs(options.activity_interval));
    }
    let writes_stdout = options.format != Format::None;
    // What already exists, after the probes are attached so that nothing born in between is
    // missed; events that raced with it are recognised by the engine (no duplicates, no ghosts).
    let inventory_started = Instant::now();
    let inventory_ts = monotonic_ns();
    let inventory =
        inventory::take_inventory_with_mqueues().context("taking the startup inventory")?;
    let inventory_ms = inventory_started.elapsed().as_millis() as u64;
    let (namespaces, objects) = inventory.existing();
    // Everything is new to the engine here; the inventory's own lines say more than its, and
    // carry the engine's generation of each inum where the kernel has no ns_id.
    let mut existing = Vec::new();
    stream
        .engine
        .observe_existing(inventory_ts, &namespaces, &objects, &mut existing);
    stream.engine.observe_existing_mqueues(&inventory.mqueues);
    let generations: HashMap<u32, u32> = existing
        .iter()
        .filter_map(|event| match event {
            Lifecycle::NsExists { ns, .. } | Lifecycle::ObjectExists { ns, .. } => {
                Some((ns.inum, ns.generation))
            }
            _ => None,
        })
        .collect();
    output::inventory::write_lines(&inventory, &mut stream.sink, &|inum| {
        generations.get(&inum).copied()
    })?;
    stream.counters.inventory_lines(&inventory);
    for ns in &inventory.namespaces {
        let reader = ns.processes.first().map(|process| {
            let tid = process.tids.as_ref().and_then(|tids| tids.first());
            (process.pid, tid.copied().unwrap_or(process.pid))
        });
        stream.know_limits(ns.inum, reader, ns.limits);
    }

    let release = kernel::release();
    let ready = AgentEvent::Ready {
        time: stream.now(),
        version: env!("CARGO_PKG_VERSION"),
        backend: probes.backend(),
        hooks: probes
            .hooks
            .iter()
            .map(|(hook, c)| (hook.as_str(), c.backend))
            .collect(),
        degraded: probes.degraded(),
        frees: probes.frees,
        frees_refused: &probes.frees_refused,
        kernel: &release,
        fallbacks: kernel::fallbacks(&offsets),
        programs: probes.attached,
        ns_id: offsets.ipc_ns_id != NO_OFFSET,
        host_ns: HOST_IPC_NS_INUM,
        ring_buffer_bytes: options.ring_buffer_bytes,
        pid: std::process::id(),
        inventory_namespaces: namespaces.len(),
        inventory_objects: objects.len(),
        inventory_ms,
        cgroup_hierarchy: cgroup_hierarchy.as_deref(),
        metrics_addr: metrics.as_ref().map(|metrics| metrics.addr.to_string()),
    };
    stream.write_agent(&ready)?;
    stream.start_kfree_check();

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
                stream.note_kfree_skipped(&probes)?;
                if stream.drain(ring.get_mut())? == SinkState::ReaderGone
                    || stream.report_lost(&probes)? == SinkState::ReaderGone
                    || stream.report_kfree_check()? == SinkState::ReaderGone
                    || stream.report_missed(&probes)? == SinkState::ReaderGone
                    || stream.resync_if_due(ring.get_mut())? == SinkState::ReaderGone
                    || stream.check_late_frees(ring.get_mut())? == SinkState::ReaderGone
                    || stream.check_mqueue_evictions()? == SinkState::ReaderGone
                    || stream.report_activity(probes.activity.as_mut(), false)?
                        == SinkState::ReaderGone
                    || (writes_stdout && stdout_reader_gone())
                {
                    break Ending::ReaderGone;
                }
                if let Some(metrics) = &metrics {
                    metrics.answer(|| stream.metrics_snapshot());
                }
                stream.release_memory_after_deaths();
            }
        }
    };

    // Count the skipped runs while the programs are there, then detach so nothing new
    // arrives, then drain what the probes already wrote.
    let missed = stream.report_missed(&probes)?;
    let kfree_skipped = probes.kfree_skipped()?;
    probes.detach();
    if missed == SinkState::ReaderGone {
        return Ok(());
    }
    match ending {
        // Nobody reads any more: there is nothing to report to.
        Ending::ReaderGone => Ok(()),
        Ending::Signal(signal) => {
            let mut ring = ring.into_inner();
            if stream.drain(&mut ring)? == SinkState::ReaderGone
                || stream.report_lost(&probes)? == SinkState::ReaderGone
                || stream.report_activity(probes.activity.as_mut(), true)? == SinkState::ReaderGone
            {
                return Ok(());
            }
            stream.write_stop(signal, kfree_skipped)?;
            stream.sink.flush()?;
            Ok(())
        }
    }
}
