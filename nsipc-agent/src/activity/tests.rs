use super::*;

const NS: NsRef = NsRef {
    id: 0,
    inum: 4026532177,
    life: 7,
};

fn key(id: i32, pid: u32, kind: EventKind) -> ActivityKey {
    ActivityKey {
        ns: NS,
        id,
        pid,
        kind: kind as u32,
        _pad: 0,
    }
}

fn count(calls: u64, units: u64) -> ActivityCount {
    ActivityCount {
        calls,
        units,
        cgroup: 9,
        comm: *b"worker\0\0\0\0\0\0\0\0\0\0",
        ..ActivityCount::default()
    }
}

fn known(key: i32) -> Known {
    Known {
        ns: NsIdent {
            inum: NS.inum,
            id: 0,
            generation: 1,
        },
        key,
    }
}

/// A participant's role, pid, calls and units.
type Calls = (Role, u32, u64, u64);

/// Each object's id, whether it ended, and its participants' calls.
fn summary(report: &Report) -> Vec<(i32, bool, Vec<Calls>)> {
    report
        .objects
        .iter()
        .map(|o| {
            (
                o.object.id,
                o.ended,
                o.participants
                    .iter()
                    .map(|p| (p.role, p.pid, p.calls, p.units))
                    .collect(),
            )
        })
        .collect()
}

/// An object's flows: (from, to, messages, bytes sent).
fn flows(activity: &ObjectActivity) -> Vec<(u32, u32, u64, u64)> {
    activity
        .flows
        .iter()
        .map(|f| {
            assert_eq!(f.from.calls, f.to.calls);
            (f.from.pid, f.to.pid, f.from.calls, f.from.units)
        })
        .collect()
}

#[test]
fn each_report_says_what_happened_since_the_last() {
    let mut tracker = ActivityTracker::default();
    let live = |o: &ObjectRef| (o.id == 5).then(|| known(0x5eed));
    let first = tracker.report(
        [
            (key(5, 100, EventKind::MsgSend), count(3, 300)),
            (key(5, 200, EventKind::MsgReceive), count(2, 200)),
        ],
        live,
        |_| true,
        false,
    );
    assert_eq!(
        summary(&first),
        [(
            5,
            false,
            vec![(Role::Sender, 100, 3, 300), (Role::Receiver, 200, 2, 200)]
        )]
    );
    assert_eq!(first.objects[0].known, Some(known(0x5eed)));
    assert!(first.delete.is_empty());
    // Two of the three messages reached the receiver.
    assert_eq!(flows(&first.objects[0]), [(100, 200, 2, 200)]);
    // Only the receiver did more: the sender is not in the next line, and there is no flow.
    let second = tracker.report(
        [
            (key(5, 100, EventKind::MsgSend), count(3, 300)),
            (key(5, 200, EventKind::MsgReceive), count(3, 300)),
        ],
        live,
        |_| true,
        false,
    );
    assert_eq!(
        summary(&second),
        [(5, false, vec![(Role::Receiver, 200, 1, 100)])]
    );
    // The third message, sent before this report, received since.
    assert_eq!(flows(&second.objects[0]), [(100, 200, 1, 100)]);
    // Nothing new: no line.
    let third = tracker.report(
        [
            (key(5, 100, EventKind::MsgSend), count(3, 300)),
            (key(5, 200, EventKind::MsgReceive), count(3, 300)),
        ],
        live,
        |_| true,
        false,
    );
    assert_eq!(third, Report::default());
}

#[test]
fn an_ended_object_gets_a_last_line_and_its_entries_go() {
    let mut tracker = ActivityTracker::default();
    let entries = [
        (key(5, 100, EventKind::SemOp), count(2, 4)),
        (key(5, 101, EventKind::SemOp), count(1, 1)),
    ];
    tracker.report(entries, |_| Some(known(1)), |_| true, false);
    // Gone, after one more call by 100: its last line has that call, and names it still.
    let entries = [
        (key(5, 100, EventKind::SemOp), count(3, 6)),
        (key(5, 101, EventKind::SemOp), count(1, 1)),
    ];
    let report = tracker.report(entries, |_| None, |_| true, false);
    assert_eq!(
        summary(&report),
        [(5, true, vec![(Role::Operator, 100, 1, 2)])]
    );
    assert_eq!(report.objects[0].known, Some(known(1)));
    assert_eq!(report.delete, [entries[0].0, entries[1].0]);
    // A new object of the same id later starts from zero.
    let report = tracker.report(
        [(key(5, 100, EventKind::SemOp), count(1, 1))],
        |_| Some(known(2)),
        |_| true,
        false,
    );
    assert_eq!(
        summary(&report),
        [(5, false, vec![(Role::Operator, 100, 1, 1)])]
    );
}

