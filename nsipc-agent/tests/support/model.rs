//! The differential tests' common ground: objects as the kernel lists them in
//! `/proc/sysvipc`, the state rebuilt from the agent's lifecycle stream, and a seeded PRNG.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// A tiny deterministic PRNG (splitmix64).

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0);
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len())])
    }
}

// ---------------------------------------------------------------------------------------------
// Objects as the kernel lists them.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Msg,
    Shm,
    Sem,
}

pub const KINDS: [Kind; 3] = [Kind::Msg, Kind::Shm, Kind::Sem];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Msg => "msg",
            Kind::Shm => "shm",
            Kind::Sem => "sem",
        }
    }

    pub fn from_event(event: &str) -> Option<(Kind, &str)> {
        let (object, action) = event.split_once('.')?;
        let kind = match object {
            "msg" => Kind::Msg,
            "shm" => Kind::Shm,
            "sem" => Kind::Sem,
            _ => return None,
        };
        Some((kind, action))
    }

    pub fn ipcrm_id(self) -> &'static str {
        match self {
            Kind::Msg => "-q",
            Kind::Shm => "-m",
            Kind::Sem => "-s",
        }
    }

    pub fn ipcrm_key(self) -> &'static str {
        match self {
            Kind::Msg => "-Q",
            Kind::Shm => "-M",
            Kind::Sem => "-S",
        }
    }
}

/// What is compared for one object: its key (IPC_PRIVATE once a segment is removed while
/// attached), permission bits, and size (shm) or number of semaphores (sem).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listed {
    pub key: i64,
    pub mode: i64,
    pub size: i64,
}

/// One namespace's objects: (type, id) → what is compared.
pub type View = BTreeMap<(Kind, i64), Listed>;

/// Parses `cat /proc/sysvipc/msg /proc/sysvipc/shm /proc/sysvipc/sem`: each file starts with a
/// header naming its id column; key, id and perms are the first three columns, size (shm) and
/// nsems (sem) the fourth.
pub fn parse_sysvipc(text: &str) -> View {
    let mut view = View::new();
    let mut kind = None;
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 4 {
            continue;
        }
        match cols[1] {
            "msqid" => kind = Some(Kind::Msg),
            "shmid" => kind = Some(Kind::Shm),
            "semid" => kind = Some(Kind::Sem),
            _ => {
                let kind = kind.unwrap_or_else(|| panic!("no header before {line:?}"));
                let number = |s: &str| -> i64 {
                    s.parse()
                        .unwrap_or_else(|_| panic!("bad number {s:?} in {line:?}"))
                };
                let perms = i64::from_str_radix(cols[2], 8).expect("octal perms");
                let size = match kind {
                    Kind::Msg => 0,
                    Kind::Shm | Kind::Sem => number(cols[3]),
                };
                view.insert(
                    (kind, number(cols[1])),
                    Listed {
                        key: number(cols[0]),
                        mode: perms & 0o777,
                        size,
                    },
                );
            }
        }
    }
    view
}

// ---------------------------------------------------------------------------------------------
// The state rebuilt from the agent's lifecycle stream.

/// The raw (kernel) events of docs/events.md, by name.
pub fn is_raw(event: &Value) -> bool {
    matches!(
        event["event"].as_str(),
        Some(
            "msg.get"
                | "shm.get"
                | "sem.get"
                | "msg.ctl"
                | "shm.ctl"
                | "sem.ctl"
                | "shm.shmat"
                | "shm.shmdt"
                | "ipc_ns.unshare"
                | "ipc_ns.setns"
                | "ipc_ns.clone"
                | "process.exit"
                | "ipc_ns.freed"
                | "shm.freed",
        )
    )
}

/// A namespace's identity as (inum, `ns_id` where the kernel has one, else `1 << 63 |
/// ns_gen`), also of raw records, which have no `ns_gen` (it counts as 0 there).
pub fn life(event: &Value) -> (u64, u64) {
    let ns = event["ns"].as_u64().unwrap_or_default();
    match event["ns_id"].as_u64() {
        Some(id) => (ns, id),
        None => (ns, 1 << 63 | event["ns_gen"].as_u64().unwrap_or_default()),
    }
}

/// A namespace's identity in the stream: its never-reused `ns_id` (6.18+), else inum and the
/// engine's generation.
pub fn ns_key(event: &Value) -> Option<u64> {
    match event["ns_id"].as_u64() {
        Some(id) => Some(id),
        None => Some(1 << 63 | event["ns_gen"].as_u64()? << 32 | event["ns"].as_u64()?),
    }
}

#[derive(Debug)]
pub struct StreamObject {
    pub listed: Listed,
    pub removed: bool,
}

