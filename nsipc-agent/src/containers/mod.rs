//! Containers from cgroup paths, named from what their runtime keeps on disk.
//!
//! [`container_of_cgroup`] takes a cgroup path as /proc/PID/cgroup writes it (in any
//! hierarchy, v1 or v2: runtimes name a container's cgroup the same way in all of them), finds
//! the container the path names ([`cgroup`]), then asks each runtime's files about that id
//! ([`metadata`]). The runtime is the one whose files know the id; when none does (the files
//! are gone, or live in another mount namespace, like a container nested in another), it is
//! the one the cgroup's form points to, and the container has no name.

mod cgroup;
mod metadata;
#[cfg(test)]
mod tests;

use serde::Serialize;
use std::path::PathBuf;

pub use self::cgroup::container_id;
use self::{cgroup::Form, metadata::Found};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    Docker,
    Podman,
    Containerd,
    CriO,
    Lxc,
    SystemdNspawn,
}

/// The Kubernetes pod a container belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    /// Empty when neither the runtime's files nor the cgroup path give it.
    pub uid: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Container {
    /// 64 hex digits; for LXC and systemd-nspawn, the container's name.
    pub id: String,
    pub runtime: Runtime,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
}

/// Where the runtimes' files are looked for: `root` stands for the host's `/` (`/` itself
/// unless testing, or reading a host's files from inside a container that mounts them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataRoots {
    pub root: PathBuf,
}

impl MetadataRoots {
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

impl Default for MetadataRoots {
    fn default() -> Self {
        Self::at("/")
    }
}

/// The container of the cgroup at `path` (`/docker/<id>`, `/system.slice/docker-<id>.scope`,
/// `/kubepods/burstable/pod<uid>/<id>`, `/libpod_parent/libpod-<id>`, `/lxc.payload.NAME`,
/// `/machine.slice/machine-NAME.scope`, …), None outside containers.
pub fn container_of_cgroup(path: &str, roots: &MetadataRoots) -> Option<Container> {
    let found = cgroup::parse(path)?;
    let (runtime, name, pod) = match found.form {
        Form::Lxc => (Runtime::Lxc, Some(found.id.clone()), None),
        Form::Machine => match metadata::machine_class(roots, &found.id).as_deref() {
            // libvirt's virtual machines are machines too, in the same slice.
            Some("vm") => return None,
            _ => (Runtime::SystemdNspawn, Some(found.id.clone()), None),
        },
        form => {
            let Found { runtime, name, pod } = from_metadata(&found.id, roots).unwrap_or(Found {
                runtime: fallback_runtime(form),
                name: None,
                pod: None,
            });
            (runtime, name, pod)
        }
    };
    let pod = pod.map(|mut pod| {
        if pod.uid.is_empty() {
            pod.uid = found.pod_uid.clone().unwrap_or_default();
        }
        pod
    });
    Some(Container {
        id: found.id,
        runtime,
        name,
        pod,
    })
}

/// The first runtime whose files know container `id`.
fn from_metadata(id: &str, roots: &MetadataRoots) -> Option<Found> {
    metadata::docker(roots, id)
        .or_else(|| metadata::containerd(roots, id))
        .or_else(|| metadata::containers_storage(roots, id))
}

/// The runtime a cgroup's form points to, when no runtime's files know its container.
fn fallback_runtime(form: Form) -> Runtime {
    match form {
        Form::Docker | Form::BareId => Runtime::Docker,
        Form::Podman => Runtime::Podman,
        // A bare id under kubepods: containerd is what kubeadm and most distributions run.
        Form::Containerd | Form::Kubepods => Runtime::Containerd,
        Form::CriO => Runtime::CriO,
        Form::Lxc => Runtime::Lxc,
        Form::Machine => Runtime::SystemdNspawn,
    }
}
