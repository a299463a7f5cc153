//! The concurrent differential test: the kernel driven by many processes at once, on every CPU,
//! while the agent traces. Needs root.
//!
//! Each seed runs `NSIPC_RACE_WORKERS` (default 8) perl workers at the same time, each with a
//! random loop of its own: msgget/shmget/semget under IPC_PRIVATE and a few keys shared by
//! everyone, IPC_RMID of whatever the namespace lists (so workers remove each other's objects,
//! attached segments included), shmat/shmdt, children forked with the attachments that detach
//! or remove and exit, `unshare(CLONE_NEWIPC)`, `setns` into bind-mounted namespaces and into
//! namespaces held by fds, and children made by `clone(CLONE_NEWIPC)` that create objects and
//! exit. Meanwhile this test makes and unmounts bind-mount holders, runs `nsipc-agent snapshot`,
//! and runs a second agent whose startup inventory races with all of it.
//!
//! Checks, at quiescent checkpoints (every worker and child stopped with SIGSTOP) and at the end:
//! - in every namespace that a process or a bind mount can reach, the objects alive in the
//!   stream equal the kernel's `/proc/sysvipc`, and exactly one life of that inum is alive;
//! - once everything is let go, every namespace the workload created has its destroy, exactly
//!   once, no object outlives its namespace, nothing is created in a destroyed namespace, a
//!   segment removed while attached dies by its last detach (no lifecycle stuck), and the
//!   `namespace_teardown` destroys add up to each namespace's `objects_destroyed`;
//! - nothing lost, nothing undecodable; the snapshots and the second agent exit cleanly.
//!
//! A seed fixes every decision of the workers and of this test; the interleaving is the
//! machine's. `NSIPC_RACE_SEEDS=N` runs seeds 1..=N (default 2), `NSIPC_RACE_SEED=S` replays
//! seed S only, `NSIPC_RACE_SECS` sets each seed's race (default 3 s). The long run in the
//! README: `NSIPC_RACE_SEEDS=200`.

#[path = "races/kernel.rs"]
mod kernel;
#[path = "races/race.rs"]
mod race;
#[path = "races/racer.rs"]
mod racer;
mod support;

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fs,
    io::{BufRead as _, BufReader},
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use race::Race;
use serde_json::Value;
use support::{model::*, seeds::*, *};

const DEFAULT_SEEDS: u64 = 2;
const DEFAULT_WORKERS: u64 = 8;
const DEFAULT_SECS: u64 = 3;
const MAX_HOLDERS: usize = 4;
/// Quiescent checkpoints during each race, besides the one at its end.
const MID_RACE_CHECKPOINTS: u32 = 2;

struct SeedReport {
    summary: String,
    divergences: Vec<String>,
}

#[test]
fn the_stream_matches_the_kernel_under_concurrent_workloads() {
    require_root();
    let seeds = seeds_from_env("NSIPC_RACE", DEFAULT_SEEDS);
    let workers = env_number("NSIPC_RACE_WORKERS").unwrap_or(DEFAULT_WORKERS);
    let secs = env_number("NSIPC_RACE_SECS").unwrap_or(DEFAULT_SECS);
    let done = run_seeds(&seeds, None, |seed| {
        let report = Race::start(seed, workers).run(secs);
        let mut failure = Vec::new();
        if !report.divergences.is_empty() {
            failure.push(format!(
                "seed {seed} DIVERGED (replay: NSIPC_RACE_SEED={seed}):"
            ));
            failure.extend(report.divergences.iter().map(|d| format!("    {d}")));
        }
        SeedOutcome {
            summary: report.summary,
            failure,
        }
    });
    let failures: Vec<u64> = done.failures.iter().map(|(seed, _)| *seed).collect();
    say(&format!(
        "{} seeds with {workers} workers for {secs} s each, {} diverged{}",
        seeds.len(),
        failures.len(),
        if failures.is_empty() {
            String::new()
        } else {
            format!(": {failures:?}")
        }
    ));
    assert!(failures.is_empty(), "seeds {failures:?} diverged");
}
