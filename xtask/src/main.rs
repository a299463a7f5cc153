//! Project tasks: `cargo xtask setup | build | trace | test | lint | schema | deb | image |
//! manifest | vm-test | bench`.
//!
//! Every task that needs the eBPF toolchain runs `setup` first; setup checks before it installs,
//! so it is quick when everything is there.

mod bench;
mod deb;
mod manifest;
mod setup;
mod vm;

use std::{
    os::{fd::AsFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "nsipc-agent project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (Debian packages, rust-src, bpf-linker).
    Setup,
    /// Set up and build the agent (release).
    Build,
    /// Set up, build, and run `nsipc-agent trace` with these arguments (needs root).
    #[command(after_help = "Example:\n  cargo xtask trace | jq -c 'select(.event == \"msg.get\")'")]
    Trace {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up and run every test: the .deb's checks, unit tests and the privileged tests
    /// against the running kernel (needs root; they install the .deb), formatting and clippy
    /// on both sides, and the DaemonSet manifest's validation.
    Test,
    /// Build target/debian/nsipc-agent_<version>_<arch>.deb (the agent, its systemd unit, the
    /// docs) and check it.
    Deb,
    /// Build the container image the DaemonSet runs (packaging/daemonset.yaml):
    /// nsipc-agent:<version>, with `docker import` (needs root; starts dockerd if needed).
    Image,
    /// Validate packaging/daemonset.yaml against the Kubernetes schemas (strict, offline) of
    /// several Kubernetes releases with kubernetes-validate (installed into a venv under
    /// ~/.cache/nsipc-agent/), and check that a misspelt field is refused.
    Manifest,
    /// cargo fmt --check and clippy (userspace and eBPF).
    Lint,
    /// Regenerate docs/events.schema.json, the JSON Schema of every line the agent writes,
    /// from the agent's own line writers; then check that docs/events.md documents what it has.
    Schema,
    /// Run the privileged tests on the host's kernel and, under qemu, on Debian's newest 5.10,
    /// 6.1 and 6.12 cloud kernels; print a kernel × backend matrix (needs root for the host).
    VmTest {
        /// Only these kernels: `host` and/or the series `5.10`, `6.1`, `6.12` (default: all).
        #[arg(long, value_delimiter = ',')]
        kernels: Vec<String>,
        /// Only these backends: `tracepoint`, `kprobe`, `fentry`, `auto` (default: every
        /// backend each kernel supports).
        #[arg(long, value_delimiter = ',')]
        backends: Vec<String>,
        /// Only these test binaries: `privileged`, `lifecycle`, `differential`, `races`,
        /// `docker_story`, `equivalence` (default: all).
        #[arg(long, value_delimiter = ',')]
        tests: Vec<String>,
        /// NAME=VALUE in every test's environment, on the host and in the VMs (repeatable),
        /// e.g. `--env NSIPC_DIFF_SEEDS=40 --env NSIPC_DIFF_BUDGET_SECS=3000` for a long run.
        #[arg(long, value_parser = vm::parse_env)]
        env: Vec<(String, String)>,
        /// Kill a cell (a VM run, or the host's tests) after this many minutes.
        #[arg(long, default_value_t = 10)]
        timeout_mins: u64,
    },
    /// Set up, build, and measure the agent's cost side by side with no tracing, a minimal
    /// eBPF floor and bpftrace, on IPC workloads (needs root; a few minutes). Prints the
    /// results and writes them to docs/bench.md.
    Bench(bench::BenchArgs),
    /// One benchmark workload, timed (run by `bench` from a release build).
    #[command(hide = true)]
    BenchWorkload(bench::workload::WorkloadArgs),
    /// Counts an agent stream on stdin (run by `bench` from a release build).
    #[command(hide = true)]
    BenchReader(bench::reader::ReaderArgs),
    /// The memory scenario's namespaces and objects (run by `bench` from a release build).
    #[command(hide = true)]
    BenchMemoryWorkload(bench::memory::MemoryWorkloadArgs),
}

/// What `bench` needs besides the build toolchain.
const BENCH_PACKAGES: &[&str] = &["bpftrace", "bpftool", "stress-ng", "linux-perf"];

/// The feature that builds nsipc-agent's integration tests: they load the probes, root only
/// (see nsipc-agent/Cargo.toml).
pub const PRIVILEGED_TESTS: &str = "nsipc-agent/privileged-tests";
/// The feature that builds `nsipc-bench`, the binary `cargo xtask bench` drives.
const BENCH: &str = "nsipc-agent/bench";

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::ensure(),
        Task::Build => {
            setup::ensure()?;
            build(&["nsipc-agent"])
        }
        Task::Trace { args } => {
            setup::ensure()?;
            build(&["nsipc-agent"])?;
            let agent = workspace_root().join("target/release/nsipc-agent");
            // Replace this process so signals and the stdout pipe reach the agent directly.
            let err = Command::new(&agent).arg("trace").args(args).exec();
            Err(err).with_context(|| format!("running {}", agent.display()))
        }
        Task::Test => {
            setup::ensure()?;
            if !setup::is_root() {
                bail!(
                    "the privileged tests load eBPF programs and need root: run `sudo cargo xtask test`"
                );
            }
            let test = [
                "test",
                "--workspace",
                "--exclude",
                "nsipc-ebpf",
                "--release",
                "--features",
                PRIVILEGED_TESTS,
            ];
            // Build first, then package the release agent the tests run (the packaging test
            // installs that .deb with dpkg), then test.
            run(cargo().args(test).arg("--no-run"))?;
            deb::build_and_check()?;
            run(cargo().args(test))?;
            lint()?;
            manifest::check()
        }
        Task::Deb => {
            setup::ensure()?;
            build(&["nsipc-agent"])?;
            deb::build_and_check().map(drop)
        }
        Task::Image => {
            setup::ensure()?;
            build(&["nsipc-agent"])?;
            let root = workspace_root();
            run(Command::new("bash")
                .arg(root.join("nsipc-agent/tests/containers/setup.sh"))
                .arg("docker"))?;
            run(Command::new(root.join("packaging/image.sh"))
                .arg(root.join("target/release/nsipc-agent"))
                .arg(format!("nsipc-agent:{}", env!("CARGO_PKG_VERSION"))))
        }
        Task::Manifest => {
            // Only Python is needed, not the eBPF toolchain.
            setup::ensure_debian_packages(&["python3-venv"])?;
            manifest::check()
        }
        Task::Lint => {
            setup::ensure()?;
            lint()
        }
        Task::Schema => {
            setup::ensure()?;
            schema()
        }
        Task::VmTest {
            kernels,
            backends,
            tests,
            env,
            timeout_mins,
        } => vm::vm_test(&vm::Options {
            kernels,
            backends,
            tests,
            env,
            timeout: std::time::Duration::from_secs(timeout_mins * 60),
        }),
        Task::Bench(args) => {
            setup::ensure()?;
            setup::ensure_debian_packages(BENCH_PACKAGES)?;
            if !setup::is_root() {
                bail!(
                    "the benchmark loads eBPF programs and needs root: run `sudo cargo xtask bench`"
                );
            }
            // The workload generator and the pipe reader are this program, built for release
            // so that their own loops cost as little as they can.
            build_with(&["nsipc-agent", "xtask"], &[BENCH])?;
            bench::run(&args, &workspace_root())
        }
        Task::BenchWorkload(args) => bench::workload::run(&args),
        Task::BenchReader(args) => bench::reader::run(&args),
        Task::BenchMemoryWorkload(args) => bench::memory::generate(&args),
    }
}

