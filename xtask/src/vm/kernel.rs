//! Debian's cloud kernels: the newest package of a series (apt-cache, in dpkg's version order),
//! downloaded with apt-get, its `boot/` unpacked into the cache, and its config checked for what
//! the initramfs needs built in. A series the machine's own Debian release does not carry (5.10,
//! from Debian 11) comes from that release's archive, through a private sources list, package
//! lists and cache under the vm cache: the machine's apt configuration is left alone.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::run;

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

/// A Debian cloud kernel, ready to boot.
pub(super) struct Kernel {
    pub(super) package: String,
    /// `uname -r` of this kernel, e.g. 6.1.0-56-cloud-amd64.
    pub(super) release: String,
    pub(super) vmlinuz: PathBuf,
}

/// Where apt looks for a series' packages.
#[derive(Clone, Copy)]
pub(super) enum Archive {
    /// The machine's own apt sources.
    Host,
    /// The main and security archives of this Debian release (e.g. `bullseye`).
    Release(&'static str),
}

/// apt-get and apt-cache, reading the sources of one [`Archive`].
struct Apt {
    /// `-o` options that point apt at a private sources list, lists and cache; none for the host.
    options: Vec<String>,
    /// The private package lists, for [`Archive::Release`].
    private_lists: Option<PathBuf>,
}

impl Apt {
    /// For [`Archive::Release`], writes its sources list under `cache` (lists and the binary
    /// cache go there too).
    fn new(archive: Archive, cache: &Path) -> Result<Self> {
        let Archive::Release(release) = archive else {
            return Ok(Self {
                options: Vec::new(),
                private_lists: None,
            });
        };
        let root = cache.join(format!("apt-{release}"));
        let lists = root.join("lists");
        let parts = root.join("sources.list.d");
        for dir in [lists.join("partial"), parts.clone(), root.join("cache")] {
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let sources = root.join("sources.list");
        fs::write(
            &sources,
            format!(
                "deb http://deb.debian.org/debian {release} main\n\
                 deb http://deb.debian.org/debian-security {release}-security main\n"
            ),
        )
        .with_context(|| format!("writing {}", sources.display()))?;
        let option = |name: &str, path: &Path| format!("{name}={}", path.display());
        Ok(Self {
            options: [
                option("Dir::Etc::sourcelist", &sources),
                option("Dir::Etc::sourceparts", &parts),
                option("Dir::State::Lists", &lists),
                option("Dir::Cache", &root.join("cache")),
            ]
            .into_iter()
            .flat_map(|o| ["-o".to_owned(), o])
            .collect(),
            private_lists: Some(lists),
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.args(&self.options);
        command
    }

    /// A private source has no package lists until its first update.
    fn lists_missing(&self) -> bool {
        self.private_lists.as_deref().is_some_and(|lists| {
            fs::read_dir(lists)
                .map(|entries| entries.flatten().all(|e| e.file_name() == "partial"))
                .unwrap_or(true)
        })
    }
}

/// The newest `linux-image-<series>.*-cloud-amd64` package apt can download from `archive`,
/// downloaded and unpacked into `cache` unless it already is there.
pub(super) fn fetch_kernel(series: &str, archive: Archive, cache: &Path) -> Result<Kernel> {
    let apt = Apt::new(archive, cache)?;
    if apt.lists_missing() {
        run(apt.command("apt-get").args(["update", "-qq"]))
            .context("updating the package lists of a private apt source")?;
    }
    let (package, version) = newest_kernel_package(&apt, series)?;
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
            run(apt
                .command("apt-get")
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
fn newest_kernel_package(apt: &Apt, series: &str) -> Result<(String, String)> {
    let mut names = search_kernel_packages(apt, series)?;
    if names.is_empty() {
        // A machine whose package lists were cleaned knows no kernel yet.
        run(apt.command("apt-get").args(["update", "-qq"]))?;
        names = search_kernel_packages(apt, series)?;
    }
    ensure!(
        !names.is_empty(),
        "apt knows no linux-image-{series}.*-cloud-amd64 package"
    );
    let policy = apt
        .command("apt-cache")
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

fn search_kernel_packages(apt: &Apt, series: &str) -> Result<Vec<String>> {
    let pattern = format!("^linux-image-{}", series.replace('.', "\\."));
    let out = apt
        .command("apt-cache")
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
