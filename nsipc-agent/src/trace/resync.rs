//! Making the engine's state right again when records may have been missed: the
//! resynchronisation with a fresh inventory after lost records or skipped `kfree` runs, with
//! the records that race with it, and the look for segments whose free is late.

use std::{
    collections::HashSet,
    io::Write,
    time::{Duration, Instant},
};

use anyhow::Result;
use aya::maps::{MapData, RingBuf};

use super::{Stream, monotonic_ns};
use crate::{
    decode::{KernelEvent, decode},
    inventory,
    lifecycle::UNNAMED_EVICTION_WAIT_NS,
    lifecycle::{Lifecycle, Look},
    names::IpcObject,
    output::agent_events::{AgentEvent, ResyncCause},
    output::inventory::Found,
    output::sink::SinkState,
};

/// The shortest time between two resynchronisations after lost records.
const RESYNC_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest time between a resynchronisation and one that checks for frees the skipped
/// `kfree` runs may have hidden: skips come steadily under load, misses rarely if ever.
pub(super) const KFREE_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// How long after an inventory's end records still count as racing with it (see
/// [`Stream::resync_if_due`]): longer than a call is kept, by preemption, between its effect
/// and its return, where its record is made, even on a small machine with every core busy
/// (a preempted task waits for its turn for several scheduler slices). The wait only
/// happens after losses, at most once a second.
const RACING_SLACK: Duration = Duration::from_millis(100);

impl<W: Write> Stream<W> {
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
    /// [`Engine::resync`](crate::lifecycle::Engine::resync) lets them overrule it and they are
    /// applied after it. Applying them all after the reconciliation instead would replay, as
    /// news, a destroy the reconciliation had already reported as `unknown`; reconciling with
    /// an engine that lags the inventory would report as vanished what those records destroy
    /// or create.
    pub(super) fn resync_if_due(&mut self, ring: &mut RingBuf<MapData>) -> Result<SinkState> {
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
        for event in before {
            if self.apply_record(event)? == SinkState::ReaderGone {
                return Ok(SinkState::ReaderGone);
            }
        }
        let (namespaces, objects) = inventory.existing();
        self.derived.clear();
        let frees_only = after != ResyncCause::Lost;
        let look = Look {
            ts: t0,
            namespaces: &namespaces,
            objects: &objects,
        };
        let counts = self.engine.resync(
            look,
            frees_only,
            &racing,
            inventory::segment_attached,
            &mut self.derived,
        );
        self.counters.resync(after);
        // What it found is written as the inventory's own lines; indexed only when there is
        // some (an inventory can list a hundred thousand objects).
        let found = self
            .derived
            .iter()
            .any(|event| {
                matches!(
                    event,
                    Lifecycle::NsExists { .. } | Lifecycle::ObjectExists { .. }
                )
            })
            .then(|| Found::new(&inventory));
        let written = self.write_derived_found(found.as_ref())?;
        // A resync's batch can hold a destroy for every object on the host (after a mass death
        // whose frees were skipped: 66 020 lines, 7 MiB of capacity, in the memory bench),
        // and a Vec keeps its capacity: it is given back now, resyncs being rare.
        self.derived = Vec::new();
        if written == SinkState::ReaderGone
            || self.write_agent(&AgentEvent::Resync {
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
        for event in racing {
            if self.apply_record(event)? == SinkState::ReaderGone {
                return Ok(SinkState::ReaderGone);
            }
        }
        Ok(SinkState::Open)
    }

    /// Where the probes cannot name the queue an eviction was of: once such an eviction is
    /// left unexplained by an unlink, finds which unlinked queues are no longer open, and
    /// reports them destroyed by their last close.
    pub(super) fn check_mqueue_evictions(&mut self) -> Result<SinkState> {
        let before = monotonic_ns().saturating_sub(UNNAMED_EVICTION_WAIT_NS);
        let Some(looked_for) = self.engine.mqueues_to_look_for(before) else {
            return Ok(SinkState::Open);
        };
        let t0 = monotonic_ns();
        let open = inventory::mqueue::open_among(&looked_for);
        self.derived.clear();
        self.engine
            .mqueues_looked(&looked_for, &open, before, t0, &mut self.derived);
        self.write_derived()
    }

    /// Looks at the kernel for segments whose free is late ([`crate::free_check`]): those no
    /// longer listed in a namespace the inventory reached died unseen, and are reported
    /// destroyed (`late`) as of the inventory's start.
    pub(super) fn check_late_frees(&mut self, ring: &mut RingBuf<MapData>) -> Result<SinkState> {
        let now = Instant::now();
        if !self.free_check.may_look(now) {
            return Ok(SinkState::Open);
        }
        let due = self.free_check.due(&self.engine.awaiting_free(), now);
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
                    let ts = event.ts_ns;
                    if !self.is_kfree_check_record(&event) {
                        events.push(event);
                    }
                    if ts > until {
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
}
