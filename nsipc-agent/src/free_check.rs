//! When to look at the kernel for segments whose free should have come and did not.
//!
//! A segment removed while attached dies at its last detach, and one in a namespace with
//! kernel.shm_rmid_forced when nothing holds it any more; the probes see those deaths only
//! through the segment's free (nsipc-ebpf/src/tracked.rs). Under racing load a few of those
//! frees are never seen (the concurrent differential test, tests/races.rs, showed about one in
//! 2 000 such segments left alive in the stream, on every backend that needs `kfree`), and
//! nothing else would ever tell. So once the engine knows no attachment of such a segment any
//! more ([`crate::lifecycle::Engine::awaiting_free`]), the agent looks: an inventory
//! (which enters the namespace) that no longer lists it proves it dead, and it is reported
//! then, flagged `late`. Looks are rare: a segment is first looked at after [`FIRST_LOOK`]
//! (its free normally comes an RCU grace period after its last detach), looks are at least
//! [`LOOK_INTERVAL`] apart, and a segment still listed (a forked child still holds it) is
//! looked at again after twice as long each time, up to [`LONGEST_WAIT`]. The engine's list is
//! asked for only when a look may be made ([`FreeCheck::may_look`]), at most every
//! [`GATHER_INTERVAL`]: the agent's tick comes every 50 ms, and most ticks need nothing.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

pub const FIRST_LOOK: Duration = Duration::from_secs(1);
pub const LOOK_INTERVAL: Duration = Duration::from_secs(2);
pub const LONGEST_WAIT: Duration = Duration::from_secs(64);
pub const GATHER_INTERVAL: Duration = Duration::from_millis(250);

/// A segment by namespace inum and id.
pub type Segment = (u32, i32);

struct Awaited {
    look_at: Instant,
    wait: Duration,
}

#[derive(Default)]
pub struct FreeCheck {
    awaited: HashMap<Segment, Awaited>,
    last_look: Option<Instant>,
    last_gather: Option<Instant>,
}

impl FreeCheck {
    /// Whether [`Self::due`] could return anything now: false within [`LOOK_INTERVAL`] of the
    /// last look or [`GATHER_INTERVAL`] of the last call (a segment is then seen at most that
    /// much later, and looked at that much later: its free is already late).
    pub fn may_look(&self, now: Instant) -> bool {
        let older = |at: Option<Instant>, interval| at.is_none_or(|at| now - at >= interval);
        older(self.last_look, LOOK_INTERVAL) && older(self.last_gather, GATHER_INTERVAL)
    }

    /// Takes the segments whose free is awaited now (`unattached`, the engine's list) and
    /// returns those to look at now: none unless one is due and the last look is
    /// [`LOOK_INTERVAL`] old.
    pub fn due(&mut self, unattached: &[Segment], now: Instant) -> Vec<Segment> {
        self.last_gather = Some(now);
        let current: std::collections::HashSet<&Segment> = unattached.iter().collect();
        self.awaited.retain(|segment, _| current.contains(segment));
        for &segment in unattached {
            self.awaited.entry(segment).or_insert(Awaited {
                look_at: now + FIRST_LOOK,
                wait: FIRST_LOOK,
            });
        }
        if self
            .last_look
            .is_some_and(|at| now.duration_since(at) < LOOK_INTERVAL)
        {
            return Vec::new();
        }
        let mut due: Vec<Segment> = self
            .awaited
            .iter()
            .filter(|(_, awaited)| awaited.look_at <= now)
            .map(|(&segment, _)| segment)
            .collect();
        due.sort_unstable();
        if !due.is_empty() {
            self.last_look = Some(now);
        }
        due
    }

    /// The look found `segment` still there (or could not enter its namespace): look again
    /// later, twice as late as last time.
    pub fn still_there(&mut self, segment: Segment, now: Instant) {
        if let Some(awaited) = self.awaited.get_mut(&segment) {
            awaited.wait = (awaited.wait * 2).min(LONGEST_WAIT);
            awaited.look_at = now + awaited.wait;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_is_looked_at_once_its_free_is_late() {
        let mut check = FreeCheck::default();
        let t0 = Instant::now();
        assert!(
            check.due(&[(7, 3)], t0).is_empty(),
            "its free may still come"
        );
        assert!(check.due(&[(7, 3)], t0 + FIRST_LOOK / 2).is_empty());
        assert_eq!(check.due(&[(7, 3)], t0 + FIRST_LOOK), vec![(7, 3)]);
    }

    #[test]
    fn looks_are_spaced_and_back_off_while_the_segment_is_there() {
        let mut check = FreeCheck::default();
        let t0 = Instant::now();
        check.due(&[(7, 3)], t0);
        let first = t0 + FIRST_LOOK;
        assert_eq!(check.due(&[(7, 3)], first), vec![(7, 3)]);
        check.still_there((7, 3), first);
        // The next look waits for both the interval and the segment's doubled wait.
        assert!(check.due(&[(7, 3)], first + LOOK_INTERVAL / 2).is_empty());
        assert_eq!(check.due(&[(7, 3)], first + 2 * FIRST_LOOK), vec![(7, 3)]);
        let mut at = first + 2 * FIRST_LOOK;
        for _ in 0..10 {
            check.still_there((7, 3), at);
            at += LONGEST_WAIT;
            assert_eq!(
                check.due(&[(7, 3)], at),
                vec![(7, 3)],
                "never later than the longest wait"
            );
        }
    }

    #[test]
    fn the_list_is_wanted_only_when_a_look_may_be_made() {
        let mut check = FreeCheck::default();
        let t0 = Instant::now();
        assert!(check.may_look(t0));
        check.due(&[(7, 3)], t0);
        assert!(!check.may_look(t0 + GATHER_INTERVAL / 2), "just gathered");
        assert!(check.may_look(t0 + GATHER_INTERVAL));
        let look = t0 + FIRST_LOOK;
        assert_eq!(check.due(&[(7, 3)], look), vec![(7, 3)]);
        assert!(!check.may_look(look + GATHER_INTERVAL), "just looked");
        assert!(check.may_look(look + LOOK_INTERVAL));
    }

    #[test]
    fn a_segment_whose_free_came_is_forgotten() {
        let mut check = FreeCheck::default();
        let t0 = Instant::now();
        check.due(&[(7, 3), (7, 4)], t0);
        assert_eq!(check.due(&[(7, 4)], t0 + FIRST_LOOK), vec![(7, 4)]);
        // (7, 3) comes back as a new segment of the same id: a fresh wait.
        assert!(
            check
                .due(&[(7, 3)], t0 + FIRST_LOOK + LOOK_INTERVAL)
                .is_empty()
        );
    }
}
