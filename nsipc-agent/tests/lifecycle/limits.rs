//! A namespace's IPC limits: read inside it, and named by a failed get that hit one.

use super::*;

/// Issue 13, limits: a namespace's IPC sysctls are read inside it, for the startup
/// inventory's `ipc_ns.exists` (a namespace made before the agent, its limits lowered) and for
/// `ipc_ns.create`, and equal what /proc/sys shows there.
#[test]
fn namespaces_carry_the_limits_read_inside_them() {
    let dir = std::env::temp_dir().join(format!("nsipc-limits-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let holder = dir.join("ipc");
    fs::write(&holder, "").unwrap();
    sh(&format!(
        "unshare --ipc={h} sh -c 'echo 7 > /proc/sys/kernel/msgmni; \
         echo 12345 > /proc/sys/kernel/shmmax; echo \"20 200 30 5\" > /proc/sys/kernel/sem'",
        h = holder.display()
    ));
    let inum = fs::metadata(&holder).unwrap().ino();
    let before = limits_inside(&format!("--ipc={}", holder.display()));
    assert_eq!(
        (before["msgmni"].clone(), before["semmni"].clone()),
        (7.into(), 5.into())
    );

    let mut agent = Agent::start(&[]);
    let listed = agent
        .events
        .iter()
        .find(|e| e["event"] == "ipc_ns.exists" && e["ns"] == inum)
        .cloned()
        .expect("the startup inventory lists the namespace");
    assert_eq!(listed["limits"], before, "{listed}");
    // And the host's, in its own line.
    let host = agent
        .events
        .iter()
        .find(|e| e["event"] == "ipc_ns.exists" && e["ns"] == HOST_NS)
        .cloned()
        .expect("the startup inventory lists the host's namespace");
    assert_eq!(
        host["limits"],
        limits_inside("--ipc=/proc/self/ns/ipc"),
        "{host}"
    );

    let mut made = std::process::Command::new("unshare")
        .args(["--ipc", "sleep", "60"])
        .spawn()
        .unwrap();
    let ns = loop {
        let link = fs::read_link(format!("/proc/{}/ns/ipc", made.id())).unwrap();
        let ns = parse_ns_link(&link.to_string_lossy());
        if ns != HOST_NS {
            break ns;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let create = agent.wait_for("ipc_ns.create", |e| {
        e["event"] == "ipc_ns.create" && e["ns"] == ns && e["pid"] == made.id()
    });
    assert_eq!(
        create["limits"],
        limits_inside(&format!("-t {} --ipc", made.id())),
        "{create}"
    );
    made.kill().unwrap();
    made.wait().unwrap();
    sh(&format!("umount {}", holder.display()));
    let _ = fs::remove_dir_all(&dir);
}

/// Issue 13, limits: a get that fails for a limit lowered inside its namespace names it, with
/// the value read there and the namespace's use: msgget's ENOSPC at `kernel.msgmni` = 2 with
/// two queues, shmget's EINVAL above `kernel.shmmax`.
#[test]
fn a_failed_get_names_the_limit_it_hit() {
    let mut agent = Agent::start(&[]);
    let (first, second, third, big) = (
        unique_key(40),
        unique_key(41),
        unique_key(42),
        unique_key(43),
    );
    // The limits are lowered after the agent read them for `ipc_ns.create` (it reads records
    // every 50 ms), so the failures' must be read again. The namespace's creator (sh, then
    // sleep) stays in it while the agent reads them; the failing perl is gone by then. errno is
    // compared by number (ENOSPC 28, EINVAL 22): `$!{ENOSPC}` needs Errno.pm, which the VM
    // matrix's initramfs does not carry.
    let out = sh(&format!(
        "unshare --ipc sh -c 'readlink /proc/self/ns/ipc
            sleep 0.5
            echo 2 > /proc/sys/kernel/msgmni
            echo 8192 > /proc/sys/kernel/shmmax
            perl -e \"msgget({first}, 01600) // die; msgget({second}, 01600) // die;
                msgget({third}, 01600) and die; \\$! + 0 == 28 or die \\$!;
                shmget({big}, 16384, 01600) and die; \\$! + 0 == 22 or die \\$!\" || exit 1
            sleep 1'"
    ));
    let ns = parse_ns_link(&out);
    let failed = agent.wait_for("msg.get_failed", |e| {
        e["event"] == "msg.get_failed" && e["key"] == third
    });
    assert_eq!(
        (failed["ns"].clone(), failed["errno"].clone()),
        (ns.into(), "ENOSPC".into())
    );
    assert_eq!(
        failed["limit"],
        serde_json::json!({"name": "msgmni", "value": 2, "used": 2}),
        "{failed}"
    );
    let failed = agent.wait_for("shm.get_failed", |e| {
        e["event"] == "shm.get_failed" && e["key"] == big
    });
    assert_eq!(failed["errno"], "EINVAL", "{failed}");
    assert_eq!(
        failed["limit"],
        serde_json::json!({"name": "shmmax", "value": 8192, "asked": 16384}),
        "{failed}"
    );
}
