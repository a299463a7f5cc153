//! The activity report (`--activity-interval`): reads the probes' traffic counters, has
//! [`ActivityTracker`] work out what changed, writes its lines, and deletes the map entries
//! it is done with.

use std::{
    collections::HashMap,
    io::Write,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result};

use super::Stream;
use crate::{
    activity::{ActivityTracker, Known, ObjectActivity, Role},
    decode::ContainerRef,
    metrics::LineKind,
    names::IpcObject,
    output::activity_events::{ActivityLine, FlowLine, FullLine, activity_name},
    output::sink::SinkState,
    probes::ActivityMap,
};

/// When activity is reported, what was reported before, and the totals of the reports for
/// the metrics.
pub(crate) struct ActivityReports {
    interval: Duration,
    last: Instant,
    tracker: ActivityTracker,
    /// Calls reported, by [`CALL_KINDS`].
    calls: [u64; 3],
    /// Messages and bytes reported as flows, by sender's and receiver's container.
    flows: HashMap<(ContainerRef, ContainerRef), (u64, u64)>,
}

/// The metrics' names of the roles' calls.
const CALL_KINDS: [(Role, &str); 3] = [
    (Role::Sender, "msgsnd"),
    (Role::Receiver, "msgrcv"),
    (Role::Operator, "semop"),
];

impl ActivityReports {
    pub(crate) fn every(interval: Duration) -> Self {
        Self {
            interval,
            last: Instant::now(),
            tracker: ActivityTracker::default(),
            calls: [0; 3],
            flows: HashMap::new(),
        }
    }

    /// Calls by kind, for the metrics.
    pub(crate) fn calls(&self) -> Vec<(&'static str, u64)> {
        CALL_KINDS
            .iter()
            .zip(self.calls)
            .map(|(&(_, kind), calls)| (kind, calls))
            .collect()
    }

    /// Messages and bytes by sender's and receiver's container, for the metrics.
    pub(crate) fn flows(&self) -> impl Iterator<Item = (ContainerRef, ContainerRef, u64, u64)> {
        self.flows
            .iter()
            .map(|(&(from, to), &(messages, bytes))| (from, to, messages, bytes))
    }
}

impl ActivityReports {
    /// See [`ActivityTracker::destroyed`].
    pub(crate) fn destroyed(&mut self, object: IpcObject, id: i32, known: Known) {
        self.tracker.destroyed(object, id, known);
    }
}

impl<W: Write> Stream<W> {
    /// Reports activity if the interval has passed, or, `last`, because the agent stops.
    /// Call it after draining the ring buffer, so that the engine knows the objects counted.
    pub(super) fn report_activity(
        &mut self,
        map: Option<&mut ActivityMap>,
        last: bool,
    ) -> Result<SinkState> {
        let (Some(map), Some(reports)) = (map, &mut self.activity) else {
            return Ok(SinkState::Open);
        };
        let elapsed = reports.last.elapsed();
        if !last && elapsed < reports.interval {
            return Ok(SinkState::Open);
        }
        reports.last = Instant::now();
        let entries = map
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .context("reading the activity counters")?;
        let engine = &self.engine;
        let report = reports.tracker.report(
            entries,
            |object| {
                engine
                    .live_object(&object.ns, object.object, object.id)
                    .map(|(ns, key)| Known { ns, key })
            },
            |pid| Path::new(&format!("/proc/{pid}")).exists(),
            last,
        );
        for key in &report.delete {
            // Already gone (a process's exit raced with an object's end): nothing to do.
            let _ = map.remove(key);
        }
        let time = SystemTime::now();
        let interval_ms = elapsed.as_millis() as u64;
        for activity in &report.objects {
            if self.write_activity(activity, time, interval_ms)? == SinkState::ReaderGone {
                return Ok(SinkState::ReaderGone);
            }
        }
        Ok(SinkState::Open)
    }

    /// Writes a queue's `msg.full` if it has one, its activity line, then its flows.
    fn write_activity(
        &mut self,
        activity: &ObjectActivity,
        time: SystemTime,
        interval_ms: u64,
    ) -> Result<SinkState> {
        let containers: Vec<ContainerRef> = activity
            .participants
            .iter()
            .map(|p| self.attribution.resolve(p.cgroup, p.pid))
            .collect();
        let ns = activity.object.ns.inum;
        let name = activity_name(activity.object.object);
        let flow_containers: Vec<[ContainerRef; 2]> = activity
            .flows
            .iter()
            .map(|flow| [flow.from, flow.to].map(|p| self.attribution.resolve(p.cgroup, p.pid)))
            .collect();
        // The metrics count everything, whatever the filters write.
        if let Some(reports) = &mut self.activity {
            for participant in &activity.participants {
                let kind = CALL_KINDS
                    .iter()
                    .position(|&(role, _)| role == participant.role);
                reports.calls[kind.expect("every role has a kind")] += participant.calls;
            }
            for (flow, &[from, to]) in activity.flows.iter().zip(&flow_containers) {
                let total = reports.flows.entry((from, to)).or_default();
                total.0 += flow.from.calls;
                total.1 += flow.from.units;
            }
        }
        if let Some(full) = &activity.full {
            let container = self
                .attribution
                .resolve(full.sender.cgroup, full.sender.pid);
            if self.filter.as_mut().is_none_or(|filter| {
                filter.activity("msg.full", ns, &[container], &self.attribution)
            }) {
                self.counters.line(LineKind::MSG_FULL);
                let line = FullLine {
                    queue: activity,
                    full,
                    container,
                    time,
                    attribution: &self.attribution,
                };
                if self.sink.write(&line)? == SinkState::ReaderGone {
                    return Ok(SinkState::ReaderGone);
                }
            }
        }
        if self
            .filter
            .as_mut()
            .is_none_or(|filter| filter.activity(name, ns, &containers, &self.attribution))
        {
            self.counters.line(match activity.object.object {
                IpcObject::Msg => LineKind::MSG_ACTIVITY,
                IpcObject::Shm | IpcObject::Sem => LineKind::SEM_ACTIVITY,
            });
            let line = ActivityLine {
                activity,
                containers: &containers,
                time,
                interval_ms,
                attribution: &self.attribution,
            };
            if self.sink.write(&line)? == SinkState::ReaderGone {
                return Ok(SinkState::ReaderGone);
            }
        }
        for (flow, &pair) in activity.flows.iter().zip(&flow_containers) {
            if let Some(filter) = &mut self.filter
                && !filter.activity("ipc.flow", ns, &pair, &self.attribution)
            {
                continue;
            }
            self.counters.line(LineKind::FLOW);
            let line = FlowLine {
                via: activity,
                flow,
                containers: pair,
                time,
                interval_ms,
                attribution: &self.attribution,
            };
            if self.sink.write(&line)? == SinkState::ReaderGone {
                return Ok(SinkState::ReaderGone);
            }
        }
        Ok(SinkState::Open)
    }
}
