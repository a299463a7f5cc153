//! `cargo xtask vm-test`: the privileged tests on several real kernels.
//!
//! The host runs them on its own kernel. Debian's cloud kernels (the newest 6.1 and 6.12) run
//! them under qemu, from an initramfs that holds the agent, the test binaries and every program
//! the tests drive, all taken from this machine. qemu runs with TCG: nested KVM hung on these
//! machines. Each (kernel, backend) cell is one run; the result is a matrix table, and the
//! command fails if any cell failed.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    hash::{DefaultHasher, Hash as _, Hasher as _},
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{cargo, run, setup, workspace_root};

/// What booting kernels under qemu takes, from Debian's packages.
const VM_PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "cpio"];

/// A kernel series tested under qemu, and the backends tested on it.
struct Series {
    /// Debian's cloud kernel packages are `linux-image-<series>.*-cloud-amd64`.
    series: &'static str,
    backends: &'static [&'static str],
}

/// Debian's kernels have kprobes, and fentry loads there; the host refuses both, so there
/// `auto` (which must pick tracepoints) is tested beside `tracepoint`.
const DEBIAN_KERNELS: &[Series] = &[
    Series {
        series: "6.1",
        backends: &["tracepoint", "kprobe", "fentry"],
    },
    Series {
        series: "6.12",
        backends: &["tracepoint", "kprobe", "fentry"],
    },
];
const HOST_BACKENDS: &[&str] = &["tracepoint", "auto"];
const BACKENDS: &[&str] = &["tracepoint", "kprobe", "fentry", "auto"];

/// Kernel options the agent and this harness need, built in: the initramfs loads no modules.
const REQUIRED_CONFIG: &[(&str, &str)] = &[
    ("CONFIG_BPF_SYSCALL", "bpf(2), maps, ring buffers"),
    ("CONFIG_DEBUG_INFO_BTF", "/sys/kernel/btf/vmlinux"),
    ("CONFIG_BPF_EVENTS", "eBPF programs on tracepoints"),
    ("CONFIG_FTRACE_SYSCALLS", "the syscalls:* tracepoints"),
    ("CONFIG_TRACING", "tracefs"),
    ("CONFIG_SYSVIPC", "SysV IPC"),
    ("CONFIG_IPC_NS", "IPC namespaces"),
    ("CONFIG_BLK_DEV_INITRD", "booting from an initramfs"),
    ("CONFIG_RD_GZIP", "a gzip initramfs"),
    ("CONFIG_BINFMT_SCRIPT", "/init is a script"),
    ("CONFIG_DEVTMPFS", "/dev"),
    ("CONFIG_SERIAL_8250_CONSOLE", "the console on ttyS0"),
];

/// Programs the privileged tests run (tests/privileged.rs, tests/support), copied from this
/// machine with their libraries, so every kernel sees the very same clients. `sh` also runs
/// their scripts; `bash` and `jq` run examples/docker-story.sh (tests/docker_story.rs); busybox
/// provides the rest of the VM's userland.
const TEST_PROGRAMS: &[&str] = &[
    "sh", "true", "sleep", "readlink", "awk", "perl", "unshare", "nsenter", "ipcs", "ipcrm",
    "lsns", "setpriv", "bash", "jq",
];
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
const BUSYBOX: &str = "/bin/busybox";
/// Where the test binaries go in the initramfs; /init runs every file there.
const TESTS_DIR: &str = "nsipc-tests";

/// Each run of a test binary is framed by these lines, in the VM's console log as in the host's
/// log, so one parser reads both.
const MARKER: &str = "NSIPC-MATRIX";

