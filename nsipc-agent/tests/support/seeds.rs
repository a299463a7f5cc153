//! The seeded tests' common ground (differential, races): which seeds to run, running them in
//! turn, and saying what each found past the test harness's capture.

use std::{io::Write as _, time::Instant};

/// The number in the environment variable `name`, if set; anything else there fails the test.
pub fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

/// Written past the test harness's capture, so the summary shows in every run; prefixed with
/// the test's name (its crate's: `differential`, `races`).
pub fn say(text: &str) {
    let _ = writeln!(
        std::io::stderr().lock(),
        "{}: {text}",
        env!("CARGO_CRATE_NAME")
    );
}

/// The seeds to run: `{var}_SEED=S` replays seed S only, else `{var}_SEEDS=N` runs seeds 1..=N
/// (default `default`).
pub fn seeds_from_env(var: &str, default: u64) -> Vec<u64> {
    match env_number(&format!("{var}_SEED")) {
        Some(seed) => vec![seed],
        None => (1..=env_number(&format!("{var}_SEEDS")).unwrap_or(default)).collect(),
    }
}

/// What one seed found.
pub struct SeedOutcome {
    /// Said whatever happened.
    pub summary: String,
    /// When the seed diverged, what to say about it after the summary, one `say` each; empty
    /// when it did not.
    pub failure: Vec<String>,
}

/// The seeds [`run_seeds`] ran, and the failures of those that diverged, in order.
pub struct SeedsRun {
    pub ran: usize,
    pub failures: Vec<(u64, Vec<String>)>,
}

/// Runs `run` on each seed in turn and says what each found. Once `deadline` (if any) has
/// passed, no new seed starts, but the first always runs.
pub fn run_seeds(
    seeds: &[u64],
    deadline: Option<Instant>,
    mut run: impl FnMut(u64) -> SeedOutcome,
) -> SeedsRun {
    let mut done = SeedsRun {
        ran: 0,
        failures: Vec::new(),
    };
    for &seed in seeds {
        if done.ran > 0 && deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            break; // a slow machine (qemu without KVM): the caller reports what ran
        }
        done.ran += 1;
        let outcome = run(seed);
        say(&outcome.summary);
        for line in &outcome.failure {
            say(line);
        }
        if !outcome.failure.is_empty() {
            done.failures.push((seed, outcome.failure));
        }
    }
    done
}
