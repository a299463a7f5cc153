//! Tests of the containers module: cgroup path forms ([`cgroup`]), and each runtime's files in
//! fixture trees ([`metadata`]).

mod cgroup;
mod metadata;

use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use super::MetadataRoots;

/// Container ids as runtimes make them.
pub const ID: &str = "3f4ad4b4e1b8c56c1f3e0d1c0e5a2a8b9f6d7c8e9f0a1b2c3d4e5f60718293a4";
pub const ID2: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// The ids of the containers the captured fixtures describe.
pub const DOCKER_ID: &str = "bef0c57259f1ae8b3afb1708559a2dc26fbab0f51517aa96b803ea4d08cd3814";
pub const PODMAN_ID: &str = "a11cc69ec8868d48d08d14af3a2a14cfb5fd7ae998deeba0fcb8e98ed397f738";
pub const POD_UID: &str = "0f9d5d2c-9a7e-4b8e-a8b3-1c2d3e4f5a6b";

/// A directory tree standing for a host's `/`, removed when dropped.
pub struct Tree {
    root: PathBuf,
}

impl Tree {
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "nsipc-containers-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        Self { root }
    }

    /// Writes `contents` at `path` (absolute, as on the host) in the tree.
    pub fn write(&self, path: &str, contents: impl AsRef<[u8]>) -> &Self {
        let at = self.path(path);
        fs::create_dir_all(at.parent().unwrap()).unwrap();
        fs::write(at, contents).unwrap();
        self
    }

    pub fn path(&self, path: &str) -> PathBuf {
        self.root.join(Path::new(path.trim_start_matches('/')))
    }

    pub fn roots(&self) -> MetadataRoots {
        MetadataRoots::at(&self.root)
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}
