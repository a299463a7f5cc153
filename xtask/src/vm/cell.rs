//! Running one cell of the matrix: the tests on the host's kernel, or a Debian kernel under
//! qemu, within the cell's timeout; a VM cell whose kernel crashed runs again (three runs at
//! most).

use std::{
    fs::{self, File},
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::{
    Built, MARKER, Options,
    kernel::Kernel,
    log::{Outcome, kernel_crash, parse_log},
};
use crate::workspace_root;

/// One cell of the matrix.
pub(super) struct Cell {
    pub(super) kernel: String,
    pub(super) backend: String,
    pub(super) outcome: Outcome,
    pub(super) elapsed: Duration,
    pub(super) log: PathBuf,
    /// Earlier runs of the cell in which the kernel crashed (it was run again): each crash's
    /// first console line and that run's log.
    pub(super) crashed_before: Vec<(String, PathBuf)>,
    /// A VM killed at its timeout whose guest had stopped running long before (its heartbeat
    /// stopped): how, for the matrix.
    pub(super) stalled: Option<String>,
}

/// How often the guest's heartbeat comes (the `sleep` in the initramfs's /init), and how long
/// without one, before qemu is killed, means that the guest had stopped running: a kernel
/// stuck with interrupts off, which no watchdog reports under TCG (there is no NMI).
const HEARTBEAT_SILENCE: Duration = Duration::from_secs(60);

/// Runs of a VM cell at most, while its kernel crashes.
const RUNS_WHILE_CRASHING: usize = 3;

/// Runs a VM cell, and again if it failed with the kernel crashing, or never starting init,
/// up to [`RUNS_WHILE_CRASHING`] runs: under TCG the guest kernel sometimes oopses on its own
/// and what follows says nothing of the agent. Seen here: 6.12's rethook jumping to address 0
/// while kretprobes were detached mid-syscall; an `int3` oops in kfree while another vCPU
/// patched kfree's tracepoint in or out (twice in a row once, the second at 7 s of uptime);
/// the console silent after the BIOS; the guest stopping (its heartbeat too) in the middle
/// of the differential test, with nothing on the console, until the cell's timeout (5.10,
/// fentry). The matrix shows each retry and where the crashed run's log is; a cell whose
/// kernel crashes every time fails.
pub(super) fn run_in_vm_until_it_does_not_crash(
    kernel: &Kernel,
    initramfs: &Path,
    built: &Built,
    options: &Options,
    backend: &str,
    out: &Path,
) -> Result<Cell> {
    let mut crashed_before = Vec::new();
    loop {
        let mut cell = run_in_vm(kernel, initramfs, built, options, backend, out)?;
        if cell.outcome.ok() || crashed_before.len() + 1 == RUNS_WHILE_CRASHING {
            cell.crashed_before = crashed_before;
            return Ok(cell);
        }
        let crash = match kernel_crash(&read_log(&cell.log)?) {
            Some(crash) => crash.to_owned(),
            // Seen once: the console silent after the BIOS until the cell's timeout.
            None if cell.outcome.release.is_none() => "init never started".to_owned(),
            None if cell.stalled.is_some() => cell.stalled.take().expect("checked"),
            None => {
                cell.crashed_before = crashed_before;
                return Ok(cell);
            }
        };
        let kept = cell
            .log
            .with_extension(format!("crashed-{}.log", crashed_before.len() + 1));
        fs::rename(&cell.log, &kept).with_context(|| format!("keeping {}", cell.log.display()))?;
        eprintln!(
            "xtask: {} / {backend}: the kernel crashed ({crash}); running the cell again",
            cell.kernel
        );
        crashed_before.push((crash, kept));
    }
}

pub(super) fn run_on_host(
    built: &Built,
    options: &Options,
    backend: &str,
    out: &Path,
) -> Result<Cell> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("reading /proc/sys/kernel/osrelease")?
        .trim()
        .to_owned();
    let log_path = out.join(format!("host-{backend}.log"));
    eprintln!("xtask: host {release}, {backend}: {}", log_path.display());
    let mut log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let started = Instant::now();
    let mut problems = Vec::new();
    writeln!(log, "{MARKER} kernel={release} backend={backend}")?;
    for (name, exe) in &built.tests {
        writeln!(log, "{MARKER} begin={name}")?;
        let mut cmd = Command::new(exe);
        cmd.args(["--test-threads=1", "--show-output"])
            .env("NSIPC_BACKEND", backend)
            .envs(options.env.iter().map(|(name, value)| (name, value)))
            .current_dir(workspace_root());
        let left = options.timeout.saturating_sub(started.elapsed());
        match run_logged(&mut cmd, &log, left)? {
            Some(status) => writeln!(log, "{MARKER} end={name} exit={}", exit_code(status))?,
            None => problems.push(format!("{name} timed out after {:?}", options.timeout)),
        }
    }
    drop(log);
    let mut outcome = parse_log(&read_log(&log_path)?, &built.tests);
    outcome.problems.extend(problems);
    Ok(Cell {
        kernel: format!("{release} (host)"),
        backend: backend.to_owned(),
        outcome,
        elapsed: started.elapsed(),
        log: log_path,
        crashed_before: Vec::new(),
        stalled: None,
    })
}

