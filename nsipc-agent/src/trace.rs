//! `nsipc-agent trace`: load, attach, and stream events until a signal or the reader leaves.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::Write,
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use nsipc_common::{HOST_IPC_NS_INUM, NO_OFFSET};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval},
};

use crate::{
    agent_events::{AgentEvent, ResyncCause},
    attribution::{Attribution, CgroupHierarchy, attributed_hierarchy},
    containers::MetadataRoots,
    decode::{Body, DecodeError, KernelEvent, decode},
    filter::{Filter, FilterSpec},
    free_check::FreeCheck,
    inventory, kernel,
    kfree_check::KfreeCheck,
    lifecycle::{Engine, Lifecycle, LifecycleJson},
    names::IpcObject,
    probes::{Backend, KfreeCallers, LoadOptions, Probes},
    render::{KernelEventJson, Rfc3339, WallClock, clock_ns, kind_name},
    sink::{JsonLines, SinkState, stdout_reader_gone},
    snapshot,
    stop_watchdog::{self, WatchedStdout},
};

/// How often the ring buffer is drained when no forced wakeup came: probes write without
/// waking the reader, so this bounds the latency of a quiet stream.
pub(crate) const IDLE_POLL: Duration = Duration::from_millis(50);

/// The shortest time between two resynchronisations after lost records.
const RESYNC_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest time between a resynchronisation and one that checks for frees the skipped
/// `kfree` runs may have hidden: skips come steadily under load, misses rarely if ever.
const KFREE_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// How long after an inventory's end records still count as racing with it (see
/// [`Stream::resync_if_due`]): longer than a call is kept, by preemption, between its effect
/// and its return, where its record is made, even on a small machine with every core busy
/// (a preempted task waits for its turn for several scheduler slices). The wait only
/// happens after losses, at most once a second.
const RACING_SLACK: Duration = Duration::from_millis(100);

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
}

/// Counts reported in `agent.stop`.
#[derive(Default)]
struct Counters {
    events: u64,
    lost_reported: u64,
    /// `lost_reported` per slot of the probes' `LOST` map (per record kind).
    lost_reported_per_slot: Vec<u64>,
    missed_reported: u64,
    decode_errors: u64,
    /// `late: true` destroys written: segments and namespaces whose free went unseen.
    late_destroys: u64,
    /// Skipped `kfree` runs already answered by a resynchronisation being asked for.
    kfree_skipped_seen: u64,
}

/// The kernel records → JSON Lines path. `nsipc-agent bench-json` measures it alone.
pub(crate) struct Stream<W: Write> {
    pub(crate) sink: JsonLines<W>,
    clock: WallClock,
    counters: Counters,
    engine: Engine,
    /// Which container each task is in.
    attribution: Attribution,
    /// Which event lines are written (None: all).
    filter: Option<Filter>,
    raw: bool,
    /// Reused for every event: the hot path does not allocate.
    derived: Vec<Lifecycle>,
    /// Records were lost since the last resynchronisation.
    resync_pending: bool,
    /// `kfree` runs were skipped since the last resynchronisation.
    kfree_check_pending: bool,
    /// The startup check of the frees the probes rely on, while it runs ([`crate::kfree_check`]),
    /// and the records lost before it started.
    kfree_check: Option<KfreeCheck>,
    lost_before_kfree_check: u64,
    /// That check failed: frees may go unseen at any time, so the state is checked against
    /// the kernel every [`KFREE_CHECK_INTERVAL`].
    kfree_unverified: bool,
    last_resync: Option<Instant>,
    free_check: FreeCheck,
    /// The engine's largest population since the allocator last gave memory back, and its
    /// population at the previous tick.
    peak_population: usize,
    last_population: usize,
}

/// Deaths, net of births, after which the allocator's free memory is given back to the system
/// (a namespace or an object each: with tens of bytes apiece, about a megabyte).
const RELEASE_AFTER_DEATHS: usize = 10_000;

/// Whether a population fell far enough from its peak for memory to be given back.
fn fell_enough(peak: usize, population: usize) -> bool {
    peak - population >= RELEASE_AFTER_DEATHS && population < peak / 2
}

