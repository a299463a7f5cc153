//! The engine's state as the metrics and the limits see it: each live namespace's objects,
//! bytes and container, made when asked.

use super::{Engine, ObjectCounts};
use crate::{decode::ContainerRef, limits::NsUse, names::IpcObject};

/// One live namespace as the metrics show it ([`Engine::namespace_gauges`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceGauge {
    pub inum: u32,
    pub objects: ObjectCounts,
    /// Bytes of its live shm segments, as their creators asked (`/proc/sysvipc/shm`'s `size`);
    /// 0 unless the engine keeps sizes ([`Engine::keep_shm_sizes`]).
    pub shm_bytes: u64,
    /// The container it belongs to, [`ContainerRef::NONE`] for none.
    pub container: ContainerRef,
}

impl Engine {
    /// Each live namespace's objects and shm bytes (0 unless [`Self::keep_shm_sizes`]), and the container it belongs to (the first
    /// seen living there, its creator's): the metrics' gauges, made when scraped. Costs a look
    /// at every live object.
    pub fn namespace_gauges(&self, out: &mut Vec<NamespaceGauge>) {
        out.clear();
        out.extend(self.namespaces.iter().map(|(&inum, ns)| {
            let mut objects = ObjectCounts::default();
            let mut shm_bytes = 0u64;
            for &(object, id) in ns.objects.keys() {
                objects.add(object, 1);
                if object == IpcObject::Shm {
                    let size = self
                        .shm_sizes
                        .as_ref()
                        .and_then(|sizes| sizes.get(&(inum, id)).copied())
                        .unwrap_or(0);
                    shm_bytes = shm_bytes.saturating_add(size);
                }
            }
            NamespaceGauge {
                inum,
                objects,
                shm_bytes,
                container: self
                    .members
                    .get(&inum)
                    .and_then(|members| members.first().copied())
                    .unwrap_or(ContainerRef::NONE),
            }
        }));
        out.sort_unstable_by_key(|gauge| gauge.inum);
    }

    /// What namespace `inum` uses, as far as the engine knows: its live objects by type, and
    /// the bytes of its segments when the engine keeps their sizes. Costs a look at each of
    /// its objects (only for a failed get that hit a limit).
    pub fn namespace_use(&self, inum: u32) -> NsUse {
        let mut used = NsUse {
            shm_bytes: self.shm_sizes.as_ref().map(|_| 0),
            ..NsUse::default()
        };
        let Some(ns) = self.namespaces.get(&inum) else {
            return used;
        };
        for &(object, id) in ns.objects.keys() {
            match object {
                IpcObject::Msg => used.msg += 1,
                IpcObject::Sem => used.sem += 1,
                IpcObject::Shm => {
                    used.shm += 1;
                    if let (Some(bytes), Some(sizes)) = (&mut used.shm_bytes, &self.shm_sizes) {
                        *bytes = bytes.saturating_add(sizes.get(&(inum, id)).copied().unwrap_or(0));
                    }
                }
            }
        }
        used
    }
}
