//! `trace --metrics-addr`: `/metrics` in the Prometheus exposition format.
//!
//! A plain thread serves HTTP on a std `TcpListener` (no web framework: one route, one
//! scraper at a time). The event loop owns every number: on a scrape the thread asks it for a
//! [`Snapshot`] through a channel, which the loop answers at its next tick (every
//! [`IDLE_POLL`](crate::trace::IDLE_POLL)); if no answer comes within [`SNAPSHOT_WAIT`] (a
//! loop busy with a resynchronisation), the last values are served. Between scrapes the
//! metrics cost the stream one array increment per line: counters are plain integers the loop
//! keeps anyway, and gauges are read from the lifecycle engine only when asked.

mod kinds;
mod render;

use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::mpsc::{self, Receiver, SyncSender},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result};

pub use self::kinds::{LINE_KINDS, LineKind, SELECTABLE_KINDS};
pub use self::render::{CONTENT_TYPE, render};
use crate::lifecycle::ObjectCounts;

/// How long a scrape waits for the event loop's answer before serving the last values.
pub const SNAPSHOT_WAIT: Duration = Duration::from_millis(250);
/// How long a scraper may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request head read.
const MAX_REQUEST_BYTES: u64 = 8 * 1024;

/// What the event loop knows, at one moment, for the metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Every live IPC namespace, by inum.
    pub namespaces: Vec<NamespaceMetrics>,
    /// Lines written, by [`LineKind`] index.
    pub lines: Vec<u64>,
    /// Records lost (as `agent.lost` reports them), by the kind each would have been.
    pub lost: Vec<(&'static str, u64)>,
    pub decode_errors: u64,
    /// `agent.resync` lines by `after`.
    pub resyncs: Vec<(&'static str, u64)>,
    /// Program runs the kernel skipped (as `agent.missed` reports them).
    pub missed: u64,
    /// Successful calls counted by `--activity-interval`, by kind (`msgsnd`, `msgrcv`,
    /// `semop`), as the reports so far said.
    pub activity_calls: Vec<(&'static str, u64)>,
    /// Messages between containers, as the `ipc.flow` lines so far said.
    pub flows: Vec<FlowMetrics>,
}

/// The messages and bytes from the processes of one container (or of none) to another's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowMetrics {
    /// The sender's container: id, and name where the runtime tells one; None outside.
    pub from: Option<(String, Option<String>)>,
    pub to: Option<(String, Option<String>)>,
    pub messages: u64,
    pub bytes: u64,
}

/// One live namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceMetrics {
    pub inum: u32,
    pub objects: ObjectCounts,
    pub shm_bytes: u64,
    /// The container it belongs to: id, and name where the runtime tells one.
    pub container: Option<(String, Option<String>)>,
    /// Its limits on objects by type (msgmni, shmmni, semmni), when the agent read them.
    pub limits: Option<ObjectLimits>,
}

/// A namespace's limits on its objects, by type: `kernel.msgmni`, `kernel.shmmni` and
/// `kernel.sem`'s fourth value, `semmni`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectLimits {
    pub msg: u64,
    pub shm: u64,
    pub sem: u64,
}

/// The event loop's end of the metrics: scrapes waiting for a snapshot.
pub struct Metrics {
    requests: Receiver<SyncSender<Snapshot>>,
    /// Where the endpoint listens (the port chosen when 0 was asked).
    pub addr: SocketAddr,
}

impl Metrics {
    /// Binds `addr` and starts serving it; an address in use or not this host's is an error
    /// now, before the stream starts.
    pub fn serve(addr: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(addr)
            .with_context(|| format!("binding the metrics endpoint --metrics-addr {addr}"))?;
        let addr = listener
            .local_addr()
            .context("reading the metrics endpoint's address")?;
        let (sender, requests) = mpsc::channel();
        thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve(&listener, &sender))
            .context("starting the metrics endpoint's thread")?;
        Ok(Self { requests, addr })
    }

    /// Answers the scrapes waiting, with `snapshot()` taken once for all of them.
    pub fn answer(&self, snapshot: impl FnOnce() -> Snapshot) {
        // Empty, or the thread gone: nothing more waits.
        let waiting: Vec<_> = self.requests.try_iter().collect();
        if waiting.is_empty() {
            return;
        }
        let snapshot = snapshot();
        for reply in waiting {
            // A scrape that gave up waiting has dropped its end.
            let _ = reply.try_send(snapshot.clone());
        }
    }
}

