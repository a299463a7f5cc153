//! Container ids and forms from cgroup paths alone.

use super::{ID, ID2, POD_UID};
use crate::containers::{
    cgroup::{CgroupContainer, Form, parse},
    container_id,
};

fn found(id: &str, form: Form) -> Option<CgroupContainer> {
    Some(CgroupContainer {
        id: id.to_owned(),
        form,
        pod_uid: None,
    })
}

fn in_pod(id: &str, form: Form) -> Option<CgroupContainer> {
    Some(CgroupContainer {
        pod_uid: Some(POD_UID.to_owned()),
        ..found(id, form).unwrap()
    })
}

#[test]
fn docker() {
    // cgroupfs driver, as Docker 20.10 made them here, in every hierarchy (memory, pids,
    // name=systemd, unified alike)
    assert_eq!(parse(&format!("/docker/{ID}")), found(ID, Form::Docker));
    // systemd driver (v1 and v2 alike)
    assert_eq!(
        parse(&format!("/system.slice/docker-{ID}.scope")),
        found(ID, Form::Docker)
    );
    // v1 lines, as /proc/PID/cgroup writes them on this machine
    let v1 = format!(
        "9:name=systemd:/docker/{ID}\n8:pids:/docker/{ID}\n4:memory:/docker/{ID}\n0::/docker/{ID}\n"
    );
    assert_eq!(container_id(&v1).map(|(id, _)| id).as_deref(), Some(ID));
    let v2 = format!("0::/system.slice/docker-{ID}.scope\n");
    assert_eq!(container_id(&v2).map(|(id, _)| id).as_deref(), Some(ID));
    // --cgroup-parent: a bare id elsewhere
    assert_eq!(parse(&format!("/ci/{ID}")), found(ID, Form::BareId));
}

