//! Views of the engine's state for tests, and its invariants, recomputed.

use std::collections::{HashMap, HashSet};

use super::{Engine, IPC_PRIVATE, MAX_EARLY_REMOVALS, ObjectKey};
use crate::names::IpcObject;

#[cfg(test)]
impl Engine {
    /// Every live object, as (namespace inum, type, id).
    pub fn live_objects(&self) -> Vec<(u32, IpcObject, i32)> {
        let mut live: Vec<_> = self
            .namespaces
            .iter()
            .flat_map(|(&inum, ns)| ns.objects.keys().map(move |&(o, id)| (inum, o, id)))
            .collect();
        live.sort_unstable();
        live
    }

    /// Room in the object maps, all namespaces together.
    pub(super) fn object_capacity(&self) -> usize {
        self.namespaces
            .values()
            .map(|ns| ns.objects.capacity())
            .sum()
    }

    /// Checks what the engine derives from its objects against a recomputation: a namespace
    /// is filed under its own inum; the key index names, for every (type, key), each
    /// namespace once per live object with that key (removed segments' keys are private),
    /// the first apart and no other list left empty; early teardown counts are of live
    /// namespaces.
    pub fn check_indexes(&self) -> Result<(), String> {
        let mut expected: HashMap<(IpcObject, i32), Vec<u32>> = HashMap::new();
        for (&inum, ns) in &self.namespaces {
            if ns.ident.inum != inum {
                return Err(format!("namespace {:?} filed under {inum}", ns.ident));
            }
            for (&(object, _), state) in &ns.objects {
                if !state.removed() && state.key != IPC_PRIVATE {
                    expected.entry((object, state.key)).or_default().push(inum);
                }
            }
        }
        let mut indexed: HashMap<(IpcObject, i32), Vec<u32>> = HashMap::new();
        for (&key, &first) in &self.keys {
            let more = self.more_keys.get(&key).map_or(&[][..], Vec::as_slice);
            indexed.insert(
                key,
                std::iter::once(first).chain(more.iter().copied()).collect(),
            );
        }
        if let Some((key, _)) = self
            .more_keys
            .iter()
            .find(|(key, more)| more.is_empty() || !self.keys.contains_key(key))
        {
            return Err(format!(
                "more_keys[{key:?}] empty or without a first holder"
            ));
        }
        for holders in expected.values_mut().chain(indexed.values_mut()) {
            holders.sort_unstable();
        }
        if indexed != expected {
            return Err(format!("key index {indexed:?}, objects say {expected:?}"));
        }
        let mut by_creator: HashMap<u32, u32> = HashMap::new();
        for state in self.namespaces.values().flat_map(|ns| ns.objects.values()) {
            if state.creator != 0 {
                *by_creator.entry(state.creator).or_default() += 1;
            }
        }
        let counted: HashMap<u32, u32> =
            self.live_by_creator.iter().map(|(&k, &v)| (k, v)).collect();
        if counted != by_creator {
            return Err(format!(
                "live objects by creator {counted:?}, objects say {by_creator:?}"
            ));
        }
        let objects: usize = self.namespaces.values().map(|ns| ns.objects.len()).sum();
        if objects != self.objects_live {
            return Err(format!(
                "{} live objects counted, {objects} held",
                self.objects_live
            ));
        }
        let mut segments: Vec<(u32, i32)> = self
            .namespaces
            .iter()
            .flat_map(|(&inum, ns)| {
                ns.objects
                    .keys()
                    .filter(|(object, _)| *object == IpcObject::Shm)
                    .map(move |&(_, id)| (inum, id))
            })
            .collect();
        let mut sized: Vec<(u32, i32)> = self
            .shm_sizes
            .iter()
            .flat_map(|sizes| sizes.keys().copied())
            .collect();
        segments.sort_unstable();
        sized.sort_unstable();
        // Without sizes kept, none is.
        if self.shm_sizes.is_none() {
            segments.clear();
        }
        if segments != sized {
            return Err(format!("sizes of segments {sized:?}, live {segments:?}"));
        }
        if let Some(inum) = self
            .torn_down
            .keys()
            .find(|inum| !self.namespaces.contains_key(inum))
        {
            return Err(format!("early teardown count of the dead namespace {inum}"));
        }
        let ordered: HashSet<ObjectKey> = self.early_order.iter().copied().collect();
        if ordered.len() != self.early_order.len()
            || ordered.len() != self.early_removals.len()
            || ordered
                .iter()
                .any(|key| !self.early_removals.contains_key(key))
            || ordered.len() > MAX_EARLY_REMOVALS
        {
            return Err(format!(
                "early removals {:?} in the order {:?}",
                self.early_removals.keys().collect::<Vec<_>>(),
                self.early_order
            ));
        }
        if let Some(key) = self
            .early_order
            .iter()
            .find(|key| self.object(**key).is_some())
        {
            return Err(format!("the early removal of live object {key:?}"));
        }
        Ok(())
    }
}
