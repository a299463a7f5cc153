//! The concurrent differential test: the kernel driven by many processes at once, on every CPU,
//! while the agent traces. Needs root.
//!
//! Each seed runs `NSIPC_RACE_WORKERS` (default 8) perl workers at the same time, each with a
//! random loop of its own: msgget/shmget/semget under IPC_PRIVATE and a few keys shared by
//! everyone, IPC_RMID of whatever the namespace lists (so workers remove each other's objects,
//! attached segments included), shmat/shmdt, children forked with the attachments that detach
//! or remove and exit, `unshare(CLONE_NEWIPC)`, `setns` into bind-mounted namespaces and into
//! namespaces held by fds, and children made by `clone(CLONE_NEWIPC)` that create objects and
//! exit. Meanwhile this test makes and unmounts bind-mount holders, runs `nsipc-agent snapshot`,
//! and runs a second agent whose startup inventory races with all of it.
//!
//! Checks, at quiescent checkpoints (every worker and child stopped with SIGSTOP) and at the end:
//! - in every namespace that a process or a bind mount can reach, the objects alive in the
//!   stream equal the kernel's `/proc/sysvipc`, and exactly one life of that inum is alive;
//! - once everything is let go, every namespace the workload created has its destroy, exactly
//!   once, no object outlives its namespace, nothing is created in a destroyed namespace, a
//!   segment removed while attached dies by its last detach (no lifecycle stuck), and the
//!   `namespace_teardown` destroys add up to each namespace's `objects_destroyed`;
//! - nothing lost, nothing undecodable; the snapshots and the second agent exit cleanly.
//!
//! A seed fixes every decision of the workers and of this test; the interleaving is the
//! machine's. `NSIPC_RACE_SEEDS=N` runs seeds 1..=N (default 2), `NSIPC_RACE_SEED=S` replays
//! seed S only, `NSIPC_RACE_SECS` sets each seed's race (default 3 s). The long run in the
//! README: `NSIPC_RACE_SEEDS=200`.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fs,
    io::{BufRead as _, BufReader},
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{model::*, seeds::*, *};

const DEFAULT_SEEDS: u64 = 2;
const DEFAULT_WORKERS: u64 = 8;
const DEFAULT_SECS: u64 = 3;
const MAX_HOLDERS: usize = 4;
/// Quiescent checkpoints during each race, besides the one at its end.
const MID_RACE_CHECKPOINTS: u32 = 2;