impl<W: Write> Stream<W> {
    /// `raw`: also write the kernel events the lifecycle events come from.
    pub(crate) fn new(out: W, raw: bool) -> Self {
        Self {
            sink: JsonLines::new(out),
            clock: WallClock::now(),
            counters: Counters::default(),
            engine: Engine::new(std::process::id()),
            attribution: Attribution::none(),
            filter: None,
            raw,
            derived: Vec::new(),
            resync_pending: false,
            kfree_check_pending: false,
            kfree_check: None,
            lost_before_kfree_check: 0,
            kfree_unverified: false,
            last_resync: None,
            free_check: FreeCheck::default(),
            peak_population: 0,
            last_population: 0,
        }
    }

    /// Attributes tasks to containers with `attribution` (without it, none is in one).
    pub(crate) fn attributing(mut self, attribution: Attribution) -> Self {
        self.attribution = attribution;
        self
    }

    /// Writes only the lines `spec` selects.
    pub(crate) fn filtering(mut self, spec: FilterSpec) -> Self {
        self.filter = (!spec.is_empty()).then(|| Filter::new(spec));
        self
    }

    /// Gives the allocator's free memory back to the system once the engine's population has
    /// fallen by [`RELEASE_AFTER_DEATHS`] and by half, and stopped falling (for one tick: once,
    /// after the last of a mass death, not halfway): each dead namespace frees its own small
    /// object map, and glibc keeps such freed heap memory for reuse, so the agent's RSS would
    /// stay at its high-water mark. A population that holds steady, however many come and go
    /// (a storm), never triggers it.
    fn release_memory_after_deaths(&mut self) {
        let population = self.engine.population();
        let settled = population == self.last_population;
        self.last_population = population;
        self.peak_population = self.peak_population.max(population);
        if settled && fell_enough(self.peak_population, population) {
            kernel::release_freed_memory();
            self.peak_population = population;
        }
    }

    fn now(&self) -> Rfc3339 {
        Rfc3339(SystemTime::now())
    }

    /// Decodes one ring-buffer record and writes its line.
    pub(crate) fn record(&mut self, bytes: &[u8]) -> Result<SinkState> {
        match decode(bytes) {
            Ok(event) => self.apply_record(&event),
            Err(err) => self.decode_error(&err),
        }
    }

    /// Whether `event` is a record of a startup kfree check (this agent's or another's), which
    /// the stream leaves out.
    fn is_kfree_check_record(&mut self, event: &KernelEvent) -> bool {
        match &mut self.kfree_check {
            Some(check) => check.is_own(event),
            None => KfreeCheck::is_checking_thread(event),
        }
    }

    /// Counts one decoded record and writes what it means.
    fn apply_record(&mut self, event: &KernelEvent) -> Result<SinkState> {
        if self.is_kfree_check_record(event) {
            return Ok(SinkState::Open);
        }
        self.counters.events += 1;
        let mut event = *event;
        match event.body {
            Body::NsFreed | Body::ShmFreed { .. } => {}
            // Learnt now, while the container is there to read its name from.
            Body::CgroupMkdir { cgroup } => {
                self.attribution.resolve(cgroup, 0);
            }
            Body::CgroupRmdir {
                cgroup,
                ref mut container,
            } => *container = self.attribution.resolve(cgroup, 0),
            _ => {
                let task = &mut event.task;
                self.attribution.note_process(task, event.ts_ns);
                task.container = self.attribution.resolve(task.cgroup, task.tid);
                if !task.container.is_some()
                    && matches!(event.body, Body::Setns { result: Ok(_), .. })
                {
                    task.container = self.attribution.current(task.tid);
                }
            }
        }
        self.write_kernel_event(&event)
    }

