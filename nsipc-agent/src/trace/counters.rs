//! The counts the stream keeps of itself and the lines that report them: records lost
//! (`agent.lost`), probe runs the kernel skipped (`agent.missed`), and the totals in
//! `agent.stop`. Both losses ask for a resynchronisation ([`super::resync`]). The same counts,
//! with lines by kind and the engine's gauges, are what `/metrics` shows ([`crate::metrics`]).

use std::{collections::BTreeMap, io::Write};

use anyhow::Result;

use super::Stream;
use crate::{
    inventory::Inventory,
    metrics::{FlowMetrics, LineKind, NamespaceMetrics, ObjectLimits, Snapshot},
    output::agent_events::{AgentEvent, ResyncCause},
    output::fields::Rfc3339,
    output::kernel_events::kind_name,
    output::sink::SinkState,
    probes::Probes,
};

/// The `after` of `agent.resync`, in [`Counters::resyncs`] order.
const RESYNC_CAUSES: [(ResyncCause, &str); 3] = [
    (ResyncCause::Lost, "lost"),
    (ResyncCause::KfreeSkipped, "kfree_skipped"),
    (ResyncCause::KfreeUnverified, "kfree_unverified"),
];

/// Counts reported in `agent.stop` and `/metrics`.
pub(super) struct Counters {
    /// Lines written, by [`LineKind`]: one increment per line, the metrics' only cost on the
    /// hot path.
    pub(super) lines: [u64; LineKind::COUNT],
    /// `agent.resync` lines by cause ([`RESYNC_CAUSES`]).
    pub(super) resyncs: [u64; RESYNC_CAUSES.len()],
    pub(super) events: u64,
    pub(super) lost_reported: u64,
    /// `lost_reported` per slot of the probes' `LOST` map (per record kind).
    lost_reported_per_slot: Vec<u64>,
    missed_reported: u64,
    pub(super) decode_errors: u64,
    /// `late: true` destroys written: segments and namespaces whose free went unseen.
    pub(super) late_destroys: u64,
    /// Skipped `kfree` runs already answered by a resynchronisation being asked for.
    pub(super) kfree_skipped_seen: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            lines: [0; LineKind::COUNT],
            resyncs: [0; RESYNC_CAUSES.len()],
            events: 0,
            lost_reported: 0,
            lost_reported_per_slot: Vec::new(),
            missed_reported: 0,
            decode_errors: 0,
            late_destroys: 0,
            kfree_skipped_seen: 0,
        }
    }
}

impl Counters {
    /// Counts one line of `kind`.
    #[inline]
    pub(super) fn line(&mut self, kind: LineKind) {
        self.lines[kind.index()] += 1;
    }

    /// Counts the startup inventory's lines (`output::inventory::write_lines`).
    pub(super) fn inventory_lines(&mut self, inventory: &Inventory) {
        self.lines[LineKind::NS_EXISTS.index()] += inventory.namespaces.len() as u64;
        for object in &inventory.objects {
            self.line(LineKind::object_exists(object.object()));
        }
        self.lines[LineKind::MQUEUE_EXISTS.index()] += inventory.mqueues.len() as u64;
    }

    pub(super) fn resync(&mut self, after: ResyncCause) {
        if let Some(at) = RESYNC_CAUSES.iter().position(|(cause, _)| *cause == after) {
            self.resyncs[at] += 1;
        }
    }
}
impl<W: Write> Stream<W> {
    /// Reports records lost since the last report (`agent.lost`). The engine's state may be
    /// wrong after them: [`Self::resync_if_due`] makes it right again.
    pub(super) fn report_lost(&mut self, probes: &Probes) -> Result<SinkState> {
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
    pub(super) fn report_missed(&mut self, probes: &Probes) -> Result<SinkState> {
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
        self.write_agent(&event)
    }

    /// What `/metrics` shows now: the counters, and the engine's gauges with each
    /// namespace's container.
    pub(crate) fn metrics_snapshot(&self) -> Snapshot {
        let counters = &self.counters;
        let mut gauges = Vec::new();
        self.engine.namespace_gauges(&mut gauges);
        let namespaces = gauges
            .iter()
            .map(|gauge| NamespaceMetrics {
                inum: gauge.inum,
                objects: gauge.objects,
                shm_bytes: gauge.shm_bytes,
                container: self
                    .attribution
                    .get(gauge.container)
                    .map(|known| (known.container.id.clone(), known.container.name.clone())),
                limits: self.limits_of(gauge.inum).map(|limits| ObjectLimits {
                    msg: limits.msgmni,
                    shm: limits.shmmni,
                    sem: limits.semmni,
                }),
            })
            .collect();
        // Every record kind, from 0, as `agent.lost` names them.
        let mut lost: BTreeMap<&'static str, u64> = (1..nsipc_common::LOST_SLOTS)
            .map(|slot| (kind_name(slot), 0))
            .collect();
        for (slot, &count) in counters.lost_reported_per_slot.iter().enumerate() {
            if count > 0 || slot != 0 {
                *lost.entry(kind_name(slot as u32)).or_default() += count;
            }
        }
        Snapshot {
            namespaces,
            lines: counters.lines.to_vec(),
            lost: lost.into_iter().collect(),
            decode_errors: counters.decode_errors,
            resyncs: RESYNC_CAUSES
                .iter()
                .zip(counters.resyncs)
                .map(|(&(_, after), count)| (after, count))
                .collect(),
            missed: counters.missed_reported,
            activity_calls: self
                .activity
                .as_ref()
                .map(|reports| reports.calls())
                .unwrap_or_default(),
            flows: self
                .activity
                .iter()
                .flat_map(|reports| reports.flows())
                .map(|(from, to, messages, bytes)| {
                    let container = |c| {
                        self.attribution
                            .get(c)
                            .map(|known| (known.container.id.clone(), known.container.name.clone()))
                    };
                    FlowMetrics {
                        from: container(from),
                        to: container(to),
                        messages,
                        bytes,
                    }
                })
                .collect(),
        }
    }

    /// Writes `agent.stop` with the stream's totals: `reason` is the signal that ended it, and
    /// `kfree_skipped` the probes' count, read before they were detached.
    pub(super) fn write_stop(
        &mut self,
        reason: &'static str,
        kfree_skipped: u64,
    ) -> Result<SinkState> {
        let counters = &self.counters;
        let stop = AgentEvent::Stop {
            time: self.now(),
            reason,
            events: counters.events,
            lost: counters.lost_reported,
            missed: counters.missed_reported,
            decode_errors: counters.decode_errors,
            late_destroys: counters.late_destroys,
            kfree_skipped,
        };
        self.write_agent(&stop)
    }
}
