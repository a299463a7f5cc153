//! Running the real agent against the running kernel, and real programs to drive it.

#![allow(dead_code)] // each test binary uses its own subset

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, channel},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// docs/events.md's common fields as rules, the agent's own file (it needs only serde_json).
#[path = "../../src/schema/common.rs"]
pub mod common;
pub mod model;
pub mod seeds;

pub const AGENT: &str = env!("CARGO_BIN_EXE_nsipc-agent");
pub const HOST_NS: u64 = 4026531839;
pub const WAIT: Duration = Duration::from_secs(10);
/// Attaching takes longer than any event: under qemu without KVM, each fentry attach patches
/// kernel text and waits out an RCU tasks grace period (a second or more there).
pub const READY_WAIT: Duration = Duration::from_secs(60);

/// These tests load eBPF programs: without root they cannot test anything, so they fail
/// loudly instead of passing vacuously.
pub fn require_root() {
    // SAFETY: geteuid cannot fail.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the privileged tests must run as root (sudo cargo xtask test)"
    );
}

/// The backend under test: `NSIPC_BACKEND` (set by `cargo xtask vm-test` for each cell of its
/// kernel × backend matrix), None for the agent's own choice.
pub fn backend_under_test() -> Option<String> {
    std::env::var("NSIPC_BACKEND").ok()
}

/// The backend an agent started with `--backend <asked>` must run on: the one asked for, or
/// for `auto` (or none) the best that `nsipc-agent check` finds usable here.
pub fn expected_backend(asked: Option<&str>) -> String {
    match asked {
        Some(backend) if backend != "auto" => backend.to_owned(),
        _ => check()["auto"]["backend"]
            .as_str()
            .expect("check names the backend auto picks")
            .to_owned(),
    }
}

/// `nsipc-agent check`'s report (it loads and attaches every hook of every backend), once.
pub fn check() -> &'static Value {
    static REPORT: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    REPORT.get_or_init(|| {
        require_root();
        let output = Command::new(AGENT).arg("check").output().unwrap();
        assert!(
            output.status.success(),
            "nsipc-agent check: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("check prints one JSON object")
    })
}

/// `nsipc-agent trace` with the `--backend` of `NSIPC_BACKEND`, when set.
pub fn trace_command() -> Command {
    trace_command_with(backend_under_test().as_deref())
}

/// `nsipc-agent trace --backend <backend>`, or with the agent's default.
pub fn trace_command_with(backend: Option<&str>) -> Command {
    let mut cmd = Command::new(AGENT);
    cmd.arg("trace");
    if let Some(backend) = backend {
        cmd.args(["--backend", backend]);
    }
    cmd
}

/// A running `nsipc-agent trace`, its stdout parsed line by line.
pub struct Agent {
    pub child: Child,
    lines: Receiver<Result<Value, String>>,
    /// Every event received so far, in order.
    pub events: Vec<Value>,
}

/// The schema every line of the stream must validate against (generated from the agent's
/// writers by `cargo xtask schema`), built in: `cargo xtask vm-test` runs these binaries in VMs
/// without the source tree.
const SCHEMA: &str = include_str!("../../../docs/events.schema.json");

fn schema() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: Value = serde_json::from_str(SCHEMA).expect("the schema is JSON");
        // The counts as the test process ends (the test harness exits through exit(3)).
        // SAFETY: registers a plain function without arguments.
        unsafe { libc::atexit(tally_at_exit) };
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("docs/events.schema.json is a valid schema")
    })
}

/// Lines validated against the schema, refused by it, and not JSON at all, by this test
/// process.
static VALIDATED: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
static NOT_JSON: AtomicU64 = AtomicU64::new(0);

/// `$NSIPC_SCHEMA_TALLY/<test binary>.<pid>`, when set.
fn tally_path() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("NSIPC_SCHEMA_TALLY")?;
    let exe = std::env::current_exe().ok()?;
    let name = exe.file_name()?.to_string_lossy().into_owned();
    let _ = std::fs::create_dir_all(&dir);
    Some(std::path::Path::new(&dir).join(format!("{name}.{}", std::process::id())))
}

/// Writes this process's counts to [`tally_path`], for a run to report how many lines were
/// validated.
fn write_tally() {
    let Some(path) = tally_path() else { return };
    let _ = std::fs::write(
        path,
        format!(
            "validated {} refused {} not_json {}\n",
            VALIDATED.load(Ordering::Relaxed),
            REFUSED.load(Ordering::Relaxed),
            NOT_JSON.load(Ordering::Relaxed),
        ),
    );
}

/// Keeps a bad line's error beside the counts (a reader thread's error reaches the test only
/// if the test reads that far).
fn note_bad_line(error: &str) {
    write_tally();
    if let Some(path) = tally_path() {
        use std::io::Write as _;
        if let Ok(mut file) =
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path.with_extension(format!(
                    "{}.bad",
                    path.extension().unwrap_or_default().to_string_lossy()
                )))
        {
            let _ = writeln!(file, "{error}");
        }
    }
}

