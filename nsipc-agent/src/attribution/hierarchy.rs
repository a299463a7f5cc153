//! Which cgroup hierarchy tasks are attributed by, and where a cgroup id is in it.
//!
//! The probes record, per event, the id of the task's cgroup in one hierarchy
//! (`kernfs_node.id`, which on 64-bit kernels is the inode number of the cgroup's directory).
//! Container runtimes give each container a cgroup in every hierarchy; on a cgroup v1 or
//! hybrid host (this project's development machine: v1 controllers, plus cgroup2 at
//! /sys/fs/cgroup/unified that Docker does not use) a v1 controller's hierarchy is the one to
//! read, on a cgroup v2 host the unified one.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// v1 controllers container runtimes always place containers in, in order of preference.
const V1_CONTROLLERS: [&str; 8] = [
    "memory", "pids", "cpu", "cpuacct", "blkio", "devices", "freezer", "cpuset",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HierarchyKind {
    /// A cgroup v1 controller's hierarchy: the probes read `css_set.subsys[subsys_id]`.
    V1 { controller: String, subsys_id: u32 },
    /// The unified hierarchy: the probes read `css_set.dfl_cgrp`.
    V2,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupHierarchy {
    pub kind: HierarchyKind,
    /// The kernel's number of the hierarchy (`cgroup_root.hierarchy_id`: /proc/cgroups'
    /// second column for a v1 controller, 0 for the unified hierarchy).
    pub hierarchy_id: i32,
    /// Where it is mounted, and the cgroup the mount shows at its root (`/` unless the
    /// mount is of a sub-tree).
    pub mount: PathBuf,
    pub mount_root: String,
}

impl CgroupHierarchy {
    /// The hierarchy of this host: from /proc/cgroups and this process's mounts.
    pub fn of_this_host() -> Option<Self> {
        let cgroups = fs::read_to_string("/proc/cgroups").unwrap_or_default();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
        Self::choose(&cgroups, &mountinfo)
    }

    /// Chooses from the contents of /proc/cgroups (one row per controller, in the order of
    /// the kernel's `enum cgroup_subsys_id`) and /proc/self/mountinfo: the first mounted v1
    /// controller of [`V1_CONTROLLERS`], else the cgroup2 mount.
    pub fn choose(proc_cgroups: &str, mountinfo: &str) -> Option<Self> {
        let subsys: Vec<(&str, i32, bool)> = proc_cgroups
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let name = fields.next()?;
                let hierarchy = fields.next()?.parse().ok()?;
                let enabled = fields.nth(1) == Some("1");
                Some((name, hierarchy, enabled))
            })
            .collect();
        let mounts: Vec<Mount> = mountinfo.lines().filter_map(Mount::parse).collect();
        for controller in V1_CONTROLLERS {
            let Some(subsys_id) = subsys.iter().position(|&(name, hierarchy, enabled)| {
                name == controller && hierarchy > 0 && enabled
            }) else {
                continue;
            };
            if let Some(mount) = mounts
                .iter()
                .find(|m| m.fstype == "cgroup" && m.options.split(',').any(|o| o == controller))
            {
                return Some(Self {
                    kind: HierarchyKind::V1 {
                        controller: controller.to_owned(),
                        subsys_id: subsys_id as u32,
                    },
                    hierarchy_id: subsys[subsys_id].1,
                    mount: PathBuf::from(mount.point),
                    mount_root: mount.root.to_owned(),
                });
            }
        }
        let unified = mounts.iter().find(|m| m.fstype == "cgroup2")?;
        Some(Self {
            kind: HierarchyKind::V2,
            hierarchy_id: 0,
            mount: PathBuf::from(unified.point),
            mount_root: unified.root.to_owned(),
        })
    }

    /// The path of this hierarchy's cgroup in the contents of a /proc/PID/cgroup file.
    pub fn path_in(&self, proc_pid_cgroup: &str) -> Option<String> {
        proc_pid_cgroup.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (number, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let ours = match &self.kind {
                HierarchyKind::V1 { controller, .. } => {
                    controllers.split(',').any(|c| c == controller)
                }
                HierarchyKind::V2 => number == "0" && controllers.is_empty(),
            };
            ours.then(|| path.to_owned())
        })
    }

    /// The directory of the cgroup at `path` (as /proc/PID/cgroup writes it).
    fn directory(&self, path: &str) -> PathBuf {
        let below_mount = path
            .strip_prefix(self.mount_root.trim_end_matches('/'))
            .unwrap_or(path)
            .trim_start_matches('/');
        self.mount.join(below_mount)
    }

    /// Whether the cgroup at `path` has id `cgroup` (its directory's inode number): a pid
    /// read from an event may have moved or been reused since.
    pub fn has_id(&self, path: &str, cgroup: u64) -> bool {
        self.id_of(path) == Some(cgroup)
    }

    /// The id of the cgroup at `path`, while it exists.
    pub fn id_of(&self, path: &str) -> Option<u64> {
        fs::metadata(self.directory(path)).ok().map(|m| m.ino())
    }

    /// Every cgroup of the hierarchy: (id, path as /proc/PID/cgroup writes it).
    pub fn walk(&self) -> Vec<(u64, String)> {
        let mut found = Vec::new();
        let root = self.mount_root.trim_end_matches('/').to_owned();
        walk_into(&self.mount, &root, &mut found);
        found
    }
}

