//! What the kernel says about a tracer process: its eBPF programs, links and perf events (from
//! /proc/PID/fd and fdinfo), its CPU time and memory, and, through bpftool, whether its programs
//! are gone after it exits.

use std::{
    collections::BTreeMap,
    fs, io,
    os::fd::{FromRawFd as _, OwnedFd},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// One eBPF program a process holds, with the kernel's run statistics (counted only while
/// [`RunTimeStats`] are on).
pub struct Prog {
    pub id: u32,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// The eBPF objects a process holds open.
#[derive(Default)]
pub struct BpfFds {
    /// `bpf_link`s: how aya attaches every program.
    pub links: usize,
    /// perf events: how bpftrace attaches tracepoints (plus one output buffer per CPU).
    pub perf_events: usize,
    pub progs: Vec<Prog>,
    pub map_ids: Vec<u32>,
}

fn fdinfo_field(fdinfo: &str, key: &str) -> Option<u64> {
    fdinfo.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Scans `/proc/PID/fd`. Fds that vanish meanwhile are skipped.
pub fn bpf_fds(pid: libc::pid_t) -> Result<BpfFds> {
    let dir = format!("/proc/{pid}/fd");
    let mut fds = BpfFds::default();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let Ok(entry) = entry else { continue };
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        let fdinfo = || {
            fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                entry.file_name().display()
            ))
            .unwrap_or_default()
        };
        match target.to_string_lossy().as_ref() {
            "anon_inode:bpf_link" => fds.links += 1,
            "anon_inode:[perf_event]" => fds.perf_events += 1,
            "anon_inode:bpf-prog" => {
                let info = fdinfo();
                if let Some(id) = fdinfo_field(&info, "prog_id") {
                    fds.progs.push(Prog {
                        id: id as u32,
                        run_time_ns: fdinfo_field(&info, "run_time_ns").unwrap_or(0),
                        run_cnt: fdinfo_field(&info, "run_cnt").unwrap_or(0),
                    });
                }
            }
            "anon_inode:bpf-map" => {
                if let Some(id) = fdinfo_field(&fdinfo(), "map_id") {
                    fds.map_ids.push(id as u32);
                }
            }
            _ => {}
        }
    }
    Ok(fds)
}

/// CPU time of every thread of a live process, in nanoseconds (`/proc/PID/task/*/schedstat`,
/// which, unlike `/proc/PID/stat`, is not rounded to clock ticks).
pub fn cpu_ns(pid: libc::pid_t) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for task in fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let path = task?.path().join("schedstat");
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .with_context(|| format!("parsing {}", path.display()))?;
    }
    Ok(total)
}

/// `VmRSS` of a live process.
pub fn vm_rss_kib(pid: libc::pid_t) -> Result<u64> {
    status_kib(pid, "VmRSS")
}

/// A size line of a live process's /proc/PID/status (`VmRSS`, `VmHWM`…), in KiB.
pub fn status_kib(pid: libc::pid_t, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in {path}"))
}

fn bpftool(args: &[&str]) -> Result<Value> {
    let out = Command::new("bpftool")
        .arg("--json")
        .args(args)
        .output()
        .context("running bpftool")?;
    if !out.status.success() {
        bail!(
            "bpftool {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("parsing bpftool {args:?}"))
}

/// Names of the loaded eBPF programs of the kinds that run on kernel events (tracepoints,
/// kprobes, fentry, perf events): between runs the bench has none, so these belong to other
/// users of the machine, and may slow every setup down, "no tracing" included.
pub fn tracing_programs() -> Result<Vec<String>> {
    let list = bpftool(&["prog", "list"])?;
    Ok(list
        .as_array()
        .context("bpftool prog list: not a list")?
        .iter()
        .filter(|p| {
            matches!(
                p["type"].as_str(),
                Some("tracepoint" | "raw_tracepoint" | "tracing" | "kprobe" | "perf_event")
            )
        })
        .map(|p| p["name"].as_str().unwrap_or("?").to_owned())
        .collect())
}

/// Which of these programs still exist, by `bpftool prog list`.
pub fn programs_still_loaded(ids: &[u32]) -> Result<Vec<u32>> {
    let list = bpftool(&["prog", "list"])?;
    let loaded: Vec<u32> = list
        .as_array()
        .context("bpftool prog list: not a list")?
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .map(|id| id as u32)
        .collect();
    Ok(ids
        .iter()
        .copied()
        .filter(|id| loaded.contains(id))
        .collect())
}

/// Program names, by id, from `bpftool prog show`.
pub fn program_names(ids: &[u32]) -> Result<BTreeMap<u32, String>> {
    ids.iter()
        .map(|id| {
            let prog = bpftool(&["prog", "show", "id", &id.to_string()])?;
            Ok((*id, prog["name"].as_str().unwrap_or("?").to_owned()))
        })
        .collect()
}

/// The sum over CPUs of slot 0 of the per-CPU array named `name` among `map_ids`, read with
/// `bpftool map dump` (the maps have no BTF: values come as little-endian hex bytes).
pub fn per_cpu_counter(map_ids: &[u32], name: &str) -> Result<Option<u64>> {
    for id in map_ids {
        let id = id.to_string();
        let map = bpftool(&["map", "show", "id", &id])?;
        if map["name"] != name {
            continue;
        }
        let dump = bpftool(&["map", "dump", "id", &id])?;
        let entries = dump
            .as_array()
            .with_context(|| format!("bpftool map dump of {name}: not a list"))?;
        let mut total = 0;
        // Every slot (the probes count lost records per kind), every CPU.
        for value in entries
            .iter()
            .flat_map(|entry| entry["values"].as_array().into_iter().flatten())
        {
            let bytes = value["value"]
                .as_array()
                .with_context(|| format!("bpftool map dump of {name}: no value"))?;
            let mut le = [0u8; 8];
            for (slot, byte) in le.iter_mut().zip(bytes) {
                let hex = byte.as_str().unwrap_or("0x00").trim_start_matches("0x");
                *slot = u8::from_str_radix(hex, 16).context("a byte of bpftool's dump")?;
            }
            total += u64::from_le_bytes(le);
        }
        return Ok(Some(total));
    }
    Ok(None)
}

/// eBPF run-time statistics (`run_time_ns`, `run_cnt` of every program), on while this lives:
/// the kernel turns them off again when the fd is closed, even if the harness dies. They cost
/// two clock reads per program run, so they are only on for the profiling pass.
pub struct RunTimeStats {
    _fd: OwnedFd,
}

impl RunTimeStats {
    pub fn enable() -> Result<Self> {
        const BPF_ENABLE_STATS: libc::c_long = 32;
        const BPF_STATS_RUN_TIME: u32 = 0;
        let attr = [BPF_STATS_RUN_TIME, 0];
        // SAFETY: attr is a valid `union bpf_attr` prefix of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("bpf(BPF_ENABLE_STATS)");
        }
        // SAFETY: a new fd that nothing else owns.
        Ok(Self {
            _fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        })
    }
}
