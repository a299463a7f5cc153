//! The initramfs every VM boots: busybox, the agent, the test binaries and the programs they
//! run, each with the shared libraries it loads, and the `/init` script that runs the tests.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    hash::{DefaultHasher, Hash as _, Hasher as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::UNIX_EPOCH,
};

use anyhow::{Context as _, Result, bail, ensure};

use super::Built;

/// Programs the privileged tests run (tests/privileged.rs, tests/support), copied from this
/// machine with their libraries, so every kernel sees the very same clients. `sh` also runs
/// their scripts; `bash` and `jq` run examples/docker-story.sh (tests/docker_story.rs); busybox
/// provides the rest of the VM's userland.
const TEST_PROGRAMS: &[&str] = &[
    "sh", "true", "sleep", "readlink", "awk", "perl", "unshare", "nsenter", "ipcs", "ipcrm",
    "ipcmk", "lsns", "setpriv", "bash", "jq",
];
const BUSYBOX: &str = "/bin/busybox";
/// Where the test binaries go in the initramfs; /init runs every file there.
const TESTS_DIR: &str = "nsipc-tests";

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
# Loopback, for the tests that scrape the agent's metrics endpoint on 127.0.0.1.
ip link set lo up
# No tmpfs on /tmp: the initramfs root is already writable, and the agent sits at the absolute
# path the tests were built with, which is under /tmp when the checkout is.
cd /tmp
# NSIPC_BACKEND comes from the kernel command line (unknown name=value parameters become
# init's environment).
echo "NSIPC-MATRIX kernel=$(uname -r) backend=$NSIPC_BACKEND"
# The heartbeat: the uptime every few seconds on the second serial port (a file on the host),
# so that a cell killed at its timeout tells a guest that stopped running from a test that hung.
(while sleep 5; do read uptime idle < /proc/uptime; echo "$uptime"; done > /dev/ttyS1) &
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

/// The gzip'd newc initramfs every VM boots. Rebuilt only when an input changed.
pub(super) fn build_initramfs(built: &Built, out: &Path) -> Result<PathBuf> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
