//! What container runtimes keep on disk about a container: its name, and for Kubernetes its
//! pod. Only files are read (no runtime socket is asked), each at most [`MAX_FILE_BYTES`], and
//! of each only the fields used here.
//!
//! Where each runtime keeps what (paths under [`MetadataRoots::root`]):
//! - Docker: `<data-root>/containers/<id>/config.v2.json` (`Name`: `/producer`; `Config.Labels`
//!   holds `io.kubernetes.*` for containers kubelet made through dockershim or cri-dockerd).
//!   `<data-root>` is `/var/lib/docker` unless `/etc/docker/daemon.json` says `data-root`.
//! - containerd: the OCI spec of each running task,
//!   `/run/containerd/io.containerd.runtime.v2.task/<namespace>/<id>/config.json` (v1 shims:
//!   `io.containerd.runtime.v1.linux`), and for the containerd a Docker daemon starts itself,
//!   `/run/docker/containerd/daemon/io.containerd.runtime.v2.task/moby/<id>/config.json`.
//!   Kubernetes' CRI plugin annotates it (`io.kubernetes.cri.container-name`,
//!   `io.kubernetes.cri.sandbox-name`, `…sandbox-namespace`, `…sandbox-uid`), nerdctl too
//!   (`nerdctl/name`). Namespace `moby` is Docker's.
//! - Podman and CRI-O (both on containers/storage): the OCI spec in
//!   `/var/lib/containers/storage/<driver>-containers/<id>/userdata/config.json` (CRI-O also
//!   writes it to `/run/containers/storage/…`); `io.container.manager` is `libpod` or `cri-o`,
//!   and CRI-O's has `io.kubernetes.container.name`, `io.kubernetes.pod.name`, `…namespace`,
//!   `…uid`. Podman's holds no name: that is in containers/storage's
//!   `<driver>-containers/containers.json` (`names`), as podman 4.3 writes it.
//! - systemd-nspawn: `/run/systemd/machines/<name>` (systemd-machined's state, `CLASS=`
//!   `container` or `vm`).

use serde::Deserialize;
use std::{
    collections::HashMap,
    fs::{self, File},
    io::Read,
    path::{Path, PathBuf},
};

use super::{MetadataRoots, Pod, Runtime};

/// Larger metadata files are not read: a Docker `config.v2.json` is a few KiB, a
/// `containers.json` about 600 bytes per container.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// What one runtime's files say about a container.
#[derive(Debug, PartialEq, Eq)]
pub struct Found {
    pub runtime: Runtime,
    pub name: Option<String>,
    pub pod: Option<Pod>,
}

type Annotations = HashMap<String, String>;

/// The contents of `path` if it is a regular file of at most [`MAX_FILE_BYTES`].
pub fn read_bounded(path: &Path) -> Option<Vec<u8>> {
    let file = File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 <= MAX_FILE_BYTES).then_some(bytes)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&read_bounded(path)?).ok()
}

/// `relative` (absolute as on the host) under the roots' root.
fn under(roots: &MetadataRoots, relative: impl AsRef<Path>) -> PathBuf {
    let relative = relative.as_ref();
    roots
        .root
        .join(relative.strip_prefix("/").unwrap_or(relative))
}

/// The directories one level below `dir`, by name.
fn subdirectories(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect();
    found.sort();
    found
}

fn pod_of(name: Option<&String>, namespace: Option<&String>, uid: Option<&String>) -> Option<Pod> {
    Some(Pod {
        name: name?.clone(),
        namespace: namespace?.clone(),
        uid: uid.cloned().unwrap_or_default(),
    })
}

// --- Docker ---

#[derive(Deserialize)]
struct DockerDaemonJson {
    #[serde(rename = "data-root")]
    data_root: Option<String>,
}

#[derive(Deserialize)]
struct DockerContainer {
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "Config")]
    config: Option<DockerConfig>,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(rename = "Labels")]
    labels: Option<Annotations>,
}

pub fn docker(roots: &MetadataRoots, id: &str) -> Option<Found> {
    let data_root = read_json::<DockerDaemonJson>(&under(roots, "/etc/docker/daemon.json"))
        .and_then(|daemon| daemon.data_root)
        .unwrap_or_else(|| "/var/lib/docker".to_owned());
    let config: DockerContainer =
        read_json(&under(roots, data_root).join(format!("containers/{id}/config.v2.json")))?;
    let labels = config.config.and_then(|c| c.labels).unwrap_or_default();
    let name = labels
        .get("io.kubernetes.container.name")
        .cloned()
        .or_else(|| config.name.map(|n| n.trim_start_matches('/').to_owned()))
        .filter(|n| !n.is_empty());
    Some(Found {
        runtime: Runtime::Docker,
        name,
        pod: pod_of(
            labels.get("io.kubernetes.pod.name"),
            labels.get("io.kubernetes.pod.namespace"),
            labels.get("io.kubernetes.pod.uid"),
        ),
    })
}

// --- OCI specs (containerd, CRI-O, podman) ---

#[derive(Deserialize)]
struct OciSpec {
    annotations: Option<Annotations>,
}

fn annotations(path: &Path) -> Option<Annotations> {
    Some(read_json::<OciSpec>(path)?.annotations.unwrap_or_default())
}