/// PID 1 in the VM.
const INIT: &str = r#"#!/bin/busybox sh
# PID 1 of the vm-test initramfs: mount what the agent and the tests need, run every test
# binary, frame each run with NSIPC-MATRIX lines on the console, power off.
/bin/busybox --install -s /bin
export PATH=/usr/bin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
# No tmpfs on /tmp: the initramfs root is already writable, and the agent sits at the absolute
# path the tests were built with, which is under /tmp when the checkout is.
cd /tmp
# NSIPC_BACKEND comes from the kernel command line (unknown name=value parameters become
# init's environment).
echo "NSIPC-MATRIX kernel=$(uname -r) backend=$NSIPC_BACKEND"
for test in /nsipc-tests/*; do
    echo "NSIPC-MATRIX begin=${test##*/}"
    "$test" --test-threads=1 --show-output
    echo "NSIPC-MATRIX end=${test##*/} exit=$?"
done
poweroff -f
"#;
/// setpriv --reuid=65534 and the programs' user lookups want these.
const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

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
             `sudo cargo xtask vm-test`, or `--kernels 6.1,6.12` for the VMs only"
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
        vms.push((fetch_kernel(series.series, &cache)?, series.backends));
    }
    let built = build(&options.tests)?;
    let initramfs = if vms.is_empty() {
        None
    } else {
        Some(build_initramfs(&built, &out)?)
    };

    let mut cells = Vec::new();
    if with_host {
        for backend in HOST_BACKENDS.iter().filter(backend_selected) {
            cells.push(run_on_host(&built, options, backend, &out)?);
        }
    }
    if let Some(initramfs) = &initramfs {
        for (kernel, backends) in &vms {
            for backend in backends.iter().filter(backend_selected) {
                cells.push(run_in_vm_once_more_if_it_crashed(
                    kernel, initramfs, &built, options, backend, &out,
                )?);
            }
        }
    }
    print_matrix(&cells);
    let failed = cells.iter().filter(|c| !c.outcome.ok()).count();
    if failed > 0 {
        bail!("{failed} of {} kernel × backend cells failed", cells.len());
    }
    Ok(())
}

/// A Debian cloud kernel, ready to boot.
struct Kernel {
    package: String,
    /// `uname -r` of this kernel, e.g. 6.1.0-56-cloud-amd64.
    release: String,
    vmlinuz: PathBuf,
}

/// The newest `linux-image-<series>.*-cloud-amd64` package apt can download, downloaded and
/// unpacked into `cache` unless it already is there.
fn fetch_kernel(series: &str, cache: &Path) -> Result<Kernel> {
    let (package, version) = newest_kernel_package(series)?;
    let release = package
        .strip_prefix("linux-image-")
        .expect("matched by is_series_package")
        .to_owned();
    let unpacked = cache.join(format!("{package}_{version}"));
    let vmlinuz = unpacked.join(format!("boot/vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        // apt-get download names the file so, with the epoch's colon escaped.
        let deb = cache.join(format!(
            "{package}_{}_amd64.deb",
            version.replace(':', "%3a")
        ));
        if !deb.is_file() {
            eprintln!("xtask: downloading {package} {version}");
            // The _apt user cannot write into target/; the download runs as the caller.
            run(Command::new("apt-get")
                .args(["download", "-q", "-o", "APT::Sandbox::User=root"])
                .arg(format!("{package}={version}"))
                .current_dir(cache))
            .with_context(|| format!("downloading {package}"))?;
        }
        ensure!(deb.is_file(), "apt-get download left no {}", deb.display());
        unpack_boot(&deb, &unpacked)?;
        ensure!(
            vmlinuz.is_file(),
            "{} has no boot/vmlinuz-{release}",
            deb.display()
        );
    }
    check_config(&unpacked.join(format!("boot/config-{release}")), &package)?;
    Ok(Kernel {
        package,
        release,
        vmlinuz,
    })
}

/// Name and version of the newest downloadable kernel package of `series`.
fn newest_kernel_package(series: &str) -> Result<(String, String)> {
    let mut names = search_kernel_packages(series)?;
    if names.is_empty() {
        // A machine whose package lists were cleaned knows no kernel yet.
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        names = search_kernel_packages(series)?;
    }
    ensure!(
        !names.is_empty(),
        "apt knows no linux-image-{series}.*-cloud-amd64 package"
    );
    let policy = Command::new("apt-cache")
        .arg("policy")
        .args(&names)
        .output()
        .context("running apt-cache policy")?;
    ensure!(policy.status.success(), "apt-cache policy failed");
    let mut newest: Option<(String, String)> = None;
    for (name, version) in candidates(&String::from_utf8_lossy(&policy.stdout)) {
        let newer = match &newest {
            None => true,
            Some((_, best)) => version_greater(&version, best)?,
        };
        if newer {
            newest = Some((name, version));
        }
    }
    newest.with_context(|| {
        format!(
            "no linux-image-{series}.*-cloud-amd64 package has a download candidate: {}",
            names.join(" ")
        )
    })
}

fn search_kernel_packages(series: &str) -> Result<Vec<String>> {
    let pattern = format!("^linux-image-{}", series.replace('.', "\\."));
    let out = Command::new("apt-cache")
        .args(["search", "--names-only", &pattern])
        .output()
        .context("running apt-cache search")?;
    ensure!(out.status.success(), "apt-cache search {pattern} failed");
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| is_series_package(name, series))
        .map(str::to_owned)
        .collect())
}