#[test]
fn an_object_unknown_twice_is_taken_as_ended() {
    let mut tracker = ActivityTracker::default();
    let entries = [(key(9, 100, EventKind::MsgSend), count(1, 10))];
    // Its create may not have been read yet: nothing said, nothing deleted.
    let first = tracker.report(entries, |_| None, |_| true, false);
    assert_eq!(first, Report::default());
    let second = tracker.report(entries, |_| None, |_| true, false);
    assert_eq!(
        summary(&second),
        [(9, true, vec![(Role::Sender, 100, 1, 10)])]
    );
    assert_eq!(second.objects[0].known, None);
    assert_eq!(second.delete, [entries[0].0]);
    // Known by the second report: an ordinary line.
    let mut tracker = ActivityTracker::default();
    tracker.report(entries, |_| None, |_| true, false);
    let later = tracker.report(entries, |_| Some(known(3)), |_| true, false);
    assert_eq!(
        summary(&later),
        [(9, false, vec![(Role::Sender, 100, 1, 10)])]
    );
}

#[test]
fn exited_processes_are_reported_then_forgotten() {
    let mut tracker = ActivityTracker::default();
    let sender = key(5, 100, EventKind::MsgSend);
    let report = tracker.report(
        [(sender, count(4, 40))],
        |_| Some(known(1)),
        |_| false,
        false,
    );
    assert_eq!(
        summary(&report),
        [(5, false, vec![(Role::Sender, 100, 4, 40)])]
    );
    assert_eq!(report.delete, [sender]);
    // A new process with the same pid (its entry made again): counted from zero.
    let report = tracker.report(
        [(sender, count(1, 10))],
        |_| Some(known(1)),
        |_| true,
        false,
    );
    assert_eq!(
        summary(&report),
        [(5, false, vec![(Role::Sender, 100, 1, 10)])]
    );
}

#[test]
fn the_last_report_ends_every_object_it_cannot_name() {
    let mut tracker = ActivityTracker::default();
    let entries = [
        (key(5, 100, EventKind::MsgSend), count(1, 10)),
        (key(6, 100, EventKind::MsgSend), count(2, 20)),
    ];
    let live = |o: &ObjectRef| (o.id == 5).then(|| known(1));
    let report = tracker.report(entries, live, |_| true, true);
    assert_eq!(
        summary(&report),
        [
            (5, false, vec![(Role::Sender, 100, 1, 10)]),
            (6, true, vec![(Role::Sender, 100, 2, 20)])
        ]
    );
}

#[test]
fn receives_are_matched_to_the_sends_before_them() {
    let mut tracker = ActivityTracker::default();
    let live = |_: &ObjectRef| Some(known(1));
    // Two senders, then two receivers taking three messages between them and wanting a
    // fourth: the first sender's two go to the first receiver, the second's one to the other.
    let report = tracker.report(
        [
            (key(5, 1, EventKind::MsgSend), count(2, 16)),
            (key(5, 2, EventKind::MsgSend), count(1, 100)),
            (key(5, 3, EventKind::MsgReceive), count(2, 16)),
            (key(5, 4, EventKind::MsgReceive), count(2, 108)),
        ],
        live,
        |_| true,
        false,
    );
    assert_eq!(flows(&report.objects[0]), [(1, 3, 2, 16), (2, 4, 1, 100)]);
    // Receiver 4's other message was counted before its send (its exit probe ran first): its
    // send, counted by this report, is matched to it.
    let report = tracker.report(
        [
            (key(5, 1, EventKind::MsgSend), count(3, 24)),
            (key(5, 2, EventKind::MsgSend), count(1, 100)),
            (key(5, 3, EventKind::MsgReceive), count(2, 16)),
            (key(5, 4, EventKind::MsgReceive), count(2, 108)),
        ],
        live,
        |_| true,
        false,
    );
    assert_eq!(flows(&report.objects[0]), [(1, 4, 1, 8)]);
    // A receive no send ever matches (sent before the agent started) waits one report, then
    // is dropped: a later send is not taken as its.
    let report = tracker.report(
        [(key(5, 4, EventKind::MsgReceive), count(3, 116))],
        live,
        |_| true,
        false,
    );
    assert_eq!(flows(&report.objects[0]), []);
    tracker.report(
        [(key(5, 4, EventKind::MsgReceive), count(3, 116))],
        live,
        |_| true,
        false,
    );
    let report = tracker.report(
        [
            (key(5, 4, EventKind::MsgReceive), count(3, 116)),
            (key(5, 1, EventKind::MsgSend), count(4, 32)),
        ],
        live,
        |_| true,
        false,
    );
    assert_eq!(flows(&report.objects[0]), []);
    assert_eq!(tracker.queues[&report.objects[0].object].backlog.len(), 1);
}

#[test]
fn a_share_of_bytes_is_in_proportion_to_messages() {
    assert_eq!(share(100, 1, 4), 25);
    assert_eq!(share(100, 4, 4), 100);
    assert_eq!(share(u64::MAX, 2, 2), u64::MAX);
    assert_eq!(share(u64::MAX, 1, 2), u64::MAX / 2);
}