extern "C" fn tally_at_exit() {
    write_tally();
}

/// `line` parsed and validated against docs/events.schema.json, not counted; the error (with
/// the line) when it is not JSON or the schema refuses it.
pub fn validate_line(line: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}: {line}"))?;
    refusal(&value).map_or(Ok(value), |error| Err(format!("{error}: {line}")))
}

/// Why the schema refuses `value`, if it does, or what it lacks of docs/events.md's common
/// fields (`time` on every line, a task's fields together…), which the schema requires too.
fn refusal(value: &Value) -> Option<String> {
    if let Err(error) = schema().validate(value) {
        return Some(format!(
            "docs/events.schema.json refuses the line: {error} (at {})",
            error.instance_path()
        ));
    }
    let missing = common::missing(value);
    (!missing.is_empty()).then(|| format!("the line lacks common fields: {missing:?}"))
}

/// One line of the agent's stdout, [`validate_line`]d and counted.
pub fn check_line(line: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| {
        NOT_JSON.fetch_add(1, Ordering::Relaxed);
        let error = format!("not JSON: {e}: {line}");
        note_bad_line(&error);
        error
    })?;
    if let Some(error) = refusal(&value) {
        REFUSED.fetch_add(1, Ordering::Relaxed);
        let error = format!("{error}: {line}");
        note_bad_line(&error);
        return Err(error);
    }
    if VALIDATED.fetch_add(1, Ordering::Relaxed) % 1000 == 999 {
        write_tally();
    }
    Ok(value)
}

/// [`check_line`], panicking with the line and the error.
pub fn event_line(line: &str) -> Value {
    check_line(line).unwrap_or_else(|error| panic!("the agent printed a bad line: {error}"))
}

fn read_lines(stdout: ChildStdout) -> Receiver<Result<Value, String>> {
    let (tx, rx) = channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(check_line(&line)).is_err() {
                break;
            }
        }
        write_tally();
    });
    rx
}

impl Agent {
    /// Starts the agent on the backend under test and waits for `agent.ready`.
    pub fn start(args: &[&str]) -> Agent {
        Agent::start_with(backend_under_test().as_deref(), args)
    }

    /// Starts the agent with `--backend <backend>` (None: its default) and waits for
    /// `agent.ready`.
    pub fn start_with(backend: Option<&str>, args: &[&str]) -> Agent {
        require_root();
        let child = trace_command_with(backend)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning nsipc-agent");
        let mut agent = Agent::from_child(child);
        let ready = agent.wait_within("agent.ready", READY_WAIT, |e| e["event"] == "agent.ready");
        // Every hook on the backend under test: the kernels tested have all the hooked
        // functions, so none may fall back.
        let backend = expected_backend(backend);
        assert_eq!(ready["backend"], backend.as_str(), "{ready}");
        assert_eq!(ready["degraded"], serde_json::json!({}), "{ready}");
        let hooks = ready["hooks"]
            .as_object()
            .expect("agent.ready lists the hooks");
        assert!(
            hooks.len() >= 12 && hooks.values().all(|b| b == backend.as_str()),
            "{ready}"
        );
        // Frees at the exact kernel functions wherever the backend can hook functions (every
        // kernel tested has them), else among every kfree.
        let frees = if backend == "tracepoint" {
            "kfree"
        } else {
            backend.as_str()
        };
        assert_eq!(ready["frees"], frees, "{ready}");
        agent
    }

    /// Reads a spawned agent's stdout (piped) line by line.
    pub fn from_child(mut child: Child) -> Agent {
        let lines = read_lines(child.stdout.take().unwrap());
        Agent {
            child,
            lines,
            events: Vec::new(),
        }
    }