/// Where containerd keeps its tasks' bundles: the system containerd's (v2 and v1 shims) and
/// the one a Docker daemon starts itself.
const CONTAINERD_TASK_DIRS: [&str; 3] = [
    "/run/containerd/io.containerd.runtime.v2.task",
    "/run/containerd/io.containerd.runtime.v1.linux",
    "/run/docker/containerd/daemon/io.containerd.runtime.v2.task",
];

pub fn containerd(roots: &MetadataRoots, id: &str) -> Option<Found> {
    CONTAINERD_TASK_DIRS.iter().find_map(|dir| {
        subdirectories(&under(roots, dir))
            .into_iter()
            .find_map(|(namespace, dir)| {
                let annotations = annotations(&dir.join(id).join("config.json"))?;
                Some(containerd_found(&namespace, &annotations))
            })
    })
}

fn containerd_found(namespace: &str, a: &Annotations) -> Found {
    if namespace == "moby" {
        // Docker's: its name is in Docker's own files, not found when this is asked.
        return Found {
            runtime: Runtime::Docker,
            name: None,
            pod: None,
        };
    }
    Found {
        runtime: Runtime::Containerd,
        name: a
            .get("io.kubernetes.cri.container-name")
            .or_else(|| a.get("nerdctl/name"))
            .cloned(),
        pod: pod_of(
            a.get("io.kubernetes.cri.sandbox-name"),
            a.get("io.kubernetes.cri.sandbox-namespace"),
            a.get("io.kubernetes.cri.sandbox-uid"),
        ),
    }
}

/// containers/storage's graph root and run root (podman's and CRI-O's defaults as root).
const STORAGE_DIRS: [&str; 2] = ["/var/lib/containers/storage", "/run/containers/storage"];

/// The `<driver>-containers` directories of containers/storage (`overlay-containers`, …).
fn storage_container_dirs(roots: &MetadataRoots) -> Vec<PathBuf> {
    STORAGE_DIRS
        .iter()
        .flat_map(|dir| subdirectories(&under(roots, dir)))
        .filter(|(name, _)| name.ends_with("-containers"))
        .map(|(_, dir)| dir)
        .collect()
}

/// CRI-O's or podman's container, from its OCI spec (and podman's name from containers.json).
pub fn containers_storage(roots: &MetadataRoots, id: &str) -> Option<Found> {
    let dirs = storage_container_dirs(roots);
    let spec = dirs
        .iter()
        .find_map(|dir| annotations(&dir.join(id).join("userdata/config.json")));
    let manager = spec
        .as_ref()
        .and_then(|a| a.get("io.container.manager"))
        .map(String::as_str);
    let is_libpod = manager == Some("libpod");
    let is_crio = manager == Some("cri-o")
        || spec
            .as_ref()
            .is_some_and(|a| a.contains_key("io.kubernetes.pod.name"));
    if let (true, Some(a)) = (is_crio, &spec) {
        return Some(Found {
            runtime: Runtime::CriO,
            name: a.get("io.kubernetes.container.name").cloned(),
            pod: pod_of(
                a.get("io.kubernetes.pod.name"),
                a.get("io.kubernetes.pod.namespace"),
                a.get("io.kubernetes.pod.uid"),
            ),
        });
    }
    let listed = dirs
        .iter()
        .find_map(|dir| storage_listing(&dir.join("containers.json"), id));
    match listed {
        Some(entry) if entry.pod_name.is_some() => Some(Found {
            runtime: Runtime::CriO,
            name: None,
            pod: None,
        }),
        Some(entry) => Some(Found {
            runtime: Runtime::Podman,
            name: entry.name,
            pod: None,
        }),
        None => spec.map(|_| Found {
            runtime: if is_libpod {
                Runtime::Podman
            } else {
                Runtime::CriO
            },
            name: None,
            pod: None,
        }),
    }
}

#[derive(Deserialize)]
struct StorageContainer {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    /// A JSON document in a string: `{"image-name":…,"name":…}` for podman, CRI-O adds
    /// `pod-name` and `pod-id`.
    #[serde(default)]
    metadata: String,
}

#[derive(Deserialize)]
struct StorageMetadata {
    #[serde(rename = "pod-name")]
    pod_name: Option<String>,
}

struct Listed {
    name: Option<String>,
    pod_name: Option<String>,
}

/// Container `id` in a containers/storage `containers.json`.
fn storage_listing(path: &Path, id: &str) -> Option<Listed> {
    let containers: Vec<StorageContainer> = read_json(path)?;
    let entry = containers.into_iter().find(|c| c.id == id)?;
    let pod_name = serde_json::from_str::<StorageMetadata>(&entry.metadata)
        .ok()
        .and_then(|m| m.pod_name)
        .filter(|p| !p.is_empty());
    Some(Listed {
        name: entry.names.into_iter().next(),
        pod_name,
    })
}

// --- systemd-machined ---

/// The class systemd-machined registered machine `name` with (`container`, `vm`), if it did.
pub fn machine_class(roots: &MetadataRoots, name: &str) -> Option<String> {
    if name.contains('/') {
        return None;
    }
    let state = read_bounded(&under(roots, "/run/systemd/machines").join(name))?;
    String::from_utf8_lossy(&state)
        .lines()
        .find_map(|line| line.strip_prefix("CLASS="))
        .map(str::to_owned)
}