/// One racing worker. Builtins only (the VMs of `cargo xtask vm-test` have the perl binary
/// alone): syscall numbers for x86_64. It stops when the file `stop` appears in its directory
/// (or the test is gone), waits for its children and prints what it did.
const RACER_PL: &str = r#"
$| = 1;
my ($seed, $index, $dir, @keys) = @ARGV;
srand($seed * 1000 + $index);
my (@att, @fds, %kids, %did);
sub pick { @_ ? $_[int rand @_] : undef }
sub ids {    # the ids /proc/sysvipc lists in this process's namespace
    open(my $f, '<', "/proc/sysvipc/$_[0]") or return ();
    <$f>;
    map { (split)[1] } <$f>;
}
sub rmid {
    my ($kind, $id) = @_;
    my $ok = $kind eq 'msg' ? msgctl($id, 0, 0)
           : $kind eq 'shm' ? shmctl($id, 0, 0)
           :                  semctl($id, 0, 0, 0);
    $did{rmid}++ if $ok;
}
sub get {
    my $kind = pick('msg', 'shm', 'sem');
    my @ids = ids($kind);
    return rmid($kind, pick(@ids)) if @ids >= 24;    # bounded: /proc/sysvipc stays short
    my $key = rand() < 0.5 ? 0 : pick(@keys);
    my $flags = 0o1600 | (rand() < 0.2 ? 0o2000 : 0);    # IPC_CREAT, sometimes IPC_EXCL
    my $id = $kind eq 'msg' ? msgget($key, $flags)
           : $kind eq 'shm' ? shmget($key, 4096 * (1 + int rand 4), $flags)
           :                  semget($key, 1 + int rand 4, $flags);
    $did{get}++ if defined $id;
}
sub attach {
    my $id = pick(ids('shm')) // return;
    my $addr = syscall(30, $id + 0, 0, 0);    # SYS_shmat
    if ($addr != -1) { push @att, $addr; $did{attach}++ }
}
sub detach {
    return unless @att;
    my $addr = splice(@att, int rand @att, 1);
    $did{detach}++ if syscall(67, $addr) == 0;    # SYS_shmdt
}
sub nap { select(undef, undef, undef, $_[0]) }
sub child_with_attachments {
    my $pid = fork() // return;
    if ($pid) { $kids{$pid} = 1; $did{fork}++; return }
    close $_ for @fds;
    nap(rand 0.05);
    syscall(67, pick(@att)) if @att && rand() < 0.5;
    rmid('shm', pick(ids('shm'))) if rand() < 0.3;
    exit 0;
}
sub child_in_new_namespace {    # clone(CLONE_NEWIPC | SIGCHLD), fork semantics
    my $pid = syscall(56, 0x08000011, 0, 0, 0, 0);
    return if $pid < 0;
    if ($pid) { $kids{$pid} = 1; $did{clone}++; return }
    @att = ();
    get() for 1 .. int rand 4;
    attach() if rand() < 0.5;
    rmid('shm', pick(ids('shm'))) if rand() < 0.5;
    nap(rand 0.02);
    exit 0;
}
sub enter {    # setns(fd, CLONE_NEWIPC)
    $did{setns}++ if syscall(308, $_[0], 0x08000000) == 0;
}
sub enter_holder {
    opendir(my $d, "$dir/holders") or return;
    my $name = pick(grep { /^h/ } readdir $d) // return;
    open(my $f, '<', "$dir/holders/$name") or return;    # unmounted meanwhile
    enter(fileno $f);
    close $f;
}

syscall(272, 0x08000000) == 0 or die "unshare: $!";    # never in the host's namespace
my $test = getppid();
while (!-e "$dir/stop" && getppid() == $test) {    # a killed test leaves no storm behind
    my $r = rand 100;
    if    ($r < 28) { get() }
    elsif ($r < 44) { my $k = pick('msg', 'shm', 'sem'); rmid($k, pick(ids($k))) }
    elsif ($r < 54) { attach() if @att < 4 }
    elsif ($r < 61) { detach() }
    elsif ($r < 68) { child_with_attachments() if keys %kids < 3 }
    elsif ($r < 74) { $did{unshare}++ if syscall(272, 0x08000000) == 0 }
    elsif ($r < 80) { enter_holder() }
    elsif ($r < 83) { enter(fileno pick(@fds)) if @fds }
    elsif ($r < 87) { if (@fds < 3 && open(my $f, '<', '/proc/self/ns/ipc')) { push @fds, $f } }
    elsif ($r < 91) { close(splice(@fds, int rand @fds, 1)) if @fds }
    elsif ($r < 95) { child_in_new_namespace() if keys %kids < 3 }
    else            { nap(0.001) }
    while ((my $pid = waitpid(-1, 1)) > 0) { delete $kids{$pid} }    # WNOHANG
    nap(0.0005) if rand() < 0.5;
}
waitpid($_, 0) for keys %kids;
print join(' ', map { "$_=$did{$_}" } sort keys %did), "\n";
"#;

/// Processes whose process group is `pgid`, with their state letter (`/proc/PID/stat`).
fn group_members(pgid: u32) -> Vec<(u32, char)> {
    let mut members = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2).and_then(|p| p.parse::<u32>().ok()) == Some(pgid) {
            members.push((pid, fields[0].chars().next().unwrap_or('?')));
        }
    }
    members
}

