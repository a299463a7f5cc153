//! The `kfree` probes the stream relies on to see namespaces and segments die: the startup
//! check that they see frees (`agent.kfree_check`, [`crate::kfree_check`]), and the runs of
//! them the kernel skipped. Either, when in doubt, asks for a resynchronisation
//! ([`super::resync`]).

use std::{io::Write, time::Instant};

use anyhow::Result;

use super::{Stream, resync::KFREE_CHECK_INTERVAL};
use crate::{
    kfree_check::KfreeCheck,
    output::{agent_events::AgentEvent, sink::SinkState},
    probes::Probes,
};

impl<W: Write> Stream<W> {
    /// Asks for a resynchronisation (at most every [`KFREE_CHECK_INTERVAL`]) when the kernel
    /// skipped runs of the `kfree` copies: each skip was run by the other copy, but tracked
    /// frees have been seen to go unreported under such load, and a namespace's free is the
    /// only report of its end (a segment's has [`crate::free_check`]).
    pub(super) fn note_kfree_skipped(&mut self, probes: &Probes) -> Result<()> {
        let total = probes.kfree_skipped()?;
        if total > self.counters.kfree_skipped_seen || self.kfree_unverified {
            self.counters.kfree_skipped_seen = total;
            self.kfree_check_pending = true;
        }
        Ok(())
    }

    /// Starts the startup check of the frees the probes rely on; the probes must be attached.
    pub(super) fn start_kfree_check(&mut self) {
        self.lost_before_kfree_check = self.counters.lost_reported;
        self.kfree_check = Some(KfreeCheck::start());
    }

    /// Writes `agent.kfree_check` once the startup check has ended; if it failed, the state is
    /// from then on checked against the kernel every [`KFREE_CHECK_INTERVAL`].
    pub(super) fn report_kfree_check(&mut self) -> Result<SinkState> {
        let Some(outcome) = self
            .kfree_check
            .as_mut()
            .and_then(|check| check.outcome(Instant::now()))
        else {
            return Ok(SinkState::Open);
        };
        // Records lost meanwhile (a full ring buffer) may have been the frees: the check
        // proves nothing, and the resynchronisations after losses already apply.
        let inconclusive =
            !outcome.passed() && self.counters.lost_reported > self.lost_before_kfree_check;
        let error = if inconclusive {
            Some("records were lost while it ran (agent.lost): inconclusive")
        } else {
            outcome.error.as_deref()
        };
        if !outcome.passed() && !inconclusive {
            self.kfree_unverified = true;
            eprintln!(
                "nsipc-agent: warning: the probes did not see the frees of a test namespace \
                 and segment (see agent.kfree_check): ends seen only through them may be \
                 reported late, by a resynchronisation every {} s",
                KFREE_CHECK_INTERVAL.as_secs()
            );
        }
        let event = AgentEvent::KfreeCheck {
            time: self.now(),
            ok: outcome.passed(),
            namespace_free_seen: outcome.namespace_free_seen,
            segment_free_seen: outcome.segment_free_seen,
            ms: outcome.elapsed.as_millis() as u64,
            error,
        };
        self.write_agent(&event)
    }
}
