//! The memory section, and the memory targets' rows: the agent's RSS with the memory
//! scenario's namespaces and objects alive, and how much of it returns once they died.

use std::fmt::Write as _;

use super::or_dash;
use crate::bench::{
    MEMORY_NAMESPACES,
    memory::{IDLE_WINDOW, MemoryRun, SETTLE, Seen},
};

/// The memory target: peak RSS with the memory scenario's namespaces and objects alive.
const PEAK_RSS_TARGET_MIB: f64 = 32.0;
/// "Memory returns when they die": at least this share of what the live namespaces and
/// objects added to the agent's RSS is gone once they died.
const RETURNED_TARGET: f64 = 0.9;

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Why the memory run's figures are not a verdict on the target, if they are not.
fn memory_caveat(run: &MemoryRun) -> Option<String> {
    let live = &run.seen_live;
    if run.namespaces < u64::from(MEMORY_NAMESPACES) {
        Some(format!(
            "not at the target's size ({} namespaces)",
            run.namespaces
        ))
    } else if live.namespaces_created < run.namespaces || live.objects_created < run.objects {
        Some(format!(
            "not measured: the stream showed {} of {} namespaces and {} of {} objects created",
            live.namespaces_created, run.namespaces, live.objects_created, run.objects
        ))
    } else if run.lost.is_none_or(|lost| lost > 0) {
        Some(format!(
            "not measured cleanly: {} records lost",
            or_dash(run.lost.map(|l| l.to_string()))
        ))
    } else {
        None
    }
}

pub(super) fn memory_targets(out: &mut String, run: &MemoryRun) {
    let caveat = memory_caveat(run);
    // ru_maxrss at exit and VmHWM while alive are the same counter, read at different times.
    let peak = mib(run.hwm_end.max(run.hwm_live));
    let _ = writeln!(
        out,
        "| peak RSS under {PEAK_RSS_TARGET_MIB:.0} MiB with 10 000 namespaces and 100 000 \
         objects | {peak:.1} MiB (VmHWM over the agent's whole life; VmRSS with all {} \
         namespaces and {} objects alive: {:.1} MiB) | {} |",
        run.namespaces,
        run.objects,
        mib(run.rss_live),
        caveat.clone().unwrap_or_else(|| {
            if peak < PEAK_RSS_TARGET_MIB {
                "met".to_owned()
            } else {
                "**missed**".to_owned()
            }
        })
    );
    let dead = &run.seen_dead;
    let all_died =
        dead.namespaces_destroyed >= run.namespaces && dead.objects_destroyed >= run.objects;
    let grown = run.rss_live.saturating_sub(run.rss_before);
    let returned = run.rss_live.saturating_sub(run.rss_after);
    let share = returned as f64 / grown.max(1) as f64;
    let _ = writeln!(
        out,
        "| memory returns when they die (≥ {:.0}% of what they added to the RSS) | VmRSS {:.1} \
         MiB before, {:.1} MiB with all alive, {:.1} MiB once all died: {:.0}% given back | {} |",
        RETURNED_TARGET * 100.0,
        mib(run.rss_before),
        mib(run.rss_live),
        mib(run.rss_after),
        share * 100.0,
        if !all_died {
            format!(
                "not measured: the stream showed {} of {} namespaces and {} of {} objects \
                 destroyed",
                dead.namespaces_destroyed, run.namespaces, dead.objects_destroyed, run.objects
            )
        } else {
            caveat.unwrap_or_else(|| {
                if share >= RETURNED_TARGET {
                    "met".to_owned()
                } else {
                    "**missed**".to_owned()
                }
            })
        }
    );
}