#[derive(Default)]
pub struct StreamState {
    /// Events already applied.
    pub cursor: usize,
    /// Live namespaces: identity → inum.
    pub alive: HashMap<u64, u64>,
    /// Namespaces the stream destroyed.
    pub destroyed: HashSet<u64>,
    /// Every `ipc_ns.create`, to find the identity of the namespaces the workload made.
    pub creates: Vec<Value>,
    pub objects: BTreeMap<(u64, Kind, i64), StreamObject>,
    /// `namespace_teardown` destroys seen per namespace: its `ipc_ns.destroy` must follow and
    /// count them in `objects_destroyed`.
    pub teardown: HashMap<u64, u64>,
    /// Destroys per (namespace, reason).
    pub reasons: HashMap<(u64, String), usize>,
    /// Namespaces in which a segment was destroyed with reason `rmid_forced`.
    pub forced: Vec<(u64, i64)>,
    /// Things the stream says that cannot be true whatever the kernel did.
    pub problems: Vec<String>,
    /// The part of [`Self::problems`] that holds even when records were lost (the agent
    /// resynchronises): a life announced twice, ended twice, or going on after its end.
    pub contradictions: Vec<String>,
    /// Objects a destroy called `unknown` (the agent did not see why), whose own successful
    /// IPC_RMID raw record then came: the resynchronisation said "vanished unseen" of a
    /// removal the agent had not applied yet (`--raw` streams only).
    pub unknown_then_removed: Vec<String>,
    /// Successful `ipc_ns.unshare` and `ipc_ns.clone` raw records (`--raw` streams only).
    pub births: Vec<Value>,
    /// Objects destroyed as `unknown`, by (inum, ns_id, kind, id): raw records have no
    /// `ns_gen`, and an inum's next life has its own object 0.
    unknown_dead: HashSet<(u64, u64, String, i64)>,
    pub stop: Option<Value>,
    /// Program runs the kernel skipped (`agent.missed`): the agent said so and
    /// resynchronised, which may destroy objects with reason `unknown`.
    pub missed: u64,
    /// `unknown` ends with no missed runs to explain them, each excused only if another life
    /// of the same inum is created at the same moment (see [`Self::finish`]).
    unexplained_unknown: Vec<Value>,
    /// Lives (with their objects) ended `unknown` because a new life of their inum showed up
    /// before their free's record: the documented race of a free read after the next create.
    pub ended_by_next_life: usize,
}

impl StreamState {
    pub fn apply_new(&mut self, events: &[Value]) {
        while self.cursor < events.len() {
            let event = &events[self.cursor];
            self.cursor += 1;
            self.apply(event);
        }
    }

    /// At the end of the stream: an `unknown` end that no missed run and no new life of its
    /// inum explains is a problem.
    pub fn finish(&mut self) {
        for ended in std::mem::take(&mut self.unexplained_unknown) {
            self.problem("unexpected destroy reason \"unknown\"", &ended);
        }
    }

    fn problem(&mut self, what: &str, event: &Value) {
        self.problems.push(format!("{what}: {event}"));
    }

    /// A problem that is also a contradiction (see [`Self::contradictions`]).
    fn contradiction(&mut self, what: &str, event: &Value) {
        self.contradictions.push(format!("{what}: {event}"));
        self.problem(what, event);
    }

    /// Where a record is, as [`Self::unknown_dead`] keys it.
    fn place(event: &Value) -> (u64, u64, String, i64) {
        let name = event["event"].as_str().unwrap_or_default();
        let (object, _) = name.split_once('.').unwrap_or_default();
        (
            event["ns"].as_u64().unwrap_or_default(),
            event["ns_id"].as_u64().unwrap_or_default(),
            object.to_owned(),
            event["id"].as_i64().unwrap_or(-1),
        )
    }

    fn apply_raw(&mut self, event: &Value) {
        let name = event["event"].as_str().unwrap_or_default();
        let (_, action) = name.split_once('.').unwrap_or_default();
        if event["ret"].as_i64().is_none_or(|ret| ret < 0) {
            return;
        }
        match action {
            "get" => {
                self.unknown_dead.remove(&Self::place(event));
            }
            "ctl"
                if event["cmd"] == "IPC_RMID" && self.unknown_dead.remove(&Self::place(event)) =>
            {
                self.unknown_then_removed.push(event.to_string());
            }
            "unshare" | "clone" => self.births.push(event.clone()),
            _ => {}
        }
    }

