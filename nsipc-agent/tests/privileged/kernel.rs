//! What the running kernel allows: backends, `--check`, the kernel notes and fallbacks.

use super::*;

/// Where kprobes come from; without it (CONFIG_KPROBES off) no kprobe can attach.
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

/// `--backend kprobe` where the kernel has no kprobes: one line naming the missing feature,
/// non-zero exit. Where it has them: every hook on kprobes.
#[test]
fn backend_kprobe_runs_where_the_kernel_has_kprobes() {
    require_root();
    let output = Command::new(AGENT)
        .args(["trace", "--backend", "kprobe"])
        .env_remove("NSIPC_BACKEND")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let kprobes = std::path::Path::new(KPROBE_PMU).exists();
    if kprobes {
        let mut agent = Agent::from_child(output);
        let ready = agent.wait_for("agent.ready", |e| e["event"] == "agent.ready");
        assert_eq!(ready["backend"], "kprobe", "{ready}");
        assert_eq!(ready["degraded"], json!({}), "{ready}");
        agent.stop(libc::SIGINT);
    } else {
        let output = output.wait_with_output().unwrap();
        assert!(!output.status.success());
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains("kprobes unavailable") && stderr.contains("CONFIG_KPROBES"),
            "{stderr}"
        );
    }
}

/// `check` agrees with the kernel's own signs: kprobes usable exactly where the kprobe PMU
/// exists, tracepoints always; and what it says `auto` picks is the best usable backend.
#[test]
fn check_reports_what_the_kernel_allows() {
    let report = check();
    assert_eq!(report["event"], "agent.check");
    assert_eq!(
        report["kernel"].as_str().unwrap(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap()
            .trim()
    );
    assert_eq!(report["btf"]["present"], true);
    let backends = &report["backends"];
    let kprobes = std::path::Path::new(KPROBE_PMU).exists();
    assert_eq!(backends["kprobe"]["usable"], kprobes, "{report}");
    assert_eq!(backends["tracepoint"]["usable"], true, "{report}");
    for (hook, outcome) in backends["kprobe"]["hooks"].as_object().unwrap() {
        assert_eq!(outcome["ok"], kprobes, "{hook}: {outcome}");
        assert!(outcome["function"].is_string(), "{hook}: {outcome}");
        if !kprobes {
            assert!(
                outcome["why"]
                    .as_str()
                    .unwrap()
                    .contains("kprobes unavailable")
            );
        }
    }
    let best = ["fentry", "kprobe", "tracepoint"]
        .into_iter()
        .find(|b| backends[*b]["usable"] == true)
        .unwrap();
    assert_eq!(report["auto"]["backend"], best, "{report}");
    for outcome in report["common"].as_object().unwrap().values() {
        assert_eq!(outcome["ok"], true, "{report}");
    }
    // The kfree program's callers are text symbols of this kernel (or none: no filter).
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
    let callers = report["kfree_callers"].as_array().unwrap();
    for caller in callers {
        let caller = caller.as_str().unwrap();
        assert!(
            kallsyms.lines().any(|line| {
                let mut fields = line.split_whitespace().skip(1);
                matches!(fields.next(), Some("t" | "T")) && fields.next() == Some(caller)
            }),
            "{caller} is not a function in /proc/kallsyms"
        );
    }
    eprintln!("check: kfree callers {callers:?}");
}

/// Every `kernel:` note of the eBPF sources (each hook's prototype, each struct member the probes
/// read) holds on this kernel's BTF, as `check` reports. `cargo xtask vm-test` runs this in
/// every cell of the VM matrix, so the notes are checked on each of its kernels.
#[test]
fn every_kernel_note_holds_on_this_kernel() {
    let report = check();
    let notes = &report["kernel_notes"];
    let release = report["kernel"].as_str().unwrap();
    assert_eq!(notes["failed"], json!([]), "{release}: {notes:#}");
    let checked = notes["checked"].as_u64().unwrap();
    assert!(checked > 0, "{notes}");
    assert_eq!(notes["held"], checked, "{notes}");
    assert_eq!(
        notes["unverified_here"],
        !notes["unlisted"].as_array().unwrap().is_empty(),
        "{notes}"
    );
    eprintln!(
        "kernel notes: {checked} held on {release}{}",
        if notes["unverified_here"] == true {
            format!(", news to {}", notes["unlisted"])
        } else {
            String::new()
        }
    );
}

/// The helpers the probes do without are those the running kernel is too old for, by its
/// version, where the agent decides from the kernel's BTF: bpf_get_current_task_btf came in
/// 5.11, bpf_task_pt_regs in 5.15. Of the matrix's kernels, 5.10 alone has BTF that only
/// declares the syscall wrappers' `struct pt_regs`. `check` and `agent.ready` name the same.
#[test]
fn fallbacks_are_the_helpers_the_kernel_is_too_old_for() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut numbers = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap());
    let version = (numbers.next().unwrap(), numbers.next().unwrap());
    let mut expected = Vec::new();
    if version < (5, 11) {
        expected.push("bpf_get_current_task_btf");
    }
    if version < (5, 15) {
        expected.push("bpf_task_pt_regs");
    }
    if version < (5, 11) {
        expected.push("btf_syscall_wrapper_regs");
    }
    let helpers = |fallbacks: &serde_json::Value| -> Vec<String> {
        fallbacks
            .as_object()
            .unwrap_or_else(|| panic!("fallbacks is no object: {fallbacks}"))
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(helpers(&check()["fallbacks"]), expected, "{release}");
    let agent = Agent::start(&[]);
    let ready = agent
        .events
        .iter()
        .find(|e| e["event"] == "agent.ready")
        .expect("agent.ready");
    assert_eq!(helpers(&ready["fallbacks"]), expected, "{release}");
}
