//! Which container a cgroup path names, from the path alone.
//!
//! Runtimes name a container's cgroup after its id, in one of two styles:
//! - systemd cgroup driver: a `<prefix>-<id>.scope` unit (`docker-`, `cri-containerd-`,
//!   `crio-`, `libpod-`), e.g. `/system.slice/docker-<id>.scope`,
//!   `/kubepods.slice/…/cri-containerd-<id>.scope`, `/machine.slice/libpod-<id>.scope`;
//! - cgroupfs driver: a bare `<id>` directory (`/docker/<id>`,
//!   `/kubepods/burstable/pod<uid>/<id>`) or a prefixed one (`/libpod_parent/libpod-<id>`,
//!   CRI-O's `…/crio-<id>`).
//!
//! Ids are 64 lowercase hex digits for all of them. Requiring exactly that keeps other cgroups
//! with hex-looking names (`/process_api/46adfe620fc595aabc9e2f70e4907bf7`) from passing for
//! containers, and the runtimes' monitors (`libpod-conmon-<id>.scope`, `crio-conmon-<id>`,
//! `/libpod_parent/conmon`) out.
//!
//! LXC and systemd-nspawn name cgroups after the container's name instead: `/lxc.payload.NAME`
//! (LXC 4 and later, and LXD), `/lxc/NAME` (older LXC; `lxc.monitor.NAME` is the monitor), and
//! `/machine.slice/machine-NAME.scope` with NAME escaped as systemd escapes unit names
//! (`machine-my\x2dbox.scope` is `my-box`).

/// How a cgroup path names its container: what it says of the runtime, before any metadata
/// is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// `docker-<id>.scope` or `/docker/<id>`.
    Docker,
    /// `libpod-<id>.scope` or `libpod-<id>`.
    Podman,
    /// `cri-containerd-<id>.scope`.
    Containerd,
    /// `crio-<id>.scope` or `crio-<id>`.
    CriO,
    /// A bare `<id>` under a `kubepods` cgroup: a Kubernetes container on the cgroupfs driver,
    /// run by containerd, CRI-O or Docker (the path does not say which).
    Kubepods,
    /// A bare `<id>` anywhere else (`docker --cgroup-parent=/ci`, `/<ns>/<id>` from `ctr`).
    BareId,
    /// `lxc.payload.NAME` or `lxc/NAME`: the id is the name.
    Lxc,
    /// `machine-NAME.scope`: the id is the (unescaped) machine name. systemd-machined also
    /// registers virtual machines (libvirt) this way; only its state tells them apart.
    Machine,
}

/// The container a cgroup path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupContainer {
    /// 64 hex digits, or the name for [`Form::Lxc`] and [`Form::Machine`].
    pub id: String,
    pub form: Form,
    /// The Kubernetes pod uid of a `pod<uid>` (cgroupfs) or `kubepods-…-pod<uid>.slice`
    /// (systemd, `_` for `-`) ancestor.
    pub pod_uid: Option<String>,
}

/// Unit prefixes of the systemd driver, and of podman's and CRI-O's cgroupfs directories.
const PREFIXES: [(&str, Form); 4] = [
    ("docker-", Form::Docker),
    ("cri-containerd-", Form::Containerd),
    ("crio-", Form::CriO),
    ("libpod-", Form::Podman),
];

pub fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The container the cgroup at `path` (as /proc/PID/cgroup writes it, `/docker/<id>`) is in.
/// The deepest component naming one wins: a container nested in another
/// (`…/docker-<outer>.scope/…/docker-<inner>.scope`) is reported as the inner one.
pub fn parse(path: &str) -> Option<CgroupContainer> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    (0..components.len()).rev().find_map(|i| {
        let ancestors = &components[..i];
        let (id, form) = in_component(components[i], ancestors.last().copied())?;
        let form = match form {
            Form::BareId if ancestors.last() == Some(&"docker") => Form::Docker,
            Form::BareId if ancestors.iter().any(|a| a.starts_with("kubepods")) => Form::Kubepods,
            form => form,
        };
        Some(CgroupContainer {
            id,
            form,
            pod_uid: ancestors.iter().rev().find_map(|a| pod_uid(a)),
        })
    })
}

/// The container one component names, given its parent's name.
fn in_component(component: &str, parent: Option<&str>) -> Option<(String, Form)> {
    if is_container_id(component) {
        return Some((component.to_owned(), Form::BareId));
    }
    let unit = component.strip_suffix(".scope").unwrap_or(component);
    if let Some(found) = PREFIXES.iter().find_map(|(prefix, form)| {
        unit.strip_prefix(prefix)
            .filter(|id| is_container_id(id))
            .map(|id| (id.to_owned(), *form))
    }) {
        return Some(found);
    }
    if let Some(name) = component.strip_prefix("lxc.payload.") {
        return valid_name(name).then(|| (name.to_owned(), Form::Lxc));
    }
    if parent == Some("lxc") {
        return valid_name(component).then(|| (component.to_owned(), Form::Lxc));
    }
    let machine = component
        .strip_suffix(".scope")?
        .strip_prefix("machine-")
        .and_then(unescape_unit)?;
    valid_name(&machine).then_some((machine, Form::Machine))
}

/// LXC and machine names: what a cgroup directory can hold, and not a runtime's own
/// sub-cgroup.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".."
}

/// The uid of a Kubernetes pod cgroup: `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid>.slice`
/// with `_` for `-` (systemd).
fn pod_uid(component: &str) -> Option<String> {
    let uid = match component.strip_suffix(".slice") {
        Some(slice) if slice.starts_with("kubepods") => {
            slice.rsplit_once("-pod")?.1.replace('_', "-")
        }
        Some(_) => return None,
        None => component.strip_prefix("pod")?.to_owned(),
    };
    let uid_like = uid.len() == 36
        && uid
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b'-'));
    uid_like.then_some(uid)
}

/// A systemd unit name component with its `\xNN` escapes undone (None if malformed).
fn unescape_unit(escaped: &str) -> Option<String> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let hex = bytes.get(i + 1..i + 4)?;
            if hex[0] != b'x' {
                return None;
            }
            let digits = std::str::from_utf8(&hex[1..]).ok()?;
            out.push(u8::from_str_radix(digits, 16).ok()?);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The container id in the contents of /proc/PID/cgroup (v1 `N:controllers:path` lines or the
/// v2 `0::path` line), from the first line whose path names a container, and that path.
pub fn container_id(cgroup: &str) -> Option<(String, &str)> {
    cgroup.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        parse(path).map(|found| (found.id, path))
    })
}
