//! Names, pods and runtimes from each runtime's files, in fixture trees.

use super::{DOCKER_ID, ID, ID2, POD_UID, PODMAN_ID, Tree};
use crate::containers::{
    Container, MetadataRoots, Pod, Runtime, container_of_cgroup,
    metadata::{MAX_FILE_BYTES, read_bounded},
};

const DOCKER_CONFIG: &str = include_str!("fixtures/docker-config.v2.json");
const DOCKER_K8S_CONFIG: &str = include_str!("fixtures/docker-k8s-config.v2.json");
const DOCKER_MOBY_TASK: &str = include_str!("fixtures/docker-moby-task-config.json");
const PODMAN_CONTAINERS: &str = include_str!("fixtures/podman-containers.json");
const PODMAN_CONFIG: &str = include_str!("fixtures/podman-config.json");
const CONTAINERD_CRI: &str = include_str!("fixtures/containerd-cri-config.json");
const CONTAINERD_SANDBOX: &str = include_str!("fixtures/containerd-cri-sandbox-config.json");
const NERDCTL: &str = include_str!("fixtures/nerdctl-config.json");
const CRIO_CONFIG: &str = include_str!("fixtures/crio-config.json");
const CRIO_CONTAINERS: &str = include_str!("fixtures/crio-containers.json");

fn container(id: &str, runtime: Runtime, name: Option<&str>) -> Option<Container> {
    Some(Container {
        id: id.to_owned(),
        runtime,
        name: name.map(str::to_owned),
        pod: None,
    })
}

fn demo_pod() -> Option<Pod> {
    Some(Pod {
        name: "ipc-demo-7d9f8c6b5-x2x9q".into(),
        namespace: "shop".into(),
        uid: POD_UID.into(),
    })
}

fn in_demo_pod(id: &str, runtime: Runtime, name: Option<&str>) -> Option<Container> {
    Some(Container {
        pod: demo_pod(),
        ..container(id, runtime, name).unwrap()
    })
}

#[test]
fn docker_names_from_config_v2() {
    let tree = Tree::new();
    tree.write(
        &format!("/var/lib/docker/containers/{DOCKER_ID}/config.v2.json"),
        DOCKER_CONFIG,
    );
    let roots = tree.roots();
    let expected = container(DOCKER_ID, Runtime::Docker, Some("nsipc-p"));
    assert_eq!(
        container_of_cgroup(&format!("/docker/{DOCKER_ID}"), &roots),
        expected
    );
    assert_eq!(
        container_of_cgroup(&format!("/system.slice/docker-{DOCKER_ID}.scope"), &roots),
        expected
    );
    // Docker with the containerd it started itself: both places know it, Docker's file names it.
    tree.write(
        &format!("/run/docker/containerd/daemon/io.containerd.runtime.v2.task/moby/{DOCKER_ID}/config.json"),
        DOCKER_MOBY_TASK,
    );
    assert_eq!(
        container_of_cgroup(&format!("/docker/{DOCKER_ID}"), &roots),
        expected
    );
}

#[test]
fn docker_data_root_from_daemon_json() {
    let tree = Tree::new();
    tree.write(
        "/etc/docker/daemon.json",
        r#"{"data-root": "/data/docker", "iptables": false}"#,
    );
    tree.write(
        &format!("/data/docker/containers/{DOCKER_ID}/config.v2.json"),
        DOCKER_CONFIG,
    );
    assert_eq!(
        container_of_cgroup(&format!("/docker/{DOCKER_ID}"), &tree.roots()),
        container(DOCKER_ID, Runtime::Docker, Some("nsipc-p"))
    );
}

#[test]
fn docker_containers_of_kubelet_have_their_pod() {
    let tree = Tree::new();
    tree.write(
        &format!("/var/lib/docker/containers/{ID}/config.v2.json"),
        DOCKER_K8S_CONFIG,
    );
    let path = format!("/kubepods/burstable/pod{POD_UID}/{ID}");
    assert_eq!(
        container_of_cgroup(&path, &tree.roots()),
        in_demo_pod(ID, Runtime::Docker, Some("producer"))
    );
}

