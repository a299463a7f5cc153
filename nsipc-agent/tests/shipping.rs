//! The shipping recipe (docs/shipping.md), run for real. Needs root.
//!
//! - journald: the unit's stream (`StandardOutput=journal`) through a private systemd-journald
//!   (in a mount namespace of its own, so the host's journal, if any, is untouched), written by
//!   the agent with the unit's `ExecStart` arguments on a journal stream (`systemd-cat`, the
//!   same stdout protocol systemd uses for a unit) and read back with `journalctl -o cat`: every
//!   line parses, and the workload's events are all there.
//! - a file with rotation: the agent appends to a file opened as `StandardOutput=append:` opens
//!   it (O_APPEND) and keeps its descriptor while logrotate rotates it with
//!   packaging/examples/nsipc-agent.logrotate (`copytruncate`), between bursts of a workload; the
//!   rotated files and the live one hold every line, whole, and no hole of NUL bytes. The same
//!   with a descriptor opened without O_APPEND (`StandardOutput=file:`) must leave a hole: that
//!   is what the check catches.

mod support;

use std::{
    fs::{self, OpenOptions},
    io::Read as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::*;

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../packaging/nsipc-agent.service"
);
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/examples");
const PACKAGED_AGENT: &str = "/usr/bin/nsipc-agent";

/// One test at a time: each agent writes every event on the host, so another test's burst
/// would land in a file while logrotate copies and truncates it (docs/shipping.md: what is
/// lost then).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A child that a failing test must not leave running: sent `signal` on drop unless it has
/// been waited for.
struct KillOnDrop(Child, libc::c_int);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: the pid is our unreaped child's.
            unsafe { libc::kill(self.0.id() as i32, self.1) };
            let _ = self.0.wait();
        }
    }
}

/// The values of `key=` lines of a unit or drop-in.
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// The arguments of the unit's `ExecStart`, after the agent's path.
fn unit_args() -> Vec<String> {
    let unit = fs::read_to_string(UNIT).unwrap();
    let exec = values(&unit, "ExecStart");
    let mut words = exec[0].split_whitespace();
    assert_eq!(words.next(), Some(PACKAGED_AGENT), "{}", exec[0]);
    words.map(str::to_owned).collect()
}

/// What a workload did: its pid and IPC namespace (inode numbers are reused at once: the pid
/// tells two workloads' namespaces apart), and how many queues it made and removed there.
struct Workload {
    pid: u64,
    ns: u64,
    queues: usize,
}

impl Workload {
    fn made(&self, event: &Value) -> bool {
        event["ns"] == self.ns && event["pid"] == self.pid
    }
}

/// Makes and removes `queues` message queues in an IPC namespace of its own (`unshare` execs
/// perl), `per_burst` at a time with a pause between bursts.
fn queue_workload(queues: usize, per_burst: usize, pause: Duration) -> Workload {
    let out = sh(&format!(
        "unshare --ipc perl -e '
            print \"$$ \", readlink(\"/proc/self/ns/ipc\"), \"\\n\";
            my $done = 0;
            while ($done < {queues}) {{
                for (1..{per_burst}) {{
                    last if $done == {queues};
                    my $id = msgget(0, 01600) // die \"msgget: $!\";
                    msgctl($id, 0, 0) or die \"msgctl: $!\";
                    $done++;
                }}
                select(undef, undef, undef, {pause});
            }}
            print \"$done\\n\";'",
        pause = pause.as_secs_f64()
    ));
    let mut lines = out.lines();
    let (pid, ns) = lines
        .next()
        .and_then(|line| line.split_once(' '))
        .expect("the pid and namespace");
    let queues = lines.next().expect("the count").parse().unwrap();
    Workload {
        pid: pid.parse().unwrap(),
        ns: parse_ns_link(ns),
        queues,
    }
}

/// The stream's lines: each one a JSON object, or one of the agent's diagnostics (stderr,
/// `nsipc-agent: …`) where they share the stream (the journal). Anything else (a line torn in
/// two, NUL bytes) fails the test.
fn parse_stream(text: &str, diagnostics_allowed: bool) -> Vec<Value> {
    let mut events = Vec::new();
    for line in text.lines() {
        match serde_json::from_str::<Value>(line) {
            Ok(event) if event.is_object() => events.push(event),
            _ if diagnostics_allowed && line.starts_with("nsipc-agent: ") => {}
            _ => panic!("a line of the stream is neither JSON nor a diagnostic: {line:?}"),
        }
    }
    events
}

