//! The activity report's lines (`trace --activity-interval`): `msg.activity` and
//! `sem.activity` per object with calls since the last report, `ipc.flow` per sender →
//! receiver pair of a queue, and `msg.full` the first time a queue is found full. What they
//! say is worked out by [`crate::activity`].

use std::time::SystemTime;

use crate::{
    activity::{Flow, ObjectActivity, Participant, QueueFull, Role},
    attribution::Attribution,
    decode::{ContainerRef, comm_bytes},
    names::IpcObject,
    output::{
        fields::{NS, put_container, put_key, put_ns},
        json::{Fields, FieldsLine, Key, Line, key},
        pretty::{Head, PrettyLine, Tone, Who},
        sink::EventLine,
    },
};

/// One object's activity, and the container of each of its participants (in their order).
pub struct ActivityLine<'a> {
    pub activity: &'a ObjectActivity,
    pub containers: &'a [ContainerRef],
    pub time: SystemTime,
    /// Since the last report.
    pub interval_ms: u64,
    pub attribution: &'a Attribution,
}

/// Messages one process received from a queue that another had sent into it.
pub struct FlowLine<'a> {
    pub via: &'a ObjectActivity,
    pub flow: &'a Flow,
    /// The containers of the sender and the receiver.
    pub containers: [ContainerRef; 2],
    pub time: SystemTime,
    pub interval_ms: u64,
    pub attribution: &'a Attribution,
}

/// A queue found full for the first time, and the container of the sender that found it so.
pub struct FullLine<'a> {
    pub queue: &'a ObjectActivity,
    pub full: &'a QueueFull,
    pub container: ContainerRef,
    pub time: SystemTime,
    pub attribution: &'a Attribution,
}

/// The event name of an object's activity line.
pub fn activity_name(object: IpcObject) -> &'static str {
    match object {
        IpcObject::Msg => "msg.activity",
        // No shm activity is counted: attachments are lifecycle lines of their own.
        IpcObject::Shm | IpcObject::Sem => "sem.activity",
    }
}

/// The object's namespace (`ns`, then `ns_id` or `ns_gen`), `id`, then `key`/`key_hex` where
/// the engine knows it.
fn put_object<F: Fields>(f: &mut F, activity: &ObjectActivity) -> Result<(), F::Error> {
    let object = &activity.object;
    let (id, generation) = match activity.known {
        Some(known) if known.ns.id != 0 => (Some(known.ns.id), None),
        Some(known) => (None, Some(known.ns.generation)),
        None => ((object.ns.id != 0).then_some(object.ns.id), None),
    };
    put_ns(f, NS, object.ns.inum, id, generation)?;
    f.uint(key!("id"), object.id as u64)?;
    if let Some(known) = activity.known {
        put_key(f, known.key)?;
    }
    Ok(())
}

/// The count names of a participant's role: messages and bytes for a queue, calls and
/// operations for a semaphore set.
fn count_keys(role: Role) -> (Key, Key) {
    match role {
        Role::Sender | Role::Receiver => (key!("messages"), key!("bytes")),
        Role::Operator => (key!("calls"), key!("operations")),
    }
}

/// A participant as a JSON object: `pid`, `comm`, its container (and `host_ipc`), then, with
/// `counts`, what it did.
fn participant_json(
    participant: &Participant,
    container: ContainerRef,
    ns: u32,
    attribution: &Attribution,
    counts: bool,
) -> String {
    let mut buf = Vec::new();
    let mut line = Line::start(&mut buf);
    let Ok(()) = put_participant(&mut line, participant, container, ns, attribution, counts);
    line.end();
    String::from_utf8(buf).expect("the JSON writer writes UTF-8")
}

