//! `trace --metrics-addr`, scraped by the real Prometheus (Debian's `prometheus`, installed by
//! `cargo xtask setup`): during a workload in namespaces of this test, the live-object gauges
//! must equal what `/proc/sysvipc` shows inside them, and the line counters what the stream
//! holds. Also `--output none` (metrics, no stream) and a taken address failing the start.

mod support;

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use support::{
    AGENT, Agent, http_get, limits_inside, parse_ns_link, require_root, trace_command, wait_timeout,
};

const PROMETHEUS: &str = "/usr/bin/prometheus";

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A Prometheus server of this test, scraping one target every second.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("nsipc-metrics-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
                 scrape_configs:\n  - job_name: nsipc\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {PROMETHEUS} (cargo xtask setup installs it): {e}")
            });
        let prometheus = Prometheus { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(addr).is_ok() && http_get(addr, "/-/ready").0.contains(" 200 ") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready within 60 s: {}",
                prometheus.log()
            );
            thread::sleep(Duration::from_millis(200));
        }
        prometheus
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// `/api/v1/query` at time `at`: the result vector, as (labels, sample time, value).
    fn query(&self, expr: &str, at: f64) -> Vec<(BTreeMap<String, String>, f64, f64)> {
        let target = format!("/api/v1/query?query={}&time={at:.3}", percent_encode(expr));
        let (status, _, body) = http_get(self.addr, &target);
        assert!(status.contains(" 200 "), "{expr}: {status} {body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["status"], "success", "{body}");
        answer["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|series| {
                let labels = series["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect();
                let time = series["value"][0].as_f64().unwrap();
                let value = series["value"][1].as_str().unwrap().parse().unwrap();
                (labels, time, value)
            })
            .collect()
    }

    /// Waits for a scrape of the agent that began after `after` (Unix seconds); returns its
    /// time. Scrapes that failed count for nothing: `up` must be 1.
    fn scrape_after(&self, after: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = unix_now();
            let scraped = self.query("timestamp(nsipc_build_info)", now);
            let up = self.query("up", now);
            if let (Some((_, _, at)), Some((_, _, 1.0))) = (scraped.first(), up.first())
                && *at > after
            {
                return *at;
            }
            assert!(
                Instant::now() < deadline,
                "no scrape after {after} within 30 s (last: {scraped:?}, up: {up:?}); {}",
                self.log()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A process holding an IPC namespace of its own, made by `unshare --ipc`, after `script` ran
/// in it (`ipcmk`, `ipcrm`).
struct Namespace {
    holder: Child,
    inum: u64,
}

impl Namespace {
    fn with(script: &str) -> Namespace {
        let mut holder = Command::new("unshare")
            .args(["--ipc", "sh", "-c"])
            .arg(format!(
                "set -e; {{ {script}; }} >/dev/null; echo done; exec sleep 600 </dev/null >/dev/null"
            ))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "done", "the workload failed: {script}");
        let link = fs::read_link(format!("/proc/{}/ns/ipc", holder.id())).unwrap();
        let inum = parse_ns_link(&link.to_string_lossy());
        Namespace { holder, inum }
    }

    /// What `/proc/sysvipc/{msg,shm,sem}` shows inside: objects by type, and shm bytes.
    fn proc_sysvipc(&self) -> (BTreeMap<&'static str, f64>, f64) {
        let read = |kind: &str| {
            let output = Command::new("nsenter")
                .args(["-t", &self.holder.id().to_string(), "--ipc"])
                .args(["cat", &format!("/proc/sysvipc/{kind}")])
                .output()
                .unwrap();
            assert!(output.status.success(), "{output:?}");
            String::from_utf8(output.stdout).unwrap()
        };
        let mut counts = BTreeMap::new();
        let mut shm_bytes = 0.0;
        for kind in ["msg", "shm", "sem"] {
            let text = read(kind);
            let mut lines = text.lines();
            let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
            let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
            if kind == "shm" {
                let size = header.iter().position(|c| *c == "size").unwrap();
                shm_bytes = rows.iter().map(|r| r[size].parse::<f64>().unwrap()).sum();
            }
            counts.insert(kind, rows.len() as f64);
        }
        (counts, shm_bytes)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Lines by kind among `lines`.
fn kinds(lines: &[Value]) -> BTreeMap<String, f64> {
    let mut counts = BTreeMap::new();
    for line in lines {
        *counts
            .entry(line["event"].as_str().unwrap().to_owned())
            .or_insert(0.0) += 1.0;
    }
    counts
}

#[test]
fn prometheus_sees_the_kernels_objects_and_the_streams_lines() {
    require_root();
    let mut agent = Agent::start(&["--metrics-addr", "127.0.0.1:0"]);
    let ready = agent
        .events
        .iter()
        .find(|e| e["event"] == "agent.ready")
        .unwrap()
        .clone();
    let addr: SocketAddr = ready["metrics_addr"]
        .as_str()
        .unwrap_or_else(|| panic!("agent.ready has no metrics_addr: {ready}"))
        .parse()
        .unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");

    // The endpoint itself: OpenMetrics at /metrics, nothing elsewhere.
    let (status, head, body) = http_get(addr, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        head.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(body.contains("\nnsipc_ipc_namespaces "), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(http_get(addr, "/").0.contains(" 404 "));
    assert!(http_get(addr, "/metrics/x").0.contains(" 404 "));

    let prometheus = Prometheus::start(addr);

    // The workload, in namespaces of this test, held by a process each once it is done.
    let a = Namespace::with(
        "ipcmk -Q; ipcmk -Q; ipcmk -M 65536; ipcmk -S 3; \
         id=$(ipcmk -Q | awk '{print $NF}'); ipcrm -q $id",
    );
    let b = Namespace::with("ipcmk -M 4096; ipcmk -M 12345; ipcmk -S 1; ipcmk -S 2; ipcmk -Q");
    let c = Namespace::with("id=$(ipcmk -M 8192 | awk '{print $NF}'); ipcrm -m $id");
    let ours = [&a, &b, &c];
    // Inums are reused as soon as freed (by other tests' namespaces too): lines are matched
    // by the kernel's ns_id, which the namespace's creation by its holder tells.
    let ns_id = |agent: &mut Agent, ns: &Namespace| {
        let pid = ns.holder.id();
        let create = agent.wait_for("the workload's ipc_ns.create", |e| {
            e["event"] == "ipc_ns.create" && e["pid"] == pid && e["ns"] == ns.inum
        });
        create["ns_id"].as_u64().expect("this kernel gives ns_id")
    };
    let (a_id, b_id, c_id) = (
        ns_id(&mut agent, &a),
        ns_id(&mut agent, &b),
        ns_id(&mut agent, &c),
    );
    fn lines_of(events: &[Value], ns_id: u64, kind: &str) -> usize {
        events
            .iter()
            .filter(|e| e["ns_id"] == ns_id && e["event"] == kind)
            .count()
    }
    // The agent has seen all of it once the last object's line is in the stream.
    assert!(
        agent.read_until(support::WAIT, |events| {
            lines_of(events, a_id, "msg.destroy") == 1
                && lines_of(events, b_id, "msg.create") == 1
                && lines_of(events, c_id, "shm.destroy") == 1
        }),
        "the workload's lines did not come: {:#?}",
        agent.events
    );
    let workload_seen = unix_now();
    let lines_then = agent.events.len();

    // Gauges: a scrape after the agent saw everything shows what the kernel shows.
    let scraped = prometheus.scrape_after(workload_seen + 0.1);
    for ns in ours {
        let (objects, shm_bytes) = ns.proc_sysvipc();
        let selector = format!("{{ns=\"{}\"}}", ns.inum);
        let gauges: BTreeMap<String, f64> = prometheus
            .query(&format!("nsipc_namespace_ipc_objects{selector}"), scraped)
            .into_iter()
            .map(|(labels, _, value)| (labels["kind"].clone(), value))
            .collect();
        let expected: BTreeMap<String, f64> =
            objects.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        assert_eq!(gauges, expected, "namespace {}", ns.inum);
        let bytes = prometheus.query(
            &format!("nsipc_namespace_shm_size_bytes{selector}"),
            scraped,
        );
        assert_eq!(bytes.len(), 1, "{bytes:?}");
        assert_eq!(bytes[0].2, shm_bytes, "namespace {}", ns.inum);
        // Its limits on objects, read by the agent at its creation, as /proc/sys has them.
        let limits = limits_inside(&format!("-t {} --ipc", ns.holder.id()));
        let gauges: BTreeMap<String, f64> = prometheus
            .query(&format!("nsipc_namespace_ipc_limit{selector}"), scraped)
            .into_iter()
            .map(|(labels, _, value)| (labels["kind"].clone(), value))
            .collect();
        let expected: BTreeMap<String, f64> =
            [("msg", "msgmni"), ("shm", "shmmni"), ("sem", "semmni")]
                .into_iter()
                .map(|(kind, name)| (kind.to_owned(), limits[name].as_f64().unwrap()))
                .collect();
        assert_eq!(gauges, expected, "namespace {}", ns.inum);
    }
    // What the test made, beside what the kernel shows: not a vacuous comparison.
    assert_eq!(
        a.proc_sysvipc(),
        (
            BTreeMap::from([("msg", 2.0), ("shm", 1.0), ("sem", 1.0)]),
            65536.0
        )
    );
    assert_eq!(b.proc_sysvipc().1, 4096.0 + 12345.0);
    assert_eq!(c.proc_sysvipc().0.values().sum::<f64>(), 0.0);
    // The totals count at least the test's namespaces and objects.
    let live = prometheus.query("nsipc_ipc_namespaces", scraped);
    assert!(live[0].2 >= 4.0, "{live:?}");
    let shm_total = prometheus.query("nsipc_shm_size_bytes", scraped);
    assert!(
        shm_total[0].2 >= 65536.0 + 4096.0 + 12345.0,
        "{shm_total:?}"
    );

    // Counters: one scrape's counts are those of the stream's first lines, as many as it
    // counted (other tests may be making lines meanwhile: a prefix is exact nonetheless).
    let counters = prometheus.query("nsipc_events_total", scraped);
    let times = prometheus.query("timestamp(nsipc_events_total)", scraped);
    assert!(
        times.iter().all(|(_, _, at)| *at == times[0].2),
        "one scrape: {times:?}"
    );
    let counted: BTreeMap<String, f64> = counters
        .iter()
        .map(|(labels, _, value)| (labels["event"].clone(), *value))
        .filter(|(_, value)| *value > 0.0)
        .collect();
    let total = counted.values().sum::<f64>() as usize;
    assert!(
        total >= lines_then,
        "the scrape after the workload counted {total} lines, the stream had {lines_then} \
         already"
    );
    assert!(
        agent.read_until(support::WAIT, |events| events.len() >= total),
        "the stream has fewer lines than counted: {} < {total}",
        agent.events.len()
    );
    assert_eq!(kinds(&agent.events[..total]), counted);
    assert!(
        counted["msg.create"] >= 4.0 && counted["agent.ready"] == 1.0,
        "{counted:?}"
    );

    // The other counters are there, at what the stream reported.
    for name in [
        "nsipc_lost_records_total",
        "nsipc_decode_errors_total",
        "nsipc_resyncs_total",
        "nsipc_missed_runs_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(!prometheus.query(name, scraped).is_empty(), "no {name}");
    }
    let lost: f64 = prometheus
        .query("sum(nsipc_lost_records_total)", scraped)
        .first()
        .map_or(0.0, |s| s.2);
    let reported_lost = agent.events[..total]
        .iter()
        .filter(|e| e["event"] == "agent.lost")
        .map(|e| e["count"].as_f64().unwrap())
        .sum::<f64>();
    assert_eq!(lost, reported_lost);
    let rss = prometheus.query("process_resident_memory_bytes", scraped);
    assert!(rss[0].2 > 1e6, "{rss:?}");

    let stopped = agent.stop(libc::SIGINT);
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

#[test]
fn output_none_writes_no_stream_and_serves_metrics() {
    require_root();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = trace_command()
        .args(["--output", "none", "--metrics-addr", &addr.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Ready once the loop answers: the stream's gauges are there.
    let deadline = Instant::now() + support::READY_WAIT;
    let body = loop {
        if let Ok(mut stream) = TcpStream::connect(addr) {
            write!(stream, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            if response.contains("\nnsipc_ipc_namespaces ") {
                break response;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no metrics within {:?}",
            support::READY_WAIT
        );
        thread::sleep(Duration::from_millis(200));
    };
    let value = |body: &str, sample: &str| -> f64 {
        body.lines()
            .find_map(|line| line.strip_prefix(sample))
            .unwrap_or_else(|| panic!("no {sample} in {body}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value(&body, "nsipc_events_total{event=\"agent.ready\"} "),
        1.0
    );
    // A namespace made now shows, with its queue.
    let ns = Namespace::with("ipcmk -Q");
    let sample = format!(
        "nsipc_namespace_ipc_objects{{ns=\"{}\",kind=\"msg\"}} ",
        ns.inum
    );
    let deadline = Instant::now() + support::WAIT;
    loop {
        let (_, _, body) = http_get(addr, "/metrics");
        if body.contains(&sample) {
            assert_eq!(value(&body, &sample), 1.0, "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "no {sample}in {body}");
        thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_timeout(&mut child, support::READY_WAIT).expect("the agent stops");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stdout, "", "--output none writes nothing");
}

#[test]
fn a_taken_address_fails_the_start_before_the_stream() {
    require_root();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let output = Command::new(AGENT)
        .args(["trace", "--metrics-addr", &addr.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("--metrics-addr {addr}")) && stderr.contains("in use"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "no agent.ready, no line at all");

    // Without --metrics-addr, --output none is a usage error (clap's exit code 2).
    let output = Command::new(AGENT)
        .args(["trace", "--output", "none"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--metrics-addr"));
}