#[test]
fn docker_moby_task_alone_is_docker_without_a_name() {
    let tree = Tree::new();
    tree.write(
        &format!("/run/containerd/io.containerd.runtime.v2.task/moby/{DOCKER_ID}/config.json"),
        DOCKER_MOBY_TASK,
    );
    // The form says podman, the files say Docker: the files win.
    assert_eq!(
        container_of_cgroup(&format!("/libpod_parent/libpod-{DOCKER_ID}"), &tree.roots()),
        container(DOCKER_ID, Runtime::Docker, None)
    );
}

#[test]
fn podman_names_from_containers_json() {
    let tree = Tree::new();
    let storage = "/var/lib/containers/storage/overlay-containers";
    tree.write(&format!("{storage}/containers.json"), PODMAN_CONTAINERS);
    tree.write(
        &format!("{storage}/{PODMAN_ID}/userdata/config.json"),
        PODMAN_CONFIG,
    );
    let roots = tree.roots();
    let expected = container(PODMAN_ID, Runtime::Podman, Some("nsipc-pp"));
    assert_eq!(
        container_of_cgroup(&format!("/libpod_parent/libpod-{PODMAN_ID}"), &roots),
        expected
    );
    assert_eq!(
        container_of_cgroup(&format!("/machine.slice/libpod-{PODMAN_ID}.scope"), &roots),
        expected
    );
    // Runtime by where the files are: a podman container in a /docker/<id>-shaped cgroup.
    assert_eq!(
        container_of_cgroup(&format!("/docker/{PODMAN_ID}"), &roots),
        expected
    );
    // Its spec alone (containers.json unreadable): podman, no name.
    tree.write(&format!("{storage}/containers.json"), "not json");
    assert_eq!(
        container_of_cgroup(&format!("/docker/{PODMAN_ID}"), &roots),
        container(PODMAN_ID, Runtime::Podman, None)
    );
}

#[test]
fn podman_on_another_storage_driver() {
    let tree = Tree::new();
    tree.write(
        "/var/lib/containers/storage/vfs-containers/containers.json",
        PODMAN_CONTAINERS,
    );
    assert_eq!(
        container_of_cgroup(&format!("/libpod_parent/libpod-{PODMAN_ID}"), &tree.roots()),
        container(PODMAN_ID, Runtime::Podman, Some("nsipc-pp"))
    );
}

#[test]
fn containerd_kubernetes_containers_and_sandboxes() {
    let tree = Tree::new();
    let tasks = "/run/containerd/io.containerd.runtime.v2.task";
    tree.write(&format!("{tasks}/k8s.io/{ID}/config.json"), CONTAINERD_CRI);
    tree.write(
        &format!("{tasks}/k8s.io/{ID2}/config.json"),
        CONTAINERD_SANDBOX,
    );
    let roots = tree.roots();
    let systemd = format!(
        "/kubepods.slice/kubepods-burstable.slice/\
         kubepods-burstable-pod0f9d5d2c_9a7e_4b8e_a8b3_1c2d3e4f5a6b.slice/cri-containerd-{ID}.scope"
    );
    let expected = in_demo_pod(ID, Runtime::Containerd, Some("producer"));
    assert_eq!(container_of_cgroup(&systemd, &roots), expected);
    let cgroupfs = format!("/kubepods/burstable/pod{POD_UID}/{ID}");
    assert_eq!(container_of_cgroup(&cgroupfs, &roots), expected);
    // The pause container: the pod's, with no container name.
    let sandbox = format!("/kubepods/burstable/pod{POD_UID}/{ID2}");
    assert_eq!(
        container_of_cgroup(&sandbox, &roots),
        in_demo_pod(ID2, Runtime::Containerd, None)
    );
}