#[test]
fn an_object_made_and_gone_between_two_reports_ends_named_at_the_next() {
    let mut tracker = ActivityTracker::default();
    tracker.destroyed(IpcObject::Msg, 9, known(0x5eed));
    let entries = [(key(9, 100, EventKind::MsgSend), count(1, 10))];
    let report = tracker.report(entries, |_| None, |_| true, false);
    assert_eq!(
        summary(&report),
        [(9, true, vec![(Role::Sender, 100, 1, 10)])]
    );
    assert_eq!(report.objects[0].known, Some(known(0x5eed)));
    assert_eq!(report.delete, [entries[0].0]);
    // What was destroyed is forgotten after the report: another object of that id, unknown
    // to the engine, waits a report as any other.
    let report = tracker.report(entries, |_| None, |_| true, false);
    assert_eq!(report, Report::default());
}

#[test]
fn an_object_whose_processes_are_gone_still_gets_its_last_line() {
    let mut tracker = ActivityTracker::default();
    let entries = [(key(5, 100, EventKind::MsgSend), count(1, 10))];
    let report = tracker.report(entries, |_| Some(known(1)), |_| false, false);
    assert_eq!(report.delete, [entries[0].0]);
    // Its entries deleted, nothing to report while it lives.
    let report = tracker.report([], |_| Some(known(1)), |_| false, false);
    assert_eq!(report, Report::default());
    tracker.destroyed(IpcObject::Msg, 5, known(1));
    let report = tracker.report([], |_| None, |_| false, false);
    assert_eq!(summary(&report), [(5, true, vec![])]);
    assert_eq!(report.objects[0].known, Some(known(1)));
    // Once.
    let report = tracker.report([], |_| None, |_| false, false);
    assert_eq!(report, Report::default());
}

/// A sender's entry after `sent` sends of `fills` left the queue full at `queued` bytes of
/// 1000, and `refused` sends were refused.
fn sends(sent: u64, fills: u64, refused: u64, queued: u64) -> ActivityCount {
    ActivityCount {
        fills,
        refused,
        queued,
        limit: 1000,
        ..count(sent, sent * 100)
    }
}

#[test]
fn a_queue_is_reported_full_once_in_its_life_by_its_fullest_sender() {
    let mut tracker = ActivityTracker::default();
    let alive = std::cell::Cell::new(true);
    let live = |o: &ObjectRef| (alive.get() && o.id == 5).then(|| known(0x5eed));
    // Not full yet: no msg.full.
    let first = tracker.report(
        [(key(5, 100, EventKind::MsgSend), sends(5, 0, 0, 0))],
        live,
        |_| true,
        false,
    );
    assert_eq!(first.objects[0].full, None);
    // Two senders fill it: the one that saw it fullest names it, the counts are everyone's.
    let second = tracker.report(
        [
            (key(5, 100, EventKind::MsgSend), sends(9, 2, 0, 950)),
            (key(5, 101, EventKind::MsgSend), sends(1, 1, 0, 990)),
        ],
        live,
        |_| true,
        false,
    );
    let full = second.objects[0].full.expect("the queue filled up");
    assert_eq!(
        (
            full.sender.pid,
            full.queued,
            full.limit,
            full.fills,
            full.refused
        ),
        (101, 990, 1000, 3, 0)
    );
    // Full again, and refusing: no second msg.full; the refusals are in the activity line.
    let third = tracker.report(
        [
            (key(5, 100, EventKind::MsgSend), sends(9, 2, 4, 1000)),
            (key(5, 101, EventKind::MsgSend), sends(2, 2, 0, 990)),
        ],
        live,
        |_| true,
        false,
    );
    assert_eq!(third.objects[0].full, None);
    assert_eq!(
        third.objects[0]
            .of_role(Role::Sender)
            .map(|p| (p.pid, p.calls, p.refused))
            .collect::<Vec<_>>(),
        [(100, 0, 4), (101, 1, 0)]
    );
    // A sender with refusals only sent nothing: it is in no flow.
    let receive = tracker.report(
        [
            (key(5, 100, EventKind::MsgSend), sends(9, 2, 4, 1000)),
            (key(5, 101, EventKind::MsgSend), sends(2, 2, 0, 990)),
            (key(5, 200, EventKind::MsgReceive), count(11, 1100)),
        ],
        live,
        |_| true,
        false,
    );
    assert!(
        receive.objects[0].flows.iter().all(|f| f.from.calls > 0),
        "{:?}",
        receive.objects[0].flows
    );
    // Its id is reused by a new queue after the end: that one is reported full afresh.
    alive.set(false);
    tracker.destroyed(IpcObject::Msg, 5, known(0x5eed));
    let ended = tracker.report(
        [(key(5, 100, EventKind::MsgSend), sends(9, 2, 4, 1000))],
        live,
        |_| true,
        false,
    );
    assert!(ended.objects[0].ended);
    alive.set(true);
    let reborn = tracker.report(
        [(key(5, 102, EventKind::MsgSend), sends(1, 0, 1, 1000))],
        live,
        |_| true,
        false,
    );
    let full = reborn.objects[0].full.expect("a new queue, full");
    assert_eq!((full.sender.pid, full.refused), (102, 1));
}