fn count(events: &[Value], event: &str, workload: &Workload) -> usize {
    events
        .iter()
        .filter(|e| e["event"] == event && workload.made(e))
        .count()
}

/// Every queue of the workload was made and removed, once each, in the stream.
fn assert_workload_complete(events: &[Value], workload: &Workload, what: &str) {
    for event in ["msg.create", "msg.destroy"] {
        assert_eq!(
            count(events, event, workload),
            workload.queues,
            "{what}: {event} by the workload (pid {}, namespace {})",
            workload.pid,
            workload.ns
        );
    }
    // The stream whole, from its start (the inventory, then agent.ready) to its end.
    assert_eq!(events.first().unwrap()["event"], "ipc_ns.exists", "{what}");
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "agent.ready")
            .count(),
        1,
        "{what}"
    );
    let stop = events.last().unwrap();
    assert_eq!(stop["event"], "agent.stop", "{what}");
    // Nothing lost before the stream, so every event of the workload was written.
    assert_eq!(stop["lost"], 0, "{what}: {stop}");
}

/// The private journald's script: runs in a mount namespace of its own with fresh tmpfs
/// over /run (journald's sockets and its volatile journal) and /var/log/journal.
const JOURNALD_SCRIPT: &str = r#"
set -eu
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/journal
if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi
/lib/systemd/systemd-journald &
journald=$!
agent=
trap 'kill $agent $journald 2>/dev/null || true' EXIT
trap 'exit 1' TERM INT
i=0
until [ -S /run/systemd/journal/stdout ]; do
    i=$((i + 1)); [ $i -lt 100 ] || { echo "journald did not start" >&2; exit 1; }
    sleep 0.1
done
# The agent with the unit's arguments, its stdout and stderr a journal stream, as a unit's.
systemd-cat --identifier="$IDENT" "$AGENT" "$@" &
agent=$!
i=0
until journalctl --identifier="$IDENT" -o cat | grep -q '"event":"agent.ready"'; do
    i=$((i + 1)); [ $i -lt 600 ] || { echo "no agent.ready in the journal" >&2; exit 1; }
    sleep 0.1
done
touch "$READY"
i=0
until [ -e "$GO" ]; do
    i=$((i + 1)); [ $i -lt 1200 ] || { echo "never told to stop" >&2; exit 1; }
    sleep 0.1
done
kill -TERM $agent
wait $agent
journalctl --identifier="$IDENT" -o cat > "$OUT_CAT"
journalctl --identifier="$IDENT" -o json > "$OUT_JSON"
"#;

