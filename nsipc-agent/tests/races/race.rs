//! One seed's race: the workers, the holders, snapshots and a second agent, and the
//! quiescent checkpoints where the stream is compared with the kernel.

use super::{kernel::*, racer::RACER_PL, *};

pub struct Race {
    pub seed: u64,
    pub rng: Rng,
    pub dir: PathBuf,
    /// Taken to stop it at the end.
    pub agent: Option<Agent>,
    pub stream: StreamState,
    pub workers: Vec<Child>,
    pub pgid: u32,
    pub holders: Vec<PathBuf>,
    pub holders_made: usize,
    /// Every process of the workload that can make a namespace (the workers, the holders'
    /// `unshare`): other processes on the machine may make namespaces too.
    pub creators: HashSet<u32>,
    pub snapshots: Vec<Child>,
    pub second_agent: Option<Child>,
    pub checkpoints: usize,
    pub namespaces_compared: usize,
    pub objects_compared: usize,
    pub divergences: Vec<String>,
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
    pub fn start(seed: u64, workers: u64) -> Race {
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

    pub fn diverge(&mut self, what: String) {
        self.divergences.push(what);
    }

    /// Waits for `child` (`what`: the second agent, a snapshot) to exit: anything but success
    /// is a divergence.
    pub fn wait_for_success(&mut self, what: &str, child: Child) {
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
    pub fn step(&mut self) {
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
    pub fn reachable(&self) -> BTreeMap<u64, String> {
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
    pub fn checkpoint(&mut self, label: &str) {
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
    pub fn stop_workers(&mut self) -> BTreeMap<String, u64> {
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

    pub fn run(mut self, secs: u64) -> SeedReport {
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
