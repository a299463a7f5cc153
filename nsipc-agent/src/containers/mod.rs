//! Containers from cgroup paths, named from what their runtime keeps on disk.
//! (Placeholder API; the full resolver lands with the containers branch.)

use std::path::PathBuf;

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    Docker,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Container {
    pub id: String,
    pub runtime: Runtime,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
}

#[derive(Clone, Debug)]
pub struct MetadataRoots {
    pub root: PathBuf,
}

impl Default for MetadataRoots {
    fn default() -> Self {
        Self { root: "/".into() }
    }
}

pub fn container_of_cgroup(path: &str, roots: &MetadataRoots) -> Option<Container> {
    let id = crate::inventory::container::container_id(&format!("0::{path}\n"))?;
    let name = std::fs::read(
        roots
            .root
            .join(format!("var/lib/docker/containers/{id}/config.v2.json")),
    )
    .ok()
    .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
    .and_then(|config| Some(config["Name"].as_str()?.trim_start_matches('/').to_owned()));
    Some(Container {
        id,
        runtime: Runtime::Docker,
        name,
        pod: None,
    })
}