#[test]
fn the_stream_goes_through_journald_whole() {
    require_root();
    let _serial = one_at_a_time();
    let dir = scratch_dir("journald");
    let (ready, go) = (dir.join("ready"), dir.join("go"));
    let (cat, json) = (dir.join("cat"), dir.join("json"));
    let unit = fs::read_to_string(UNIT).unwrap();
    // The tag the unit gives its lines, which `journalctl -t` and shippers match on.
    let ident = values(&unit, "SyslogIdentifier")[0].to_owned();
    let journal = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(JOURNALD_SCRIPT)
        .arg("journald-test")
        .args(unit_args())
        .env("AGENT", AGENT)
        .env("IDENT", &ident)
        .env("READY", &ready)
        .env("GO", &go)
        .env("OUT_CAT", &cat)
        .env("OUT_JSON", &json)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("unshare");
    let mut journal = KillOnDrop(journal, libc::SIGTERM);
    let start = Instant::now();
    while !ready.exists() {
        assert!(
            journal.0.try_wait().unwrap().is_none(),
            "the journald script ended before the agent was ready"
        );
        assert!(start.elapsed() < READY_WAIT, "the agent never got ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A burst of 16000 lines in well under a second.
    let workload = queue_workload(8000, 500, Duration::from_millis(1));
    // The agent writes what it read; its last events reach the journal before it stops.
    std::thread::sleep(Duration::from_secs(1));
    fs::write(&go, "").unwrap();
    let status = wait_timeout(&mut journal.0, Duration::from_secs(60)).expect("the script ends");
    assert!(status.success(), "the journald script failed: {status}");

    let text = fs::read_to_string(&cat).unwrap();
    let events = parse_stream(&text, true);
    assert_workload_complete(&events, &workload, "journalctl -o cat");
    // -o json: one entry per line of the stream, tagged with the unit's identifier, its
    // MESSAGE the line itself.
    let entries: Vec<Value> = fs::read_to_string(&json)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(entries.len(), text.lines().count());
    for entry in &entries {
        assert_eq!(entry["SYSLOG_IDENTIFIER"], ident.as_str(), "{entry}");
        assert_eq!(entry["_TRANSPORT"], "stdout", "{entry}");
    }
    eprintln!(
        "journald: {} lines read back, {} queues made and removed in ns {}",
        entries.len(),
        workload.queues,
        workload.ns
    );
    let _ = fs::remove_dir_all(&dir);
}

/// A directory of this test's, 0755 (logrotate refuses a log in a group- or world-writable
/// one).
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nsipc-shipping-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The shipped logrotate config, for a log in `dir`; the state file beside it.
fn logrotate_config(dir: &Path) -> PathBuf {
    let shipped = fs::read_to_string(Path::new(EXAMPLES).join("nsipc-agent.logrotate")).unwrap();
    let drop_in = fs::read_to_string(Path::new(EXAMPLES).join("file-output.conf")).unwrap();
    let file = values(&drop_in, "StandardOutput")[0]
        .strip_prefix("append:")
        .expect("the drop-in appends")
        .to_owned();
    assert!(shipped.contains(&format!("{file} {{")), "{shipped}");
    let config = dir.join("logrotate.conf");
    fs::write(
        &config,
        shipped.replace(&file, &dir.join("events.jsonl").display().to_string()),
    )
    .unwrap();
    config
}

/// The agent writing to `dir`/events.jsonl (opened with O_APPEND or not) while a workload
/// runs in `bursts` bursts, logrotate rotating the file after each; returns the workloads and
/// the files' contents, oldest first.
fn rotate_under_agent(dir: &Path, append: bool, bursts: usize) -> (Vec<Workload>, Vec<u8>) {
    let config = logrotate_config(dir);
    let log = dir.join("events.jsonl");
    let mut open = OpenOptions::new();
    if append {
        open.append(true);
    } else {
        open.write(true);
    }
    let file = open.create(true).mode(0o640).open(&log).unwrap();
    let agent = Command::new(AGENT)
        .args(unit_args())
        .stdout(file)
        .stderr(Stdio::piped())
        .spawn()
        .expect("nsipc-agent");
    let mut agent = KillOnDrop(agent, libc::SIGKILL);
    if let Err(why) = wait_for_lines(&mut agent.0, &log, "agent.ready", 1, |e| {
        e["event"] == "agent.ready"
    }) {
        let _ = agent.0.kill();
        let _ = agent.0.wait();
        let mut stderr = String::new();
        let _ = agent.0.stderr.take().unwrap().read_to_string(&mut stderr);
        panic!("{why}: {stderr}");
    }
    let mut workloads = Vec::new();
    for _ in 0..bursts {
        let workload = queue_workload(300, 100, Duration::from_millis(5));
        // The burst's last event is in the file before the rotation.
        wait_for_lines(
            &mut agent.0,
            &log,
            "the burst's ends",
            workload.queues,
            |e| e["event"] == "msg.destroy" && workload.made(e),
        )
        .unwrap();
        workloads.push(workload);
        let status = Command::new("logrotate")
            .args(["--force", "--state"])
            .arg(dir.join("logrotate.state"))
            .arg(&config)
            .status()
            .expect("logrotate (package logrotate)");
        assert!(status.success(), "logrotate failed: {status}");
    }
    // The agent keeps appending after the last rotation.
    let last = queue_workload(300, 100, Duration::from_millis(5));
    workloads.push(last);
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: the pid is our unreaped child's.
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
    let status = wait_timeout(&mut agent.0, Duration::from_secs(30)).expect("the agent stops");
    let mut stderr = String::new();
    agent
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "the agent failed: {stderr}");

    // events.jsonl.N (.gz but the newest, delaycompress), oldest first, then the live file.
    let mut rotated: Vec<(usize, PathBuf)> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_owned();
            let n = name
                .strip_prefix("events.jsonl.")?
                .trim_end_matches(".gz")
                .parse()
                .ok()?;
            Some((n, path))
        })
        .collect();
    rotated.sort();
    assert_eq!(
        rotated.len(),
        bursts,
        "one file per rotation (the config keeps more than {bursts}): {rotated:?}"
    );
    let mut all = Vec::new();
    for (_, path) in rotated.iter().rev() {
        let out = Command::new("zcat").arg("-f").arg(path).output().unwrap();
        assert!(out.status.success(), "zcat {}", path.display());
        all.extend(out.stdout);
    }
    all.extend(fs::read(&log).unwrap());
    (workloads, all)
}

