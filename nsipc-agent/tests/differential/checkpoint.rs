//! Comparing the workload's namespaces as the stream tells them with what the kernel lists.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fs,
    os::unix::fs::MetadataExt as _,
    process::Command,
};

use super::{Namespace, Workload};
use crate::{
    support::{WAIT, model::*},
    worker::run,
};

impl Workload {
    /// Lists what the kernel has in every namespace the workload can open, then reads the stream
    /// until it says the same (frees are asynchronous) or `WAIT` passes. Returns the kernel's
    /// views when they agree.
    pub(super) fn checkpoint(&mut self, label: &str) -> Option<HashMap<usize, View>> {
        self.stats.checkpoints += 1;
        let mut views = HashMap::new();
        for ns in self.live() {
            let Some(path) = self.path_of(ns) else {
                continue;
            };
            let inode = fs::metadata(&path).map(|m| m.ino()).unwrap_or(0);
            assert_eq!(
                inode,
                self.namespaces[ns].inum,
                "{path} is {}",
                self.ns_name(ns)
            );
            let (ok, out) = run(Command::new("nsenter").arg(format!("--ipc={path}")).args([
                "cat",
                "/proc/sysvipc/msg",
                "/proc/sysvipc/shm",
                "/proc/sysvipc/sem",
            ]));
            assert!(ok, "nsenter --ipc={path} cat /proc/sysvipc/*: {out}");
            views.insert(ns, parse_sysvipc(&out));
        }
        let mut differences = Vec::new();
        let Workload {
            agent,
            stream,
            namespaces,
            ..
        } = self;
        let agent = agent.as_mut().expect("the agent runs");
        let agreed = agent.read_until(WAIT, |events| {
            stream.apply_new(events);
            find_stream_ids(stream, namespaces);
            differences = compare(stream, namespaces, &views);
            differences.is_empty()
        });
        if !agreed {
            self.diverge(format!(
                "checkpoint {label:?}: after {WAIT:?} the stream still differs from the kernel:\n        {}",
                differences.join("\n        ")
            ));
            return None;
        }
        self.stats.namespaces_compared += views.len();
        self.stats.objects_compared += views.values().map(BTreeMap::len).sum::<usize>();
        self.log.push(format!(
            "      checkpoint {label:?}: {} namespaces, {} objects agree",
            views.len(),
            views.values().map(BTreeMap::len).sum::<usize>()
        ));
        Some(views)
    }
}

/// Finds, in creation order, the `ipc_ns.create` of each namespace the workload made: its inum
/// and the pid (or clone child) that made it. Inums are reused, so each create is claimed once.
fn find_stream_ids(stream: &StreamState, namespaces: &mut [Namespace]) {
    let mut claimed: HashSet<u64> = namespaces.iter().filter_map(|n| n.stream_id).collect();
    for ns in namespaces
        .iter_mut()
        .skip(1)
        .filter(|n| n.stream_id.is_none())
    {
        let found = stream.creates.iter().find(|e| {
            e["ns"] == ns.inum
                && (e["pid"] == ns.creator_pid || e["child_pid"] == ns.creator_pid)
                && ns_key(e).is_some_and(|k| !claimed.contains(&k))
        });
        if let Some(key) = found.and_then(ns_key) {
            claimed.insert(key);
            ns.stream_id = Some(key);
        }
    }
}

/// Differences between the stream's state and the kernel's, for the workload's namespaces.
fn compare(
    stream: &StreamState,
    namespaces: &[Namespace],
    views: &HashMap<usize, View>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, ns) in namespaces.iter().enumerate().skip(1) {
        let name = format!("{}[{}] ({})", ns.name, ns.inum, ns.how);
        let Some(id) = ns.stream_id else {
            out.push(format!(
                "{name}: no ipc_ns.create by pid {}",
                ns.creator_pid
            ));
            continue;
        };
        if ns.released_at.is_some() {
            if !stream.destroyed.contains(&id) {
                out.push(format!("{name}: released, no ipc_ns.destroy"));
            }
            continue;
        }
        if !stream.alive.contains_key(&id) {
            out.push(format!("{name}: held, but not alive in the stream"));
            continue;
        }
        let Some(kernel) = views.get(&i) else {
            continue; // held only by attachments: nothing can open it
        };
        let seen = stream.view_of(id);
        let all: BTreeSet<&(Kind, i64)> = kernel.keys().chain(seen.keys()).collect();
        for object in all {
            let (k, s) = (kernel.get(object), seen.get(object));
            if k != s {
                out.push(format!(
                    "{name} {} {}: kernel {k:?}, stream {s:?}",
                    object.0.name(),
                    object.1
                ));
            }
        }
    }
    out
}