/// `linux-image-6.1.0-56-cloud-amd64` is a 6.1 kernel, `linux-image-6.12.117+deb12-cloud-amd64`
/// a 6.12 one; meta packages (`linux-image-6.12-cloud-amd64`), `-dbg` and `-unsigned` are not.
fn is_series_package(name: &str, series: &str) -> bool {
    name.strip_prefix("linux-image-")
        .and_then(|rest| rest.strip_suffix("-cloud-amd64"))
        .and_then(|release| release.strip_prefix(series))
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// `(package, candidate version)` from `apt-cache policy` output, skipping `(none)`.
fn candidates(policy: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut package = None;
    for line in policy.lines() {
        if !line.starts_with(' ') {
            package = line.strip_suffix(':').map(str::to_owned);
        } else if let Some(version) = line.trim().strip_prefix("Candidate:") {
            let version = version.trim();
            if let Some(package) = &package
                && version != "(none)"
            {
                found.push((package.clone(), version.to_owned()));
            }
        }
    }
    found
}

/// Debian version order, as dpkg itself sees it.
fn version_greater(a: &str, b: &str) -> Result<bool> {
    let status = Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .context("running dpkg --compare-versions")?;
    Ok(status.success())
}

/// Unpacks only `boot/` of a kernel package (its modules are not needed: see REQUIRED_CONFIG),
/// into `dest`, atomically.
fn unpack_boot(deb: &Path, dest: &Path) -> Result<()> {
    let mut partial = dest.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    if partial.exists() {
        fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting dpkg-deb")?;
    let tar = Command::new("tar")
        .args(["-x", "-C"])
        .arg(&partial)
        .arg("./boot")
        .stdin(dpkg.stdout.take().expect("piped"))
        .status()
        .context("running tar")?;
    let dpkg = dpkg.wait().context("waiting for dpkg-deb")?;
    ensure!(
        dpkg.success() && tar.success(),
        "unpacking boot/ of {} failed (dpkg-deb {dpkg}, tar {tar})",
        deb.display()
    );
    fs::rename(&partial, dest)
        .with_context(|| format!("renaming {} to {}", partial.display(), dest.display()))
}

/// Fails unless every REQUIRED_CONFIG option is built in.
fn check_config(config: &Path, package: &str) -> Result<()> {
    let text =
        fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    for (option, why) in REQUIRED_CONFIG {
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(option)?.strip_prefix('='));
        match value {
            Some("y") => {}
            Some("m") => bail!(
                "{package} builds {option} ({why}) as a module; vm-test's initramfs loads no modules"
            ),
            _ => bail!("{package} lacks {option} ({why})"),
        }
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

/// The gzip'd newc initramfs every VM boots. Rebuilt only when an input changed.
fn build_initramfs(built: &Built, out: &Path) -> Result<PathBuf> {
    // Destination in the image → file on this machine.
    let mut files = BTreeMap::new();
    files.insert(PathBuf::from(BUSYBOX), PathBuf::from(BUSYBOX));
    files.insert(built.agent.clone(), built.agent.clone());
    add_libraries(&built.agent, &mut files)?;
    for (name, exe) in &built.tests {
        files.insert(Path::new("/").join(TESTS_DIR).join(name), exe.clone());
        add_libraries(exe, &mut files)?;
    }
    for program in TEST_PROGRAMS {
        let path = find_in_path(program)?;
        files.insert(Path::new("/usr/bin").join(program), path.clone());
        add_libraries(&path, &mut files)?;
    }

    // Sizes and mtimes stand for the contents: cheap, and cargo and dpkg both update them. The
    // key only needs to be stable on this machine.
    let mut hasher = DefaultHasher::new();
    (INIT, PASSWD, GROUP).hash(&mut hasher);
    for (dest, source) in &files {
        let meta = fs::metadata(source).with_context(|| format!("reading {}", source.display()))?;
        let mtime = meta.modified()?.duration_since(UNIX_EPOCH)?;
        (dest, source, meta.len(), mtime).hash(&mut hasher);
    }
    let key = format!("{:016x}", hasher.finish());
    let image = out.join("initramfs.gz");
    let key_file = out.join("initramfs.key");
    if image.is_file() && fs::read_to_string(&key_file).is_ok_and(|k| k == key) {
        return Ok(image);
    }

    eprintln!("xtask: building {}", image.display());
    let root = out.join("initramfs");
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    for dir in ["proc", "sys", "dev", "tmp", "etc", "root", "bin"] {
        fs::create_dir_all(root.join(dir))?;
    }
    for (dest, source) in &files {
        let target = root.join(dest.strip_prefix("/").expect("absolute"));
        fs::create_dir_all(target.parent().expect("in a directory"))?;
        fs::copy(source, &target)
            .with_context(|| format!("copying {} into the initramfs", source.display()))?;
    }
    write_file(&root.join("init"), INIT, 0o755)?;
    write_file(&root.join("etc/passwd"), PASSWD, 0o644)?;
    write_file(&root.join("etc/group"), GROUP, 0o644)?;

    let partial = out.join("initramfs.gz.partial");
    let mut find = Command::new("find")
        .args([".", "-print0"])
        .current_dir(&root)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting find")?;
    let mut cpio = Command::new("cpio")
        .args([
            "--null",
            "--create",
            "--format=newc",
            "--owner=0:0",
            "--quiet",
        ])
        .current_dir(&root)
        .stdin(find.stdout.take().expect("piped"))
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cpio")?;
    // -1: the image is rebuilt often and the kernel unpacks it under TCG; speed beats size.
    let gzip = Command::new("gzip")
        .arg("-1")
        .stdin(cpio.stdout.take().expect("piped"))
        .stdout(File::create(&partial).with_context(|| format!("creating {}", partial.display()))?)
        .status()
        .context("running gzip")?;
    let cpio = cpio.wait().context("waiting for cpio")?;
    let find = find.wait().context("waiting for find")?;
    ensure!(
        find.success() && cpio.success() && gzip.success(),
        "packing the initramfs failed (find {find}, cpio {cpio}, gzip {gzip})"
    );
    fs::rename(&partial, &image).with_context(|| format!("writing {}", image.display()))?;
    fs::write(&key_file, key).with_context(|| format!("writing {}", key_file.display()))?;
    Ok(image)
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// The executable `name` would run as, through PATH.
fn find_in_path(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .with_context(|| format!("the tests run {name}, which is not in PATH"))
}

/// Adds the shared libraries `ldd` lists for `exe` (and the dynamic loader) at the same paths.
fn add_libraries(exe: &Path, files: &mut BTreeMap<PathBuf, PathBuf>) -> Result<()> {
    let out = Command::new("ldd")
        .arg(exe)
        .output()
        .with_context(|| format!("running ldd {}", exe.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // Static executables need nothing more.
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(());
        }
        bail!("ldd {} failed: {}", exe.display(), out.status);
    }
    for library in ldd_paths(&text).with_context(|| format!("libraries of {}", exe.display()))? {
        files.insert(library.clone(), library);
    }
    Ok(())
}

/// Library paths in `ldd` output: `libc.so.6 => /lib/.../libc.so.6 (0x…)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`; the vDSO has no file.
fn ldd_paths(ldd: &str) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for line in ldd.lines() {
        let line = line.trim();
        ensure!(!line.contains("not found"), "missing library: {line}");
        let file = match line.split_once("=>") {
            Some((_, right)) => right.trim(),
            None => line,
        };
        let file = file.split(" (").next().unwrap_or_default().trim();
        if file.starts_with('/') {
            paths.push(PathBuf::from(file));
        }
    }
    Ok(paths)
}

/// One cell of the matrix.
struct Cell {
    kernel: String,
    backend: String,
    outcome: Outcome,
    elapsed: Duration,
    log: PathBuf,
    /// The kernel crashed in a first run of the cell, which was run again: the crash's first
    /// console line and that run's log.
    crashed_first: Option<(String, PathBuf)>,
}

/// The first console line of a crash of the kernel itself (an oops, a BUG, a soft lockup or a
/// panic), as opposed to a test that failed.
fn kernel_crash(console: &str) -> Option<&str> {
    const SIGNS: [&str; 4] = [
        "BUG: ",
        "Oops: ",
        "watchdog: BUG: soft lockup",
        "Kernel panic",
    ];
    console
        .lines()
        .find(|line| SIGNS.iter().any(|sign| line.contains(sign)))
        .map(str::trim)
}

/// Runs a VM cell, and once more if it failed with the kernel crashing, or never starting
/// init: under TCG the guest kernel sometimes oopses on its own (seen here: 6.12's rethook
/// jumping to address 0 while kretprobes were detached mid-syscall, once in several runs of
/// the same cell) or stays silent after the BIOS, and what follows says nothing of the agent. The matrix shows the retry and where the first
/// run's log is; a cell that crashes twice fails.
fn run_in_vm_once_more_if_it_crashed(
    kernel: &Kernel,
    initramfs: &Path,
    built: &Built,
    options: &Options,
    backend: &str,
    out: &Path,
) -> Result<Cell> {
    let cell = run_in_vm(kernel, initramfs, built, options, backend, out)?;
    if cell.outcome.ok() {
        return Ok(cell);
    }
    let crash = match kernel_crash(&read_log(&cell.log)?) {
        Some(crash) => crash.to_owned(),
        // Seen once: the console silent after the BIOS until the cell's timeout.
        None if cell.outcome.release.is_none() => "init never started".to_owned(),
        None => return Ok(cell),
    };
    let first_log = cell.log.with_extension("crashed.log");
    fs::rename(&cell.log, &first_log).with_context(|| format!("keeping {}", cell.log.display()))?;
    eprintln!(
        "xtask: {} / {backend}: the kernel crashed ({crash}); running the cell once more",
        cell.kernel
    );
    let mut again = run_in_vm(kernel, initramfs, built, options, backend, out)?;
    again.crashed_first = Some((crash, first_log));
    Ok(again)
}

fn run_on_host(built: &Built, options: &Options, backend: &str, out: &Path) -> Result<Cell> {
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
        crashed_first: None,
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
        .args(["-nographic", "-nic", "none", "-no-reboot"])
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
    match status {
        None => outcome
            .problems
            .push(format!("qemu killed after {:?}", options.timeout)),
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
        crashed_first: None,
    })
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

/// What one cell's log says.
#[derive(Debug, Default)]
struct Outcome {
    /// `uname -r` where the tests ran.
    release: Option<String>,
    passed: u32,
    failed: u32,
    failed_tests: Vec<String>,
    /// What each failed test said (its panic message and the lines after it, up to
    /// [`PANIC_EXCERPT_LINES`]): printed under the matrix, so a CI log names the failure and a
    /// replay command without the cell's log.
    panics: Vec<String>,
    /// Anything that makes the cell fail besides failed tests.
    problems: Vec<String>,
}

impl Outcome {
    /// A cell where nothing ran is a failure too.
    fn ok(&self) -> bool {
        self.problems.is_empty() && self.failed == 0 && self.passed > 0
    }
}

/// How many lines of a test's panic message the matrix repeats: the differential and races
/// tests put their divergences and the replay command first.
const PANIC_EXCERPT_LINES: usize = 40;

/// Reads the framed libtest output of every test binary in `expected` from a cell's log.
/// Kernel messages may share the console: markers and result lines are found anywhere in a line.
fn parse_log(log: &str, expected: &[(String, PathBuf)]) -> Outcome {
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

fn print_matrix(cells: &[Cell]) {
    let kernel_width = cells
        .iter()
        .map(|c| c.kernel.len())
        .max()
        .unwrap_or(0)
        .max(6);
    println!();
    println!(
        "{:kernel_width$}  {:10}  {:6}  {:>6}  {:>6}  {:>7}",
        "kernel", "backend", "result", "passed", "failed", "time"
    );
    for cell in cells {
        let result = if cell.outcome.ok() { "ok" } else { "FAILED" };
        println!(
            "{:kernel_width$}  {:10}  {:6}  {:>6}  {:>6}  {:>6.0}s",
            cell.kernel,
            cell.backend,
            result,
            cell.outcome.passed,
            cell.outcome.failed,
            cell.elapsed.as_secs_f64()
        );
    }
    for cell in cells {
        if let Some((crash, first_log)) = &cell.crashed_first {
            println!();
            println!(
                "{} / {}: run twice, the kernel crashed in the first run: {crash} (see {})",
                cell.kernel,
                cell.backend,
                first_log.display()
            );
        }
    }
    for cell in cells.iter().filter(|c| !c.outcome.ok()) {
        println!();
        println!(
            "{} / {}: see {}",
            cell.kernel,
            cell.backend,
            cell.log.display()
        );
        for test in &cell.outcome.failed_tests {
            println!("  failed: {test}");
        }
        for problem in &cell.outcome.problems {
            println!("  {problem}");
        }
        for panic in &cell.outcome.panics {
            for line in panic.lines() {
                println!("  | {line}");
            }
        }
    }
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
        let failed = "thread 'x' panicked at tests/lifecycle.rs:9:5:\ntest result: FAILED.\n";
        assert_eq!(kernel_crash(failed), None);
    }

    #[test]
    fn series_packages() {
        assert!(is_series_package("linux-image-6.1.0-56-cloud-amd64", "6.1"));
        assert!(is_series_package(
            "linux-image-6.12.117+deb12-cloud-amd64",
            "6.12"
        ));
        assert!(!is_series_package(
            "linux-image-6.12.117+deb12-cloud-amd64",
            "6.1"
        ));
        assert!(!is_series_package("linux-image-6.12-cloud-amd64", "6.12"));
        assert!(!is_series_package(
            "linux-image-6.1.0-56-cloud-amd64-dbg",
            "6.1"
        ));
        assert!(!is_series_package(
            "linux-image-6.1.0-56-cloud-amd64-unsigned",
            "6.1"
        ));
        assert!(!is_series_package("linux-image-6.1.0-56-amd64", "6.1"));
    }

    #[test]
    fn policy_candidates() {
        let policy = "\
linux-image-6.1.0-56-cloud-amd64:
  Installed: (none)
  Candidate: 6.1.192-2
  Version table:
     6.1.192-2 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
linux-image-6.1.0-47-cloud-amd64:
  Installed: (none)
  Candidate: (none)
";
        assert_eq!(
            candidates(policy),
            [(
                "linux-image-6.1.0-56-cloud-amd64".to_owned(),
                "6.1.192-2".to_owned()
            )]
        );
    }

    #[test]
    fn ldd_output() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f91)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f91)\n";
        assert_eq!(
            ldd_paths(ldd).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert!(ldd_paths("\tlibfoo.so.1 => not found\n").is_err());
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
