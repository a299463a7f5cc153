//! `nsipc-bench memory`: the lifecycle engine's resident set with many live namespaces and
//! objects.

use anyhow::{Context as _, Result};
use nsipc_common::{HOST_IPC_NS_INUM, NsRef};
use serde_json::json;

use super::{HOST_NS_ID, print_line};
use crate::{
    allocator,
    decode::{Body, ContainerRef, KernelEvent, Task},
    lifecycle::Engine,
    names::IpcObject,
};

/// This process's resident set (`VmRSS`), in bytes.
fn rss_bytes() -> Result<u64> {
    status_bytes("VmRSS:")
}

/// A size line of /proc/self/status (`VmRSS:`, `VmHWM:`…), in bytes.
fn status_bytes(field: &str) -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .with_context(|| format!("no {field} in /proc/self/status"))?;
    Ok(kib * 1024)
}

/// Feeds the lifecycle engine the events that create `namespaces` namespaces holding `objects`
/// objects in all, then the frees that destroy them, and prints the resident set at each
/// stage: `{"namespaces", "objects", "rss_start", "rss_live", "rss_dead", "rss_released",
/// "rss_after", "rss_peak", "bytes_per_object"}`. `rss_dead`: once all died, the engine still
/// alive; `rss_released`: then once the allocator gave its free memory back, as `trace` has it
/// do after mass deaths (what `trace` keeps); `rss_after`: the engine dropped; `rss_peak`: the
/// process's high-water mark (`VmHWM`, table growth included). `bytes_per_object` charges the
/// whole growth to the objects (namespaces included).
pub(super) fn engine_memory(namespaces: u32, objects: u32) -> Result<()> {
    let mut engine = Engine::new(std::process::id());
    let mut out = Vec::new();
    let mut comm = [0u8; 16];
    comm[..5].copy_from_slice(b"bench");
    let task = Task {
        pid: 1,
        tid: 1,
        ppid: 1,
        uid: 0,
        euid: 0,
        comm,
        cgroup: 0,
        container: ContainerRef::NONE,
    };
    let host = NsRef {
        id: HOST_NS_ID,
        inum: HOST_IPC_NS_INUM,
        life: 0,
    };
    // Far from any inum or id the host hands out; every namespace distinct.
    let ns = |i: u32| NsRef {
        id: 1_000_000 + u64::from(i),
        inum: 0xE000_0000 + i,
        life: 0,
    };
    let rss_start = rss_bytes()?;
    for i in 0..namespaces {
        let body = Body::Unshare {
            flags: 0x0800_0000,
            from: host,
            result: Ok(0),
        };
        engine.apply(
            &KernelEvent {
                ts_ns: 1,
                task,
                ns: ns(i),
                body,
            },
            &mut out,
        );
        out.clear();
    }
    let objects_kinds = [IpcObject::Msg, IpcObject::Shm, IpcObject::Sem];
    for j in 0..objects {
        let object = objects_kinds[j as usize % 3];
        let key = j as i32 + 1;
        let body = Body::Get {
            object,
            key,
            flags: 0o1600,
            size: 4096,
            result: Ok(i64::from(j / namespaces.max(1)) << 15),
        };
        engine.apply(
            &KernelEvent {
                ts_ns: 2,
                task,
                ns: ns(j % namespaces.max(1)),
                body,
            },
            &mut out,
        );
        out.clear();
    }
    let rss_live = rss_bytes()?;
    for i in 0..namespaces {
        engine.apply(
            &KernelEvent {
                ts_ns: 3,
                task,
                ns: ns(i),
                body: Body::NsFreed,
            },
            &mut out,
        );
        out.clear();
    }
    // The engine's big maps give their memory back by themselves; the object maps of dead
    // namespaces are small allocations that glibc keeps until told otherwise.
    let rss_dead = rss_bytes()?;
    allocator::release_freed_memory();
    let rss_released = rss_bytes()?;
    drop(engine);
    let rss_after = rss_bytes()?;
    print_line(&json!({
        "namespaces": namespaces,
        "objects": objects,
        "rss_start": rss_start,
        "rss_live": rss_live,
        "rss_dead": rss_dead,
        "rss_released": rss_released,
        "rss_after": rss_after,
        "rss_peak": status_bytes("VmHWM:")?,
        "bytes_per_object": (rss_live.saturating_sub(rss_start)) / u64::from(objects.max(1)),
    }))
}