pub(super) fn memory_section(out: &mut String, run: &MemoryRun) {
    let seconds = |s: Option<f64>| or_dash(s.map(|s| format!("{s:.1} s")));
    let _ = writeln!(
        out,
        "## memory\n\n\
         `xtask bench-memory-workload` under `nsipc-agent trace | xtask bench-reader \
         --namespaces`, once: {} IPC namespaces, each made by `unshare(CLONE_NEWIPC)` with {} \
         objects (message queues, one-page shm segments never touched, one-semaphore sets, in \
         turn; the same keys in every namespace, as one application in many containers) and \
         held by a bind mount of its namespace file in the workload's own private mount \
         namespace; all alive at once; then one lazy unmount of them all lets everything die. \
         The reader follows the workload's namespaces (by `ns` and `ns_id`), so it counts the \
         destroys, which carry no comm. The agent's VmRSS and VmHWM (/proc/PID/status) are read \
         after it attached and wrote its inventory, once its stream showed every creation, and \
         {:.1} s after it showed every destruction.\n",
        run.namespaces,
        run.objects / run.namespaces.max(1),
        SETTLE.as_secs_f64(),
    );
    let row = |what: &str, seen: &Seen, created: bool| {
        let (ns, objects) = if created {
            (seen.namespaces_created, seen.objects_created)
        } else {
            (seen.namespaces_destroyed, seen.objects_destroyed)
        };
        format!("| {what} | {ns} | {objects} |")
    };
    let _ = writeln!(
        out,
        "| | namespaces | objects |\n|---|---:|---:|\n\
         | made by the workload | {} | {} |\n{}\n{}\n",
        run.namespaces,
        run.objects,
        row("created, in the stream", &run.seen_live, true),
        row("destroyed, in the stream", &run.seen_dead, false),
    );
    let _ = writeln!(
        out,
        "- The workload took {:.1} s to create everything ({:.1} s of CPU); the stream showed \
         every creation {} after that, every destruction {} after the unmount.\n\
         - With everything alive and quiet, the agent used {:.2}% of a CPU over {} s (its \
         periodic work with that much state).\n\
         - Records lost: {}.\n\
         - Objects in the host's IPC namespace: {} before, {} after (the workload's never are \
         there; other users of the machine may change it).\n",
        run.create_seconds,
        run.create_cpu_seconds,
        seconds(run.created_seen_after),
        seconds(run.destroyed_seen_after),
        run.idle_cpu_share * 100.0,
        IDLE_WINDOW.as_secs(),
        or_dash(run.lost.map(|l| l.to_string())),
        run.host_objects.0,
        run.host_objects.1,
    );
    let _ = writeln!(
        out,
        "| agent | VmRSS MiB | of which RssAnon (heap) MiB | VmHWM MiB |\n|---|---:|---:|---:|\n\
         | attached, before the workload | {:.1} | {:.1} | — |\n\
         | everything alive | {:.1} | {:.1} | {:.1} |\n\
         | everything dead | {:.1} | {:.1} | {:.1} (at exit) |\n",
        mib(run.rss_before),
        mib(run.anon[0]),
        mib(run.rss_live),
        mib(run.anon[1]),
        mib(run.hwm_live),
        mib(run.rss_after),
        mib(run.anon[2]),
        mib(run.hwm_end),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory_run(namespaces: u64, rss_after: u64, hwm_end: u64) -> MemoryRun {
        let objects = namespaces * 10;
        let seen = Seen {
            namespaces_created: namespaces,
            objects_created: objects,
            objects_destroyed: objects,
            namespaces_destroyed: namespaces,
        };
        MemoryRun {
            namespaces,
            objects,
            create_seconds: 1.0,
            create_cpu_seconds: 1.0,
            created_seen_after: Some(0.1),
            destroyed_seen_after: Some(1.0),
            seen_live: seen,
            seen_dead: seen,
            rss_before: 20 * 1024,
            rss_live: 30 * 1024,
            hwm_live: 30 * 1024,
            rss_after,
            hwm_end,
            anon: [1024, 10 * 1024, 1024],
            idle_cpu_share: 0.001,
            lost: Some(0),
            host_objects: (0, 0),
        }
    }

    /// The verdict column of each memory target row.
    fn memory_verdicts(run: &MemoryRun) -> Vec<String> {
        let mut out = String::new();
        memory_targets(&mut out, run);
        out.lines()
            .map(|row| {
                row.trim_end_matches(" |")
                    .rsplit(" | ")
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn memory_targets_are_judged_on_full_clean_runs() {
        let full = u64::from(MEMORY_NAMESPACES);
        // Peak 30 MiB; 9 of the 10 MiB the live state added given back.
        assert_eq!(
            memory_verdicts(&memory_run(full, 21 * 1024, 30 * 1024)),
            ["met", "met"]
        );
        assert_eq!(
            memory_verdicts(&memory_run(full, 22 * 1024, 33 * 1024)),
            ["**missed**", "**missed**"]
        );
        let small = memory_verdicts(&memory_run(full / 10, 21 * 1024, 30 * 1024));
        assert!(
            small
                .iter()
                .all(|v| v.starts_with("not at the target's size")),
            "{small:?}"
        );
        let mut lossy = memory_run(full, 21 * 1024, 30 * 1024);
        lossy.lost = Some(3);
        assert!(memory_verdicts(&lossy)[0].starts_with("not measured cleanly"));
        let mut unseen = memory_run(full, 21 * 1024, 30 * 1024);
        unseen.seen_dead.objects_destroyed -= 1;
        assert!(memory_verdicts(&unseen)[1].starts_with("not measured"));
    }
}
