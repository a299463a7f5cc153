//! Running `nsipc-agent snapshot`, what the kernel itself says, and the processes and
//! cleanups that hold the namespaces under test.

use super::*;

/// What one `nsipc-agent snapshot` run printed.
pub struct Snapshot {
    pub pid: u32,
    pub lines: Vec<Value>,
    pub stderr: String,
}

impl Snapshot {
    /// Runs `[wrapper...] nsipc-agent snapshot`, which must succeed and print only JSON lines.
    pub fn take_with(wrapper: &[&str]) -> Snapshot {
        require_root();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(AGENT);
                c
            }
            None => Command::new(AGENT),
        };
        let child = command
            .arg("snapshot")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting nsipc-agent snapshot");
        let pid = child.id();
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "snapshot failed ({}): {stderr}",
            output.status
        );
        let lines = stdout.lines().map(event_line).collect();
        Snapshot { pid, lines, stderr }
    }

    pub fn take() -> Snapshot {
        Self::take_with(&[])
    }

    pub fn namespaces(&self) -> Vec<&Value> {
        self.lines
            .iter()
            .filter(|l| l["event"] == "ipc_ns.exists")
            .collect()
    }

    /// The `ipc_ns.exists` of `ns`, less other `nsipc-agent` processes: snapshots that other
    /// tests run at the same time hold every namespace they read, briefly, with an fd and a
    /// thread, and may be caught doing it.
    pub fn namespace(&self, ns: u64) -> Value {
        let found: Vec<_> = self
            .namespaces()
            .into_iter()
            .filter(|l| l["ns"] == ns)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one ipc_ns.exists for {ns}: {:#?}",
            self.lines
        );
        let mut entry = found[0].clone();
        let other_agent =
            |holder: &Value| holder["comm"] == "nsipc-agent" && holder["pid"] != self.pid;
        for list in [&["processes"][..], &["held_by", "fds"][..]] {
            let list = list.iter().fold(&mut entry, |v, k| &mut v[*k]);
            list.as_array_mut().unwrap().retain(|h| !other_agent(h));
        }
        entry
    }

    /// The objects in `ns` as (kind, id, key), sorted.
    pub fn objects(&self, ns: u64) -> BTreeSet<(String, i64, i64)> {
        self.lines
            .iter()
            .filter(|l| l["ns"] == ns && l["event"] != "ipc_ns.exists")
            .map(|l| {
                let kind = l["event"]
                    .as_str()
                    .unwrap()
                    .strip_suffix(".exists")
                    .unwrap();
                (kind.to_owned(), field(l, "id"), field(l, "key"))
            })
            .collect()
    }

    pub fn object(&self, ns: u64, event: &str, key: i64) -> &Value {
        self.lines
            .iter()
            .find(|l| l["ns"] == ns && l["event"] == event && l["key"] == key)
            .unwrap_or_else(|| panic!("no {event} with key {key} in {ns}: {:#?}", self.lines))
    }
}

/// What the kernel says is in the namespace at `ns_path`: (kind, id, key) from `lsipc --json`
/// run inside it.
pub fn kernel_objects(ns_path: &str) -> BTreeSet<(String, i64, i64)> {
    let mut objects = BTreeSet::new();
    for (flag, kind, list) in [
        ("-q", "msg", "messages"),
        ("-m", "shm", "sharedmemory"),
        ("-s", "sem", "semaphores"),
    ] {
        let out = sh(&format!(
            "nsenter --ipc={ns_path} lsipc {flag} --json -o KEY,ID"
        ));
        let parsed: Value = if out.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(&out).unwrap()
        };
        for object in parsed[list].as_array().into_iter().flatten() {
            let key_hex = object["key"].as_str().unwrap().trim_start_matches("0x");
            // lsipc prints the key as unsigned hex; the stream has it as a signed 32-bit number.
            let key = i64::from(u32::from_str_radix(key_hex, 16).unwrap() as i32);
            let id = object["id"].as_str().unwrap().parse().unwrap();
            objects.insert((kind.to_owned(), id, key));
        }
    }
    objects
}

/// IPC namespaces `lsns` knows (only those some process is in).
pub fn lsns_ipc() -> BTreeSet<u64> {
    sh("lsns -t ipc -n -o NS")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

pub fn ipc_ns_of(path: &str) -> u64 {
    parse_ns_link(&std::fs::read_link(path).unwrap().to_string_lossy())
}

pub fn mnt_ns_of(pid: &str) -> u64 {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    let link = link.to_string_lossy();
    link.strip_prefix("mnt:[")
        .and_then(|s| s.strip_suffix(']'))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a mnt link: {link}"))
}

/// Waits until process `pid` has exec'd `comm`.
pub fn wait_for_comm(pid: u32, comm: &str) {
    let path = format!("/proc/{pid}/comm");
    let deadline = Instant::now() + WAIT;
    while std::fs::read_to_string(&path).unwrap().trim_end() != comm {
        assert!(Instant::now() < deadline, "{pid} never became {comm}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A long-running helper process, killed when the test ends (also on failure).
pub struct Holder {
    pub child: Child,
    pub stdout: BufReader<std::process::ChildStdout>,
    /// Runs once the holder is killed (fields drop after `Drop::drop`).
    pub _after: Option<Cleanup>,
}

impl Holder {
    pub fn spawn(program: &str, args: &[&str]) -> Holder {
        let mut child = Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Holder {
            child,
            stdout,
            _after: None,
        }
    }

    /// A holder in a mount namespace of its own (private, so nothing it mounts shows here),
    /// with a tmpfs on a fresh directory `dir` where a new IPC namespace is bind-mounted at
    /// `{dir}/ipc`; then it runs `script(dir)` (sh, `set -e`). Returns it and `dir`, which
    /// is removed once the holder is gone.
    pub fn in_own_mount_namespace(
        name: &str,
        script: impl FnOnce(&str) -> String,
    ) -> (Holder, String) {
        let dir = format!("/tmp/nsipc-snapshot-{}-{name}", std::process::id());
        std::fs::create_dir_all(&dir).unwrap();
        let rmdir = Cleanup(format!("rmdir {dir}"));
        let mut holder = Holder::spawn(
            "unshare",
            &[
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &format!(
                    "set -e
                     mount -t tmpfs nsipc-test {dir}
                     touch {dir}/ipc
                     unshare --ipc={dir}/ipc true
                     {}",
                    script(&dir)
                ),
            ],
        );
        holder._after = Some(rmdir);
        (holder, dir)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line the holder prints (it reports what it set up this way).
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "the holder ended early: {line:?}");
        line.trim_end().to_owned()
    }

    /// Waits until the holder has exec'd `comm` (the programs chain into each other by exec).
    pub fn wait_for_comm(&self, comm: &str) {
        wait_for_comm(self.pid(), comm);
    }

    /// Waits until the holder's main thread is in a namespace other than the host's.
    pub fn wait_for_own_namespace(&self) -> u64 {
        let link = format!("/proc/{}/ns/ipc", self.pid());
        let deadline = Instant::now() + WAIT;
        loop {
            let ns = ipc_ns_of(&link);
            if ns != HOST_NS {
                return ns;
            }
            assert!(
                Instant::now() < deadline,
                "{link} stayed in the host namespace"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a shell script when dropped: cleanup that must happen even when an assertion fails.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("sh").arg("-c").arg(&self.0).status();
    }
}
