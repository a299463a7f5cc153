//! The differential test's workload: what it holds (namespaces, workers, fds, objects), so it
//! knows what it let go, and its run, from the first operation to the checks at the end of the
//! stream. Its operations are in `ops.rs`, its comparisons with the kernel in `checkpoint.rs`.

#[path = "checkpoint.rs"]
mod checkpoint;
#[path = "ops.rs"]
mod ops;

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    path::PathBuf,
    process::Command,
    time::Instant,
};

use crate::{
    support::{model::*, *},
    worker::{Attachment, WORKER_PL, Worker, umount, wait_exited},
};

const CHECKPOINT_EVERY: usize = 25;

struct Namespace {
    name: String,
    inum: u64,
    how: &'static str,
    /// The pid in its `ipc_ns.create` (`pid`, or `child_pid` for a clone).
    creator_pid: u32,
    /// Its identity in the stream, once found.
    stream_id: Option<u64>,
    mount: Option<PathBuf>,
    /// The operation after which nothing of the workload held it any more.
    released_at: Option<usize>,
    rmid_forced: bool,
}

/// What the workload believes exists, to pick targets; the kernel is the reference.
#[derive(Clone, Copy, Debug)]
struct Object {
    ns: usize,
    kind: Kind,
    id: i64,
    /// IPC_PRIVATE once removed while attached, as the kernel does.
    key: i64,
    created_key: i64,
    removed: bool,
}

#[derive(Default)]
struct Stats {
    ops: usize,
    checkpoints: usize,
    namespaces_compared: usize,
    objects_compared: usize,
    verified_gets: usize,
    key_lives_in_checked: usize,
    key_lives_in_skipped: usize,
}

pub struct Workload {
    seed: u64,
    rng: Rng,
    dir: PathBuf,
    script: PathBuf,
    /// Taken to stop it at the end.
    agent: Option<Agent>,
    stream: StreamState,
    /// Index 0 is the host's namespace: never created, released or compared here.
    namespaces: Vec<Namespace>,
    keeper: Worker,
    workers: Vec<Worker>,
    fds: Vec<(usize, i64)>,
    objects: Vec<Object>,
    keys: Vec<i64>,
    names: usize,
    op: usize,
    log: Vec<String>,
    divergences: Vec<String>,
    stats: Stats,
}

