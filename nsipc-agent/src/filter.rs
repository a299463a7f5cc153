//! `trace --container/--ns/--pid/--comm/--events`: which event lines are written.
//!
//! Filters choose lines after the lifecycle engine, which sees every record: a lifecycle
//! needs all of its records (an object created by one process can be removed by another, a
//! failed get's `key_lives_in` is about every other namespace), so dropping records in the
//! probes would make destroys look like leaks. `agent.*` and the startup inventory's
//! `*.exists` lines are always written.
//!
//! Each filter given must match (several values of one filter: any of them). A line about a
//! task matches `--container`, `--pid` and `--comm` by its task; a line with no task (a
//! namespace's teardown and what died with it, a segment's last detach seen as its free)
//! matches them when its namespace is one where a matching task was seen.

use std::collections::HashSet;

use nsipc_common::NsRef;

use crate::{
    attribution::Attribution,
    decode::{Body, ContainerRef, KernelEvent, Task},
    lifecycle::Lifecycle,
    output::kernel_events::event_name,
};

/// Every event kind a filter can select: the stream's kinds ([`crate::metrics::LINE_KINDS`])
/// but those always written.
pub const EVENT_NAMES: &[&str] = &crate::metrics::SELECTABLE_KINDS;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterSpec {
    /// Container ids (or id prefixes) and names.
    pub containers: Vec<String>,
    pub namespaces: Vec<u32>,
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    /// Event names, with `*` matching any run of characters (`msg.*`, `*.destroy`); those
    /// starting with `-` leave out what they match (`-shm.attach`).
    pub events: Vec<String>,
}

impl FilterSpec {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// A [`FilterSpec`] applied to a stream.
pub struct Filter {
    spec: FilterSpec,
    /// Containers that match `--container` (refs learnt as containers are seen).
    matching_containers: HashSet<ContainerRef>,
    checked_containers: HashSet<ContainerRef>,
    /// Namespaces (inum) where a task matching the task filters was seen.
    task_namespaces: HashSet<u32>,
}

/// What a line says that filters look at.
struct Line<'a> {
    name: &'static str,
    task: Option<&'a Task>,
    /// The namespaces it is about (`ns`, and `from_ns` for switches).
    namespaces: [Option<u32>; 2],
    /// The containers it names without a task (`ipc_ns.destroy`'s, `*.orphaned`'s).
    containers: &'a [ContainerRef],
}

impl Filter {
    pub fn new(spec: FilterSpec) -> Self {
        Self {
            spec,
            matching_containers: HashSet::new(),
            checked_containers: HashSet::new(),
            task_namespaces: HashSet::new(),
        }
    }

    /// Whether a lifecycle line is written.
    pub fn lifecycle(&mut self, event: &Lifecycle, attribution: &Attribution) -> bool {
        let from = match event {
            Lifecycle::NsCreate { from, .. } | Lifecycle::NsJoin { from, .. } => Some(from.inum),
            _ => None,
        };
        let containers = match event {
            Lifecycle::NsDestroy { containers, .. } => containers.as_slice(),
            Lifecycle::ObjectOrphaned { container, .. } => std::slice::from_ref(container),
            _ => &[],
        };
        self.matches(
            &Line {
                name: event.name(),
                task: event.task(),
                namespaces: [Some(event.ns().inum), from],
                containers,
            },
            attribution,
        )
    }

    /// Whether a raw kernel event line (`--raw`) is written.
    pub fn raw(&mut self, event: &KernelEvent, attribution: &Attribution) -> bool {
        let from = match event.body {
            Body::Unshare { from, .. } | Body::Setns { from, .. } | Body::Clone { from, .. } => {
                Some(from)
            }
            _ => None,
        };
        let task =
            (!matches!(event.body, Body::NsFreed | Body::ShmFreed { .. })).then_some(&event.task);
        self.matches(
            &Line {
                name: event_name(&event.body),
                task,
                namespaces: [Some(event.ns.inum), from.map(|ns: NsRef| ns.inum)],
                containers: &[],
            },
            attribution,
        )
    }

    /// Whether an activity line (`msg.activity`, `sem.activity`, `ipc.flow`) is written: it has
    /// no one task but the `containers` of the processes it names.
    pub fn activity(
        &mut self,
        name: &'static str,
        ns: u32,
        containers: &[ContainerRef],
        attribution: &Attribution,
    ) -> bool {
        self.matches(
            &Line {
                name,
                task: None,
                namespaces: [Some(ns), None],
                containers,
            },
            attribution,
        )
    }

