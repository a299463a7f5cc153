//! Segments that `kernel.shm_rmid_forced` destroys without `IPC_RMID`.
//!
//! In a namespace with the sysctl set, the kernel destroys a segment as soon as nothing is
//! attached to it after its creator's exit (`exit_shm()`) or after any detach
//! (`shm_may_destroy()`: no attachment and `shm_rmid_forced`). The probes see that death only
//! through the segment's free, and a free that goes unseen (tests/differential.rs met one on
//! the kprobe backend) would leave the segment alive in the stream for good: no syscall, no
//! removal, nothing else tells. So the engine keeps the segments it saw lose what kept them
//! (their creator, their last attachment it knows of) in such a namespace, and the agent looks
//! for them as it does for removed segments whose last detach came ([`crate::free_check`]).
//!
//! Whether a namespace has the sysctl set comes with the records of the calls that can make
//! such a death: a detach's and an exit's (the value then, read by the probe), and a free's.

use super::{Engine, ObjectKey};
use crate::names::IpcObject;

impl Engine {
    /// A record of namespace `inum` says whether it has `kernel.shm_rmid_forced` set now.
    pub(super) fn learn_rmid_forced(&mut self, inum: u32, rmid_forced: bool) {
        if rmid_forced {
            self.rmid_forced_namespaces.insert(inum);
        } else if self.rmid_forced_namespaces.remove(&inum) {
            let forced = &self.rmid_forced_namespaces;
            self.forced_frees.retain(|key| forced.contains(&key.ns));
        }
    }

    /// Segment `key` lost its creator or a known attachment: if its namespace has
    /// `kernel.shm_rmid_forced` set, nothing else is known to hold it and it was not removed
    /// (a removed one is awaited anyway), the kernel destroyed it, and its free should follow.
    pub(super) fn expect_forced_free(&mut self, key: ObjectKey) {
        if key.object != IpcObject::Shm
            || !self.rmid_forced_namespaces.contains(&key.ns)
            || self.object(key).is_none_or(|state| state.removed())
            || self.is_attached(key)
        {
            return;
        }
        self.forced_frees.insert(key);
    }
}
