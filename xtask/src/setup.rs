//! Installing the build and test toolchain, idempotently: each piece is checked first and only
//! installed when missing. The recipe is the one verified in shared/toolchain.md.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::run;

/// Debian packages: LLVM 22 for bpf-linker, and the real programs the tests drive.
const DEBIAN_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "util-linux",
    "util-linux-extra",
    "procps",
    "perl",
    "jq",
    "stress-ng",
    // The cleanup tests list the kernel's BPF programs, links and maps with it.
    "bpftool",
    // `cargo xtask manifest` installs kubernetes-validate into a venv of Debian's python3.
    "python3-venv",
    // The shipping recipe's test (docs/shipping.md) rotates the agent's file with it, and
    // reads the stream back from a private journald with journalctl (package systemd).
    "logrotate",
    "systemd",
    // The metrics test scrapes the agent with the real Prometheus and queries its HTTP API.
    "prometheus",
    // The packaging test reads the installed man page and completes with the installed
    // bash completion, as an operator would.
    "man-db",
    "bash-completion",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// aya-build builds the probes with the toolchain of exactly this name.
const EBPF_TOOLCHAIN: &str = "nightly";

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn ensure() -> Result<()> {
    ensure_debian_packages(DEBIAN_PACKAGES)?;
    ensure_rust_src()?;
    ensure_bpf_linker()
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.ends_with(b"install ok installed"))
}

/// Installs the Debian packages that are missing.
pub fn ensure_debian_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {}: run as root, or `apt-get install` them",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn ensure_rust_src() -> Result<()> {
    let sysroot = Command::new("rustup")
        .args(["run", EBPF_TOOLCHAIN, "rustc", "--print", "sysroot"])
        .output();
    if let Ok(out) = &sysroot
        && out.status.success()
    {
        let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
            return Ok(());
        }
        eprintln!("xtask: adding rust-src to the {EBPF_TOOLCHAIN} toolchain");
        return run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            EBPF_TOOLCHAIN,
        ]));
    }
    eprintln!("xtask: installing the {EBPF_TOOLCHAIN} toolchain with rust-src");
    run(Command::new("rustup").args([
        "toolchain",
        "install",
        EBPF_TOOLCHAIN,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
        "--component",
        "clippy",
    ]))
}

fn ensure_bpf_linker() -> Result<()> {
    let works = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION)
        });
    if works {
        return Ok(());
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
    // Without LLVM_PREFIX its build finds the system's default LLVM 14 and fails to link.
    run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
                "--locked",
            ])
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )
    .context("installing bpf-linker")
}