    fn apply(&mut self, event: &Value) {
        if is_raw(event) {
            return self.apply_raw(event);
        }
        let name = event["event"].as_str().unwrap_or_default();
        match name {
            "agent.lost" => self.problem("records lost", event),
            "agent.missed" => self.missed += event["count"].as_u64().unwrap_or(0),
            "agent.decode_error" => self.problem("undecodable record", event),
            "agent.stop" => self.stop = Some(event.clone()),
            "ipc_ns.create" | "ipc_ns.exists" => {
                let Some(ns) = ns_key(event) else {
                    return self.problem("namespace without identity", event);
                };
                if self.alive.contains_key(&ns) {
                    self.contradiction("duplicate namespace create", event);
                }
                if self.destroyed.contains(&ns) {
                    self.contradiction("namespace created again after its destroy", event);
                }
                self.alive
                    .insert(ns, event["ns"].as_u64().unwrap_or_default());
                if name == "ipc_ns.create" {
                    let before = self.unexplained_unknown.len();
                    self.unexplained_unknown.retain(|ended| {
                        ended["ns"] != event["ns"]
                            || ended["time"] != event["time"]
                            || ns_key(ended) == Some(ns)
                    });
                    self.ended_by_next_life += before - self.unexplained_unknown.len();
                    self.creates.push(event.clone());
                }
            }
            "ipc_ns.destroy" => {
                let Some(ns) = ns_key(event) else {
                    return self.problem("namespace without identity", event);
                };
                if event["reason"] == "unknown" && self.missed == 0 {
                    self.unexplained_unknown.push(event.clone());
                }
                let torn_down = self.teardown.remove(&ns).unwrap_or(0);
                let counted: u64 = ["msg", "shm", "sem"]
                    .iter()
                    .map(|t| event["objects_destroyed"][t].as_u64().unwrap_or(0))
                    .sum();
                if counted != torn_down {
                    self.problem(
                        &format!("objects_destroyed says {counted}, {torn_down} namespace_teardown destroys came"),
                        event,
                    );
                }
                if !self.destroyed.insert(ns) {
                    self.contradiction("namespace destroyed twice", event);
                }
                self.alive.remove(&ns);
                let outliving: Vec<_> = self
                    .objects
                    .keys()
                    .filter(|(object_ns, _, _)| *object_ns == ns)
                    .copied()
                    .collect();
                for key in outliving {
                    self.objects.remove(&key);
                    self.contradiction(&format!("{key:?} outlived its namespace"), event);
                }
            }
            _ => self.apply_object(name, event),
        }
    }

    fn apply_object(&mut self, name: &str, event: &Value) {
        let Some((kind, action)) = Kind::from_event(name) else {
            return;
        };
        if !matches!(action, "create" | "exists" | "destroy" | "remove") {
            return; // get_failed, attach, detach: nothing lives or dies
        }
        if action == "destroy" && event["reason"] == "unknown" {
            self.unknown_dead.insert(Self::place(event));
        }
        let (Some(ns), Some(id)) = (ns_key(event), event["id"].as_i64()) else {
            return self.problem("object event without namespace or id", event);
        };
        let key = (ns, kind, id);
        match action {
            "create" | "exists" => {
                if self.objects.contains_key(&key) {
                    self.contradiction("duplicate object create", event);
                }
                if self.destroyed.contains(&ns) {
                    self.contradiction("object created in a destroyed namespace", event);
                }
                let size = match kind {
                    Kind::Msg => 0,
                    Kind::Shm => event["size"].as_i64().unwrap_or(-1),
                    Kind::Sem => event["nsems"].as_i64().unwrap_or(-1),
                };
                self.objects.insert(
                    key,
                    StreamObject {
                        listed: Listed {
                            key: event["key"].as_i64().unwrap_or(-1),
                            mode: event["mode"].as_i64().unwrap_or(-1),
                            size,
                        },
                        removed: false,
                    },
                );
            }
            "remove" => match self.objects.get_mut(&key) {
                Some(object) if !object.removed => {
                    // The kernel marks the segment and makes its key IPC_PRIVATE.
                    object.removed = true;
                    object.listed.key = 0;
                }
                Some(_) => self.problem("segment removed twice", event),
                None => self.problem("remove of an object never created", event),
            },
            _ => {
                let Some(object) = self.objects.remove(&key) else {
                    return self.contradiction("destroy of an object never created", event);
                };
                let reason = event["reason"].as_str().unwrap_or_default();
                // A segment removed while attached dies at its last detach: attachments hold
                // the namespace, so it cannot be left for the namespace's teardown.
                if object.removed && reason != "last_detach" {
                    self.problem(
                        "segment removed while attached, destroyed other than by last_detach",
                        event,
                    );
                }
                if reason == "last_detach" && !object.removed {
                    self.problem("last_detach of a segment never removed", event);
                }
                *self.reasons.entry((ns, reason.to_owned())).or_default() += 1;
                match reason {
                    "namespace_teardown" => *self.teardown.entry(ns).or_default() += 1,
                    "rmid_forced" => self.forced.push((ns, id)),
                    "rmid" | "last_detach" => {}
                    // By the resynchronisation after missed runs or lost records.
                    "unknown" if self.missed > 0 => {}
                    "unknown" => self.unexplained_unknown.push(event.clone()),
                    other => self.problem(&format!("unexpected destroy reason {other:?}"), event),
                }
            }
        }
    }

    pub fn view_of(&self, ns: u64) -> View {
        self.objects
            .range((ns, Kind::Msg, i64::MIN)..=(ns, Kind::Sem, i64::MAX))
            .map(|(&(_, kind, id), object)| ((kind, id), object.listed))
            .collect()
    }
}
