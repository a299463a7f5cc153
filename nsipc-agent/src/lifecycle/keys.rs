//! The key index: (type, key) → the namespaces where a live object of that type has that key,
//! so that a failed get can say where its key lives without scanning every object.
//!
//! Invariant (recomputed by `Engine::check_indexes` in tests): for every (type, key), `keys`
//! holds one namespace where a live object of that type has that key, and `more_keys` the
//! others, each namespace once per such object; a `more_keys` list is never left empty nor
//! without its first holder in `keys`. IPC_PRIVATE is not indexed, nor the key of a segment
//! removed while attached (the kernel made it private). A key is indexed when its object is
//! inserted, unindexed when the object is marked removed or destroyed.

use std::collections::hash_map::Entry;

use super::{Engine, IPC_PRIVATE, KeyHome};
use crate::names::IpcObject;

impl Engine {
    pub(super) fn index_key(&mut self, object: IpcObject, key: i32, ns: u32) {
        if key != IPC_PRIVATE {
            match self.keys.entry((object, key)) {
                Entry::Vacant(vacant) => {
                    vacant.insert(ns);
                }
                Entry::Occupied(_) => self.more_keys.entry((object, key)).or_default().push(ns),
            }
        }
    }

    pub(super) fn unindex_key(&mut self, object: IpcObject, key: i32, ns: u32) {
        let index = (object, key);
        let first = self.keys.get(&index).copied();
        if let Some(more) = self.more_keys.get_mut(&index) {
            if first == Some(ns) {
                let next = more.pop().expect("never left empty");
                self.keys.insert(index, next);
            } else if let Some(at) = more.iter().position(|&n| n == ns) {
                more.swap_remove(at);
            }
            if more.is_empty() {
                self.more_keys.remove(&index);
            }
        } else if first == Some(ns) {
            self.keys.remove(&index);
        }
    }

    /// Namespaces other than `except` where a live object of this type has `key`, with the
    /// containers that live in each.
    pub(super) fn key_lives_in(&self, object: IpcObject, key: i32, except: u32) -> Vec<KeyHome> {
        let index = (object, key);
        let more = self.more_keys.get(&index).map_or(&[][..], Vec::as_slice);
        let found: Vec<u32> = self
            .keys
            .get(&index)
            .into_iter()
            .chain(more)
            .copied()
            .filter(|&ns| ns != except)
            .collect();
        self.homes(found)
    }

    /// The live namespaces among `inums`, in order, each once, with the containers that live
    /// in each.
    pub(super) fn homes(&self, mut inums: Vec<u32>) -> Vec<KeyHome> {
        inums.sort_unstable();
        inums.dedup();
        inums
            .into_iter()
            .filter_map(|inum| {
                Some(KeyHome {
                    ns: self.namespaces.get(&inum)?.ident,
                    containers: self.members.get(&inum).cloned().unwrap_or_default(),
                })
            })
            .collect()
    }
}