    /// Next line of the stream, or None at end of stream / after `timeout`.
    fn next(&mut self, timeout: Duration) -> Option<Value> {
        match self.lines.recv_timeout(timeout) {
            Ok(Ok(event)) => {
                self.events.push(event.clone());
                Some(event)
            }
            Ok(Err(error)) => panic!("the agent printed a bad line: {error}"),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Waits up to [`WAIT`] for an event matching `pred` (seen before or arriving now).
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_within(what, WAIT, pred)
    }

    /// Waits up to `wait` for an event matching `pred` (seen before or arriving now).
    pub fn wait_within(
        &mut self,
        what: &str,
        wait: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        if let Some(found) = self.events.iter().find(|e| pred(e)) {
            return found.clone();
        }
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(event) if pred(&event) => return event,
                Some(_) => {}
                None => break,
            }
        }
        let stderr = self.kill_and_stderr();
        panic!(
            "no {what} within {wait:?}; stderr: {stderr}; events: {:#?}",
            self.events
        );
    }

    fn kill_and_stderr(&mut self) -> String {
        let _ = self.child.kill();
        let output = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap())
            .wait_with_output()
            .unwrap();
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// Sends `signal`, reads the stream to its end, and waits for the agent to exit.
    pub fn stop(mut self, signal: libc::c_int) -> Stopped {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        // Detaching takes as long as attaching (see READY_WAIT).
        while self.next(READY_WAIT).is_some() {}
        let Some(status) = wait_timeout(&mut self.child, READY_WAIT) else {
            let stderr = self.kill_and_stderr();
            panic!(
                "the agent did not exit within {READY_WAIT:?} of signal {signal}; stderr: \
                 {stderr}"
            );
        };
        let stderr = self.kill_and_stderr();
        Stopped {
            status,
            stderr,
            events: std::mem::take(&mut self.events),
        }
    }

    /// Reads the stream until `done(all events so far)` holds, or `timeout` passes or the stream
    /// ends; returns whether it held. `done` is called once per batch of lines, not per line.
    pub fn read_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&[Value]) -> bool,
    ) -> bool {
        if done(&self.events) {
            return true;
        }
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if self.next(left).is_none() {
                return false;
            }
            while self.next(Duration::ZERO).is_some() {}
            if done(&self.events) {
                return true;
            }
        }
        false
    }

    /// All events seen so far that match `pred`.
    pub fn all(&self, pred: impl Fn(&Value) -> bool) -> Vec<&Value> {
        self.events.iter().filter(|e| pred(e)).collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        write_tally();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a stopped agent ended.
pub struct Stopped {
    pub status: ExitStatus,
    pub stderr: String,
    pub events: Vec<Value>,
}

/// Waits up to `timeout` for `child` to exit; None if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A storm of SysV syscalls in an IPC namespace of its own (so its objects disturb nobody):
/// `msgget(IPC_PRIVATE)` + `msgctl(IPC_RMID)` as fast as perl goes, for `seconds` (at most, so
/// that a test that dies early leaves nothing running for long), then it prints how many calls
/// it made. `unshare` execs perl: the child's pid is the one in the events.
pub fn msg_storm(seconds: u64) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--ipc", "perl", "-e"]).arg(format!(
        "my ($end, $calls) = (time + {seconds}, 0);
         while (time < $end) {{
             my $id = msgget(0, 01600) // die \"msgget: $!\";
             msgctl($id, 0, 0) or die \"msgctl: $!\";
             $calls += 2;
         }}
         print \"$calls\\n\";"
    ));
    cmd
}

/// Runs `sh -c script`, which must succeed; returns its stdout.
pub fn sh(script: &str) -> String {
    let output: Output = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("running sh");
    assert!(
        output.status.success(),
        "`{script}` failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// A SysV key unique to this test process and `salt`, so concurrent tests never share one.
pub fn unique_key(salt: u32) -> i64 {
    i64::from((std::process::id() << 8 | salt) & 0x3fff_ffff)
}

/// The inum in an `ipc:[4026532177]` link.
pub fn parse_ns_link(link: &str) -> u64 {
    link.trim()
        .strip_prefix("ipc:[")
        .and_then(|s| s.strip_suffix(']'))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an ipc namespace link: {link:?}"))
}

pub fn field(event: &Value, name: &str) -> i64 {
    event[name]
        .as_i64()
        .unwrap_or_else(|| panic!("no integer {name} in {event}"))
}

/// The IPC sysctls `nsenter ARGS` shows inside a namespace, as the agent's `limits` object.
pub fn limits_inside(nsenter_args: &str) -> serde_json::Value {
    let out = sh(&format!(
        "nsenter {nsenter_args} sh -c 'cd /proc/sys/kernel && cat msgmni msgmax msgmnb \
         shmmax shmall shmmni sem && if [ -d /proc/sys/fs/mqueue ]; then \
         cd /proc/sys/fs/mqueue && cat queues_max msg_max msgsize_max; fi'"
    ));
    let values: Vec<u64> = out.split_whitespace().map(|v| v.parse().unwrap()).collect();
    let names = [
        "msgmni",
        "msgmax",
        "msgmnb",
        "shmmax",
        "shmall",
        "shmmni",
        "semmsl",
        "semmns",
        "semopm",
        "semmni",
        "mq_queues_max",
        "mq_msg_max",
        "mq_msgsize_max",
    ];
    assert!(values.len() == 10 || values.len() == 13, "{out:?}");
    names
        .iter()
        .zip(values)
        .map(|(name, value)| (name.to_string(), serde_json::json!(value)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A plain HTTP/1.0 GET (no chunked answers): status line and body.
pub fn http_get(addr: SocketAddr, target: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {response:?}"));
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, head.to_owned(), body.to_owned())
}