    fn matches(&mut self, line: &Line<'_>, attribution: &Attribution) -> bool {
        let spec = &self.spec;
        if !events_match(&spec.events, line.name) {
            return false;
        }
        if !spec.namespaces.is_empty()
            && !line
                .namespaces
                .iter()
                .flatten()
                .any(|ns| spec.namespaces.contains(ns))
        {
            return false;
        }
        let task_filtered =
            !(spec.containers.is_empty() && spec.pids.is_empty() && spec.comms.is_empty());
        if !task_filtered {
            return true;
        }
        match line.task {
            Some(task) => {
                let matched = (spec.pids.is_empty() || spec.pids.contains(&task.pid))
                    && (spec.comms.is_empty()
                        || spec
                            .comms
                            .iter()
                            .any(|comm| comm.as_bytes() == task.comm_bytes()))
                    && (spec.containers.is_empty()
                        || self.container_matches(task.container, attribution));
                if matched {
                    self.task_namespaces
                        .extend(line.namespaces[0].filter(|&ns| ns != 0));
                }
                matched
            }
            None => {
                line.namespaces[0].is_some_and(|ns| self.task_namespaces.contains(&ns))
                    || (!line.containers.is_empty()
                        && spec.pids.is_empty()
                        && spec.comms.is_empty()
                        && line
                            .containers
                            .iter()
                            .any(|&c| self.container_matches(c, attribution)))
            }
        }
    }

    fn container_matches(&mut self, container: ContainerRef, attribution: &Attribution) -> bool {
        if self.checked_containers.insert(container)
            && let Some(known) = attribution.get(container)
        {
            let c = &known.container;
            if self.spec.containers.iter().any(|wanted| {
                c.name.as_deref() == Some(wanted.as_str())
                    || (!wanted.is_empty() && c.id.starts_with(wanted.as_str()))
            }) {
                self.matching_containers.insert(container);
            }
        }
        self.matching_containers.contains(&container)
    }
}

