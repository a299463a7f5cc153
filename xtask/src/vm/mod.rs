//! `cargo xtask vm-test`: the privileged tests on several real kernels.
//!
//! The host runs them on its own kernel. Debian's cloud kernels (the newest 5.10, 6.1 and 6.12) run
//! them under qemu, from an initramfs that holds the agent, the test binaries and every program
//! the tests drive, all taken from this machine. qemu runs with TCG: nested KVM hung on these
//! machines. Each (kernel, backend) cell is one run; the result is a matrix table, and the
//! command fails if any cell failed.

mod cell;
mod initramfs;
mod kernel;
mod log;
mod matrix;

use std::{fs, path::PathBuf, process::Stdio, time::Duration};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{cargo, setup, workspace_root};

/// What booting kernels under qemu takes, from Debian's packages.
const VM_PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "cpio"];

/// A kernel series tested under qemu, and the backends tested on it.
struct Series {
    /// Debian's cloud kernel packages are `linux-image-<series>.*-cloud-amd64`.
    series: &'static str,
    archive: kernel::Archive,
    backends: &'static [&'static str],
}

/// Debian's kernels have kprobes, and fentry loads there; the host refuses both, so there
/// `auto` (which must pick tracepoints) is tested beside `tracepoint`.
const DEBIAN_KERNELS: &[Series] = &[
    // Debian 11's kernel: the oldest long-term kernel still common on container hosts.
    Series {
        series: "5.10",
        archive: kernel::Archive::Release("bullseye"),
        backends: &["tracepoint", "kprobe", "fentry"],
    },
    Series {
        series: "6.1",
        archive: kernel::Archive::Host,
        backends: &["tracepoint", "kprobe", "fentry"],
    },
    Series {
        series: "6.12",
        archive: kernel::Archive::Host,
        backends: &["tracepoint", "kprobe", "fentry"],
    },
];
const HOST_BACKENDS: &[&str] = &["tracepoint", "auto"];
const BACKENDS: &[&str] = &["tracepoint", "kprobe", "fentry", "auto"];

/// The integration tests that exercise the probes, and so differ between kernels. snapshot
/// (/proc parsing and setns, with python, lsipc and chroot as clients) runs on the host only,
/// by `cargo xtask test`.
const PROBE_TESTS: &[&str] = &[
    "privileged",
    "lifecycle",
    "differential",
    "races",
    "docker_story",
    "equivalence",
];

/// Each run of a test binary is framed by these lines, in the VM's console log as in the host's
/// log, so one parser reads both.
const MARKER: &str = "NSIPC-MATRIX";

/// What `cargo xtask vm-test` runs.
pub struct Options {
    /// Kernels (`host`, series) and backends to run; empty: all.
    pub kernels: Vec<String>,
    pub backends: Vec<String>,
    /// Test binaries to run ([`PROBE_TESTS`]); empty: all.
    pub tests: Vec<String>,
    /// Added to every test's environment: in a VM, on the kernel command line, which gives
    /// unknown `name=value` parameters to init's environment.
    pub env: Vec<(String, String)>,
    /// A whole cell (boot, every test, power off) that takes longer than this is killed. One VM
    /// run takes about 4-5 minutes under TCG here (the differential test alone is given 90 s,
    /// the equivalence test starts the agent once per backend), and every test bounds its own
    /// waits; the default of 10 minutes catches a hung kernel, and keeps the cells inside CI's
    /// time.
    pub timeout: Duration,
}

