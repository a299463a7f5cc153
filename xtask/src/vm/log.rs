//! Reading a cell's log, the VM's console or the host's record of its test runs: what passed,
//! what failed and what the failed tests said, and whether the kernel itself crashed.

use std::{collections::BTreeMap, path::PathBuf};

use super::MARKER;

/// What one cell's log says.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// `uname -r` where the tests ran.
    pub(super) release: Option<String>,
    pub(super) passed: u32,
    pub(super) failed: u32,
    pub(super) failed_tests: Vec<String>,
    /// What each failed test said (its panic message and the lines after it, up to
    /// [`PANIC_EXCERPT_LINES`]): printed under the matrix, so a CI log names the failure and a
    /// replay command without the cell's log.
    pub(super) panics: Vec<String>,
    /// Anything that makes the cell fail besides failed tests.
    pub(super) problems: Vec<String>,
}

impl Outcome {
    /// A cell where nothing ran is a failure too.
    pub(super) fn ok(&self) -> bool {
        self.problems.is_empty() && self.failed == 0 && self.passed > 0
    }
}

/// How many lines of a test's panic message the matrix repeats: the differential and races
/// tests put their divergences and the replay command first.
const PANIC_EXCERPT_LINES: usize = 40;

/// Reads the framed libtest output of every test binary in `expected` from a cell's log.
/// Kernel messages may share the console: markers and result lines are found anywhere in a line.
pub(super) fn parse_log(log: &str, expected: &[(String, PathBuf)]) -> Outcome {
    #[derive(Default)]
    struct Run {
        exit: Option<i32>,
        result_ok: Option<bool>,
    }
    let mut outcome = Outcome::default();
    let mut runs: BTreeMap<String, Run> = BTreeMap::new();
    let mut current: Option<String> = None;
    // The panic being copied, and how many more of its lines to take.
    let mut excerpt: Option<(String, usize)> = None;
    for line in log.lines() {
        let line = line.trim_end_matches('\r');
        if let Some((text, left)) = &mut excerpt {
            if *left == 0 || line.contains(MARKER) || line.starts_with("note: run with") {
                outcome.panics.extend(excerpt.take().map(|(text, _)| text));
            } else {
                text.push('\n');
                text.push_str(line);
                *left -= 1;
                continue;
            }
        }
        if let Some(at) = line.find(MARKER) {
            let marker = &line[at + MARKER.len()..];
            let mut words = marker.split_whitespace();
            match words.next().and_then(|w| w.split_once('=')) {
                Some(("kernel", release)) => outcome.release = Some(release.to_owned()),
                Some(("begin", name)) => {
                    runs.entry(name.to_owned()).or_default();
                    current = Some(name.to_owned());
                }
                Some(("end", name)) => {
                    let exit = words
                        .next()
                        .and_then(|w| w.strip_prefix("exit="))
                        .and_then(|code| code.parse().ok());
                    runs.entry(name.to_owned()).or_default().exit = exit;
                    current = None;
                }
                _ => {}
            }
            continue;
        }
        let Some(name) = &current else { continue };
        if line.contains("panicked at ") {
            excerpt = Some((format!("{name}: {}", line.trim()), PANIC_EXCERPT_LINES));
        } else if let Some(at) = line.find("test result: ") {
            let result = &line[at + "test result: ".len()..];
            let count = |what: &str| {
                result
                    .split(';')
                    .find_map(|part| {
                        let number = part.trim().strip_suffix(what)?.split_whitespace().last()?;
                        number.parse::<u32>().ok()
                    })
                    .unwrap_or(0)
            };
            outcome.passed += count("passed");
            outcome.failed += count("failed");
            runs.entry(name.clone()).or_default().result_ok = Some(result.starts_with("ok."));
        } else if let Some(test) = line
            .trim()
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            outcome.failed_tests.push(format!("{name}::{test}"));
        }
    }
    outcome.panics.extend(excerpt.map(|(text, _)| text));
    for (name, _) in expected {
        match runs.get(name) {
            None => outcome.problems.push(format!("{name} never started")),
            Some(run) => {
                match run.exit {
                    Some(0) => {}
                    Some(code) => outcome.problems.push(format!("{name} exited {code}")),
                    None => outcome.problems.push(format!("{name} did not finish")),
                }
                if run.result_ok.is_none() {
                    outcome
                        .problems
                        .push(format!("{name} printed no test result"));
                }
            }
        }
    }
    outcome
}

