//! [`Stream`]: it decodes each ring-buffer record, attributes its task to a container, applies
//! it to the lifecycle engine and writes the lines that result; after mass deaths it gives the
//! allocator's free memory back.

use std::{
    collections::HashMap,
    io::Write,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Result;
use aya::maps::{MapData, RingBuf};

use super::{activity::ActivityReports, counters::Counters};
use crate::activity::Known;
use crate::{
    allocator,
    attribution::Attribution,
    decode::{Body, DecodeError, KernelEvent, decode},
    filter::{Filter, FilterSpec},
    free_check::FreeCheck,
    inventory,
    kfree_check::KfreeCheck,
    lifecycle::{Engine, Lifecycle},
    limits::Limits,
    metrics::LineKind,
    output::agent_events::AgentEvent,
    output::fields::{Rfc3339, WallClock},
    output::inventory::Found,
    output::kernel_events::KernelEventJson,
    output::lifecycle_events::LifecycleJson,
    output::sink::{Format, JsonLines, SinkState},
};

/// The kernel records → JSON Lines path. `nsipc-bench json` measures it alone.
pub(crate) struct Stream<W: Write> {
    pub(crate) sink: JsonLines<W>,
    clock: WallClock,
    pub(super) counters: Counters,
    pub(super) engine: Engine,
    /// Which container each task is in.
    pub(super) attribution: Attribution,
    /// Which event lines are written (None: all).
    pub(super) filter: Option<Filter>,
    /// The activity reports, when asked for (`--activity-interval`).
    pub(super) activity: Option<ActivityReports>,
    raw: bool,
    /// Reused for every event: the hot path does not allocate.
    pub(super) derived: Vec<Lifecycle>,
    /// Records were lost since the last resynchronisation.
    pub(super) resync_pending: bool,
    /// `kfree` runs were skipped since the last resynchronisation.
    pub(super) kfree_check_pending: bool,
    /// The startup check of the frees the probes rely on, while it runs ([`crate::kfree_check`]),
    /// and the records lost before it started.
    pub(super) kfree_check: Option<KfreeCheck>,
    pub(super) lost_before_kfree_check: u64,
    /// That check failed: frees may go unseen at any time, so the state is checked against
    /// the kernel every [`KFREE_CHECK_INTERVAL`](super::resync::KFREE_CHECK_INTERVAL).
    pub(super) kfree_unverified: bool,
    pub(super) last_resync: Option<Instant>,
    pub(super) free_check: FreeCheck,
    /// The engine's largest population since the allocator last gave memory back, and its
    /// population at the previous tick.
    peak_population: usize,
    last_population: usize,
    /// Per live namespace the stream announced with its limits: a task that was in it (its
    /// creator, or a clone's child) and the limits last read there, for a failed get whose
    /// task is gone before the agent reads the namespace's limits. Only namespaces made while
    /// the agent ran, or found by the startup inventory, have an entry; dropped at their end.
    known_limits: HashMap<u32, KnownLimits>,
}

/// What the stream knows of a namespace's limits: see [`Stream::known_limits`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KnownLimits {
    /// (pid, tid) of a task seen in it.
    reader: Option<(u32, u32)>,
    limits: Option<Limits>,
    /// When `limits` were read for a failed get (not at the creation, nor by the inventory).
    failed_get_read: Option<Instant>,
}

