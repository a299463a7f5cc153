//! The Forced loss section, and the accounting behind it (emitted + lost against what the
//! workload made), which the targets and the workloads' tables also show.

use std::fmt::Write as _;

use super::{Report, Run};

impl Report<'_> {
    pub(super) fn forced_loss(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "## Forced loss (storm, nsipc-agent --raw | reader)\n\n\
             The workload knows how many events it caused; the reader counts the ones the agent \
             emitted for it (by comm) and sums `agent.lost` by the kinds it names. The agent \
             prints raw records here (`--raw`), one line each: in the lifecycle stream, an \
             IPC_RMID whose object's creation record was lost makes no line (the stream only \
             destroys what it announced), so lines and lost records would not add up there. \"lost\" is \
             the lost records of the kinds the storm makes (msg/shm/sem get and ctl); \
             \"lost, other kinds\" the rest: the probes' own `shm.freed` records (one per \
             segment, written at its kfree, from whatever context frees it), the agent's own \
             setns into namespaces while it takes an inventory after losses, other processes' \
             events. Lost records of other processes' get/ctl calls cannot be told from the \
             workload's (\"other events\" counts the events of others seen).\n\n\
             | case | expected | emitted | lost | emitted + lost | lost, other kinds | other events | exact |\n\
             |---|---:|---:|---:|---:|---:|---:|---|"
        );
        for forced in &self.forced {
            let Some(c) = forced_counts(&forced.run) else {
                let _ = writeln!(
                    out,
                    "| {} | — | — | — | — | — | — | no counts |",
                    forced.case
                );
                continue;
            };
            let total = c.seen + c.lost;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                forced.case,
                c.expected,
                c.seen,
                c.lost,
                total,
                c.lost_other_kinds,
                c.other,
                if total == c.expected {
                    "yes".to_owned()
                } else {
                    format!("no (off by {})", total as i64 - c.expected as i64)
                }
            );
        }
        let _ = writeln!(out);
    }
}

pub(super) struct LossCounts {
    pub(super) expected: u64,
    pub(super) seen: u64,
    /// Lost records of the kinds the storm's syscalls make.
    pub(super) lost: u64,
    /// Lost records of other kinds: the probes' own `shm.freed`, the agent's own setns
    /// into namespaces while it takes an inventory, other processes' events.
    lost_other_kinds: u64,
    other: u64,
}

/// The record kinds the storm's syscalls make.
const STORM_KINDS: [&str; 6] = [
    "msg.get", "shm.get", "sem.get", "msg.ctl", "shm.ctl", "sem.ctl",
];

pub(super) fn forced_counts(run: &Run) -> Option<LossCounts> {
    let traced = run.traced.as_ref()?;
    let seen = traced.workload_events?;
    let total = traced.lost?;
    // Without kinds (no loss, or an agent that does not name them) all count.
    let lost = if traced.lost_kinds.is_empty() {
        total
    } else {
        STORM_KINDS
            .iter()
            .filter_map(|kind| traced.lost_kinds.get(*kind))
            .sum()
    };
    Some(LossCounts {
        expected: run.measured.expected_comm_events?,
        seen,
        lost,
        lost_other_kinds: total.saturating_sub(lost),
        other: traced.events?.saturating_sub(seen),
    })
}

/// "emitted + lost = expected" for the pipe runs, and in how many runs it held exactly.
pub(super) fn accounting(runs: &[Run]) -> Option<String> {
    let counts: Vec<LossCounts> = runs.iter().filter_map(forced_counts).collect();
    let first = counts.first()?;
    let exact = counts
        .iter()
        .filter(|c| c.seen + c.lost == c.expected)
        .count();
    let off: Vec<String> = counts
        .iter()
        .filter(|c| c.seen + c.lost != c.expected)
        .map(|c| {
            format!(
                "{:+} with {} lost",
                (c.seen + c.lost) as i64 - c.expected as i64,
                c.lost
            )
        })
        .collect();
    Some(format!(
        "{} + {} = {} of {} (exact in {exact}/{} runs{})",
        first.seen,
        first.lost,
        first.seen + first.lost,
        first.expected,
        counts.len(),
        if off.is_empty() {
            String::new()
        } else {
            format!("; the others off by {}", off.join(", "))
        }
    ))
}
