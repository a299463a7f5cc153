//! Container ids from /proc/PID/cgroup paths.
//!
//! Runtimes name a container's cgroup after its id, in one of two styles:
//! - systemd cgroup driver: a `<prefix>-<id>.scope` unit (`docker-`, `cri-containerd-`,
//!   `crio-`, `libpod-`), e.g. `/system.slice/docker-<id>.scope`,
//!   `/kubepods.slice/…/cri-containerd-<id>.scope`;
//! - cgroupfs driver: a bare `<id>` directory, e.g. `/docker/<id>`,
//!   `/kubepods/burstable/pod<uid>/<id>`.
//!
//! Ids are 64 lowercase hex digits for all of them. Requiring exactly that keeps other cgroups
//! with hex-looking names (`/process_api/46adfe620fc595aabc9e2f70e4907bf7`) from passing for
//! containers.

const SCOPE_PREFIXES: [&str; 4] = ["docker-", "cri-containerd-", "crio-", "libpod-"];

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The container id one cgroup path component names, if it names one.
fn id_in_component(component: &str) -> Option<&str> {
    if is_container_id(component) {
        return Some(component);
    }
    let unit = component.strip_suffix(".scope")?;
    SCOPE_PREFIXES
        .iter()
        .find_map(|prefix| unit.strip_prefix(prefix))
        .filter(|id| is_container_id(id))
}

/// The container id in the contents of /proc/PID/cgroup (v1 `N:controllers:path` lines or the
/// v2 `0::path` line). The deepest component naming one wins: a container nested in another
/// (`…/docker-<outer>.scope/…/docker-<inner>.scope`) is reported as the inner one.
pub fn container_id(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        path.rsplit('/')
            .find_map(id_in_component)
            .map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4ad4b4e1b8c56c1f3e0d1c0e5a2a8b9f6d7c8e9f0a1b2c3d4e5f60718293a4";
    const ID2: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker() {
        // cgroup v2, systemd driver (Docker's default on systemd hosts)
        let v2 = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(container_id(&v2).as_deref(), Some(ID));
        // cgroup v1, cgroupfs driver
        let v1 = format!(
            "12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/\n"
        );
        assert_eq!(container_id(&v1).as_deref(), Some(ID));
    }

    #[test]
    fn containerd_and_kubernetes() {
        let systemd = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/\
             kubepods-burstable-pod0f9d5d2c_9a7e_4b8e_a8b3_1c2d3e4f5a6b.slice/\
             cri-containerd-{ID}.scope\n"
        );
        assert_eq!(container_id(&systemd).as_deref(), Some(ID));
        let cgroupfs =
            format!("0::/kubepods/besteffort/pod0f9d5d2c-9a7e-4b8e-a8b3-1c2d3e4f5a6b/{ID}\n");
        assert_eq!(container_id(&cgroupfs).as_deref(), Some(ID));
        let crio = format!("0::/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope\n");
        assert_eq!(container_id(&crio).as_deref(), Some(ID));
        // A pod's own slice is not a container.
        assert_eq!(
            container_id("0::/kubepods.slice/kubepods-besteffort.slice\n"),
            None
        );
    }

    #[test]
    fn podman() {
        // rootless: the container's cgroup under the user's systemd, with a sub-cgroup when
        // the container runs systemd itself
        let rootless = format!(
            "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container\n"
        );
        assert_eq!(container_id(&rootless).as_deref(), Some(ID));
        // conmon, the monitor process, is not in the container
        let conmon = format!(
            "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-conmon-{ID}.scope\n"
        );
        assert_eq!(container_id(&conmon), None);
    }

    #[test]
    fn nested_containers_give_the_innermost() {
        let nested = format!("0::/system.slice/docker-{ID}.scope/docker/{ID2}\n");
        assert_eq!(container_id(&nested).as_deref(), Some(ID2));
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
        // Uppercase hex is not what runtimes write.
        let upper = format!("0::/docker/{}\n", ID.to_uppercase());
        assert_eq!(container_id(&upper), None);
        assert_eq!(container_id(""), None);
    }
}