/// How often, at most, a namespace's limits are read for its failed gets.
const FAILED_GET_READ_INTERVAL: Duration = Duration::from_millis(100);

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
            activity: None,
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
            known_limits: HashMap::new(),
        }
    }

    /// Attributes tasks to containers with `attribution` (without it, none is in one).
    pub(crate) fn attributing(mut self, attribution: Attribution) -> Self {
        self.attribution = attribution;
        self
    }

    /// Writes the lines in `format` (JSON unless told).
    pub(crate) fn formatting(mut self, format: Format) -> Self {
        self.sink = self.sink.formatting(format);
        self
    }

    /// Reports activity every `interval`.
    pub(crate) fn reporting_activity(mut self, interval: Duration) -> Self {
        self.activity = Some(ActivityReports::every(interval));
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
    pub(super) fn release_memory_after_deaths(&mut self) {
        let population = self.engine.population();
        let settled = population == self.last_population;
        self.last_population = population;
        self.peak_population = self.peak_population.max(population);
        if settled && fell_enough(self.peak_population, population) {
            allocator::release_freed_memory();
            self.peak_population = population;
        }
    }

    pub(super) fn now(&self) -> Rfc3339 {
        Rfc3339(SystemTime::now())
    }

    /// Decodes one ring-buffer record and writes its line.
    pub(crate) fn record(&mut self, bytes: &[u8]) -> Result<SinkState> {
        match decode(bytes) {
            Ok(event) => self.apply_record(event),
            Err(err) => self.decode_error(&err),
        }
    }

    /// Whether `event` is a record of a startup kfree check (this agent's or another's), which
    /// the stream leaves out.
    pub(super) fn is_kfree_check_record(&mut self, event: &KernelEvent) -> bool {
        match &mut self.kfree_check {
            Some(check) => check.is_own(event),
            None => KfreeCheck::is_checking_thread(event),
        }
    }

    /// Counts one decoded record and writes what it means.
    pub(super) fn apply_record(&mut self, mut event: KernelEvent) -> Result<SinkState> {
        if self.is_kfree_check_record(&event) {
            return Ok(SinkState::Open);
        }
        self.counters.events += 1;
        match event.body {
            // Frees run in a kworker or an RCU callback; a queue's eviction in whatever task
            // dropped its last reference, of no use to say where it lived.
            Body::NsFreed | Body::ShmFreed { .. } | Body::MqueueEvicted { .. } => {}
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
    pub(super) fn decode_error(&mut self, error: &DecodeError) -> Result<SinkState> {
        self.counters.decode_errors += 1;
        let total = self.counters.decode_errors;
        let event = AgentEvent::DecodeError {
            time: self.now(),
            error: error.to_string(),
            total,
        };
        self.write_agent(&event)
    }

    /// Decodes and writes everything waiting in the ring buffer.
    pub(super) fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Result<SinkState> {
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
        {
            self.counters.line(LineKind::of_kernel(&event.body));
            if self.sink.write(&KernelEventJson {
                event,
                clock: &self.clock,
                attribution: &self.attribution,
            })? == SinkState::ReaderGone
            {
                return Ok(SinkState::ReaderGone);
            }
        }
        self.derived.clear();
        let limits = self.limits_for_failed_get(event);
        self.engine
            .apply_with_limits(event, limits, &mut self.derived);
        self.read_created_limits();
        self.write_derived()
    }

    /// Keeps the limits the startup inventory read in each namespace, for failed gets whose
    /// task is gone before the agent can read them again.
    /// `reader`: (pid, tid) of a task in it.
    pub(crate) fn know_limits(
        &mut self,
        inum: u32,
        reader: Option<(u32, u32)>,
        limits: Option<Limits>,
    ) {
        self.known_limits.insert(
            inum,
            KnownLimits {
                reader,
                limits,
                failed_get_read: None,
            },
        );
    }

    /// For a get or an `mq_open` that failed with `ENOSPC` or `EINVAL` (what limits cause), the
    /// limits of its
    /// namespace now: read through the failing task if it is still there (within about 50 ms
    /// of the failure, when the record is read), else through a task known to be in it (its
    /// creator), else the last values read there (at its creation or by the inventory).
    /// Read lazily, here, because a limit is what the failure needs, and a program can lower
    /// one at any time after its namespace is made (`echo 2 > /proc/sys/kernel/msgmni`).
    ///
    /// A storm of such failures (a program retrying its msgget) reads a namespace at most every
    /// [`FAILED_GET_READ_INTERVAL`]: each read costs a thread and a setns (about 0.1 ms), and
    /// the values read for the previous failure serve meanwhile. Values read at the creation
    /// never do (the creator may have lowered a limit since).
    fn limits_for_failed_get(&mut self, event: &KernelEvent) -> Option<Limits> {
        let (Body::Get {
            result: Err(errno), ..
        }
        | Body::MqueueOpen {
            result: Err(errno), ..
        }) = event.body
        else {
            return None;
        };
        if errno != libc::ENOSPC && errno != libc::EINVAL {
            return None;
        }
        let inum = event.ns.inum;
        let known = self.known_limits.get(&inum).copied().unwrap_or_default();
        if let (Some(limits), Some(at)) = (known.limits, known.failed_get_read)
            && at.elapsed() < FAILED_GET_READ_INTERVAL
        {
            return Some(limits);
        }
        let fresh =
            inventory::read_limits_of_task(event.task.pid, event.task.tid, inum).or_else(|| {
                known
                    .reader
                    .and_then(|(pid, tid)| inventory::read_limits_of_task(pid, tid, inum))
            });
        if let Some(limits) = fresh {
            let entry = self.known_limits.entry(inum).or_default();
            entry.limits = Some(limits);
            entry.failed_get_read = Some(Instant::now());
        }
        fresh.or(known.limits)
    }

    /// The limits last read in namespace `inum` (at its creation, by the startup inventory,
    /// or for a failed get), if any.
    pub(crate) fn limits_of(&self, inum: u32) -> Option<Limits> {
        self.known_limits.get(&inum).and_then(|known| known.limits)
    }

    /// Reads the limits of the namespaces whose `ipc_ns.create` the engine just derived, through
    /// their creator (or a clone's child).
    fn read_created_limits(&mut self) {
        for event in &mut self.derived {
            if let Lifecycle::NsCreate {
                task,
                ns,
                child_pid,
                limits,
                ..
            } = event
            {
                // A clone's child: CLONE_NEWIPC excludes CLONE_THREAD, so its tid is its pid.
                let reader = match child_pid {
                    Some(child) => (*child, *child),
                    None => (task.pid, task.tid),
                };
                let read = inventory::read_limits_of_task(reader.0, reader.1, ns.inum);
                *limits = read.map(Box::new);
                self.known_limits.insert(
                    ns.inum,
                    KnownLimits {
                        reader: Some(reader),
                        limits: read,
                        failed_get_read: None,
                    },
                );
            }
        }
    }

    /// Writes the lifecycle events the engine just derived.
    pub(super) fn write_derived(&mut self) -> Result<SinkState> {
        self.write_derived_found(None)
    }

    /// Writes the lifecycle events the engine derived from a resynchronisation with an
    /// inventory, `found`: its `exists` events as that inventory's own lines, which is how the
    /// startup inventory writes them (one shape per event name).
    pub(super) fn write_derived_found(&mut self, found: Option<&Found<'_>>) -> Result<SinkState> {
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
            if let Lifecycle::NsDestroy { ns, .. } = lifecycle {
                self.known_limits.remove(&ns.inum);
            }
            if let (
                Some(reports),
                Lifecycle::ObjectDestroy {
                    ns,
                    object,
                    id,
                    key,
                    ..
                },
            ) = (&mut self.activity, lifecycle)
            {
                reports.destroyed(*object, *id, Known { ns: *ns, key: *key });
            }
            if let Some(filter) = &mut self.filter
                && !filter.lifecycle(lifecycle, &self.attribution)
            {
                continue;
            }
            self.counters.line(LineKind::of_lifecycle(lifecycle));
            let state = match found.and_then(|found| found.line(lifecycle)) {
                Some(line) => self.sink.write(&line)?,
                None => {
                    debug_assert!(
                        !matches!(
                            lifecycle,
                            Lifecycle::NsExists { .. } | Lifecycle::ObjectExists { .. }
                        ),
                        "an exists event without its inventory entry: {lifecycle:?}"
                    );
                    self.sink.write(&LifecycleJson {
                        event: lifecycle,
                        clock: &self.clock,
                        attribution: &self.attribution,
                    })?
                }
            };
            if state == SinkState::ReaderGone {
                return Ok(SinkState::ReaderGone);
            }
        }
        Ok(SinkState::Open)
    }

    pub(super) fn write_agent(&mut self, event: &AgentEvent<'_>) -> Result<SinkState> {
        self.counters.line(LineKind::of_agent(event));
        Ok(self.sink.write(event)?)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::Value;

    use super::*;
    use crate::{
        inventory::{
            FdHolder, Inventory, IpcPerm, NamespaceInfo, ObjectDetail, ObjectInfo, ProcessInfo,
        },
        lifecycle::Look,
    };

    /// What a resynchronisation finds is written as the startup inventory writes it: its
    /// `ipc_ns.exists` with `processes`, `containers` and `held_by`, its `msg.exists` with the
    /// owner and mode, each with the `time` it was seen, not a thinner line of the same name.
    #[test]
    fn what_a_resync_finds_is_written_as_the_inventory_writes_it() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let inventory = Inventory {
            namespaces: vec![NamespaceInfo {
                inum: 4026532177,
                ns_id: None,
                seen_at: at,
                processes: vec![ProcessInfo {
                    pid: 42,
                    tids: None,
                    comm: "sleep".into(),
                    uid: 0,
                    container: None,
                }],
                container_cgroups: Vec::new(),
                fds: vec![FdHolder {
                    pid: 50,
                    comm: "sh".into(),
                    fd: 3,
                }],
                mounts: Vec::new(),
                limits: None,
            }],
            objects: vec![ObjectInfo {
                ns: 4026532177,
                ns_id: None,
                seen_at: at,
                perm: IpcPerm {
                    id: 0,
                    key: 0x5eed,
                    uid: 1000,
                    gid: 100,
                    cuid: 1000,
                    cgid: 100,
                    mode: 0o600,
                },
                detail: ObjectDetail::Msg {
                    cbytes: 0,
                    qnum: 0,
                    qbytes: Some(16384),
                },
            }],
            unreadable: Vec::new(),
            mqueues: Vec::new(),
            mqueues_unlisted: Vec::new(),
        };
        let mut stream = Stream::new(Vec::new(), false);
        let (namespaces, objects) = inventory.existing();
        stream.derived.clear();
        let look = Look {
            ts: 5_000,
            namespaces: &namespaces,
            objects: &objects,
        };
        let counts = stream
            .engine
            .resync(look, false, &[], |_, _, _| true, &mut stream.derived);
        assert_eq!((counts.namespaces_found, counts.objects_found), (1, 1));
        stream
            .write_derived_found(Some(&Found::new(&inventory)))
            .unwrap();
        stream.sink.flush().unwrap();
        let lines: Vec<Value> = std::str::from_utf8(stream.sink.get_ref())
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let names: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
        assert_eq!(names, ["ipc_ns.exists", "msg.exists"]);
        let time = "2023-11-14T22:13:20.000000000Z";
        let ns = &lines[0];
        assert_eq!(ns["time"], time, "{ns}");
        assert_eq!(ns["ns_gen"], 1, "{ns}");
        assert_eq!(ns["processes"][0]["pid"], 42, "{ns}");
        assert_eq!(ns["containers"], serde_json::json!([]), "{ns}");
        assert_eq!(ns["held_by"]["fds"][0]["fd"], 3, "{ns}");
        let msg = &lines[1];
        assert_eq!(msg["time"], time, "{msg}");
        assert_eq!(msg["ns_gen"], 1, "{msg}");
        assert_eq!(msg["uid"], 1000, "{msg}");
        assert_eq!(msg["mode_octal"], "600", "{msg}");
        assert_eq!(msg["qbytes"], 16384, "{msg}");
    }

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