impl Drop for Workload {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            worker.kill();
        }
        self.keeper.kill();
        for ns in &self.namespaces {
            if let Some(mount) = &ns.mount {
                let _ = Command::new("umount").arg(mount).output();
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Workload {
    pub fn new(seed: u64) -> Workload {
        let dir = std::env::temp_dir().join(format!("nsipc-diff-{}-{seed}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let script = dir.join("worker.pl");
        fs::write(&script, WORKER_PL).unwrap();
        let agent = Agent::start(&[]);
        let mut keeper_command = Command::new("perl");
        keeper_command.arg(&script);
        let (keeper, inum) = Worker::spawn("keeper".into(), keeper_command);
        let mut rng = Rng(seed);
        // Keys no other test uses (above unique_key's range), a few so that they collide
        // across namespaces.
        let base = 0x5D00_0000 | ((rng.next() & 0xfff) << 8) as i64;
        let keys = (1..=4).map(|i| base | i).collect();
        Workload {
            seed,
            rng,
            dir,
            script,
            agent: Some(agent),
            stream: StreamState::default(),
            namespaces: vec![Namespace {
                name: "host".into(),
                inum,
                how: "host",
                creator_pid: 0,
                stream_id: None,
                mount: None,
                released_at: None,
                rmid_forced: false,
            }],
            keeper,
            workers: Vec::new(),
            fds: Vec::new(),
            objects: Vec::new(),
            keys,
            names: 0,
            op: 0,
            log: Vec::new(),
            divergences: Vec::new(),
            stats: Stats::default(),
        }
    }

    fn agent(&mut self) -> &mut Agent {
        self.agent.as_mut().expect("the agent runs")
    }

    fn name(&mut self, prefix: &str) -> String {
        self.names += 1;
        format!("{prefix}{}", self.names)
    }

    fn diverge(&mut self, what: String) {
        self.log.push(format!("      DIVERGENCE: {what}"));
        self.divergences
            .push(format!("after op #{}: {what}", self.op));
    }

    fn ns_name(&self, ns: usize) -> String {
        let n = &self.namespaces[ns];
        format!("{}[{}]", n.name, n.inum)
    }

    fn worker_label(&self, wi: usize) -> String {
        let w = &self.workers[wi];
        format!("{}(pid {}, in {})", w.name, w.pid, self.ns_name(w.ns))
    }

    // --- What holds a namespace -------------------------------------------------------------

    fn all_attachments(&self) -> impl Iterator<Item = &Attachment> {
        self.workers.iter().flat_map(|w| {
            w.attachments
                .iter()
                .chain(w.kids.iter().flat_map(|k| k.attachments.iter()))
        })
    }

    fn held(&self, ns: usize) -> bool {
        ns == 0
            || self
                .workers
                .iter()
                .any(|w| w.ns == ns || w.kids.iter().any(|k| k.ns == ns))
            || self.all_attachments().any(|a| a.ns == ns)
            || self.namespaces[ns].mount.is_some()
            || self.fds.iter().any(|(fd_ns, _)| *fd_ns == ns)
    }

    /// A path that opens namespace `ns`, if the workload has one.
    fn path_of(&self, ns: usize) -> Option<String> {
        if ns == 0 {
            return Some(format!("/proc/{}/ns/ipc", self.keeper.pid));
        }
        if let Some(w) = self.workers.iter().find(|w| w.ns == ns) {
            return Some(format!("/proc/{}/ns/ipc", w.pid));
        }
        if let Some(kid) = self
            .workers
            .iter()
            .flat_map(|w| w.kids.iter())
            .find(|k| k.ns == ns)
        {
            return Some(format!("/proc/{}/ns/ipc", kid.pid));
        }
        if let Some(mount) = &self.namespaces[ns].mount {
            return Some(mount.display().to_string());
        }
        self.fds
            .iter()
            .find(|(fd_ns, _)| *fd_ns == ns)
            .map(|(_, fd)| format!("/proc/{}/fd/{fd}", self.keeper.pid))
    }

    fn live(&self) -> Vec<usize> {
        (1..self.namespaces.len())
            .filter(|&ns| self.namespaces[ns].released_at.is_none())
            .collect()
    }

    fn reachable(&self) -> Vec<usize> {
        self.live()
            .into_iter()
            .filter(|&ns| self.path_of(ns).is_some())
            .collect()
    }

    /// Marks what nothing holds any more as released: the stream must destroy it.
    fn note_releases(&mut self) {
        for ns in 1..self.namespaces.len() {
            if self.namespaces[ns].released_at.is_none() && !self.held(ns) {
                self.namespaces[ns].released_at = Some(self.op);
                self.objects.retain(|o| o.ns != ns);
                let name = self.ns_name(ns);
                self.log.push(format!("      {name} released"));
            }
        }
        // A removed segment dies at its last detach.
        let attached: HashSet<(usize, i64)> =
            self.all_attachments().map(|a| (a.ns, a.id)).collect();
        self.objects
            .retain(|o| !o.removed || attached.contains(&(o.ns, o.id)));
    }

    fn new_namespace(
        &mut self,
        inum: u64,
        how: &'static str,
        creator_pid: u32,
        mount: Option<PathBuf>,
    ) -> usize {
        if let Some(clash) = self
            .live()
            .into_iter()
            .find(|&ns| self.namespaces[ns].inum == inum)
        {
            let name = self.ns_name(clash);
            self.diverge(format!(
                "a new namespace got inum {inum}, which {name} (held by the workload) still has"
            ));
        }
        let name = self.name("n");
        self.namespaces.push(Namespace {
            name,
            inum,
            how,
            creator_pid,
            stream_id: None,
            mount,
            released_at: None,
            rmid_forced: false,
        });
        self.namespaces.len() - 1
    }

    /// Notes an object a get returned, unless already noted (the get opened it).
    fn note_object(&mut self, ns: usize, kind: Kind, id: i64, key: i64) {
        if !self
            .objects
            .iter()
            .any(|o| o.ns == ns && o.kind == kind && o.id == id)
        {
            self.objects.push(Object {
                ns,
                kind,
                id,
                key,
                created_key: key,
                removed: false,
            });
        }
    }

    fn removed_by_rmid(&mut self, ns: usize, kind: Kind, id: i64) {
        let attached =
            kind == Kind::Shm && self.all_attachments().any(|a| a.ns == ns && a.id == id);
        if attached {
            for o in &mut self.objects {
                if o.ns == ns && o.kind == kind && o.id == id {
                    o.removed = true;
                    o.key = 0;
                }
            }
        } else {
            self.objects
                .retain(|o| !(o.ns == ns && o.kind == kind && o.id == id));
        }
    }

    fn spawn_worker(&mut self, command: Command) -> (usize, u64) {
        let name = self.name("w");
        let (worker, inum) = Worker::spawn(name, command);
        self.workers.push(worker);
        (self.workers.len() - 1, inum)
    }

    fn pick_worker(&mut self, filter: impl Fn(&Worker) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.workers.len())
            .filter(|&i| filter(&self.workers[i]))
            .collect();
        self.rng.pick(&candidates)
    }

    fn pick_object(&mut self, filter: impl Fn(&Object) -> bool) -> Option<Object> {
        let candidates: Vec<Object> = self.objects.iter().copied().filter(|o| filter(o)).collect();
        self.rng.pick(&candidates)
    }

    fn finish_worker(&mut self, wi: usize, kill: bool) -> String {
        let label = self.worker_label(wi);
        let mut worker = self.workers.remove(wi);
        let kids: Vec<u32> = worker.kids.iter().map(|k| k.pid).collect();
        if kill {
            worker.kill();
            // Its children see their pipe close and exit on their own.
            for pid in &kids {
                assert!(
                    wait_exited(*pid),
                    "child {pid} of killed {label} did not exit"
                );
            }
            format!("kill -9 {label} (children {kids:?})")
        } else {
            worker.call("exit").expect("exit");
            worker.child.wait().expect("waiting for a worker");
            format!("{label} exits (children {kids:?} first)")
        }
    }

    fn release_everything(&mut self) {
        while let Some((ns, fd)) = self.fds.pop() {
            self.keeper.call(&format!("close {fd}")).expect("close");
            self.log.push(format!(
                "#end keeper closes fd {fd} of {}",
                self.ns_name(ns)
            ));
        }
        while !self.workers.is_empty() {
            let kill = self.rng.chance(30);
            let text = self.finish_worker(0, kill);
            self.log.push(format!("#end {text}"));
        }
        for ns in 1..self.namespaces.len() {
            if let Some(path) = self.namespaces[ns].mount.take() {
                let how = umount(&path);
                self.log.push(format!(
                    "#end {how} {} ({})",
                    path.display(),
                    self.ns_name(ns)
                ));
            }
        }
        self.note_releases();
    }

    /// Runs up to `ops` operations (fewer once `deadline` passes), then releases everything and
    /// checks the end of the stream.
    pub fn run(mut self, ops: usize, deadline: Instant) -> SeedReport {
        while self.op < ops && self.divergences.is_empty() && Instant::now() < deadline {
            self.op += 1;
            self.step();
            self.stats.ops += 1;
            if self.op.is_multiple_of(CHECKPOINT_EVERY) {
                self.checkpoint("periodic");
            }
        }
        self.checkpoint("end of the workload");
        self.release_everything();
        self.checkpoint("everything released");
        for n in &self.namespaces[1..] {
            assert!(n.released_at.is_some(), "{} still held", n.name);
        }
        self.keeper.call("exit").expect("keeper exit");
        let _ = self.keeper.child.wait();

        let stopped = self
            .agent
            .take()
            .expect("the agent runs")
            .stop(libc::SIGINT);
        self.stream.apply_new(&stopped.events);
        let events_file =
            std::env::temp_dir().join(format!("nsipc-diff-seed{}-events.jsonl", self.seed));
        if !stopped.status.success() {
            self.diverge(format!("agent exit {}: {}", stopped.status, stopped.stderr));
        }
        match &self.stream.stop {
            Some(stop) if stop["lost"] == 0 && stop["decode_errors"] == 0 => {}
            other => self.diverge(format!("agent.stop: {other:?}")),
        }
        // Only the workload's namespaces are all gone by now; others may be mid-teardown.
        let mine: HashSet<u64> = self.namespaces.iter().filter_map(|n| n.stream_id).collect();
        for (ns, count) in std::mem::take(&mut self.stream.teardown) {
            if !mine.contains(&ns) {
                continue;
            }
            self.diverge(format!(
                "{count} namespace_teardown destroys of namespace {ns}, which was never destroyed"
            ));
        }
        // rmid_forced is only possible where the workload set kernel.shm_rmid_forced.
        let forced = std::mem::take(&mut self.stream.forced);
        for (stream_id, id) in forced {
            if let Some(n) = self
                .namespaces
                .iter()
                .find(|n| n.stream_id == Some(stream_id))
                && !n.rmid_forced
            {
                let name = n.name.clone();
                self.diverge(format!(
                    "segment {id} of {name}: rmid_forced, but shm_rmid_forced is 0 there"
                ));
            }
        }
        self.stream.finish();
        for problem in std::mem::take(&mut self.stream.problems) {
            self.diverge(format!("stream: {problem}"));
        }
        if !self.divergences.is_empty() {
            let lines: String = stopped.events.iter().map(|e| format!("{e}\n")).collect();
            fs::write(&events_file, lines).unwrap();
            self.log.push(format!(
                "(the agent's whole stream is in {})",
                events_file.display()
            ));
        }
        let created = self.namespaces.len() - 1;
        let how: BTreeMap<&str, usize> =
            self.namespaces[1..]
                .iter()
                .fold(BTreeMap::new(), |mut m, n| {
                    *m.entry(n.how).or_default() += 1;
                    m
                });
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        for ((ns, reason), count) in &self.stream.reasons {
            if mine.contains(ns) {
                *reasons.entry(reason).or_default() += count;
            }
        }
        let summary = format!(
            "seed {}: {} operations, {created} namespaces ({how:?}), destroys {reasons:?}, {} checkpoints comparing {} namespaces / {} objects, {} verified gets ({} key_lives_in checked, {} skipped), {} missed program runs, {} divergences",
            self.seed,
            self.stats.ops,
            self.stats.checkpoints,
            self.stats.namespaces_compared,
            self.stats.objects_compared,
            self.stats.verified_gets,
            self.stats.key_lives_in_checked,
            self.stats.key_lives_in_skipped,
            self.stream.missed,
            self.divergences.len()
        );
        SeedReport {
            summary,
            ops: self.stats.ops,
            divergences: std::mem::take(&mut self.divergences),
            log: std::mem::take(&mut self.log),
        }
    }
}

pub struct SeedReport {
    pub summary: String,
    pub ops: usize,
    pub divergences: Vec<String>,
    pub log: Vec<String>,
}
