//! The pipe reader (`xtask bench-reader`, run from a release build): reads an nsipc-agent
//! stream on stdin to the end and prints what it counted as one JSON line.
//!
//! It does not parse JSON: it looks at the few fields it needs, as cheaply as it can, so that
//! it costs about what any reader that keeps up would.

use std::io::{self, BufRead as _, BufReader};

use anyhow::{Context as _, Result};
use serde_json::json;

#[derive(clap::Args)]
pub struct ReaderArgs {
    /// Kernel events whose `comm` starts with this are counted as the workload's.
    #[arg(long)]
    pub comm_prefix: String,
}

#[derive(Default)]
struct Counts {
    lines: u64,
    kernel_events: u64,
    workload_events: u64,
    /// The last `agent.lost` total, or `agent.stop`'s `lost`, whichever is larger.
    lost: u64,
    stop_events: Option<u64>,
    decode_errors: u64,
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
        if let Some(at) = line.find(COMM_KEY)
            && line[at + COMM_KEY.len()..].starts_with(comm_prefix)
        {
            self.workload_events += 1;
        }
    }
}

pub fn run(args: &ReaderArgs) -> Result<()> {
    let mut input = BufReader::with_capacity(1 << 20, io::stdin().lock());
    let mut line = String::with_capacity(1024);
    let mut counts = Counts::default();
    loop {
        line.clear();
        if input.read_line(&mut line).context("reading stdin")? == 0 {
            break;
        }
        counts.add(&line, &args.comm_prefix);
    }
    println!(
        "{}",
        json!({
            "lines": counts.lines,
            "kernel_events": counts.kernel_events,
            "workload_events": counts.workload_events,
            "lost": counts.lost,
            "stop_events": counts.stop_events,
            "decode_errors": counts.decode_errors,
        })
    );
    Ok(())
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
            r#"{"event":"agent.lost","time":"t","count":5,"total":5}"#,
            r#"{"event":"agent.lost","time":"t","count":2,"total":7}"#,
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
        assert_eq!(counts.stop_events, Some(2));
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