#[test]
fn podman() {
    // cgroupfs driver (this machine: no systemd), in every hierarchy
    assert_eq!(
        parse(&format!("/libpod_parent/libpod-{ID}")),
        found(ID, Form::Podman)
    );
    // systemd driver, rootful
    assert_eq!(
        parse(&format!("/machine.slice/libpod-{ID}.scope")),
        found(ID, Form::Podman)
    );
    // rootless: under the user's systemd, with a sub-cgroup when the container runs systemd
    let rootless = format!(
        "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container\n"
    );
    assert_eq!(
        container_id(&rootless).map(|(id, _)| id).as_deref(),
        Some(ID)
    );
    // a container of a pod
    assert_eq!(
        parse(&format!(
            "/machine.slice/machine-libpod_pod_{ID2}.slice/libpod-{ID}.scope"
        )),
        found(ID, Form::Podman)
    );
    // conmon, the monitor process, is not in the container (cgroupfs: /libpod_parent/conmon
    // in the v1 controllers, / in name=systemd and unified)
    let conmon = format!(
        "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-conmon-{ID}.scope\n"
    );
    assert_eq!(container_id(&conmon), None);
    assert_eq!(parse("/libpod_parent/conmon"), None);
    assert_eq!(
        parse(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
        None
    );
}

#[test]
fn containerd_and_kubernetes() {
    let systemd = format!(
        "/kubepods.slice/kubepods-burstable.slice/\
         kubepods-burstable-pod0f9d5d2c_9a7e_4b8e_a8b3_1c2d3e4f5a6b.slice/\
         cri-containerd-{ID}.scope"
    );
    assert_eq!(parse(&systemd), in_pod(ID, Form::Containerd));
    // guaranteed pods have no QoS slice
    let guaranteed = format!(
        "/kubepods.slice/kubepods-pod0f9d5d2c_9a7e_4b8e_a8b3_1c2d3e4f5a6b.slice/\
         cri-containerd-{ID}.scope"
    );
    assert_eq!(parse(&guaranteed), in_pod(ID, Form::Containerd));
    let cgroupfs = format!("/kubepods/besteffort/pod{POD_UID}/{ID}");
    assert_eq!(parse(&cgroupfs), in_pod(ID, Form::Kubepods));
    assert_eq!(
        parse(&format!("/kubepods/pod{POD_UID}/{ID}")),
        in_pod(ID, Form::Kubepods)
    );
    // A pod's own cgroups are not containers.
    assert_eq!(parse("/kubepods.slice/kubepods-besteffort.slice"), None);
    assert_eq!(parse(&format!("/kubepods/besteffort/pod{POD_UID}")), None);
    assert_eq!(
        container_id(&format!("0::{cgroupfs}\n"))
            .map(|(id, _)| id)
            .as_deref(),
        Some(ID)
    );
}

#[test]
fn crio() {
    let systemd = format!(
        "/kubepods.slice/kubepods-burstable.slice/\
         kubepods-burstable-pod0f9d5d2c_9a7e_4b8e_a8b3_1c2d3e4f5a6b.slice/crio-{ID}.scope"
    );
    assert_eq!(parse(&systemd), in_pod(ID, Form::CriO));
    let cgroupfs = format!("/kubepods/burstable/pod{POD_UID}/crio-{ID}");
    assert_eq!(parse(&cgroupfs), in_pod(ID, Form::CriO));
    // conmon
    assert_eq!(
        parse(&format!(
            "/kubepods/burstable/pod{POD_UID}/crio-conmon-{ID}"
        )),
        None
    );
    assert_eq!(
        parse(&format!("/system.slice/crio-conmon-{ID}.scope")),
        None
    );
}

#[test]
fn lxc() {
    // LXC 4+ and LXD, with the container's own cgroups below (it runs systemd)
    assert_eq!(parse("/lxc.payload.web"), found("web", Form::Lxc));
    assert_eq!(
        parse("/lxc.payload.web/system.slice/cron.service"),
        found("web", Form::Lxc)
    );
    assert_eq!(parse("/lxc.monitor.web"), None);
    // older LXC
    assert_eq!(parse("/lxc/web"), found("web", Form::Lxc));
    assert_eq!(parse("/lxc/web/init.scope"), found("web", Form::Lxc));
    assert_eq!(parse("/lxc"), None);
    assert_eq!(
        container_id("4:memory:/lxc.payload.db-1\n")
            .map(|(id, _)| id)
            .as_deref(),
        Some("db-1")
    );
}

#[test]
fn systemd_nspawn() {
    assert_eq!(
        parse("/machine.slice/machine-build.scope"),
        found("build", Form::Machine)
    );
    // systemd escapes '-' in unit names; newer nspawn runs the payload in a sub-cgroup
    assert_eq!(
        parse(r"/machine.slice/machine-my\x2dbox.scope/payload"),
        found("my-box", Form::Machine)
    );
    assert_eq!(parse(r"/machine.slice/machine-bad\x2.scope"), None);
    assert_eq!(parse("/machine.slice"), None);
}

#[test]
fn nested_containers_give_the_innermost() {
    let nested = format!("0::/system.slice/docker-{ID}.scope/docker/{ID2}\n");
    assert_eq!(
        container_id(&nested).map(|(id, _)| id).as_deref(),
        Some(ID2)
    );
    assert_eq!(
        parse(&format!("/lxc.payload.ci/docker/{ID2}")),
        found(ID2, Form::Docker)
    );
    assert_eq!(
        parse(&format!("/docker/{ID}/lxc.payload.inner")),
        found("inner", Form::Lxc)
    );
}

#[test]
fn hosts_have_none() {
    // Captured on this machine: a hybrid v1/v2 hierarchy, with a 32-hex-digit cgroup name
    // that is not a container.
    let here = "9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n5:devices:/\n\
                4:memory:/process_api/46adfe620fc595aabc9e2f70e4907bf7\n3:cpuset:/\n\
                2:cpuacct:/\n1:cpu:/\n0::/\n";
    assert_eq!(container_id(here), None);
    let desktop = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/\
                   app-org.gnome.Terminal.slice/vte-spawn-1.scope\n";
    assert_eq!(container_id(desktop), None);
    for path in [
        "/",
        "",
        "/system.slice/docker.service",
        "/system.slice/containerd.service",
        "/init.scope",
        "/user.slice/user-0.slice/session-1.scope",
        "/docker",
        "/libpod_parent",
    ] {
        assert_eq!(parse(path), None, "{path}");
    }
    // Uppercase hex is not what runtimes write; nor are ids one digit short or long.
    let upper = format!("0::/docker/{}\n", ID.to_uppercase());
    assert_eq!(container_id(&upper), None);
    assert_eq!(parse(&format!("/docker/{}", &ID[1..])), None);
    assert_eq!(parse(&format!("/docker/{ID}0")), None);
    assert_eq!(parse(&format!("/system.slice/docker-{ID}.service")), None);
    assert_eq!(container_id(""), None);
}

#[test]
fn pod_uids_need_their_shape() {
    // Not a uid: left out, the container still found.
    assert_eq!(
        parse(&format!("/kubepods/burstable/podnotauid/{ID}")),
        found(ID, Form::Kubepods)
    );
    assert_eq!(
        parse(&format!(
            "/kubepods.slice/kubepods-podX.slice/cri-containerd-{ID}.scope"
        )),
        found(ID, Form::Containerd)
    );
}
