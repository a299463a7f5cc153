//! Memory: entries stay small, and maps give memory back after deaths.

use super::*;

#[test]
fn memory_follows_what_lives_through_a_storm() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    for round in 0..10_000 {
        let object = IpcObject::ALL[round % 3];
        h.get(a, object, 0, (round as i64) << 15);
        h.rmid(a, object, (round as i32) << 15, false);
        h.out.clear();
    }
    assert_eq!(h.engine.live_counts(), (2, 0));
    assert_eq!(h.engine.attachments.len(), 0);
}

/// The engine's memory is mostly its object maps: keep an entry at 20 bytes (the key index's
/// at 12, a namespace's at 72: 64, and since 2026-12 the life tag), what `nsipc-bench memory`'s figure
/// was measured with.
#[test]
fn map_entries_stay_small() {
    use super::{NamespaceState, ObjectId, ObjectState};
    assert_eq!(size_of::<(ObjectId, ObjectState)>(), 24);
    assert_eq!(size_of::<((IpcObject, i32), u32)>(), 12);
    assert_eq!(size_of::<(u32, NamespaceState)>(), 72);
    let mut state = ObjectState::new(7, Some(0), 0);
    assert_eq!((state.created_ns(), state.removed()), (Some(0), false));
    state.set_removed();
    assert_eq!(
        (state.created_ns(), state.removed(), state.key),
        (Some(0), true, 7)
    );
    let state = ObjectState::new(7, Some(u64::MAX), 0);
    assert_eq!(state.created_ns(), Some((1 << 63) - 2));
    assert!(!state.removed());
    assert_eq!(ObjectState::new(7, None, 0).created_ns(), None);
}

/// Once most objects and namespaces died, their maps give the memory back.
#[test]
fn maps_shrink_after_mass_deaths() {
    let mut h = Harness::new();
    let namespaces: Vec<NsRef> = (0..100)
        .map(|i| ns(NS_A + 100 + i, 1000 + u64::from(i)))
        .collect();
    for (i, &at) in namespaces.iter().enumerate() {
        h.unshare(100 + i as u32, at);
        for id in 0..100 {
            let key = 0x1000 + 100 * i as i32 + id;
            h.get(at, IpcObject::Sem, key, i64::from(id) << 15);
        }
    }
    let full = (h.engine.object_capacity(), h.engine.keys.capacity());
    assert!(full.0 >= 10_000 && full.1 >= 10_000, "{full:?}");
    for &at in &namespaces[..95] {
        h.freed(at);
    }
    // The five left, and the host they were created from.
    assert_eq!(h.engine.live_counts(), (6, 500));
    let left = (h.engine.object_capacity(), h.engine.keys.capacity());
    assert!(left.0 <= 2048 && left.1 <= 2048, "{left:?}");
    // A namespace that lives on gives back the room of its dead objects.
    let survivor = namespaces[99];
    for id in 100..10_000 {
        h.get(survivor, IpcObject::Msg, 0, i64::from(id) << 15);
    }
    assert!(h.engine.object_capacity() >= 10_000);
    for id in 100..10_000 {
        h.rmid(survivor, IpcObject::Msg, id << 15, false);
    }
    assert_eq!(h.engine.live_counts(), (6, 500));
    assert!(
        h.engine.object_capacity() <= 2048,
        "{}",
        h.engine.object_capacity()
    );
    h.engine.check_indexes().unwrap();
}