fn walk_into(dir: &Path, path: &str, found: &mut Vec<(u64, String)>) {
    let Ok(meta) = fs::metadata(dir) else { return };
    found.push((
        meta.ino(),
        if path.is_empty() {
            "/".to_owned()
        } else {
            path.to_owned()
        },
    ));
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        // A cgroup's sub-cgroups are its directories (file_type does not follow links, and
        // cgroupfs has none).
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let name = entry.file_name();
            let child = format!("{path}/{}", name.to_string_lossy());
            walk_into(&entry.path(), &child, found);
        }
    }
}

/// One line of /proc/PID/mountinfo, the fields used here.
struct Mount<'a> {
    root: &'a str,
    point: &'a str,
    fstype: &'a str,
    options: &'a str,
}

impl<'a> Mount<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let (before, after) = line.split_once(" - ")?;
        let mut before = before.split(' ');
        let root = before.nth(3)?;
        let point = before.next()?;
        let mut after = after.split(' ');
        let fstype = after.next()?;
        let options = after.nth(1).unwrap_or("");
        Some(Self {
            root,
            point,
            fstype,
            options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This project's development machine: cgroup v1 controllers plus cgroup2, no systemd.
    const HYBRID_CGROUPS: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
        cpuset\t3\t1\t1\ncpu\t1\t1\t1\ncpuacct\t2\t1\t1\nblkio\t7\t1\t1\nmemory\t4\t13\t1\n\
        devices\t5\t1\t1\nfreezer\t6\t1\t1\nnet_cls\t0\t1\t1\nperf_event\t0\t1\t1\n\
        net_prio\t0\t1\t1\nhugetlb\t0\t1\t1\npids\t8\t1\t1\n";
    const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn a_hybrid_host_is_read_through_its_memory_controller() {
        let hierarchy = CgroupHierarchy::choose(HYBRID_CGROUPS, HYBRID_MOUNTS).unwrap();
        assert_eq!(
            hierarchy.kind,
            HierarchyKind::V1 {
                controller: "memory".into(),
                subsys_id: 4
            }
        );
        assert_eq!(hierarchy.mount, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(hierarchy.hierarchy_id, 4);
        let proc_cgroup = "9:name=systemd:/docker/abc\n8:pids:/docker/abc\n\
                           4:memory:/docker/abc\n1:cpu:/docker/abc\n0::/\n";
        assert_eq!(
            hierarchy.path_in(proc_cgroup).as_deref(),
            Some("/docker/abc")
        );
    }

    #[test]
    fn co_mounted_controllers_are_found() {
        let mounts = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                      39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";
        let hierarchy = CgroupHierarchy::choose(HYBRID_CGROUPS, mounts).unwrap();
        assert_eq!(
            hierarchy.kind,
            HierarchyKind::V1 {
                controller: "pids".into(),
                subsys_id: 11
            }
        );
        let proc_cgroup = "12:pids:/kubepods/pod1/abc\n3:cpu,cpuacct:/kubepods/pod1/abc\n";
        assert_eq!(
            hierarchy.path_in(proc_cgroup).as_deref(),
            Some("/kubepods/pod1/abc")
        );
    }

    #[test]
    fn a_v2_host_is_read_through_the_unified_hierarchy() {
        // Controllers bound to v2 show hierarchy 0 and no v1 mount exists.
        let cgroups = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
                       cpuset\t0\t80\t1\ncpu\t0\t80\t1\nmemory\t0\t80\t1\npids\t0\t80\t1\n";
        let mounts = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let hierarchy = CgroupHierarchy::choose(cgroups, mounts).unwrap();
        assert_eq!(hierarchy.kind, HierarchyKind::V2);
        assert_eq!(hierarchy.hierarchy_id, 0);
        assert_eq!(hierarchy.mount, Path::new("/sys/fs/cgroup"));
        let proc_cgroup = "0::/system.slice/docker-abc.scope\n";
        assert_eq!(
            hierarchy.path_in(proc_cgroup).as_deref(),
            Some("/system.slice/docker-abc.scope")
        );
        assert_eq!(
            hierarchy.directory("/system.slice/docker-abc.scope"),
            Path::new("/sys/fs/cgroup/system.slice/docker-abc.scope")
        );
    }

    #[test]
    fn no_cgroup_mount_means_no_attribution() {
        assert_eq!(CgroupHierarchy::choose(HYBRID_CGROUPS, ""), None);
    }

    #[test]
    fn a_mount_of_a_sub_tree_maps_paths_below_its_root() {
        // A container that sees only its own cgroup (e.g. the agent in a pod).
        let mounts = "40 30 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let hierarchy = CgroupHierarchy::choose("", mounts).unwrap();
        assert_eq!(
            hierarchy.directory("/kubepods/pod1/abc"),
            Path::new("/sys/fs/cgroup/abc")
        );
    }

    #[test]
    fn the_walk_finds_this_hosts_root_cgroup_by_inode() {
        let Some(hierarchy) = CgroupHierarchy::of_this_host() else {
            eprintln!("no cgroup hierarchy mounted here; nothing to walk");
            return;
        };
        let found = hierarchy.walk();
        let root = fs::metadata(&hierarchy.mount).unwrap().ino();
        assert!(
            found.iter().any(|(id, path)| *id == root && path == "/"),
            "{found:?}"
        );
        for (id, path) in &found {
            assert!(hierarchy.has_id(path, *id), "{path} is not cgroup {id}");
        }
    }
}