fn run_in_vm(
    kernel: &Kernel,
    initramfs: &Path,
    built: &Built,
    options: &Options,
    backend: &str,
    out: &Path,
) -> Result<Cell> {
    let log_path = out.join(format!("{}-{backend}.log", kernel.release));
    eprintln!(
        "xtask: qemu {} ({}), {backend}: {}",
        kernel.release,
        kernel.package,
        log_path.display()
    );
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let heartbeat = log_path.with_extension("heartbeat");
    let started = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1G"])
        // No display, no network, the serial console on stdout; a panic (panic=-1 reboots at
        // once) or a test that hangs the kernel ends qemu instead of rebooting. A CPU stuck in
        // the kernel panics (softlockup_panic), with its backtrace in the log, rather than
        // letting the cell run into its timeout; after 2 minutes (watchdog_thresh=60, the
        // most), not the default 20 s, which a TCG vCPU left unscheduled by the host can pass
        // while doing nothing wrong (seen once here: a soft lockup at 28 s of uptime in
        // syscall_trace_enter).
        .args([
            "-nographic",
            "-nic",
            "none",
            "-no-reboot",
            "-serial",
            "mon:stdio",
        ])
        // The guest's heartbeat, on its second serial port.
        .arg("-serial")
        .arg(format!("file:{}", heartbeat.display()))
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        // ipcmni_extend: ids of 2^24 indices, where the host has the default 2^15, so that the
        // probes' index arithmetic (issue 10, defect 5) is tested both ways.
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 softlockup_panic=1 watchdog_thresh=60 quiet ipcmni_extend \
             NSIPC_BACKEND={backend}{}",
            options
                .env
                .iter()
                .map(|(name, value)| format!(" {name}={value}"))
                .collect::<String>()
        ));
    let status = run_logged(&mut qemu, &log, options.timeout)?;
    drop(log);
    let mut outcome = parse_log(&read_log(&log_path)?, &built.tests);
    let mut stalled = None;
    match status {
        None => {
            outcome
                .problems
                .push(format!("qemu killed after {:?}", options.timeout));
            let last_beat = fs::read_to_string(&heartbeat)
                .ok()
                .and_then(|beats| last_heartbeat(&beats));
            if let Some(uptime) = last_beat
                && started.elapsed().saturating_sub(uptime) > HEARTBEAT_SILENCE
            {
                let how = format!(
                    "the guest stopped running at {:.0}s of uptime (its heartbeat stopped)",
                    uptime.as_secs_f64()
                );
                outcome.problems.push(how.clone());
                stalled = Some(how);
            }
        }
        Some(status) if !status.success() => {
            outcome.problems.push(format!("qemu exited with {status}"));
        }
        Some(_) => {}
    }
    if outcome.release.as_deref() != Some(kernel.release.as_str()) {
        outcome.problems.push(format!(
            "expected kernel {} to boot, the console names {:?}",
            kernel.release, outcome.release
        ));
    }
    Ok(Cell {
        kernel: format!("{} (qemu)", kernel.release),
        backend: backend.to_owned(),
        outcome,
        elapsed: started.elapsed(),
        log: log_path,
        crashed_before: Vec::new(),
        stalled,
    })
}

/// The uptime of the last heartbeat the guest wrote (one `/proc/uptime` seconds figure a
/// line); `None` when there is none.
fn last_heartbeat(beats: &str) -> Option<Duration> {
    beats
        .lines()
        .filter_map(|line| line.trim().parse::<f64>().ok())
        .next_back()
        .map(Duration::from_secs_f64)
}

/// Runs `cmd` with stdout and stderr going to `log`, killing it after `timeout` (then None).
fn run_logged(cmd: &mut Command, log: &File, timeout: Duration) -> Result<Option<ExitStatus>> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the log file")?)
        .stderr(log.try_clone().context("duplicating the log file")?)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("waiting for a test run")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            child.kill().context("killing a test run past its time")?;
            child.wait().context("reaping a killed test run")?;
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// The shell's way of writing how a process ended.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn read_log(path: &Path) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_heartbeat_is_the_last_whole_figure() {
        assert_eq!(
            last_heartbeat("5.21\r\n10.40\r\n15.6"),
            Some(Duration::from_secs_f64(15.6))
        );
        assert_eq!(
            last_heartbeat("5.21\r\n10.4x"),
            Some(Duration::from_secs_f64(5.21))
        );
        assert_eq!(last_heartbeat(""), None);
    }
}