/// Whether `name` matches `glob`, where `*` matches any run of characters.
pub fn glob_match(glob: &str, name: &str) -> bool {
    let mut parts = glob.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether event `name` is one `--events` asks for: it matches a glob, or there are only
/// globs leaving kinds out (`-glob`), and it matches none of those.
fn events_match(globs: &[String], name: &str) -> bool {
    let mut wanted = None;
    for glob in globs {
        match glob.strip_prefix('-') {
            Some(left_out) if glob_match(left_out, name) => return false,
            Some(_) => {}
            None => wanted = Some(wanted.unwrap_or(false) || glob_match(glob, name)),
        }
    }
    wanted.unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use nsipc_common::{EventKind, LOST_SLOTS};

    use super::*;
    use crate::{
        containers::{Container, Runtime},
        decode::tests::task,
        lifecycle::{DestroyReason, NsIdent, ObjectCounts},
        names::IpcObject,
        output::kernel_events::kind_name,
    };

    #[test]
    fn every_raw_kind_can_be_selected() {
        for id in 1..LOST_SLOTS {
            assert!(EventKind::from_u32(id).is_some());
            if EventKind::from_record(id).is_some() {
                assert!(EVENT_NAMES.contains(&kind_name(id)), "{}", kind_name(id));
            }
        }
    }

    fn ns(inum: u32) -> NsIdent {
        NsIdent {
            inum,
            id: 0,
            generation: 1,
        }
    }

    fn create(task: Task, inum: u32) -> Lifecycle {
        Lifecycle::ObjectCreate {
            ts: 1,
            task,
            ns: ns(inum),
            object: IpcObject::Msg,
            id: 0,
            key: 7,
            mode: 0o600,
            size: 0,
        }
    }

    fn teardown(inum: u32, containers: Vec<ContainerRef>) -> [Lifecycle; 2] {
        [
            Lifecycle::ObjectDestroy {
                ts: 2,
                task: None,
                ns: ns(inum),
                object: IpcObject::Msg,
                id: 0,
                key: 7,
                reason: DestroyReason::NamespaceTeardown,
                lifetime_ns: None,
                late: false,
            },
            Lifecycle::NsDestroy {
                ts: 2,
                ns: ns(inum),
                containers,
                lifetime_ns: None,
                destroyed: ObjectCounts::default(),
                reason: DestroyReason::Freed,
                late: false,
            },
        ]
    }

    #[test]
    fn a_container_filter_keeps_its_tasks_and_its_namespaces_teardown() {
        let mut attribution = Attribution::none();
        let producer = attribution.intern(Container {
            id: "5eed0123".into(),
            runtime: Runtime::Docker,
            name: Some("producer".into()),
            pod: None,
        });
        let other = attribution.intern(Container {
            id: "0ther".into(),
            runtime: Runtime::Docker,
            name: Some("consumer".into()),
            pod: None,
        });
        for wanted in ["producer", "5eed", "5eed0123"] {
            let mut filter = Filter::new(FilterSpec {
                containers: vec![wanted.into()],
                ..FilterSpec::default()
            });
            assert!(filter.lifecycle(&create(task(5, b"p", producer), 10), &attribution));
            assert!(!filter.lifecycle(&create(task(6, b"c", other), 11), &attribution));
            assert!(
                !filter.lifecycle(&create(task(7, b"h", ContainerRef::NONE), 10), &attribution)
            );
            let [object, namespace] = teardown(10, vec![producer]);
            assert!(filter.lifecycle(&object, &attribution), "{wanted}");
            assert!(filter.lifecycle(&namespace, &attribution));
            let [object, namespace] = teardown(11, vec![other]);
            assert!(!filter.lifecycle(&object, &attribution));
            assert!(!filter.lifecycle(&namespace, &attribution));
        }
        // A namespace's destroy names its containers even when none of its events was seen.
        let mut filter = Filter::new(FilterSpec {
            containers: vec!["producer".into()],
            ..FilterSpec::default()
        });
        let [object, namespace] = teardown(12, vec![other, producer]);
        assert!(!filter.lifecycle(&object, &attribution));
        assert!(filter.lifecycle(&namespace, &attribution));
    }

    #[test]
    fn filters_combine_and_values_alternate() {
        let attribution = Attribution::none();
        let mut filter = Filter::new(FilterSpec {
            pids: vec![5, 6],
            comms: vec!["perl".into()],
            events: vec!["msg.*".into()],
            namespaces: vec![10],
            ..FilterSpec::default()
        });
        assert!(filter.lifecycle(
            &create(task(5, b"perl", ContainerRef::NONE), 10),
            &attribution
        ));
        assert!(filter.lifecycle(
            &create(task(6, b"perl", ContainerRef::NONE), 10),
            &attribution
        ));
        assert!(!filter.lifecycle(
            &create(task(7, b"perl", ContainerRef::NONE), 10),
            &attribution
        ));
        assert!(!filter.lifecycle(
            &create(task(5, b"ipcmk", ContainerRef::NONE), 10),
            &attribution
        ));
        assert!(!filter.lifecycle(
            &create(task(5, b"perl", ContainerRef::NONE), 11),
            &attribution
        ));
        let [object, namespace] = teardown(10, vec![]);
        assert!(filter.lifecycle(&object, &attribution));
        assert!(
            !filter.lifecycle(&namespace, &attribution),
            "not a msg.* event"
        );
    }

    #[test]
    fn events_can_be_left_out() {
        let asked = |globs: &[&str], name| {
            events_match(
                &globs.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
                name,
            )
        };
        assert!(asked(&[], "shm.attach"));
        assert!(!asked(&["-shm.attach", "-shm.detach"], "shm.attach"));
        assert!(asked(&["-shm.attach", "-shm.detach"], "shm.create"));
        assert!(asked(&["shm.*", "-shm.attach"], "shm.detach"));
        assert!(!asked(&["shm.*", "-shm.attach"], "shm.attach"));
        assert!(!asked(&["shm.*", "-shm.attach"], "msg.create"));
        assert!(!asked(&["-*.attach", "shm.*"], "shm.attach"));
    }

    #[test]
    fn globs() {
        assert!(glob_match("msg.*", "msg.create"));
        assert!(glob_match("*.destroy", "ipc_ns.destroy"));
        assert!(glob_match("ipc_ns.create", "ipc_ns.create"));
        assert!(!glob_match("ipc_ns.create", "ipc_ns.create_x"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("s*.*", "shm.get_failed"));
        assert!(!glob_match("msg.*", "shm.create"));
        assert!(!glob_match("*.get", "msg.get_failed"));
        assert!(glob_match("*get*", "msg.get_failed"));
        assert!(!glob_match("a*a", "a"));
    }
}
