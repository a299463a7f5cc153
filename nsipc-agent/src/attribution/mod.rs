//! Which container a task belongs to, from the cgroup id its records carry.
//!
//! The probes record the id of each task's cgroup in one hierarchy ([`CgroupHierarchy`]);
//! this maps ids to cgroup paths and paths to containers ([`crate::containers`]), once per
//! cgroup: a container's every event after its first costs one hash lookup. Cgroup ids are
//! never reused while the machine is up (kernfs ids carry a generation), so what is learnt
//! about one stays true, and events read after `docker rm` still name their container.

pub mod cmdline;
pub mod hierarchy;

use nsipc_common::{KernelOffsets, NO_OFFSET};
use std::{
    collections::HashMap,
    fs,
    time::{Duration, Instant},
};

use self::cmdline::Cmdlines;
pub use self::hierarchy::{CgroupHierarchy, HierarchyKind};
use crate::{
    containers::{Container, MetadataRoots, container_of_cgroup},
    decode::{ContainerRef, Task},
    probes::CgroupPaths,
};

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A walk of the whole hierarchy, for a cgroup whose task is gone before its events were read,
/// at most this often: a burst of unknown ids costs one walk, not one each.
const WALK_INTERVAL: Duration = Duration::from_millis(200);
/// Cgroups remembered, at most: past it, those found outside any container are forgotten
/// (they cost a lookup again if they show up).
const MAX_CGROUPS: usize = 1 << 16;

/// The hierarchy's name as `check` and `agent.ready` report it (`memory`, `unified`), when the
/// probes read tasks' cgroups in it (`offsets` has what they need).
pub fn attributed_hierarchy(
    hierarchy: Option<&CgroupHierarchy>,
    offsets: &KernelOffsets,
) -> Option<String> {
    if offsets.css_set_css == NO_OFFSET {
        return None;
    }
    hierarchy.map(|hierarchy| match &hierarchy.kind {
        HierarchyKind::V1 { controller, .. } => controller.clone(),
        HierarchyKind::V2 => "unified".to_owned(),
    })
}

/// A container the agent has seen, and its JSON object as the stream writes it (made once).
#[derive(Debug)]
pub struct KnownContainer {
    pub container: Container,
    pub json: String,
}

pub struct Attribution {
    hierarchy: Option<CgroupHierarchy>,
    roots: MetadataRoots,
    by_cgroup: Map<u64, ContainerRef>,
    /// Container id → its ref: one container may have several cgroups (sub-cgroups of its
    /// own, one per hierarchy after a restart of the agent with another choice).
    by_id: HashMap<String, ContainerRef>,
    /// `containers[r - 1]` is the container of ref `r`.
    containers: Vec<KnownContainer>,
    last_walk: Option<Instant>,
    /// The probes' paths of the cgroups made since they were loaded.
    made: Option<CgroupPaths>,
    /// Processes' command lines (off unless [`Self::with_cmdlines`]).
    cmdlines: Cmdlines,
}

impl Attribution {
    /// Attribution on `hierarchy` (None: nothing is attributed, every task is outside).
    pub fn new(hierarchy: Option<CgroupHierarchy>, roots: MetadataRoots) -> Self {
        Self {
            hierarchy,
            roots,
            by_cgroup: Map::default(),
            by_id: HashMap::new(),
            containers: Vec::new(),
            last_walk: None,
            made: None,
            cmdlines: Cmdlines::default(),
        }
    }

    /// Also reads processes' command lines, for the `cmdline` field.
    pub fn with_cmdlines(mut self, enabled: bool) -> Self {
        self.cmdlines = Cmdlines::new(enabled);
        self
    }

    /// Learns the command line of the process of `task`, a record made at `ts_ns` says.
    pub fn note_process(&mut self, task: &Task, ts_ns: u64) {
        self.cmdlines.note(task, ts_ns);
    }

    /// The command line of `task`'s process, when known.
    pub fn cmdline(&self, task: &Task) -> Option<&str> {
        self.cmdlines.get(task)
    }

    /// Also looks new cgroups up in the paths the probes record as cgroups are made.
    pub fn with_made_paths(mut self, made: Option<CgroupPaths>) -> Self {
        self.made = made;
        self
    }

    /// Attribution of nothing: every task is outside containers.
    pub fn none() -> Self {
        Self::new(None, MetadataRoots::default())
    }

    /// The container of cgroup `cgroup`, a record of thread `tid` said. Known cgroups cost a
    /// lookup; a new one is looked up in /proc/`tid`/cgroup (checked against the id: the
    /// thread may have moved) or, with the thread gone, in a walk of the hierarchy.
    pub fn resolve(&mut self, cgroup: u64, tid: u32) -> ContainerRef {
        if cgroup == 0 {
            return ContainerRef::NONE;
        }
        if let Some(&known) = self.by_cgroup.get(&cgroup) {
            return known;
        }
        let Some(hierarchy) = &self.hierarchy else {
            return ContainerRef::NONE;
        };
        let recorded = self
            .made
            .as_ref()
            .and_then(|made| made.get(&cgroup, 0).ok())
            .map(|path| {
                let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
                String::from_utf8_lossy(&path[..end]).into_owned()
            });
        if let Some(path) = recorded {
            return self.learn(cgroup, &path);
        }
        let from_proc = fs::read_to_string(format!("/proc/{tid}/cgroup"))
            .ok()
            .and_then(|text| hierarchy.path_in(&text))
            .filter(|path| hierarchy.has_id(path, cgroup));
        if let Some(path) = from_proc {
            return self.learn(cgroup, &path);
        }
        if self
            .last_walk
            .is_none_or(|at| at.elapsed() >= WALK_INTERVAL)
        {
            self.last_walk = Some(Instant::now());
            for (id, path) in hierarchy.walk() {
                if !self.by_cgroup.contains_key(&id) {
                    self.learn(id, &path);
                }
            }
            if let Some(&known) = self.by_cgroup.get(&cgroup) {
                return known;
            }
        }
        // Gone before it could be read: outside any container, as far as the agent can know.
        self.remember(cgroup, ContainerRef::NONE);
        ContainerRef::NONE
    }

