//! The key index: where a key lives, whatever order its holders leave in.

use super::*;

#[test]
fn failed_get_says_where_the_key_lives() {
    let mut h = Harness::new();
    let (a, b) = (ns(NS_A, 42), ns(NS_B, 43));
    h.unshare(5, a);
    h.unshare(6, b);
    h.get(a, IpcObject::Msg, 0x1234, 0);
    h.get(host(), IpcObject::Msg, 0x1234, 3);
    h.get(a, IpcObject::Sem, 0x1234, 0);
    let out = h.feed(
        8,
        b,
        Body::Get {
            object: IpcObject::Msg,
            key: 0x1234,
            flags: 0,
            size: 0,
            result: Err(2),
        },
    );
    let Lifecycle::GetFailed {
        errno,
        key_lives_in,
        ns,
        ..
    } = &out[0]
    else {
        panic!("{out:?}")
    };
    assert_eq!((*errno, ns.inum), (2, NS_B));
    assert_eq!(
        inums(key_lives_in),
        vec![HOST_IPC_NS_INUM, NS_A],
        "msg queues only, every other namespace"
    );
    let out = h.feed(
        8,
        b,
        Body::Get {
            object: IpcObject::Shm,
            key: 0x1234,
            flags: 0,
            size: 0,
            result: Err(2),
        },
    );
    let Lifecycle::GetFailed { key_lives_in, .. } = &out[0] else {
        panic!()
    };
    assert!(key_lives_in.is_empty());
    let out = h.feed(
        8,
        b,
        Body::Get {
            object: IpcObject::Msg,
            key: 0,
            flags: 0,
            size: 0,
            result: Err(28),
        },
    );
    let Lifecycle::GetFailed { key_lives_in, .. } = &out[0] else {
        panic!()
    };
    assert!(key_lives_in.is_empty(), "IPC_PRIVATE names nothing");
}

/// The key index keeps its first holder apart from the others: whichever goes first, by
/// IPC_RMID or with its namespace, the rest stay findable and nothing stale is left.
#[test]
fn key_index_survives_its_holders_leaving_in_any_order() {
    let key_lives_in = |h: &mut Harness, at: NsRef| {
        let out = h.feed(
            8,
            at,
            Body::Get {
                object: IpcObject::Msg,
                key: 0x1234,
                flags: 0,
                size: 0,
                result: Err(2),
            },
        );
        let Lifecycle::GetFailed { key_lives_in, .. } = &out[0] else {
            panic!("{out:?}")
        };
        inums(key_lives_in)
    };
    let (a, b, c) = (ns(NS_A, 42), ns(NS_B, 43), ns(NS_A + 7, 44));
    let mut h = Harness::new();
    for (at, pid) in [(a, 5), (b, 6), (c, 7)] {
        h.unshare(pid, at);
    }
    h.get(a, IpcObject::Msg, 0x1234, 0);
    h.get(b, IpcObject::Msg, 0x1234, 0);
    h.get(c, IpcObject::Msg, 0x1234, 0);
    assert_eq!(key_lives_in(&mut h, host()), vec![NS_A, NS_B, NS_A + 7]);
    // The first holder goes by IPC_RMID, the second with its namespace.
    h.rmid(a, IpcObject::Msg, 0, false);
    assert_eq!(key_lives_in(&mut h, host()), vec![NS_B, NS_A + 7]);
    h.freed(b);
    assert_eq!(key_lives_in(&mut h, host()), vec![NS_A + 7]);
    h.get(a, IpcObject::Msg, 0x1234, 32768);
    assert_eq!(key_lives_in(&mut h, host()), vec![NS_A, NS_A + 7]);
    h.rmid(c, IpcObject::Msg, 0, false);
    h.rmid(a, IpcObject::Msg, 32768, false);
    assert!(key_lives_in(&mut h, host()).is_empty());
    assert!(h.engine.keys.is_empty() && h.engine.more_keys.is_empty());
    // A namespace whose previous life ended unseen takes its keys with it.
    h.get(a, IpcObject::Msg, 0x1234, 0);
    h.get(b, IpcObject::Msg, 0x1234, 0);
    h.unshare(9, ns(NS_A, 99));
    assert_eq!(key_lives_in(&mut h, host()), vec![NS_B]);
}