/// Release build of these packages.
fn build(packages: &[&str]) -> Result<()> {
    build_with(packages, &[])
}

/// Release build of these packages with these features (`nsipc-agent/bench`: the bench binary).
fn build_with(packages: &[&str], features: &[&str]) -> Result<()> {
    // Build output goes to stderr so that `cargo xtask trace | jq` only sees the agent's stdout.
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stderr")?;
    let mut cmd = cargo();
    cmd.args(["build", "--release"]);
    for package in packages {
        cmd.args(["--package", package]);
    }
    for feature in features {
        cmd.args(["--features", feature]);
    }
    run(cmd.stdout(stderr))
}

fn lint() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    // The eBPF crate is linted below, for the bpf target (on the host it does not build).
    run(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "nsipc-ebpf",
        "--all-targets",
        "--features",
        PRIVILEGED_TESTS,
        "--release",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Above: the shipped configuration. The bench binary is built only with its feature.
    run(cargo().args([
        "clippy",
        "--package",
        "nsipc-agent",
        "--bin",
        "nsipc-bench",
        "--features",
        BENCH,
        "--release",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The eBPF crate only builds for the bpf target (nightly, build-std); on the host, feature
    // unification would give it nsipc-common/user and so std.
    run(Command::new("cargo")
        .current_dir(workspace_root().join("nsipc-ebpf"))
        .args([
            "+nightly",
            "clippy",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--bins",
            "--",
            "-D",
            "warnings",
        ]))
}

/// The schema is inferred from the lines the agent's writers make of samples of every kind (a
/// unit test of nsipc-agent, src/schema/): that test writes the file when `NSIPC_WRITE_SCHEMA`
/// is set, and compares it otherwise. The other schema tests then check the reference against
/// the new file.
fn schema() -> Result<()> {
    // The schema's tests are the library's (the binary is a thin main): a filter that matches
    // nothing passes, so each run must show that it ran some.
    let test = |write: bool, filter: &str, exact: bool| {
        let mut cmd = cargo();
        cmd.args([
            "test",
            "--release",
            "--package",
            "nsipc-agent",
            "--lib",
            "--",
            filter,
        ]);
        if exact {
            cmd.arg("--exact");
        }
        if write {
            cmd.env("NSIPC_WRITE_SCHEMA", "1");
        } else {
            cmd.env_remove("NSIPC_WRITE_SCHEMA");
        }
        let output = cmd
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("starting {cmd:?}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        print!("{stdout}");
        ensure!(
            output.status.success(),
            "{cmd:?} failed ({})",
            output.status
        );
        ensure!(
            !stdout.contains("test result: ok. 0 passed"),
            "{cmd:?} ran no test: the schema's tests moved?"
        );
        Ok(())
    };
    test(
        true,
        "schema::tests::the_checked_in_schema_is_what_the_code_writes",
        true,
    )?;
    test(false, "schema::", false)?;
    eprintln!("xtask: docs/events.schema.json written and checked");
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .to_owned()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs a command; its failure is ours.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}
