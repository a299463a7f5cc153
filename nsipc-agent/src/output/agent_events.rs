//! The agent's own events: `agent.ready`, `agent.lost`, `agent.missed`, `agent.resync`,
//! `agent.kfree_check`, `agent.decode_error`, `agent.stop`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    output::fields::Rfc3339,
    output::pretty::{Head, PrettyLine, Tone, Who},
    output::sink::EventLine,
    probes::{Backend, FreeHooks, HookChoice},
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
        /// Helpers this kernel lacks, and what the probes do instead ([`crate::kernel::fallbacks`]).
        fallbacks: BTreeMap<&'static str, &'static str>,
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

impl AgentEvent<'_> {
    fn head(&self) -> (&'static str, &Rfc3339, Tone) {
        match self {
            AgentEvent::Ready { time, .. } => ("agent.ready", time, Tone::Agent),
            AgentEvent::Lost { time, .. } => ("agent.lost", time, Tone::Error),
            AgentEvent::Missed { time, .. } => ("agent.missed", time, Tone::Warn),
            AgentEvent::Resync { time, .. } => ("agent.resync", time, Tone::Agent),
            AgentEvent::KfreeCheck { time, ok, .. } => (
                "agent.kfree_check",
                time,
                if *ok { Tone::Agent } else { Tone::Warn },
            ),
            AgentEvent::DecodeError { time, .. } => ("agent.decode_error", time, Tone::Error),
            AgentEvent::Stop { time, .. } => ("agent.stop", time, Tone::Agent),
        }
    }
}

impl EventLine for AgentEvent<'_> {
    fn json(&self, buf: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(buf, self)
    }

    fn pretty(&self, line: &mut PrettyLine<'_>) {
        let (kind, time, tone) = self.head();
        line.head(&Head {
            time: time.0,
            kind,
            tone,
            ns: None,
            who: Who::Nobody,
            task: None,
        });
        match self {
            AgentEvent::Ready {
                version,
                backend,
                degraded,
                frees,
                kernel,
                fallbacks,
                programs,
                pid,
                inventory_namespaces,
                inventory_objects,
                inventory_ms,
                cgroup_hierarchy,
                ..
            } => {
                line.name("version", version)
                    .name("backend", backend.name())
                    .name("frees", frees.name())
                    .uint("programs", *programs as u64)
                    .text("kernel", kernel.as_bytes())
                    .uint("pid", (*pid).into())
                    .uint("namespaces", *inventory_namespaces as u64)
                    .uint("objects", *inventory_objects as u64)
                    .duration("inventory", inventory_ms * 1_000_000);
                if let Some(hierarchy) = cgroup_hierarchy {
                    line.text("cgroups", hierarchy.as_bytes());
                }
                for (i, (hook, choice)) in degraded.iter().enumerate() {
                    if i == 0 {
                        line.name("degraded", hook);
                    } else {
                        line.raw(",").raw(hook);
                    }
                    line.raw("(").raw(choice.backend.name()).raw(")");
                }
                for (i, helper) in fallbacks.keys().enumerate() {
                    if i == 0 {
                        line.name("without", helper);
                    } else {
                        line.raw(",").raw(helper);
                    }
                }
            }
            AgentEvent::Lost {
                count,
                total,
                kinds,
                ..
            } => {
                line.uint("count", *count).uint("total", *total);
                for (i, (kind, count)) in kinds.iter().enumerate() {
                    if i == 0 {
                        line.name("kinds", kind);
                    } else {
                        line.raw(",").raw(kind);
                    }
                    line.raw("=").raw_uint(*count);
                }
            }
            AgentEvent::Missed { count, total, .. } => {
                line.uint("count", *count).uint("total", *total);
            }
            AgentEvent::Resync {
                after,
                namespaces_gone,
                namespaces_found,
                objects_gone,
                objects_found,
                ..
            } => {
                line.name("after", after.as_str())
                    .uint("namespaces_gone", *namespaces_gone)
                    .uint("namespaces_found", *namespaces_found)
                    .uint("objects_gone", *objects_gone)
                    .uint("objects_found", *objects_found);
            }
            AgentEvent::KfreeCheck {
                ok,
                namespace_free_seen,
                segment_free_seen,
                ms,
                error,
                ..
            } => {
                line.name("ok", if *ok { "true" } else { "false" });
                if !ok {
                    line.name(
                        "namespace_free_seen",
                        if *namespace_free_seen {
                            "true"
                        } else {
                            "false"
                        },
                    )
                    .name(
                        "segment_free_seen",
                        if *segment_free_seen { "true" } else { "false" },
                    );
                }
                line.duration("took", ms * 1_000_000);
                if let Some(error) = error {
                    line.text("error", error.as_bytes());
                }
            }
            AgentEvent::DecodeError { error, total, .. } => {
                line.text("error", error.as_bytes()).uint("total", *total);
            }
            AgentEvent::Stop {
                reason,
                events,
                lost,
                missed,
                decode_errors,
                late_destroys,
                kfree_skipped,
                ..
            } => {
                line.name("reason", reason)
                    .uint("events", *events)
                    .uint("lost", *lost)
                    .uint("missed", *missed)
                    .uint("decode_errors", *decode_errors)
                    .uint("late_destroys", *late_destroys)
                    .uint("kfree_skipped", *kfree_skipped);
            }
        }
    }
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

impl ResyncCause {
    /// Its name in the stream (`after`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResyncCause::Lost => "lost",
            ResyncCause::KfreeSkipped => "kfree_skipped",
            ResyncCause::KfreeUnverified => "kfree_unverified",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resync_causes_are_named_as_in_the_json() {
        for cause in [
            ResyncCause::Lost,
            ResyncCause::KfreeSkipped,
            ResyncCause::KfreeUnverified,
        ] {
            assert_eq!(serde_json::to_value(cause).unwrap(), cause.as_str());
        }
    }
}
