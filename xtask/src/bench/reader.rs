//! The pipe reader (`xtask bench-reader`, run from a release build): reads an nsipc-agent
//! stream on stdin to the end and prints what it counted as one JSON line.
//!
//! It does not parse JSON: it looks at the few fields it needs, as cheaply as it can, so that
//! it costs about what any reader that keeps up would.

use std::{
    collections::{BTreeMap, HashSet},
    io::{self, BufRead as _, BufReader, Write as _},
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct ReaderArgs {
    /// Kernel events whose `comm` starts with this are counted as the workload's.
    #[arg(long)]
    pub comm_prefix: String,
    /// Also follow the namespaces the workload creates, counting what dies in them (those
    /// destroys carry no comm), and print the counts whenever they changed and the input has
    /// nothing more buffered, so that the bench sees how far the agent got.
    #[arg(long)]
    pub namespaces: bool,
    /// Count only the workload's raw records (`--raw` lines, which carry `ret`) as its
    /// events, not the lifecycle lines made from them.
    #[arg(long)]
    pub records: bool,
}

#[derive(Default)]
struct Counts {
    lines: u64,
    kernel_events: u64,
    workload_events: u64,
    /// The last `agent.lost` total, or `agent.stop`'s `lost`, whichever is larger.
    lost: u64,
    /// `agent.lost` counts summed per record kind (its `kinds`).
    lost_kinds: BTreeMap<String, u64>,
    stop_events: Option<u64>,
    decode_errors: u64,
    /// With `--namespaces`.
    namespaces: Option<Namespaces>,
    /// With `--records`: only raw records count as the workload's events.
    records_only: bool,
}

/// The workload's namespaces and their objects, as the stream tells their births and deaths.
#[derive(Default)]
struct Namespaces {
    /// Live ones, by (`ns`, `ns_id` or `ns_gen`): the inum alone is reused.
    live: HashSet<(u64, u64)>,
    created: u64,
    destroyed: u64,
    objects_created: u64,
    objects_destroyed: u64,
}

/// The namespace a lifecycle line is about.
fn namespace_of(line: &str) -> Option<(u64, u64)> {
    let life = number_after(line, r#""ns_id":"#).or_else(|| number_after(line, r#""ns_gen":"#));
    Some((number_after(line, r#""ns":"#)?, life?))
}

impl Namespaces {
    fn add(&mut self, event: &str, line: &str, workload: bool) {
        let object = matches!(event.split('.').next(), Some("msg" | "shm" | "sem"));
        match event.split('.').nth(1) {
            Some("create") if workload => {
                if object {
                    self.objects_created += 1;
                } else if let Some(ns) = namespace_of(line) {
                    self.live.insert(ns);
                    self.created += 1;
                }
            }
            Some("destroy") if namespace_of(line).is_some_and(|ns| self.live.contains(&ns)) => {
                if object {
                    self.objects_destroyed += 1;
                } else {
                    self.live
                        .remove(&namespace_of(line).expect("checked above"));
                    self.destroyed += 1;
                }
            }
            _ => {}
        }
    }
}

/// The `"kinds":{"msg.get":3,…}` of an `agent.lost` line, as (kind, count) pairs.
fn lost_kinds(line: &str) -> impl Iterator<Item = (&str, u64)> {
    const KINDS: &str = r#""kinds":{"#;
    let kinds = line
        .find(KINDS)
        .map(|at| &line[at + KINDS.len()..])
        .and_then(|rest| rest.split('}').next())
        .unwrap_or_default();
    kinds.split(',').filter_map(|pair| {
        let (kind, count) = pair.split_once(':')?;
        Some((kind.trim_matches('"'), count.parse().ok()?))
    })
}

/// The number right after `"key":` in `line`.
fn number_after(line: &str, key: &str) -> Option<u64> {
    let at = line.find(key)? + key.len();
    let digits = line[at..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(&line[at..], |end| &line[at..at + end]);
    digits.parse().ok()
}

impl Counts {
    fn add(&mut self, line: &str, comm_prefix: &str) {
        self.lines += 1;
        if let Some(agent) = line.strip_prefix(r#"{"event":"agent."#) {
            if agent.starts_with("lost") {
                self.lost = self
                    .lost
                    .max(number_after(line, r#""total":"#).unwrap_or(0));
                for (kind, count) in lost_kinds(line) {
                    *self.lost_kinds.entry(kind.to_owned()).or_default() += count;
                }
            } else if agent.starts_with("stop") {
                self.stop_events = number_after(line, r#""events":"#);
                self.lost = self.lost.max(number_after(line, r#""lost":"#).unwrap_or(0));
            } else if agent.starts_with("decode_error") {
                self.decode_errors += 1;
            }
            return;
        }
        self.kernel_events += 1;
        const COMM_KEY: &str = r#""comm":""#;
        // A raw `*.freed` record carries whatever task the kfree interrupted, never a
        // workload's syscall.
        let free = line.starts_with(r#"{"event":"shm.freed""#)
            || line.starts_with(r#"{"event":"ipc_ns.freed""#);
        let workload = !free
            && (!self.records_only || line.contains(r#""ret":"#))
            && line
                .find(COMM_KEY)
                .is_some_and(|at| line[at + COMM_KEY.len()..].starts_with(comm_prefix));
        if workload {
            self.workload_events += 1;
        }
        if let Some(namespaces) = &mut self.namespaces
            && let Some(event) = line
                .strip_prefix(r#"{"event":""#)
                .and_then(|rest| rest.split('"').next())
        {
            namespaces.add(event, line, workload);
        }
    }

    fn to_json(&self) -> Value {
        let mut counts = json!({
            "lines": self.lines,
            "kernel_events": self.kernel_events,
            "workload_events": self.workload_events,
            "lost": self.lost,
            "lost_kinds": self.lost_kinds,
            "stop_events": self.stop_events,
            "decode_errors": self.decode_errors,
        });
        if let Some(ns) = &self.namespaces {
            counts["namespaces_created"] = ns.created.into();
            counts["namespaces_destroyed"] = ns.destroyed.into();
            counts["objects_created"] = ns.objects_created.into();
            counts["objects_destroyed"] = ns.objects_destroyed.into();
        }
        counts
    }
}

fn print(counts: &Counts) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{}", counts.to_json())?;
    out.flush().context("writing the counts")
}

pub fn run(args: &ReaderArgs) -> Result<()> {
    let mut input = BufReader::with_capacity(1 << 20, io::stdin().lock());
    let mut line = String::with_capacity(1024);
    let mut counts = Counts {
        namespaces: args.namespaces.then(Namespaces::default),
        records_only: args.records,
        ..Counts::default()
    };
    let mut printed = 0;
    loop {
        // About to wait for more input: show where the stream got to.
        if counts.namespaces.is_some() && input.buffer().is_empty() && counts.lines != printed {
            print(&counts)?;
            printed = counts.lines;
        }
        line.clear();
        if input.read_line(&mut line).context("reading stdin")? == 0 {
            break;
        }
        counts.add(&line, &args.comm_prefix);
    }
    print(&counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_workload_events_and_losses() {
        let stream = [
            r#"{"event":"agent.ready","time":"t","pid":1}"#,
            r#"{"event":"msg.get","time":"t","pid":7,"tid":7,"uid":0,"comm":"nsipc-bench-wl","ns":1}"#,
            r#"{"event":"msg.get","time":"t","pid":8,"tid":8,"uid":0,"comm":"ipcmk","ns":1}"#,
            r#"{"event":"agent.lost","time":"t","count":5,"total":5,"kinds":{"msg.get":4,"shm.freed":1}}"#,
            r#"{"event":"agent.lost","time":"t","count":2,"total":7,"kinds":{"msg.get":2}}"#,
            r#"{"event":"agent.stop","time":"t","reason":"SIGINT","events":2,"lost":7,"decode_errors":0}"#,
        ];
        let mut counts = Counts::default();
        for line in stream {
            counts.add(line, "nsipc-bench");
        }
        assert_eq!(counts.lines, 6);
        assert_eq!(counts.kernel_events, 2);
        assert_eq!(counts.workload_events, 1);
        assert_eq!(counts.lost, 7);
        assert_eq!(
            counts.lost_kinds,
            BTreeMap::from([("msg.get".to_owned(), 6), ("shm.freed".to_owned(), 1)])
        );
        assert_eq!(counts.stop_events, Some(2));
        assert!(counts.to_json().get("objects_created").is_none());
    }

    #[test]
    fn with_records_only_raw_records_are_the_workloads() {
        let stream = [
            r#"{"event":"msg.get","time":"t","pid":7,"tid":7,"uid":0,"comm":"nsipc-bench-wl","ns":1,"key":0,"ret":3}"#,
            r#"{"event":"msg.create","time":"t","pid":7,"tid":7,"uid":0,"comm":"nsipc-bench-wl","ns":1,"id":3,"key":0}"#,
            r#"{"event":"shm.freed","time":"t","pid":7,"tid":7,"uid":0,"comm":"nsipc-bench-wl","ns":1,"id":5,"ret":0}"#,
        ];
        let mut records = Counts {
            records_only: true,
            ..Counts::default()
        };
        let mut lines = Counts::default();
        for line in stream {
            records.add(line, "nsipc-bench");
            lines.add(line, "nsipc-bench");
        }
        assert_eq!(records.workload_events, 1);
        assert_eq!(lines.workload_events, 2, "a free is no workload syscall");
    }

    #[test]
    fn follows_the_workload_namespaces_to_their_deaths() {
        let stream = [
            r#"{"event":"ipc_ns.create","time":"t","pid":7,"tid":7,"uid":0,"comm":"nsipc-bench-wl","ns":10,"ns_id":100,"from_ns":1,"from_ns_id":1,"via":"unshare"}"#,
            r#"{"event":"ipc_ns.create","time":"t","pid":8,"tid":8,"uid":0,"comm":"runc","ns":11,"ns_id":101,"from_ns":1,"from_ns_id":1,"via":"unshare"}"#,
            r#"{"event":"msg.create","time":"t","pid":7,"tid":7,"uid":0,"comm":"nsipc-bench-wl","ns":10,"ns_id":100,"id":0,"key":1}"#,
            r#"{"event":"sem.create","time":"t","pid":8,"tid":8,"uid":0,"comm":"runc","ns":11,"ns_id":101,"id":0,"key":1}"#,
            r#"{"event":"sem.destroy","time":"t","ns":11,"ns_id":101,"id":0,"key":1,"reason":"namespace_teardown"}"#,
            r#"{"event":"ipc_ns.destroy","time":"t","ns":11,"ns_id":101,"reason":"freed"}"#,
            r#"{"event":"msg.destroy","time":"t","ns":10,"ns_id":100,"id":0,"key":1,"reason":"namespace_teardown"}"#,
            // An earlier life of the same inum is not the workload's.
            r#"{"event":"ipc_ns.destroy","time":"t","ns":10,"ns_id":99,"reason":"freed"}"#,
            r#"{"event":"ipc_ns.destroy","time":"t","ns":10,"ns_id":100,"reason":"freed"}"#,
            // Gone: a later destroy naming it again is not counted twice.
            r#"{"event":"ipc_ns.destroy","time":"t","ns":10,"ns_id":100,"reason":"unknown"}"#,
        ];
        let mut counts = Counts {
            namespaces: Some(Namespaces::default()),
            ..Counts::default()
        };
        for line in stream {
            counts.add(line, "nsipc-bench");
        }
        let json = counts.to_json();
        assert_eq!(json["workload_events"], 2);
        assert_eq!(json["namespaces_created"], 1);
        assert_eq!(json["objects_created"], 1);
        assert_eq!(json["objects_destroyed"], 1);
        assert_eq!(json["namespaces_destroyed"], 1);
    }

    #[test]
    fn numbers_end_at_the_first_non_digit() {
        assert_eq!(number_after(r#"{"total":12}"#, r#""total":"#), Some(12));
        assert_eq!(
            number_after(r#"{"total":12,"x":1}"#, r#""total":"#),
            Some(12)
        );
        assert_eq!(number_after(r#"{"x":1}"#, r#""total":"#), None);
    }
}