#[test]
fn containerd_pod_uid_from_the_cgroup_when_not_annotated() {
    let tree = Tree::new();
    let spec = CONTAINERD_CRI.replace("io.kubernetes.cri.sandbox-uid", "x-no-uid");
    tree.write(
        &format!("/run/containerd/io.containerd.runtime.v1.linux/k8s.io/{ID}/config.json"),
        spec,
    );
    let cgroupfs = format!("/kubepods/burstable/pod{POD_UID}/{ID}");
    assert_eq!(
        container_of_cgroup(&cgroupfs, &tree.roots()),
        in_demo_pod(ID, Runtime::Containerd, Some("producer"))
    );
}

#[test]
fn nerdctl_names() {
    let tree = Tree::new();
    tree.write(
        &format!("/run/containerd/io.containerd.runtime.v2.task/default/{ID2}/config.json"),
        NERDCTL,
    );
    assert_eq!(
        container_of_cgroup(&format!("/default/{ID2}"), &tree.roots()),
        container(ID2, Runtime::Containerd, Some("consumer"))
    );
}

#[test]
fn crio_from_its_spec() {
    for dir in ["/run/containers/storage", "/var/lib/containers/storage"] {
        let tree = Tree::new();
        tree.write(
            &format!("{dir}/overlay-containers/{ID}/userdata/config.json"),
            CRIO_CONFIG,
        );
        tree.write(
            "/var/lib/containers/storage/overlay-containers/containers.json",
            CRIO_CONTAINERS,
        );
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/\
             kubepods-burstable-pod0f9d5d2c_9a7e_4b8e_a8b3_1c2d3e4f5a6b.slice/crio-{ID}.scope"
        );
        assert_eq!(
            container_of_cgroup(&systemd, &tree.roots()),
            in_demo_pod(ID, Runtime::CriO, Some("producer")),
            "{dir}"
        );
    }
}

#[test]
fn crio_listed_without_its_spec() {
    let tree = Tree::new();
    tree.write(
        "/var/lib/containers/storage/overlay-containers/containers.json",
        CRIO_CONTAINERS,
    );
    // containers.json's pod-name says CRI-O, whatever the cgroup's form.
    assert_eq!(
        container_of_cgroup(
            &format!("/kubepods/burstable/pod{POD_UID}/{ID}"),
            &tree.roots()
        ),
        container(ID, Runtime::CriO, None)
    );
}

#[test]
fn without_files_the_form_decides() {
    let tree = Tree::new();
    let roots = tree.roots();
    let cases = [
        (format!("/docker/{ID}"), Runtime::Docker),
        (format!("/system.slice/docker-{ID}.scope"), Runtime::Docker),
        (format!("/ci/{ID}"), Runtime::Docker),
        (format!("/libpod_parent/libpod-{ID}"), Runtime::Podman),
        (format!("/kubepods/pod{POD_UID}/{ID}"), Runtime::Containerd),
        (
            format!("/kubepods.slice/cri-containerd-{ID}.scope"),
            Runtime::Containerd,
        ),
        (format!("/kubepods.slice/crio-{ID}.scope"), Runtime::CriO),
    ];
    for (path, runtime) in cases {
        assert_eq!(
            container_of_cgroup(&path, &roots),
            container(ID, runtime, None),
            "{path}"
        );
    }
    assert_eq!(container_of_cgroup("/", &roots), None);
    assert_eq!(container_of_cgroup("/libpod_parent/conmon", &roots), None);
    // The default roots are the host's /.
    assert_eq!(MetadataRoots::default().root, std::path::Path::new("/"));
}