fn put_participant<F: Fields>(
    f: &mut F,
    participant: &Participant,
    container: ContainerRef,
    ns: u32,
    attribution: &Attribution,
    counts: bool,
) -> Result<(), F::Error> {
    f.uint(key!("pid"), participant.pid.into())?;
    f.lossy(key!("comm"), comm_bytes(&participant.comm))?;
    put_container(f, container, ns, attribution)?;
    if counts {
        let (calls, units) = count_keys(participant.role);
        f.uint(calls, participant.calls)?;
        f.uint(units, participant.units)?;
        if participant.role == Role::Sender {
            f.uint(key!("refused"), participant.refused)?;
        }
    }
    Ok(())
}

/// A participant in the human view: `pid/comm`, then ` (container)` when in one.
fn pretty_participant(
    line: &mut PrettyLine<'_>,
    participant: &Participant,
    container: ContainerRef,
    attribution: &Attribution,
) {
    line.raw_uint(participant.pid.into())
        .raw("/")
        .raw_text(comm_bytes(&participant.comm));
    if let Some(known) = attribution.get(container) {
        line.raw(" (").raw_container(&known.container).raw(")");
    }
}

impl ActivityLine<'_> {
    fn list(&self, role: Role) -> Vec<String> {
        let ns = self.activity.object.ns.inum;
        self.activity
            .participants
            .iter()
            .zip(self.containers)
            .filter(|(p, _)| p.role == role)
            .map(|(p, &c)| participant_json(p, c, ns, self.attribution, true))
            .collect()
    }
}

impl FieldsLine for ActivityLine<'_> {
    fn fields<F: Fields>(&self, f: &mut F) -> Result<(), F::Error> {
        let activity = self.activity;
        f.name(key!("event"), activity_name(activity.object.object))?;
        f.time(key!("time"), self.time)?;
        put_object(f, activity)?;
        f.bool(key!("ended"), activity.ended)?;
        f.uint(key!("interval_ms"), self.interval_ms)?;
        if activity.object.object == IpcObject::Msg {
            let (sent, sent_bytes) = activity.total(Role::Sender);
            let (received, received_bytes) = activity.total(Role::Receiver);
            f.uint(key!("messages_sent"), sent)?;
            f.uint(key!("bytes_sent"), sent_bytes)?;
            f.uint(key!("messages_received"), received)?;
            f.uint(key!("bytes_received"), received_bytes)?;
            let refused = activity.of_role(Role::Sender).map(|p| p.refused).sum();
            f.uint(key!("messages_refused"), refused)?;
            let senders = self.list(Role::Sender);
            f.raw_list(key!("senders"), senders.iter().map(String::as_str))?;
            let receivers = self.list(Role::Receiver);
            f.raw_list(key!("receivers"), receivers.iter().map(String::as_str))
        } else {
            let (calls, operations) = activity.total(Role::Operator);
            f.uint(key!("calls"), calls)?;
            f.uint(key!("operations"), operations)?;
            let operators = self.list(Role::Operator);
            f.raw_list(key!("operators"), operators.iter().map(String::as_str))
        }
    }
}

impl EventLine for ActivityLine<'_> {
    fn json(&self, buf: &mut Vec<u8>) -> serde_json::Result<()> {
        self.write_json(buf);
        Ok(())
    }

    fn pretty(&self, line: &mut PrettyLine<'_>) {
        let activity = self.activity;
        line.head(&Head {
            time: self.time,
            kind: activity_name(activity.object.object),
            tone: Tone::Plain,
            ns: Some(activity.object.ns.inum),
            who: Who::Nobody,
            task: None,
        });
        line.uint("id", activity.object.id as u64);
        if let Some(known) = activity.known {
            line.key(known.key);
        }
        if activity.object.object == IpcObject::Msg {
            let (sent, sent_bytes) = activity.total(Role::Sender);
            let (received, received_bytes) = activity.total(Role::Receiver);
            line.uint("sent", sent)
                .uint("bytes", sent_bytes)
                .uint("received", received)
                .uint("bytes", received_bytes);
        } else {
            let (calls, operations) = activity.total(Role::Operator);
            line.uint("calls", calls).uint("operations", operations);
        }
        line.uint("processes", activity.participants.len() as u64);
        if activity.ended {
            line.flag("ended");
        }
    }
}

