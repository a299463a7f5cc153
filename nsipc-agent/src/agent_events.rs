//! The agent's own events: `agent.ready`, `agent.lost`, `agent.missed`, `agent.resync`,
//! `agent.kfree_check`, `agent.decode_error`, `agent.stop`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    probes::{Backend, FreeHooks, HookChoice},
    render::Rfc3339,
};

#[derive(Serialize)]
#[serde(tag = "event")]
pub enum AgentEvent<'a> {
    /// Everything is attached: events from now on are seen.
    #[serde(rename = "agent.ready")]
    Ready {
        time: Rfc3339,
        version: &'a str,
        /// The best backend any hook got (every hook's, unless some are `degraded`).
        backend: Backend,
        /// Each syscall hook's backend.
        hooks: BTreeMap<&'a str, Backend>,
        /// Hooks on a lesser backend than `backend`, and why the better ones refused them.
        degraded: BTreeMap<&'a str, &'a HookChoice>,
        /// How namespaces' and segments' frees are seen (`fentry`, `kprobe`: at the functions
        /// that free them; `kfree`: among every kfree of the machine).
        frees: FreeHooks,
        /// Better ways of seeing frees that the kernel refused, and why.
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        frees_refused: &'a BTreeMap<FreeHooks, String>,
        kernel: &'a str,
        /// eBPF programs attached.
        programs: usize,
        /// Whether the kernel gives namespaces a never-reused 64-bit id (`ns_id` fields).
        ns_id: bool,
        /// The host's IPC namespace inum.
        host_ns: u32,
        ring_buffer_bytes: u32,
        /// The agent's own pid, to filter out its own activity if wanted.
        pid: u32,
        /// What the startup inventory found (its `*.exists` lines come just before) and how
        /// long it took.
        inventory_namespaces: usize,
        inventory_objects: usize,
        inventory_ms: u64,
        /// The cgroup hierarchy tasks are attributed to containers by (`memory`, `unified`…);
        /// null when none is (no `container` fields then).
        cgroup_hierarchy: Option<&'a str>,
        /// Where `/metrics` is served (`--metrics-addr`); absent when it is not.
        #[serde(skip_serializing_if = "Option::is_none")]
        metrics_addr: Option<String>,
    },
    /// Records the probes could not write because the ring buffer was full.
    #[serde(rename = "agent.lost")]
    Lost {
        time: Rfc3339,
        count: u64,
        total: u64,
        /// `count` by the kind of event each record would have been (`msg.get`, `shm.freed`…).
        kinds: BTreeMap<&'static str, u64>,
    },
    /// Runs of the probes the kernel skipped (a BPF program was already running on that CPU):
    /// each may have been a record. A resynchronisation follows, as after lost records.
    #[serde(rename = "agent.missed")]
    Missed {
        time: Rfc3339,
        count: u64,
        total: u64,
    },
    /// After lost records (or skipped `kfree` runs), the state was made equal to a fresh
    /// inventory; `*.destroy` (reason `unknown`) and `*.exists` lines for what changed unseen
    /// came just before.
    #[serde(rename = "agent.resync")]
    Resync {
        time: Rfc3339,
        /// Why: [`ResyncCause`].
        after: ResyncCause,
        namespaces_gone: u64,
        namespaces_found: u64,
        objects_gone: u64,
        objects_found: u64,
    },
    /// How the startup check of the frees the probes rely on ended (see kfree_check.rs).
    #[serde(rename = "agent.kfree_check")]
    KfreeCheck {
        time: Rfc3339,
        /// Both frees were seen.
        ok: bool,
        namespace_free_seen: bool,
        segment_free_seen: bool,
        /// From the start of the check to its end.
        ms: u64,
        /// Why the check could not be made; null when it was.
        error: Option<&'a str>,
    },
    /// A ring-buffer record that could not be decoded (it is skipped).
    #[serde(rename = "agent.decode_error")]
    DecodeError {
        time: Rfc3339,
        error: String,
        total: u64,
    },
    /// Last line: why the agent stopped and what it saw.
    #[serde(rename = "agent.stop")]
    Stop {
        time: Rfc3339,
        reason: &'a str,
        events: u64,
        lost: u64,
        missed: u64,
        decode_errors: u64,
        /// Segments reported destroyed `late`: their free was not seen (see free_check.rs).
        late_destroys: u64,
        /// Runs of the two `kfree` copies the kernel skipped (recursion): each was run by the
        /// other copy, so none is a lost record by itself.
        kfree_skipped: u64,
    },
}

/// Why the agent resynchronised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResyncCause {
    /// Records were lost (`agent.lost`) or program runs missed (`agent.missed`).
    Lost,
    /// The kernel skipped runs of the `kfree` programs: a free, and the destroy it means, may
    /// have gone unseen (a namespace's, which nothing else reports). At most every
    /// 10 s.
    KfreeSkipped,
    /// The startup check of the frees failed (`agent.kfree_check`): every 10 s.
    KfreeUnverified,
}