    /// Counts and reports a record that could not be decoded.
    fn decode_error(&mut self, error: &DecodeError) -> Result<SinkState> {
        self.counters.decode_errors += 1;
        let total = self.counters.decode_errors;
        let event = AgentEvent::DecodeError {
            time: self.now(),
            error: error.to_string(),
            total,
        };
        Ok(self.sink.write(&event)?)
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

    /// Writes what one kernel event means (and the event itself with `--raw`).
    fn write_kernel_event(&mut self, event: &KernelEvent) -> Result<SinkState> {
        if self.raw
            && self
                .filter
                .as_mut()
                .is_none_or(|filter| filter.raw(event, &self.attribution))
            && self.sink.write(&KernelEventJson {
                event,
                clock: &self.clock,
                attribution: &self.attribution,
            })? == SinkState::ReaderGone
        {
            return Ok(SinkState::ReaderGone);
        }
        self.derived.clear();
        self.engine.apply(event, &mut self.derived);
        self.write_derived()
    }

    /// Writes the lifecycle events the engine just derived.
    fn write_derived(&mut self) -> Result<SinkState> {
        self.counters.late_destroys += self
            .derived
            .iter()
            .filter(|event| {
                matches!(
                    event,
                    Lifecycle::ObjectDestroy { late: true, .. }
                        | Lifecycle::NsDestroy { late: true, .. }
                )
            })
            .count() as u64;
        for lifecycle in &self.derived {
            if let Some(filter) = &mut self.filter
                && !filter.lifecycle(lifecycle, &self.attribution)
            {
                continue;
            }
            let json = LifecycleJson {
                event: lifecycle,
                clock: &self.clock,
                attribution: &self.attribution,
            };
            if self.sink.write_with(|buf| json.write_line(buf))? == SinkState::ReaderGone {
                return Ok(SinkState::ReaderGone);
            }
        }
        Ok(SinkState::Open)
    }

    /// Reports records lost since the last report (`agent.lost`). The engine's state may be
    /// wrong after them: [`Self::resync_if_due`] makes it right again.
    fn report_lost(&mut self, probes: &Probes) -> Result<SinkState> {
        let per_slot = probes.lost_per_slot()?;
        let total: u64 = per_slot.iter().sum();
        let reported = self.counters.lost_reported;
        let previous = &mut self.counters.lost_reported_per_slot;
        previous.resize(per_slot.len(), 0);
        let kinds: BTreeMap<&'static str, u64> = per_slot
            .iter()
            .zip(previous.iter())
            .enumerate()
            .filter(|(_, (now, before))| now > before)
            .map(|(slot, (now, before))| (kind_name(slot as u32), now - before))
            .collect();
        previous.copy_from_slice(&per_slot);
        if total > reported {
            self.engine.records_lost();
        }
        self.counters.lost_reported = total.max(reported);
        self.report_increase(total, reported, |time, count, total| AgentEvent::Lost {
            time,
            count,
            total,
            kinds,
        })
    }

    /// Reports runs of the probes the kernel skipped since the last report (`agent.missed`, see
    /// [`Probes::missed_total`]): each may have been a record, so the state is resynchronised
    /// as after lost records.
    fn report_missed(&mut self, probes: &Probes) -> Result<SinkState> {
        let total = probes.missed_total()?;
        let reported = self.counters.missed_reported;
        if total > reported {
            self.engine.records_lost();
        }
        self.counters.missed_reported = total.max(reported);
        self.report_increase(total, reported, |time, count, total| AgentEvent::Missed {
            time,
            count,
            total,
        })
    }

    /// Asks for a resynchronisation (at most every [`KFREE_CHECK_INTERVAL`]) when the kernel
    /// skipped runs of the `kfree` copies: each skip was run by the other copy, but tracked
    /// frees have been seen to go unreported under such load, and a namespace's free is the
    /// only report of its end (a segment's has [`crate::free_check`]).
    fn note_kfree_skipped(&mut self, probes: &Probes) -> Result<()> {
        let total = probes.kfree_skipped()?;
        if total > self.counters.kfree_skipped_seen || self.kfree_unverified {
            self.counters.kfree_skipped_seen = total;
            self.kfree_check_pending = true;
        }
        Ok(())
    }

    /// Starts the startup check of the frees the probes rely on; the probes must be attached.
    fn start_kfree_check(&mut self) {
        self.lost_before_kfree_check = self.counters.lost_reported;
        self.kfree_check = Some(KfreeCheck::start());
    }

    /// Writes `agent.kfree_check` once the startup check has ended; if it failed, the state is
    /// from then on checked against the kernel every [`KFREE_CHECK_INTERVAL`].
    fn report_kfree_check(&mut self) -> Result<SinkState> {
        let Some(outcome) = self
            .kfree_check
            .as_mut()
            .and_then(|check| check.outcome(Instant::now()))
        else {
            return Ok(SinkState::Open);
        };
        // Records lost meanwhile (a full ring buffer) may have been the frees: the check
        // proves nothing, and the resynchronisations after losses already apply.
        let inconclusive =
            !outcome.passed() && self.counters.lost_reported > self.lost_before_kfree_check;
        let error = if inconclusive {
            Some("records were lost while it ran (agent.lost): inconclusive")
        } else {
            outcome.error.as_deref()
        };
        if !outcome.passed() && !inconclusive {
            self.kfree_unverified = true;
            eprintln!(
                "nsipc-agent: warning: the probes did not see the frees of a test namespace \
                 and segment (see agent.kfree_check): ends seen only through them may be \
                 reported late, by a resynchronisation every {} s",
                KFREE_CHECK_INTERVAL.as_secs()
            );
        }
        let event = AgentEvent::KfreeCheck {
            time: self.now(),
            ok: outcome.passed(),
            namespace_free_seen: outcome.namespace_free_seen,
            segment_free_seen: outcome.segment_free_seen,
            ms: outcome.elapsed.as_millis() as u64,
            error,
        };
        Ok(self.sink.write(&event)?)
    }

    /// Writes `event(time, total - reported, total)` and asks for a resynchronisation when a
    /// counter of possibly lost records went up.
    fn report_increase(
        &mut self,
        total: u64,
        reported: u64,
        event: impl FnOnce(Rfc3339, u64, u64) -> AgentEvent<'static>,
    ) -> Result<SinkState> {
        if total <= reported {
            return Ok(SinkState::Open);
        }
        self.resync_pending = true;
        let event = event(self.now(), total - reported, total);
        Ok(self.sink.write(&event)?)
    }

    /// Makes the engine's state equal to a fresh inventory after lost records, at most once per
    /// [`RESYNC_INTERVAL`]: an inventory reads all of /proc and enters every namespace, which
    /// a storm that keeps the ring buffer full must not turn into a loop.
    ///
    /// The kernel goes on while the inventory reads, and records wait in the ring buffer, so
    /// the engine and the inventory must be compared at the same moment. The ring buffer is
    /// drained just before the inventory's start, `t0`; after it, what came meanwhile is
    /// drained too and split by the records' `ts_ns` (CLOCK_MONOTONIC, as `t0`): a record from
    /// before `t0` (committed late, or after the first drain) describes what the inventory
    /// already reflects, so it is applied first, like the rest of the past; the others race
    /// with the inventory, which may or may not reflect each of them, so
    /// [`Engine::resync`] lets them overrule it and they are applied after it. Applying them
    /// all after the reconciliation instead would replay, as news, a destroy the
    /// reconciliation had already reported as `unknown`; reconciling with an engine that lags
    /// the inventory would report as vanished what those records destroy or create.
    fn resync_if_due(&mut self, ring: &mut RingBuf<MapData>) -> Result<SinkState> {
        let since_last = |interval| self.last_resync.is_none_or(|at| at.elapsed() >= interval);
        let after = if self.resync_pending && since_last(RESYNC_INTERVAL) {
            ResyncCause::Lost
        } else if self.kfree_check_pending && since_last(KFREE_CHECK_INTERVAL) {
            if self.kfree_unverified {
                ResyncCause::KfreeUnverified
            } else {
                ResyncCause::KfreeSkipped
            }
        } else {
            return Ok(SinkState::Open);
        };
        self.resync_pending = false;
        self.kfree_check_pending = false;
        self.last_resync = Some(Instant::now());
        if self.drain(ring)? == SinkState::ReaderGone {
            return Ok(SinkState::ReaderGone);
        }
        let t0 = monotonic_ns();
        let inventory = match inventory::take_inventory() {
            Ok(inventory) => inventory,
            Err(err) => {
                // The state stays as the records made it, and the look is asked for again:
                // one failed inventory (a race with the host) must not end the stream.
                eprintln!(
                    "nsipc-agent: warning: taking an inventory to resynchronise: {err:#} \
                     (trying again)"
                );
                self.resync_pending |= after == ResyncCause::Lost;
                self.kfree_check_pending |= after != ResyncCause::Lost;
                return Ok(SinkState::Open);
            }
        };
        let t1 = monotonic_ns();
        // A call's record is made at its return, after its effect: one that took effect
        // before the inventory read its namespace but returns a little later (preempted in
        // between) is still caught as racing, rather than left to contradict the
        // reconciliation afterwards.
        let settled = t1 + RACING_SLACK.as_nanos() as u64;
        std::thread::sleep(Duration::from_nanos(settled.saturating_sub(monotonic_ns())));
        let Some(late) = self.collect(ring, monotonic_ns())? else {
            return Ok(SinkState::ReaderGone);
        };
        let (before, racing): (Vec<KernelEvent>, Vec<KernelEvent>) =
            late.into_iter().partition(|event| event.ts_ns < t0);
        for event in &before {
            if self.apply_record(event)? == SinkState::ReaderGone {
                return Ok(SinkState::ReaderGone);
            }
        }
        let (namespaces, objects) = inventory.existing();
        self.derived.clear();
        let frees_only = after != ResyncCause::Lost;
        let counts = self.engine.resync(
            t0,
            frees_only,
            &namespaces,
            &objects,
            &racing,
            &mut self.derived,
        );
        if self.write_derived()? == SinkState::ReaderGone
            || self.sink.write(&AgentEvent::Resync {
                time: self.now(),
                after,
                namespaces_gone: counts.namespaces_gone,
                namespaces_found: counts.namespaces_found,
                objects_gone: counts.objects_gone,
                objects_found: counts.objects_found,
            })? == SinkState::ReaderGone
        {
            return Ok(SinkState::ReaderGone);
        }
        for event in &racing {
            if self.apply_record(event)? == SinkState::ReaderGone {
                return Ok(SinkState::ReaderGone);
            }
        }
        Ok(SinkState::Open)
    }

    /// Looks at the kernel for segments whose free is late ([`crate::free_check`]): those no
    /// longer listed in a namespace the inventory reached died unseen, and are reported
    /// destroyed (`late`) as of the inventory's start.
    fn check_late_frees(&mut self, ring: &mut RingBuf<MapData>) -> Result<SinkState> {
        let now = Instant::now();
        if !self.free_check.may_look(now) {
            return Ok(SinkState::Open);
        }
        let due = self.free_check.due(&self.engine.removed_unattached(), now);
        if due.is_empty() {
            return Ok(SinkState::Open);
        }
        let t0 = monotonic_ns();
        let inventory = match inventory::take_inventory() {
            Ok(inventory) => inventory,
            Err(err) => {
                // The segments stay due: the next look tries again.
                eprintln!(
                    "nsipc-agent: warning: taking an inventory to look for late frees: {err:#} \
                     (trying again)"
                );
                return Ok(SinkState::Open);
            }
        };
        // What the probes wrote meanwhile goes first: a free that came after all is not late.
        if self.drain(ring)? == SinkState::ReaderGone {
            return Ok(SinkState::ReaderGone);
        }
        let (namespaces, objects) = inventory.existing();
        let reached: HashSet<u32> = namespaces.iter().map(|ns| ns.inum).collect();
        let listed: HashSet<(u32, i32)> = objects
            .iter()
            .filter(|object| object.object == IpcObject::Shm)
            .map(|object| (object.ns, object.id))
            .collect();
        self.derived.clear();
        for segment in due {
            if reached.contains(&segment.0) && !listed.contains(&segment) {
                self.engine
                    .found_gone(segment.0, segment.1, t0, &mut self.derived);
            } else {
                self.free_check.still_there(segment, now);
            }
        }
        self.write_derived()
    }

    /// Decodes what waits in the ring buffer without applying it, up to the first record made
    /// after `until` (CLOCK_MONOTONIC ns): a storm refills the ring buffer as fast as it is
    /// read, and what comes after `until` is the normal loop's. Undecodable records are
    /// reported at once. None when the reader went away.
    fn collect(
        &mut self,
        ring: &mut RingBuf<MapData>,
        until: u64,
    ) -> Result<Option<Vec<KernelEvent>>> {
        let mut events = Vec::new();
        while let Some(item) = ring.next() {
            match decode(&item) {
                Ok(event) => {
                    if !self.is_kfree_check_record(&event) {
                        events.push(event);
                    }
                    if event.ts_ns > until {
                        break;
                    }
                }
                Err(err) => {
                    if self.decode_error(&err)? == SinkState::ReaderGone {
                        return Ok(None);
                    }
                }
            }
        }
        Ok(Some(events))
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
    // First: a stop signal that comes while the probes load (seconds on a slow machine) is
    // kept for the loop, which then stops at once, detaching and ending with `agent.stop`,
    // rather than killing the process half-loaded.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    kernel::check_privileges()?;
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
    })?;
    kernel::release_freed_memory();
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
    let mut stream = Stream::new(WatchedStdout(std::io::stdout().lock()), options.raw)
        .attributing(attribution)
        .filtering(options.filter);
    // What already exists, after the probes are attached so that nothing born in between is
    // missed; events that raced with it are recognised by the engine (no duplicates, no ghosts).
    let inventory_started = Instant::now();
    let inventory_ts = monotonic_ns();
    let inventory = inventory::take_inventory().context("taking the startup inventory")?;
    let inventory_ms = inventory_started.elapsed().as_millis() as u64;
    let (namespaces, objects) = inventory.existing();
    // Everything is new to the engine here; the inventory's own lines say more than its, and
    // carry the engine's generation of each inum where the kernel has no ns_id.
    let mut existing = Vec::new();
    stream
        .engine
        .observe_existing(inventory_ts, &namespaces, &objects, &mut existing);
    let generations: HashMap<u32, u32> = existing
        .iter()
        .filter_map(|event| match event {
            Lifecycle::NsExists { ns, .. } | Lifecycle::ObjectExists { ns, .. } => {
                Some((ns.inum, ns.generation))
            }
            _ => None,
        })
        .collect();
    snapshot::write_lines(&inventory, &mut stream.sink, &|inum| {
        generations.get(&inum).copied()
    })?;

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
        programs: probes.attached,
        ns_id: offsets.ipc_ns_id != NO_OFFSET,
        host_ns: HOST_IPC_NS_INUM,
        ring_buffer_bytes: options.ring_buffer_bytes,
        pid: std::process::id(),
        inventory_namespaces: namespaces.len(),
        inventory_objects: objects.len(),
        inventory_ms,
        cgroup_hierarchy: cgroup_hierarchy.as_deref(),
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
                    || stdout_reader_gone()
                {
                    break Ending::ReaderGone;
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
            {
                return Ok(());
            }
            let counters = &stream.counters;
            let stop = AgentEvent::Stop {
                time: stream.now(),
                reason: signal,
                events: counters.events,
                lost: counters.lost_reported,
                missed: counters.missed_reported,
                decode_errors: counters.decode_errors,
                late_destroys: counters.late_destroys,
                kfree_skipped,
            };
            stream.write_agent(&stop)?;
            stream.sink.flush()?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_given_back_after_mass_deaths_only() {
        // A storm: a few alive at a time, however many come and go.
        assert!(!fell_enough(3, 0));
        // Half of a small population, or a tenth of a large one: not worth it.
        assert!(!fell_enough(15_000, 6_000));
        assert!(!fell_enough(110_000, 90_000));
        // 10 000 namespaces and their 100 000 objects dying, seen at two ticks.
        assert!(fell_enough(110_001, 50_000));
        assert!(fell_enough(50_000, 1));
    }
}
