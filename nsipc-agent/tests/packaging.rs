//! The systemd unit the .deb installs (packaging/nsipc-agent.service), as systemd and the
//! kernel see it: `systemd-analyze verify` finds nothing to say, and the agent, run with
//! exactly the unit's `CapabilityBoundingSet` and `ExecStart` arguments, starts, inventories a
//! namespace held only by a process, traces, and stops cleanly on SIGTERM. The .deb itself
//! installs with dpkg, and its man pages and bash completion work as installed. Needs root.

mod support;

use std::{
    fs,
    process::{Command, Stdio},
};

use support::*;

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../packaging/nsipc-agent.service"
);
const PACKAGED_AGENT: &str = "/usr/bin/nsipc-agent";

/// The values of `key=` lines of the unit.
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn systemd_finds_nothing_to_say_about_the_unit() {
    require_root();
    let unit = fs::read_to_string(UNIT).unwrap();
    // verify also checks that ExecStart's program exists: this build's agent stands in for the
    // packaged one.
    let copy = std::env::temp_dir().join(format!("nsipc-agent-{}.service", std::process::id()));
    fs::write(&copy, unit.replace(PACKAGED_AGENT, AGENT)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("running systemd-analyze (package systemd)");
    let _ = fs::remove_file(&copy);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn the_agent_works_with_the_units_capabilities_only() {
    require_root();
    let unit = fs::read_to_string(UNIT).unwrap();
    let caps: Vec<String> = values(&unit, "CapabilityBoundingSet")
        .iter()
        .flat_map(|set| set.split_whitespace())
        .map(|cap| format!("+{}", cap.strip_prefix("CAP_").unwrap().to_lowercase()))
        .collect();
    assert!(caps.len() >= 3, "{caps:?}");
    let exec = values(&unit, "ExecStart");
    let args: Vec<&str> = exec[0].split_whitespace().collect();
    assert_eq!(args[0], PACKAGED_AGENT);

    // A namespace held only by a process: found through /proc, which the capabilities must
    // allow.
    let mut holder = Command::new("unshare")
        .args(["--ipc", "sleep", "60"])
        .spawn()
        .expect("unshare");
    let inum = wait_for_ns_change(holder.id());
    let child = Command::new("setpriv")
        .arg(format!("--bounding-set=-all,{}", caps.join(",")))
        .arg("--")
        .arg(AGENT)
        .args(&args[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv");
    let mut agent = Agent::from_child(child);
    let found = agent.wait_for("the held namespace in the inventory", |e| {
        e["event"] == "ipc_ns.exists" && e["ns"] == inum
    });
    assert_eq!(found["processes"][0]["pid"], holder.id(), "{found}");
    agent.wait_for("agent.ready", |e| e["event"] == "agent.ready");
    let key = unique_key(1);
    sh(&format!(
        "perl -e 'msgctl(msgget({key}, 01600), 0, 0) or die'"
    ));
    agent.wait_for("the queue made", |e| {
        e["event"] == "msg.create" && e["key"] == key
    });
    let _ = holder.kill();
    let _ = holder.wait();
    let stopped = agent.stop(libc::SIGTERM);
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let last = stopped.events.last().expect("a stream");
    assert_eq!(last["event"], "agent.stop", "{last}");
    assert_eq!(last["reason"], "SIGTERM");
}

/// The unit's set is the least that works: without any one of its capabilities, `trace` and
/// `snapshot` refuse to start, naming it (rather than leave out, silently, what it would have
/// let them see: without CAP_SYS_PTRACE, a namespace held only by a process went unseen).
#[test]
fn without_any_of_the_units_capabilities_the_agent_says_which() {
    require_root();
    let unit = fs::read_to_string(UNIT).unwrap();
    let caps: Vec<String> = values(&unit, "CapabilityBoundingSet")
        .iter()
        .flat_map(|set| set.split_whitespace())
        .map(str::to_owned)
        .collect();
    for dropped in &caps {
        let kept: Vec<String> = caps
            .iter()
            .filter(|cap| *cap != dropped)
            .map(|cap| format!("+{}", cap.strip_prefix("CAP_").unwrap().to_lowercase()))
            .collect();
        for command in ["trace", "snapshot"] {
            let out = Command::new("setpriv")
                .arg(format!("--bounding-set=-all,{}", kept.join(",")))
                .arg("--")
                .arg(AGENT)
                .arg(command)
                .stdin(Stdio::null())
                .output()
                .expect("setpriv");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && out.stdout.is_empty(),
                "{command} without {dropped}: {:?}, stdout {:?}",
                out.status,
                String::from_utf8_lossy(&out.stdout)
            );
            assert!(
                stderr.contains(&format!("{dropped}, for ")),
                "{command} without {dropped} must name it: {stderr}"
            );
        }
    }
}

const PACKAGE: &str = "nsipc-agent";

/// The package `cargo xtask deb` built (`cargo xtask test` builds it before the tests), installed
/// with `dpkg -i` as an operator would: `nsipc-agent --version`, `man nsipc-agent` (and a
/// subcommand's page), and bash completing `nsipc-agent tr<TAB>` through bash-completion's own
/// loader; then `dpkg -r` takes it all away again.
#[test]
fn the_deb_installs_with_its_man_pages_and_completions() {
    require_root();
    let version = env!("CARGO_PKG_VERSION");
    let arch = sh("dpkg --print-architecture");
    let deb = format!(
        "{}/../target/debian/{PACKAGE}_{version}_{}.deb",
        env!("CARGO_MANIFEST_DIR"),
        arch.trim()
    );
    assert!(
        std::path::Path::new(&deb).exists(),
        "no {deb}: build it with `cargo xtask deb` (`cargo xtask test` does before the tests)"
    );
    let installed_before = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", PACKAGE])
        .output()
        .is_ok_and(|out| out.stdout.ends_with(b"install ok installed"));
    let _cleanup = Cleanup(if installed_before {
        String::new()
    } else {
        format!("dpkg -r {PACKAGE}")
    });
    sh(&format!("DEBIAN_FRONTEND=noninteractive dpkg -i {deb}"));

    assert_eq!(
        sh(&format!("{PACKAGED_AGENT} --version")).trim(),
        format!("{PACKAGE} {version}")
    );
    let listed = sh(&format!("dpkg -L {PACKAGE}"));
    for path in [
        "/usr/share/man/man1/nsipc-agent.1.gz",
        "/usr/share/man/man1/nsipc-agent-trace.1.gz",
        "/usr/share/bash-completion/completions/nsipc-agent",
        "/usr/share/zsh/vendor-completions/_nsipc-agent",
        "/usr/share/fish/vendor_completions.d/nsipc-agent.fish",
    ] {
        assert!(
            listed.lines().any(|l| l == path),
            "{path} not in:\n{listed}"
        );
    }

    // man finds and renders the pages (plain ASCII, wide enough not to break names).
    // Words compared with single spaces: man justifies its lines.
    let man = |page: &str| {
        sh(&format!("LC_ALL=C MANWIDTH=200 man {page} | col -b"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let main = man(PACKAGE);
    assert!(
        main.contains("nsipc-agent - See Linux IPC namespaces"),
        "{main}"
    );
    assert!(main.contains("nsipc-agent-trace(1)"), "{main}");
    assert!(main.contains("trace"), "{main}");
    let trace = man("nsipc-agent-trace");
    assert!(trace.contains("--output"), "{trace}");

    // bash-completion's loader finds the script by the command's name, as on <TAB>.
    let complete = |words: &str| {
        sh(&format!(
            "bash -c '. /usr/share/bash-completion/bash_completion
             __load_completion nsipc-agent || exit 3
             function=$(complete -p nsipc-agent | sed -E \"s/.* -F ([^ ]+) .*/\\1/\")
             COMP_WORDS=({words}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
             COMP_LINE=\"{words}\"; COMP_POINT=${{#COMP_LINE}}
             \"$function\" nsipc-agent \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"
             echo \"${{COMPREPLY[@]}}\"'"
        ))
        .trim()
        .to_owned()
    };
    assert_eq!(complete("nsipc-agent tr"), "trace");
    assert_eq!(complete("nsipc-agent trace --outp"), "--output");

    if !installed_before {
        sh(&format!("dpkg -r {PACKAGE}"));
        assert!(!std::path::Path::new(PACKAGED_AGENT).exists());
        assert!(!std::path::Path::new("/usr/share/man/man1/nsipc-agent.1.gz").exists());
        assert!(
            !std::path::Path::new("/usr/share/bash-completion/completions/nsipc-agent").exists()
        );
    }
}

/// The inum of `pid`'s IPC namespace once it differs from this process's (unshare has run).
fn wait_for_ns_change(pid: u32) -> u64 {
    let mine = parse_ns_link(
        &fs::read_link("/proc/self/ns/ipc")
            .unwrap()
            .to_string_lossy(),
    );
    for _ in 0..200 {
        if let Ok(link) = fs::read_link(format!("/proc/{pid}/ns/ipc")) {
            let inum = parse_ns_link(&link.to_string_lossy());
            if inum != mine {
                return inum;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("pid {pid} never left this IPC namespace");
}

const DAEMONSET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/daemonset.yaml");
const IMAGE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/image.sh");
const SETUP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/containers/setup.sh");

/// The DaemonSet's pod, run by Docker as its spec says (no Kubernetes here): the image of
/// packaging/image.sh, the host's PID namespace, capabilities dropped but the spec's, a
/// read-only root, the spec's host mounts. The agent inventories a namespace held only by a
/// host process, and `docker stop` ends its stream with `agent.stop`.
#[test]
fn the_daemonset_pod_runs_as_its_spec_says() {
    require_root();
    let pod = daemonset_pod();
    let spec = &pod["containers"][0];
    let security = &spec["securityContext"];
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(security["privileged"], false);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    let caps: Vec<String> = security["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cap| cap.as_str().unwrap().to_owned())
        .collect();
    // The same capabilities as the systemd unit.
    let unit = fs::read_to_string(UNIT).unwrap();
    let unit_caps: Vec<String> = values(&unit, "CapabilityBoundingSet")
        .iter()
        .flat_map(|set| set.split_whitespace())
        .map(|cap| cap.strip_prefix("CAP_").unwrap().to_owned())
        .collect();
    assert_eq!(caps, unit_caps);

    let status = Command::new("bash")
        .arg(SETUP)
        .arg("docker")
        .status()
        .unwrap();
    assert!(status.success(), "tests/containers/setup.sh docker failed");
    let tag = format!("nsipc-agent:test-{}", std::process::id());
    sh(&format!("{IMAGE_SCRIPT} {AGENT} {tag}"));
    let name = format!("nsipc-ds-{}", std::process::id());
    let _cleanup = Cleanup(format!("docker rm -f {name}; docker rmi {tag}"));

    let mut run = Command::new("docker");
    run.args([
        "run",
        "-d",
        "--name",
        &name,
        "--pid",
        "host",
        "--cap-drop",
        "ALL",
    ])
    .args(["--security-opt", "no-new-privileges", "--read-only"]);
    for cap in &caps {
        run.args(["--cap-add", cap]);
    }
    for (host, inside, read_only) in host_mounts(&pod) {
        if std::path::Path::new(&host).exists() {
            let ro = if read_only { ":ro" } else { "" };
            run.args(["-v", &format!("{host}:{inside}{ro}")]);
        }
    }
    run.arg(&tag);
    for word in spec["command"].as_array().unwrap() {
        run.arg(word.as_str().unwrap());
    }
    let mut holder = Command::new("unshare")
        .args(["--ipc", "sleep", "60"])
        .spawn()
        .expect("unshare");
    let inum = wait_for_ns_change(holder.id());
    let out = run.output().expect("docker run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = Command::new("docker")
        .args(["logs", "-f", &name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut agent = Agent::from_child(logs);
    agent.wait_for("the held namespace in the inventory", |e| {
        e["event"] == "ipc_ns.exists" && e["ns"] == inum
    });
    let ready = agent.wait_for("agent.ready", |e| e["event"] == "agent.ready");
    // The spec's metrics port, scraped in the pod's network namespace as Prometheus would at
    // the pod's address (dockerd runs here with no bridge: the container has only loopback).
    let port = spec["ports"][0]["containerPort"].as_u64().unwrap();
    assert_eq!(ready["metrics_addr"], format!("0.0.0.0:{port}"), "{ready}");
    let pid = sh(&format!("docker inspect -f '{{{{.State.Pid}}}}' {name}"));
    let metrics = sh(&format!(
        "nsenter -t {} -n bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}; \
         printf \"GET /metrics HTTP/1.0\\r\\n\\r\\n\" >&3; cat <&3'",
        pid.trim()
    ));
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    let namespaces = metrics
        .lines()
        .find_map(|l| l.strip_prefix("nsipc_ipc_namespaces "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no nsipc_ipc_namespaces in:\n{metrics}"));
    assert!(
        namespaces >= 2.0,
        "the host's and the held one at least: {metrics}"
    );
    let _ = holder.kill();
    let _ = holder.wait();
    sh(&format!("docker stop {name}"));
    let ended = agent.read_until(std::time::Duration::from_secs(30), |events| {
        events.iter().any(|e| e["event"] == "agent.stop")
    });
    assert!(
        ended,
        "no agent.stop after docker stop: {:#?}",
        agent.events
    );
    let stop = agent
        .events
        .iter()
        .find(|e| e["event"] == "agent.stop")
        .unwrap();
    assert_eq!(stop["reason"], "SIGTERM", "{stop}");
}

/// The DaemonSet's pod spec, as JSON (python3's yaml reads the manifest).
fn daemonset_pod() -> serde_json::Value {
    let json = sh(&format!(
        "python3 -c 'import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))' {DAEMONSET}"
    ));
    let docs: serde_json::Value = serde_json::from_str(&json).unwrap();
    let daemonset = docs
        .as_array()
        .unwrap()
        .iter()
        .find(|doc| doc["kind"] == "DaemonSet")
        .expect("a DaemonSet in the manifest");
    let pod = daemonset["spec"]["template"]["spec"].clone();
    assert_eq!(pod["hostPID"], true);
    pod
}

/// (host path, path in the container, read-only) of every mount of the pod's container.
fn host_mounts(pod: &serde_json::Value) -> Vec<(String, String, bool)> {
    pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|mount| {
            let volume = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == mount["name"])
                .expect("every mount has its volume");
            (
                volume["hostPath"]["path"].as_str().unwrap().to_owned(),
                mount["mountPath"].as_str().unwrap().to_owned(),
                mount["readOnly"] == true,
            )
        })
        .collect()
}

/// Runs a shell command when dropped, whatever happened.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("sh").arg("-c").arg(&self.0).output();
    }
}