impl FieldsLine for FlowLine<'_> {
    fn fields<F: Fields>(&self, f: &mut F) -> Result<(), F::Error> {
        let ns = self.via.object.ns.inum;
        let flow = self.flow;
        f.name(key!("event"), "ipc.flow")?;
        f.time(key!("time"), self.time)?;
        f.uint(key!("interval_ms"), self.interval_ms)?;
        let [from_container, to_container] = self.containers;
        let from = participant_json(&flow.from, from_container, ns, self.attribution, false);
        f.raw(key!("from"), &from)?;
        let to = participant_json(&flow.to, to_container, ns, self.attribution, false);
        f.raw(key!("to"), &to)?;
        let mut via = Vec::new();
        let mut line = Line::start(&mut via);
        let Ok(()) = line.name(key!("kind"), "msg");
        let Ok(()) = put_object(&mut line, self.via);
        line.end();
        f.raw(
            key!("via"),
            std::str::from_utf8(&via).expect("the JSON writer writes UTF-8"),
        )?;
        f.uint(key!("messages"), flow.from.calls)?;
        f.uint(key!("bytes"), flow.from.units)
    }
}

impl EventLine for FlowLine<'_> {
    fn json(&self, buf: &mut Vec<u8>) -> serde_json::Result<()> {
        self.write_json(buf);
        Ok(())
    }

    fn pretty(&self, line: &mut PrettyLine<'_>) {
        line.head(&Head {
            time: self.time,
            kind: "ipc.flow",
            tone: Tone::Plain,
            ns: Some(self.via.object.ns.inum),
            who: Who::Nobody,
            task: None,
        });
        line.raw(" ");
        let ends = [&self.flow.from, &self.flow.to];
        for (i, (participant, container)) in ends.into_iter().zip(self.containers).enumerate() {
            if i > 0 {
                line.raw(" -> ");
            }
            pretty_participant(line, participant, container, self.attribution);
        }
        line.uint("msqid", self.via.object.id as u64);
        if let Some(known) = self.via.known {
            line.key(known.key);
        }
        line.uint("messages", self.flow.from.calls)
            .uint("bytes", self.flow.from.units);
    }
}

impl FieldsLine for FullLine<'_> {
    fn fields<F: Fields>(&self, f: &mut F) -> Result<(), F::Error> {
        let full = self.full;
        f.name(key!("event"), "msg.full")?;
        f.time(key!("time"), self.time)?;
        put_object(f, self.queue)?;
        f.uint(key!("bytes"), full.queued)?;
        f.uint(key!("limit"), full.limit)?;
        f.uint(key!("fills"), full.fills)?;
        f.uint(key!("refused"), full.refused)?;
        let ns = self.queue.object.ns.inum;
        let sender = participant_json(&full.sender, self.container, ns, self.attribution, false);
        f.raw(key!("sender"), &sender)
    }
}

impl EventLine for FullLine<'_> {
    fn json(&self, buf: &mut Vec<u8>) -> serde_json::Result<()> {
        self.write_json(buf);
        Ok(())
    }

    fn pretty(&self, line: &mut PrettyLine<'_>) {
        let full = self.full;
        line.head(&Head {
            time: self.time,
            kind: "msg.full",
            tone: Tone::Warn,
            ns: Some(self.queue.object.ns.inum),
            who: Who::Nobody,
            task: None,
        });
        line.uint("msqid", self.queue.object.id as u64);
        if let Some(known) = self.queue.known {
            line.key(known.key);
        }
        line.uint("bytes", full.queued)
            .uint("limit", full.limit)
            .uint("refused", full.refused)
            .raw(" sender=");
        pretty_participant(line, &full.sender, self.container, self.attribution);
    }
}
