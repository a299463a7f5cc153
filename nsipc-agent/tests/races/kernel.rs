//! What the kernel says: process groups, namespaces reachable by path, their objects, and how
//! the stream's objects differ from them.

use super::*;

/// Processes whose process group is `pgid`, with their state letter (`/proc/PID/stat`).
pub fn group_members(pgid: u32) -> Vec<(u32, char)> {
    let mut members = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2).and_then(|p| p.parse::<u32>().ok()) == Some(pgid) {
            members.push((pid, fields[0].chars().next().unwrap_or('?')));
        }
    }
    members
}

pub fn signal_group(pgid: u32, signal: libc::c_int) {
    // SAFETY: plain kill(2) on a process group this test made.
    unsafe { libc::kill(-(pgid as i32), signal) };
}

pub fn ipc_inum(path: &str) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.ino())
}

/// What the kernel lists in the namespace at `path` (`nsenter --ipc=PATH cat /proc/sysvipc/*`),
/// or None if it could not be entered.
pub fn kernel_view(path: &str) -> Option<View> {
    let output = Command::new("nsenter")
        .arg(format!("--ipc={path}"))
        .args([
            "cat",
            "/proc/sysvipc/msg",
            "/proc/sysvipc/shm",
            "/proc/sysvipc/sem",
        ])
        .output()
        .expect("running nsenter");
    output
        .status
        .success()
        .then(|| parse_sysvipc(&String::from_utf8_lossy(&output.stdout)))
}

/// Differences between the stream and the kernel in the namespaces the kernel showed.
pub fn differences(stream: &StreamState, views: &BTreeMap<u64, (String, View)>) -> Vec<String> {
    let mut out = Vec::new();
    for (inum, (path, kernel)) in views {
        let lives: Vec<u64> = stream
            .alive
            .iter()
            .filter(|(_, alive_inum)| *alive_inum == inum)
            .map(|(id, _)| *id)
            .collect();
        let [life] = lives[..] else {
            out.push(format!(
                "namespace {inum} (reached by {path}): {} lives alive in the stream",
                lives.len()
            ));
            continue;
        };
        let seen = stream.view_of(life);
        let all: BTreeSet<&(Kind, i64)> = kernel.keys().chain(seen.keys()).collect();
        for object in all {
            let (k, s) = (kernel.get(object), seen.get(object));
            if k != s {
                out.push(format!(
                    "namespace {inum} {} {}: kernel {k:?}, stream {s:?}",
                    object.0.name(),
                    object.1
                ));
            }
        }
    }
    out
}