/// The metrics thread: one connection at a time.
fn serve(listener: &TcpListener, requests: &mpsc::Sender<SyncSender<Snapshot>>) {
    let mut last: Option<Snapshot> = None;
    for connection in listener.incoming() {
        let Ok(connection) = connection else {
            continue;
        };
        // An error is a scraper that went away or stalled: nothing to tell it.
        let _ = handle(connection, requests, &mut last);
    }
}

fn handle(
    mut connection: TcpStream,
    requests: &mpsc::Sender<SyncSender<Snapshot>>,
    last: &mut Option<Snapshot>,
) -> io::Result<()> {
    connection.set_read_timeout(Some(READ_TIMEOUT))?;
    connection.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new((&connection).take(MAX_REQUEST_BYTES));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // The rest of the head: headers are not needed.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let response = if is_metrics_request(&request_line) {
        let (reply, answer) = mpsc::sync_channel(1);
        if requests.send(reply).is_ok()
            && let Ok(snapshot) = answer.recv_timeout(SNAPSHOT_WAIT)
        {
            *last = Some(snapshot);
        }
        let body = render(last.as_ref());
        response("200 OK", CONTENT_TYPE, &body)
    } else {
        response(
            "404 Not Found",
            "text/plain; charset=utf-8",
            "Not found: the metrics are at GET /metrics\n",
        )
    };
    connection.write_all(response.as_bytes())?;
    connection.flush()
}

/// `GET /metrics` (with or without a query string), HTTP/1.x.
fn is_metrics_request(request_line: &str) -> bool {
    let mut parts = request_line.split_ascii_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    method == "GET" && path == "/metrics" && version.starts_with("HTTP/1.")
}

fn response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn only_get_metrics_is_served() {
        assert!(is_metrics_request("GET /metrics HTTP/1.1\r\n"));
        assert!(is_metrics_request("GET /metrics?x=1 HTTP/1.0\r\n"));
        assert!(!is_metrics_request("POST /metrics HTTP/1.1\r\n"));
        assert!(!is_metrics_request("GET / HTTP/1.1\r\n"));
        assert!(!is_metrics_request("GET /metricsx HTTP/1.1\r\n"));
        assert!(!is_metrics_request("GET /metrics\r\n"));
        assert!(!is_metrics_request(""));
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn a_scrape_gets_the_loops_snapshot_or_the_last_one() {
        let metrics = Metrics::serve("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = metrics.addr;
        assert_ne!(addr.port(), 0);
        // The address is taken now: a second endpoint on it is refused.
        let err = Metrics::serve(addr).err().unwrap();
        assert!(format!("{err:#}").contains("--metrics-addr"), "{err:#}");

        // The loop answers while the scrape waits.
        let scrape = thread::spawn(move || get(addr, "/metrics"));
        let snapshot = Snapshot {
            decode_errors: 7,
            ..Snapshot::default()
        };
        while !scrape.is_finished() {
            metrics.answer(|| snapshot.clone());
            thread::sleep(Duration::from_millis(5));
        }
        let response = scrape.join().unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")));
        assert!(
            response.contains("\nnsipc_decode_errors_total 7\n"),
            "{response}"
        );

        // A loop that does not answer: the last values, after the wait.
        let started = std::time::Instant::now();
        let response = get(addr, "/metrics");
        assert!(started.elapsed() >= SNAPSHOT_WAIT);
        assert!(
            response.contains("\nnsipc_decode_errors_total 7\n"),
            "{response}"
        );

        let response = get(addr, "/");
        assert!(
            response.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{response}"
        );
    }
}