fn signal_group(pgid: u32, signal: libc::c_int) {
    // SAFETY: plain kill(2) on a process group this test made.
    unsafe { libc::kill(-(pgid as i32), signal) };
}

fn ipc_inum(path: &str) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.ino())
}

/// What the kernel lists in the namespace at `path` (`nsenter --ipc=PATH cat /proc/sysvipc/*`),
/// or None if it could not be entered.
fn kernel_view(path: &str) -> Option<View> {
    let output = Command::new("nsenter")
        .arg(format!("--ipc={path}"))
        .args([
            "cat",
            "/proc/sysvipc/msg",
            "/proc/sysvipc/shm",
            "/proc/sysvipc/sem",
        ])
        .output()
        .expect("running nsenter");
    output
        .status
        .success()
        .then(|| parse_sysvipc(&String::from_utf8_lossy(&output.stdout)))
}

/// Differences between the stream and the kernel in the namespaces the kernel showed.
fn differences(stream: &StreamState, views: &BTreeMap<u64, (String, View)>) -> Vec<String> {
    let mut out = Vec::new();
    for (inum, (path, kernel)) in views {
        let lives: Vec<u64> = stream
            .alive
            .iter()
            .filter(|(_, alive_inum)| *alive_inum == inum)
            .map(|(id, _)| *id)
            .collect();
        let [life] = lives[..] else {
            out.push(format!(
                "namespace {inum} (reached by {path}): {} lives alive in the stream",
                lives.len()
            ));
            continue;
        };
        let seen = stream.view_of(life);
        let all: BTreeSet<&(Kind, i64)> = kernel.keys().chain(seen.keys()).collect();
        for object in all {
            let (k, s) = (kernel.get(object), seen.get(object));
            if k != s {
                out.push(format!(
                    "namespace {inum} {} {}: kernel {k:?}, stream {s:?}",
                    object.0.name(),
                    object.1
                ));
            }
        }
    }
    out
}

struct Race {
    seed: u64,
    rng: Rng,
    dir: PathBuf,
    /// Taken to stop it at the end.
    agent: Option<Agent>,
    stream: StreamState,
    workers: Vec<Child>,
    pgid: u32,
    holders: Vec<PathBuf>,
    holders_made: usize,
    /// Every process of the workload that can make a namespace (the workers, the holders'
    /// `unshare`): other processes on the machine may make namespaces too.
    creators: HashSet<u32>,
    snapshots: Vec<Child>,
    second_agent: Option<Child>,
    checkpoints: usize,
    namespaces_compared: usize,
    objects_compared: usize,
    divergences: Vec<String>,
}