/// `NAME=VALUE` for `--env`: one word each, since it goes on a kernel command line.
pub fn parse_env(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))?;
    let word = |s: &str| !s.is_empty() && !s.contains(char::is_whitespace) && !s.contains('"');
    if !word(name) || !word(value) || !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!(
            "{text:?}: NAME and VALUE must be single words (they go on a kernel command line)"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

pub fn vm_test(options: &Options) -> Result<()> {
    let Options {
        kernels, backends, ..
    } = options;
    for name in &options.tests {
        ensure!(
            PROBE_TESTS.contains(&name.as_str()),
            "unknown test {name:?}: choose among {}",
            PROBE_TESTS.join(", ")
        );
    }
    let selected = |name: &str| kernels.is_empty() || kernels.iter().any(|k| k == name);
    let backend_selected =
        |name: &&&str| backends.is_empty() || backends.iter().any(|b| b == **name);
    for name in backends.iter() {
        ensure!(
            BACKENDS.contains(&name.as_str()),
            "unknown backend {name:?}: choose among {}",
            BACKENDS.join(", ")
        );
    }
    for name in kernels.iter() {
        ensure!(
            name == "host" || DEBIAN_KERNELS.iter().any(|s| s.series == name),
            "unknown kernel {name:?}: choose among host, {}",
            DEBIAN_KERNELS
                .iter()
                .map(|s| s.series)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let with_host = selected("host");
    if with_host && !setup::is_root() {
        bail!(
            "the host's privileged tests load eBPF programs and need root: run \
             `sudo cargo xtask vm-test`, or `--kernels 5.10,6.1,6.12` for the VMs only"
        );
    }
    setup::ensure()?;
    setup::ensure_debian_packages(VM_PACKAGES)?;

    let cache = workspace_root().join("target/vm-cache");
    let out = workspace_root().join("target/vm-test");
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let mut vms = Vec::new();
    for series in DEBIAN_KERNELS.iter().filter(|s| selected(s.series)) {
        vms.push((
            kernel::fetch_kernel(series.series, series.archive, &cache)?,
            series.backends,
        ));
    }
    let built = build(&options.tests)?;
    let initramfs = if vms.is_empty() {
        None
    } else {
        Some(initramfs::build_initramfs(&built, &out)?)
    };

    let mut cells = Vec::new();
    if with_host {
        for backend in HOST_BACKENDS.iter().filter(backend_selected) {
            cells.push(cell::run_on_host(&built, options, backend, &out)?);
        }
    }
    if let Some(initramfs) = &initramfs {
        for (kernel, backends) in &vms {
            for backend in backends.iter().filter(backend_selected) {
                cells.push(cell::run_in_vm_until_it_does_not_crash(
                    kernel, initramfs, &built, options, backend, &out,
                )?);
            }
        }
    }
    matrix::print_matrix(&cells);
    let failed = cells.iter().filter(|c| !c.outcome.ok()).count();
    if failed > 0 {
        bail!("{failed} of {} kernel × backend cells failed", cells.len());
    }
    Ok(())
}

/// The agent and the integration test binaries, built in release mode.
struct Built {
    /// Also where the tests look for it: `CARGO_BIN_EXE_nsipc-agent` is this absolute path.
    agent: PathBuf,
    /// `(target name, executable)` of every integration test of nsipc-agent.
    tests: Vec<(String, PathBuf)>,
}

/// Builds the agent and the test binaries: those named in `only`, or all of [`PROBE_TESTS`].
fn build(only: &[String]) -> Result<Built> {
    let output = cargo()
        .args([
            "test",
            "--release",
            "--no-run",
            "--message-format=json-render-diagnostics",
            "--features",
            crate::PRIVILEGED_TESTS,
            "--package",
            "nsipc-agent",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    ensure!(
        output.status.success(),
        "building the agent and its tests failed"
    );
    let mut agent = None;
    let mut tests = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let message: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("cargo printed {line}"))?;
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(executable) = message["executable"].as_str() else {
            continue;
        };
        let target = &message["target"];
        let is_kind = |kind: &str| {
            target["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == kind))
        };
        let name = target["name"].as_str().unwrap_or_default();
        if is_kind("bin") && name == "nsipc-agent" && message["profile"]["test"] == false {
            agent = Some(PathBuf::from(executable));
        } else if is_kind("test")
            && PROBE_TESTS.contains(&name)
            && (only.is_empty() || only.iter().any(|t| t == name))
        {
            tests.push((name.to_owned(), PathBuf::from(executable)));
        }
    }
    let agent = agent.context("cargo built no nsipc-agent binary")?;
    ensure!(!tests.is_empty(), "cargo built no integration tests");
    Ok(Built { agent, tests })
}