#[test]
fn lxc_and_nspawn_are_named_by_their_cgroup() {
    let tree = Tree::new();
    let roots = tree.roots();
    assert_eq!(
        container_of_cgroup("/lxc.payload.web/init.scope", &roots),
        container("web", Runtime::Lxc, Some("web"))
    );
    assert_eq!(
        container_of_cgroup("/lxc/web", &roots),
        container("web", Runtime::Lxc, Some("web"))
    );
    let nspawn = container("my-box", Runtime::SystemdNspawn, Some("my-box"));
    let path = r"/machine.slice/machine-my\x2dbox.scope";
    assert_eq!(container_of_cgroup(path, &roots), nspawn);
    tree.write(
        "/run/systemd/machines/my-box",
        "# This is private data. Do not parse.\nNAME=my-box\nSCOPE=machine-my\\x2dbox.scope\n\
         SERVICE=systemd-nspawn\nROOT=/var/lib/machines/my-box\nCLASS=container\n",
    );
    assert_eq!(container_of_cgroup(path, &roots), nspawn);
    // libvirt registers its virtual machines with machined too: not containers.
    tree.write(
        "/run/systemd/machines/qemu-1-vm",
        "NAME=qemu-1-vm\nSERVICE=libvirt-qemu\nCLASS=vm\n",
    );
    assert_eq!(
        container_of_cgroup(
            r"/machine.slice/machine-qemu\x2d1\x2dvm.scope/emulator",
            &roots
        ),
        None
    );
}

#[test]
fn malformed_and_oversized_files_name_nothing() {
    let tree = Tree::new();
    let config = format!("/var/lib/docker/containers/{ID}/config.v2.json");
    let path = format!("/docker/{ID}");
    let unnamed = container(ID, Runtime::Docker, None);
    for contents in ["", "{", "[]", r#"{"Name": 5}"#, "\u{0}\u{1}"] {
        tree.write(&config, contents);
        assert_eq!(
            container_of_cgroup(&path, &tree.roots()),
            unnamed,
            "{contents:?}"
        );
    }
    // Fields absent or null: Docker's, without a name.
    tree.write(&config, r#"{"Name": null, "Config": {"Labels": null}}"#);
    assert_eq!(container_of_cgroup(&path, &tree.roots()), unnamed);
    tree.write(&config, r#"{"Name": "/"}"#);
    assert_eq!(container_of_cgroup(&path, &tree.roots()), unnamed);
    // Past the size bound: not read.
    let mut big = br#"{"Name": "/big", "Pad": ""#.to_vec();
    big.resize(MAX_FILE_BYTES as usize + 1, b' ');
    big.extend_from_slice(br#""}"#);
    tree.write(&config, &big);
    assert_eq!(read_bounded(&tree.path(&config)), None);
    assert_eq!(container_of_cgroup(&path, &tree.roots()), unnamed);
    // A directory where the file should be.
    std::fs::remove_file(tree.path(&config)).unwrap();
    std::fs::create_dir(tree.path(&config)).unwrap();
    assert_eq!(container_of_cgroup(&path, &tree.roots()), unnamed);
}

#[test]
fn json_shape() {
    let docker = container(DOCKER_ID, Runtime::Docker, Some("nsipc-p")).unwrap();
    assert_eq!(
        serde_json::to_value(&docker).unwrap(),
        serde_json::json!({"id": DOCKER_ID, "runtime": "docker", "name": "nsipc-p"})
    );
    let pod = in_demo_pod(ID, Runtime::CriO, Some("producer")).unwrap();
    assert_eq!(
        serde_json::to_value(&pod).unwrap(),
        serde_json::json!({
            "id": ID, "runtime": "cri-o", "name": "producer",
            "pod": {"name": "ipc-demo-7d9f8c6b5-x2x9q", "namespace": "shop", "uid": POD_UID}
        })
    );
    let unnamed = container(ID, Runtime::Containerd, None).unwrap();
    assert_eq!(
        serde_json::to_string(&unnamed).unwrap(),
        format!(r#"{{"id":"{ID}","runtime":"containerd"}}"#)
    );
    for (runtime, name) in [
        (Runtime::Docker, "docker"),
        (Runtime::Podman, "podman"),
        (Runtime::Containerd, "containerd"),
        (Runtime::CriO, "cri-o"),
        (Runtime::Lxc, "lxc"),
        (Runtime::SystemdNspawn, "systemd-nspawn"),
    ] {
        assert_eq!(serde_json::to_value(runtime).unwrap(), name);
    }
}