/// The first console line of a crash of the kernel itself (an oops, a BUG, a soft lockup, an
/// RCU stall or a panic), as opposed to a test that failed. A CPU stuck in the kernel under TCG
/// shows as a soft lockup or, where the watchdog does not fire first, as an RCU stall: the
/// guest's other CPU still runs (and still beats), and the test waits on the stuck one.
pub(super) fn kernel_crash(console: &str) -> Option<&str> {
    const SIGNS: [&str; 5] = [
        "BUG: ",
        "Oops: ",
        "watchdog: BUG: soft lockup",
        "self-detected stall on CPU",
        "Kernel panic",
    ];
    console
        .lines()
        .find(|line| SIGNS.iter().any(|sign| line.contains(sign)))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_crashes_are_told_from_failed_tests() {
        let oops = "test x ... ok\n[   10.547561] BUG: kernel NULL pointer dereference, address: 0\n\
                    [   10.548703] Oops: Oops: 0010 [#1] PREEMPT SMP NOPTI\n";
        assert_eq!(
            kernel_crash(oops),
            Some("[   10.547561] BUG: kernel NULL pointer dereference, address: 0")
        );
        let lockup = "[   28.4] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [perl:99]\n";
        assert!(kernel_crash(lockup).is_some());
        // 6.1 fentry, stopping the agent during a shmget/IPC_RMID loop (CI of 5d30e77).
        let stall = "differential: stop during a shmget/IPC_RMID loop, round 2\n\
                     [  120.783840] rcu: INFO: rcu_preempt self-detected stall on CPU\n";
        assert_eq!(
            kernel_crash(stall),
            Some("[  120.783840] rcu: INFO: rcu_preempt self-detected stall on CPU")
        );
        let failed = "thread 'x' panicked at tests/lifecycle.rs:9:5:\ntest result: FAILED.\n";
        assert_eq!(kernel_crash(failed), None);
    }

    fn privileged() -> Vec<(String, PathBuf)> {
        vec![("privileged".to_owned(), PathBuf::from("/x"))]
    }

    #[test]
    fn passing_console_log() {
        let log = "[    0.000000] Linux version 6.1.0\r\n\
            NSIPC-MATRIX kernel=6.1.0-56-cloud-amd64 backend=tracepoint\r\n\
            NSIPC-MATRIX begin=privileged\r\n\
            running 8 tests\r\n\
            test clone_with_newipc_reports_the_child_namespace ... ok\r\n\
            [   12.3] random kernel line\r\n\
            test result: ok. 8 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9.81s\r\n\
            NSIPC-MATRIX end=privileged exit=0\r\n\
            [   13.0] reboot: Power down\r\n";
        let outcome = parse_log(log, &privileged());
        assert_eq!(outcome.release.as_deref(), Some("6.1.0-56-cloud-amd64"));
        assert_eq!((outcome.passed, outcome.failed), (8, 0));
        assert!(outcome.ok(), "{outcome:?}");
    }

    #[test]
    fn failing_console_log() {
        let log = "NSIPC-MATRIX kernel=6.1.0 backend=tracepoint\n\
            NSIPC-MATRIX begin=privileged\n\
            test failed_get_names_the_errno ... ok\n\
            test objects_in_a_new_namespace_carry_its_inum ... FAILED\n\
            thread 'objects_in_a_new_namespace_carry_its_inum' panicked at tests/privileged.rs:9:5:\n\
            no msg.create in n1\n\
            note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\
            test result: FAILED. 7 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n\
            NSIPC-MATRIX end=privileged exit=101\n";
        let outcome = parse_log(log, &privileged());
        assert_eq!((outcome.passed, outcome.failed), (7, 1));
        assert_eq!(
            outcome.failed_tests,
            ["privileged::objects_in_a_new_namespace_carry_its_inum"]
        );
        assert!(!outcome.ok());
        assert_eq!(outcome.problems, ["privileged exited 101"]);
        assert_eq!(
            outcome.panics,
            [
                "privileged: thread 'objects_in_a_new_namespace_carry_its_inum' panicked at \
              tests/privileged.rs:9:5:\nno msg.create in n1"
            ]
        );
    }

    #[test]
    fn cut_short_or_empty_logs_fail() {
        let cut = "NSIPC-MATRIX kernel=6.1.0 backend=tracepoint\n\
            NSIPC-MATRIX begin=privileged\n\
            test failed_get_names_the_errno ... ok\n";
        let outcome = parse_log(cut, &privileged());
        assert!(!outcome.ok());
        assert!(
            outcome
                .problems
                .contains(&"privileged did not finish".to_owned())
        );

        let outcome = parse_log("Kernel panic - not syncing\n", &privileged());
        assert!(!outcome.ok());
        assert_eq!(outcome.problems, ["privileged never started"]);

        let nothing_ran = "NSIPC-MATRIX begin=privileged\n\
            test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 8 filtered out\n\
            NSIPC-MATRIX end=privileged exit=0\n";
        assert!(!parse_log(nothing_ran, &privileged()).ok());
    }
}