    /// The container thread `tid` is in now (not when a record of it was made): a runtime
    /// moves a task it starts in a running container (`docker exec`) into the container's
    /// cgroup only after the task joined the container's namespaces.
    pub fn current(&mut self, tid: u32) -> ContainerRef {
        let Some(hierarchy) = &self.hierarchy else {
            return ContainerRef::NONE;
        };
        let Some(cgroup) = fs::read_to_string(format!("/proc/{tid}/cgroup"))
            .ok()
            .and_then(|text| hierarchy.path_in(&text))
            .and_then(|path| hierarchy.id_of(&path))
        else {
            return ContainerRef::NONE;
        };
        self.resolve(cgroup, tid)
    }

    /// Attributes cgroup `cgroup`, at `path`.
    fn learn(&mut self, cgroup: u64, path: &str) -> ContainerRef {
        let found =
            container_of_cgroup(path, &self.roots).map_or(ContainerRef::NONE, |c| self.intern(c));
        self.remember(cgroup, found);
        found
    }

    fn remember(&mut self, cgroup: u64, container: ContainerRef) {
        if self.by_cgroup.len() >= MAX_CGROUPS {
            self.by_cgroup.retain(|_, c| c.is_some());
        }
        self.by_cgroup.insert(cgroup, container);
    }

    #[cfg(any(test, feature = "bench"))]
    /// Attributes cgroup `cgroup` to `container` without looking either up: for a caller that
    /// knows better than the hierarchy (`nsipc-bench json`, whose records come from no real cgroup).
    pub fn assign(&mut self, cgroup: u64, container: Container) -> ContainerRef {
        let known = self.intern(container);
        self.remember(cgroup, known);
        known
    }

    /// The ref of `container`, seen before or new.
    pub fn intern(&mut self, container: Container) -> ContainerRef {
        if let Some(&known) = self.by_id.get(&container.id) {
            return known;
        }
        let json = serde_json::to_string(&container).expect("a container serializes");
        self.containers.push(KnownContainer { container, json });
        let known = ContainerRef(self.containers.len() as u32);
        self.by_id.insert(
            self.containers[known.0 as usize - 1].container.id.clone(),
            known,
        );
        known
    }

    /// The container of a ref, None for [`ContainerRef::NONE`].
    pub fn get(&self, container: ContainerRef) -> Option<&KnownContainer> {
        container
            .0
            .checked_sub(1)
            .and_then(|i| self.containers.get(i as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::Runtime;

    fn container(id: &str) -> Container {
        Container {
            id: id.to_owned(),
            runtime: Runtime::Docker,
            name: Some("producer".into()),
            pod: None,
        }
    }

    #[test]
    fn containers_are_interned_once_with_their_json() {
        let mut attribution = Attribution::new(None, MetadataRoots::default());
        let a = attribution.intern(container("a"));
        let b = attribution.intern(container("b"));
        assert_ne!(a, b);
        assert!(a.is_some() && b.is_some());
        assert_eq!(attribution.intern(container("a")), a);
        let known = attribution.get(a).unwrap();
        assert_eq!(known.container.id, "a");
        let json: serde_json::Value = serde_json::from_str(&known.json).unwrap();
        assert_eq!(json["id"], "a");
        assert_eq!(json["name"], "producer");
        assert!(attribution.get(ContainerRef::NONE).is_none());
    }

    #[test]
    fn an_assigned_cgroup_resolves_to_its_container_without_a_hierarchy() {
        let mut attribution = Attribution::none();
        let assigned = attribution.assign(77, container("a"));
        assert!(assigned.is_some());
        assert_eq!(attribution.resolve(77, 1), assigned);
        assert_eq!(attribution.intern(container("a")), assigned);
        assert_eq!(attribution.resolve(78, 1), ContainerRef::NONE);
    }

    #[test]
    fn without_a_hierarchy_nothing_is_a_container() {
        let mut attribution = Attribution::new(None, MetadataRoots::default());
        assert_eq!(attribution.resolve(12345, 1), ContainerRef::NONE);
        assert_eq!(attribution.resolve(0, 1), ContainerRef::NONE);
    }

    #[test]
    fn this_process_is_attributed_to_no_container() {
        let Some(hierarchy) = CgroupHierarchy::of_this_host() else {
            eprintln!("no cgroup hierarchy mounted here; nothing to attribute");
            return;
        };
        let path = hierarchy
            .path_in(&fs::read_to_string("/proc/self/cgroup").unwrap())
            .expect("this process has a cgroup in the chosen hierarchy");
        let id = hierarchy
            .walk()
            .into_iter()
            .find(|(_, p)| *p == path)
            .map(|(id, _)| id)
            .expect("the walk finds this process's cgroup");
        let mut attribution = Attribution::new(Some(hierarchy), MetadataRoots::default());
        assert_eq!(
            attribution.resolve(id, std::process::id()),
            ContainerRef::NONE
        );
        // An id no cgroup has: walked for, then remembered as outside.
        assert_eq!(attribution.resolve(u64::MAX, 1), ContainerRef::NONE);
    }
}