/// Waits, while the agent runs, until `wanted` lines of its file match `pred`.
fn wait_for_lines(
    agent: &mut Child,
    log: &Path,
    what: &str,
    wanted: usize,
    pred: impl Fn(&Value) -> bool,
) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < READY_WAIT {
        if let Some(status) = agent.try_wait().unwrap() {
            return Err(format!("the agent exited ({status})"));
        }
        let text = fs::read_to_string(log).unwrap_or_default();
        let matching = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|e| pred(e))
            .count();
        if matching >= wanted {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{what} never appeared in {}", log.display()))
}

#[test]
fn logrotate_copytruncate_keeps_every_line_of_an_appending_agent() {
    require_root();
    let _serial = one_at_a_time();
    let dir = scratch_dir("append");
    let bursts = 4;
    let (workloads, all) = rotate_under_agent(&dir, true, bursts);
    assert!(
        !all.contains(&0),
        "NUL bytes in the stream: a hole where rotated lines were"
    );
    let text = String::from_utf8(all).expect("UTF-8");
    let events = parse_stream(&text, false);
    for (i, workload) in workloads.iter().enumerate() {
        assert_workload_complete(&events, workload, &format!("burst {i}"));
    }
    eprintln!(
        "logrotate: {bursts} rotations, {} lines across {} files, all whole",
        text.lines().count(),
        bursts + 1
    );
    let _ = fs::remove_dir_all(&dir);
}

/// What `StandardOutput=file:` would do: without O_APPEND the agent writes on at its old offset
/// after the truncation, and the file starts with a hole of NULs. The check above would see it.
#[test]
fn without_o_append_copytruncate_leaves_a_hole() {
    require_root();
    let _serial = one_at_a_time();
    let dir = scratch_dir("no-append");
    let (_, all) = rotate_under_agent(&dir, false, 1);
    let nuls = all.iter().filter(|&&b| b == 0).count();
    assert!(
        nuls > 0,
        "no hole: the check above could not catch a missing O_APPEND"
    );
    eprintln!("without O_APPEND: {nuls} NUL bytes after one rotation");
    let _ = fs::remove_dir_all(&dir);
}

/// The examples as systemd reads them: `systemd-analyze verify` finds nothing to say about
/// the unit with both drop-ins, and the tmpfiles.d entry makes the directory the file drop-in
/// appends into (systemd opens that file before it would create a `LogsDirectory=`).
#[test]
fn systemd_takes_the_drop_ins_and_the_tmpfiles_entry() {
    require_root();
    let dir = scratch_dir("systemd");
    let unit = fs::read_to_string(UNIT).unwrap();
    // verify checks that ExecStart's program exists: this build's agent stands in.
    fs::write(
        dir.join("nsipc-agent.service"),
        unit.replace(PACKAGED_AGENT, AGENT),
    )
    .unwrap();
    let drop_ins = dir.join("nsipc-agent.service.d");
    fs::create_dir(&drop_ins).unwrap();
    for drop_in in ["journal.conf", "file-output.conf"] {
        fs::copy(Path::new(EXAMPLES).join(drop_in), drop_ins.join(drop_in)).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("nsipc-agent.service"))
        .output()
        .expect("systemd-analyze (package systemd)");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");

    // systemd-tmpfiles in a root of its own, with the host's users and groups (adm).
    let root = dir.join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    for file in ["passwd", "group"] {
        fs::copy(Path::new("/etc").join(file), root.join("etc").join(file)).unwrap();
    }
    let status = Command::new("systemd-tmpfiles")
        .arg(format!("--root={}", root.display()))
        .arg("--create")
        .arg(Path::new(EXAMPLES).join("nsipc-agent.tmpfiles.conf"))
        .status()
        .expect("systemd-tmpfiles");
    assert!(status.success(), "systemd-tmpfiles: {status}");
    let drop_in = fs::read_to_string(Path::new(EXAMPLES).join("file-output.conf")).unwrap();
    let file = values(&drop_in, "StandardOutput")[0]
        .strip_prefix("append:")
        .unwrap()
        .to_owned();
    let log_dir = Path::new(&file).parent().unwrap();
    let made = root.join(log_dir.strip_prefix("/").unwrap());
    let meta = fs::metadata(&made).unwrap_or_else(|e| panic!("{}: {e}", made.display()));
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
    let _ = fs::remove_dir_all(&dir);
}