impl Drop for Race {
    fn drop(&mut self) {
        if self.pgid != 0 {
            signal_group(self.pgid, libc::SIGKILL);
        }
        for child in self.workers.iter_mut().chain(&mut self.snapshots) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(child) = &mut self.second_agent {
            let _ = child.kill();
            let _ = child.wait();
        }
        for holder in &self.holders {
            let _ = Command::new("umount").arg("-l").arg(holder).output();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Race {
    fn start(seed: u64, workers: u64) -> Race {
        let dir = std::env::temp_dir().join(format!("nsipc-race-{}-{seed}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("holders")).unwrap();
        fs::write(dir.join("racer.pl"), RACER_PL).unwrap();
        let agent = Agent::start(&[]);
        let mut rng = Rng(seed);
        // Keys no other test uses, shared by every worker so that they collide within and
        // across namespaces.
        let base = 0x5E00_0000 | ((rng.next() & 0xfff) << 8) as i64;
        let keys: Vec<String> = (1..=4).map(|i| (base | i).to_string()).collect();
        let mut race = Race {
            seed,
            rng,
            dir,
            agent: Some(agent),
            stream: StreamState::default(),
            workers: Vec::new(),
            pgid: 0,
            holders: Vec::new(),
            holders_made: 0,
            creators: HashSet::new(),
            snapshots: Vec::new(),
            second_agent: None,
            checkpoints: 0,
            namespaces_compared: 0,
            objects_compared: 0,
            divergences: Vec::new(),
        };
        // A second agent, whose startup inventory (setns into every namespace, IPC_STAT of
        // every object) races with the workers.
        race.second_agent = Some(
            trace_command_with(backend_under_test().as_deref())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawning a second agent"),
        );
        for index in 0..workers {
            let mut command = Command::new("perl");
            command
                .arg(race.dir.join("racer.pl"))
                .arg(seed.to_string())
                .arg(index.to_string())
                .arg(&race.dir)
                .args(&keys)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .process_group(race.pgid as i32);
            let child = command.spawn().expect("spawning a racer");
            if race.pgid == 0 {
                race.pgid = child.id();
            }
            race.creators.insert(child.id());
            race.workers.push(child);
        }
        race
    }

    fn diverge(&mut self, what: String) {
        self.divergences.push(what);
    }

    /// Waits for `child` (`what`: the second agent, a snapshot) to exit: anything but success
    /// is a divergence.
    fn wait_for_success(&mut self, what: &str, child: Child) {
        let output = child.wait_with_output().unwrap();
        if !output.status.success() {
            self.diverge(format!(
                "{what} exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }

    /// One move of this test's own, between the workers' moves.
    fn step(&mut self) {
        match self.rng.below(10) {
            0..=3 if self.holders.len() < MAX_HOLDERS => {
                self.holders_made += 1;
                let path = self
                    .dir
                    .join("holders")
                    .join(format!("h{}", self.holders_made));
                fs::write(&path, "").unwrap();
                let mut unshare = Command::new("unshare")
                    .arg(format!("--ipc={}", path.display()))
                    .arg("true")
                    .spawn()
                    .unwrap();
                self.creators.insert(unshare.id());
                assert!(
                    unshare.wait().unwrap().success(),
                    "unshare --ipc={path:?} true"
                );
                self.holders.push(path);
            }
            4..=5 if !self.holders.is_empty() => {
                let path = self.holders.remove(self.rng.below(self.holders.len()));
                // Lazily: a worker may be opening it right now to setns.
                let status = Command::new("umount")
                    .arg("-l")
                    .arg(&path)
                    .status()
                    .unwrap();
                assert!(status.success(), "umount -l {path:?}");
                let _ = fs::remove_file(&path);
            }
            6 => self.snapshots.push(
                Command::new(AGENT)
                    .arg("snapshot")
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawning nsipc-agent snapshot"),
            ),
            _ => {}
        }
        thread::sleep(Duration::from_millis(50 + self.rng.below(200) as u64));
    }

    /// Every namespace a process of the workload or a holder reaches, by inum, with a path to
    /// enter it.
    fn reachable(&self) -> BTreeMap<u64, String> {
        let mut paths = BTreeMap::new();
        for holder in &self.holders {
            let path = holder.display().to_string();
            if let Some(inum) = ipc_inum(&path) {
                paths.entry(inum).or_insert(path);
            }
        }
        if self.pgid != 0 {
            for (pid, state) in group_members(self.pgid) {
                let path = format!("/proc/{pid}/ns/ipc");
                if state != 'Z'
                    && let Some(inum) = ipc_inum(&path)
                {
                    paths.entry(inum).or_insert(path);
                }
            }
        }
        paths
    }

    /// Stops every worker and child (SIGSTOP to the group), compares every reachable namespace
    /// with the stream, and lets them go on.
    fn checkpoint(&mut self, label: &str) {
        self.checkpoints += 1;
        if self.pgid != 0 {
            signal_group(self.pgid, libc::SIGSTOP);
            let deadline = Instant::now() + WAIT;
            while group_members(self.pgid)
                .iter()
                .any(|(_, state)| !matches!(state, 'T' | 'Z' | 'X'))
            {
                assert!(Instant::now() < deadline, "the workers did not stop");
                thread::sleep(Duration::from_millis(10));
            }
        }
        let mut views = BTreeMap::new();
        for (inum, path) in self.reachable() {
            if let Some(view) = kernel_view(&path) {
                views.insert(inum, (path, view));
            }
        }
        let mut found = Vec::new();
        let Race { agent, stream, .. } = self;
        let agent = agent.as_mut().expect("the agent runs");
        let agreed = agent.read_until(WAIT, |events| {
            stream.apply_new(events);
            found = differences(stream, &views);
            found.is_empty()
        });
        if agreed {
            self.namespaces_compared += views.len();
            self.objects_compared += views.values().map(|(_, v)| v.len()).sum::<usize>();
        } else {
            self.diverge(format!(
                "checkpoint {label:?}: after {WAIT:?} the stream still differs from the kernel:\n        {}",
                found.join("\n        ")
            ));
        }
        if self.pgid != 0 {
            signal_group(self.pgid, libc::SIGCONT);
        }
    }

    /// Stops the workers (some by SIGKILL, the others by the stop file) and waits until no
    /// process of theirs is left. Returns what the workers that finished say they did.
    fn stop_workers(&mut self) -> BTreeMap<String, u64> {
        fs::write(self.dir.join("stop"), "").unwrap();
        let mut did = BTreeMap::new();
        for mut child in std::mem::take(&mut self.workers) {
            if self.rng.chance(25) {
                let _ = child.kill();
                *did.entry("killed".to_owned()).or_default() += 1;
            } else {
                let mut line = String::new();
                let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
                for (what, count) in line.split_whitespace().filter_map(|w| w.split_once('=')) {
                    *did.entry(what.to_owned()).or_default() += count.parse::<u64>().unwrap_or(0);
                }
            }
            let status = child.wait().unwrap();
            assert!(
                status.success() || status.code().is_none(),
                "a racer failed: {status}"
            );
        }
        // Orphaned children of killed workers end by themselves within milliseconds.
        let deadline = Instant::now() + WAIT;
        while group_members(self.pgid)
            .iter()
            .any(|(_, state)| !matches!(state, 'Z' | 'X'))
        {
            assert!(
                Instant::now() < deadline,
                "the workers' children did not end"
            );
            thread::sleep(Duration::from_millis(20));
        }
        self.pgid = 0;
        did
    }

    fn run(mut self, secs: u64) -> SeedReport {
        let race_time = Duration::from_secs(secs);
        let started = Instant::now();
        let mut next_checkpoint = 1;
        while started.elapsed() < race_time {
            self.step();
            let due = race_time * next_checkpoint / (MID_RACE_CHECKPOINTS + 1);
            if next_checkpoint <= MID_RACE_CHECKPOINTS && started.elapsed() >= due {
                next_checkpoint += 1;
                self.checkpoint("mid-race");
            }
        }
        self.checkpoint("end of the race");
        let did = self.stop_workers();
        self.checkpoint("workers gone");

        // Let everything go, then every namespace the workload made must be destroyed.
        let second = self.second_agent.take().expect("the second agent runs");
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(second.id() as i32, libc::SIGINT) };
        self.wait_for_success("the second agent", second);
        for snapshot in std::mem::take(&mut self.snapshots) {
            self.wait_for_success("nsipc-agent snapshot", snapshot);
        }
        for holder in std::mem::take(&mut self.holders) {
            let status = Command::new("umount")
                .arg("-l")
                .arg(&holder)
                .status()
                .unwrap();
            assert!(status.success(), "umount -l {holder:?}");
        }
        let creators = std::mem::take(&mut self.creators);
        let made_here = |event: &Value| {
            event["pid"]
                .as_u64()
                .is_some_and(|pid| creators.contains(&(pid as u32)))
        };
        let mut undestroyed = Vec::new();
        let Race { agent, stream, .. } = &mut self;
        let agent = agent.as_mut().expect("the agent runs");
        agent.read_until(WAIT, |events| {
            stream.apply_new(events);
            undestroyed = stream
                .creates
                .iter()
                .filter(|e| made_here(e))
                .filter(|e| ns_key(e).is_some_and(|k| !stream.destroyed.contains(&k)))
                .map(|e| e.to_string())
                .collect();
            undestroyed.is_empty()
        });
        for create in undestroyed {
            self.diverge(format!("everything let go, no ipc_ns.destroy for {create}"));
        }

        let stopped = self
            .agent
            .take()
            .expect("the agent runs")
            .stop(libc::SIGINT);
        self.stream.apply_new(&stopped.events);
        if !stopped.status.success() {
            self.diverge(format!("agent exit {}: {}", stopped.status, stopped.stderr));
        }
        let late = stopped.events.iter().filter(|e| e["late"] == true).count();
        match &self.stream.stop {
            Some(stop)
                if stop["lost"] == 0
                    && stop["decode_errors"] == 0
                    && stop["late_destroys"] == late =>
            {
                if late > 0 {
                    say(&format!(
                        "seed {}: {late} destroys reported late, their kfree unseen",
                        self.seed
                    ));
                }
            }
            other => self.diverge(format!(
                "agent.stop ({late} late destroys in the stream): {other:?}"
            )),
        }
        self.stream.finish();
        for problem in std::mem::take(&mut self.stream.problems) {
            self.diverge(format!("stream: {problem}"));
        }
        let created = self.stream.creates.iter().filter(|e| made_here(e)).count();
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        for ((_, reason), count) in &self.stream.reasons {
            *reasons.entry(reason).or_default() += count;
        }
        let summary = format!(
            "seed {}: workers did {did:?}; {created} namespaces created, destroys {reasons:?} \
             ({late} late, {} ended as another life of their inum appeared), {} lines; {} checkpoints comparing {} namespaces / {} objects; {} missed program \
             runs; {} divergences",
            self.seed,
            self.stream.ended_by_next_life,
            stopped.events.len(),
            self.checkpoints,
            self.namespaces_compared,
            self.objects_compared,
            self.stream.missed,
            self.divergences.len()
        );
        if !self.divergences.is_empty() {
            let file =
                std::env::temp_dir().join(format!("nsipc-race-seed{}-events.jsonl", self.seed));
            let lines: String = stopped.events.iter().map(|e| format!("{e}\n")).collect();
            fs::write(&file, lines).unwrap();
            self.divergences.push(format!(
                "(the agent's whole stream is in {})",
                file.display()
            ));
        }
        SeedReport {
            summary,
            divergences: std::mem::take(&mut self.divergences),
        }
    }
}

struct SeedReport {
    summary: String,
    divergences: Vec<String>,
}

#[test]
fn the_stream_matches_the_kernel_under_concurrent_workloads() {
    require_root();
    let seeds = seeds_from_env("NSIPC_RACE", DEFAULT_SEEDS);
    let workers = env_number("NSIPC_RACE_WORKERS").unwrap_or(DEFAULT_WORKERS);
    let secs = env_number("NSIPC_RACE_SECS").unwrap_or(DEFAULT_SECS);
    let done = run_seeds(&seeds, None, |seed| {
        let report = Race::start(seed, workers).run(secs);
        let mut failure = Vec::new();
        if !report.divergences.is_empty() {
            failure.push(format!(
                "seed {seed} DIVERGED (replay: NSIPC_RACE_SEED={seed}):"
            ));
            failure.extend(report.divergences.iter().map(|d| format!("    {d}")));
        }
        SeedOutcome {
            summary: report.summary,
            failure,
        }
    });
    let failures: Vec<u64> = done.failures.iter().map(|(seed, _)| *seed).collect();
    say(&format!(
        "{} seeds with {workers} workers for {secs} s each, {} diverged{}",
        seeds.len(),
        failures.len(),
        if failures.is_empty() {
            String::new()
        } else {
            format!(": {failures:?}")
        }
    ));
    assert!(failures.is_empty(), "seeds {failures:?} diverged");
}
