//! The text of `/metrics`: a [`Snapshot`] and the process's own numbers, encoded by
//! `prometheus-client` (OpenMetrics text, which Prometheus asks for first).

use std::fmt::Write as _;

use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, EncodeLabelValue, EncodeMetric as _, LabelValueEncoder, text::encode,
    },
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use super::{FlowMetrics, LINE_KINDS, Snapshot};
use crate::names::IpcObject;

/// The `Content-Type` of what [`render`] makes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The exposition: the process's CPU and memory always, the stream's numbers once the event
/// loop has answered a scrape (`None` before: no made-up zeros for gauges).
pub fn render(snapshot: Option<&Snapshot>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition {
        snapshot: snapshot.cloned(),
        process: ProcessStats::read(),
    }));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

/// A label value, escaped as the exposition format says (prometheus-client writes values as
/// given): a container's name comes from its runtime's files.
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

type Labels<'a> = Vec<(&'static str, Escaped<'a>)>;

/// The agent's own CPU time and resident memory, from /proc/self.
#[derive(Debug, Clone, Copy, Default)]
struct ProcessStats {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
}

impl ProcessStats {
    fn read() -> Self {
        Self {
            cpu_seconds: std::fs::read_to_string("/proc/self/stat")
                .ok()
                .and_then(|stat| cpu_seconds(&stat)),
            resident_bytes: std::fs::read_to_string("/proc/self/statm")
                .ok()
                .and_then(|statm| resident_bytes(&statm)),
        }
    }
}

/// utime + stime (fields 14 and 15 of /proc/self/stat, after the parenthesised comm) in
/// seconds.
fn cpu_seconds(stat: &str) -> Option<f64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) as f64 / ticks as f64)
}

/// The resident set (field 2 of /proc/self/statm, in pages) in bytes.
fn resident_bytes(statm: &str) -> Option<u64> {
    let pages: u64 = statm.split_ascii_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (page > 0).then(|| pages * page as u64)
}

#[derive(Debug)]
struct Exposition {
    snapshot: Option<Snapshot>,
    process: ProcessStats,
}

const OBJECT_KINDS: [(IpcObject, &str); 3] = [
    (IpcObject::Msg, "msg"),
    (IpcObject::Shm, "shm"),
    (IpcObject::Sem, "sem"),
];

fn count(counts: &crate::lifecycle::ObjectCounts, object: IpcObject) -> u64 {
    u64::from(match object {
        IpcObject::Msg => counts.msg,
        IpcObject::Shm => counts.shm,
        IpcObject::Sem => counts.sem,
    })
}

/// One metric family with one sample per label set.
fn family<'a, V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (Labels<'a>, V)>,
    kind: MetricType,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<V>: prometheus_client::encoding::EncodeMetric,
    ConstCounter<V>: prometheus_client::encoding::EncodeMetric,
{
    let mut metric = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, value) in samples {
        // No `{}` on a sample without labels.
        if labels.is_empty() {
            return encode_value(kind, value, metric);
        }
        encode_value(kind, value, metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn encode_value<V>(
    kind: MetricType,
    value: V,
    sample: prometheus_client::encoding::MetricEncoder,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<V>: prometheus_client::encoding::EncodeMetric,
    ConstCounter<V>: prometheus_client::encoding::EncodeMetric,
{
    match kind {
        MetricType::Counter => ConstCounter::new(value).encode(sample),
        _ => ConstGauge::new(value).encode(sample),
    }
}

fn gauge<'a, V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (Labels<'a>, V)>,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<V>: prometheus_client::encoding::EncodeMetric,
    ConstCounter<V>: prometheus_client::encoding::EncodeMetric,
{
    family(encoder, name, help, unit, samples, MetricType::Gauge)
}

/// `name` without its `_total`, which the encoder adds.
fn counter<'a, V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (Labels<'a>, V)>,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<V>: prometheus_client::encoding::EncodeMetric,
    ConstCounter<V>: prometheus_client::encoding::EncodeMetric,
{
    family(encoder, name, help, unit, samples, MetricType::Counter)
}

/// The container labels of a flow's sender and receiver.
const FLOW_LABELS: [[&str; 2]; 2] = [
    ["from_container_id", "from_container_name"],
    ["to_container_id", "to_container_name"],
];

/// A flow's labels: its sender's and its receiver's container, empty outside any.
fn flow_labels(flow: &FlowMetrics) -> Labels<'_> {
    let mut labels = Vec::new();
    for (container, [id_label, name_label]) in [&flow.from, &flow.to].into_iter().zip(FLOW_LABELS) {
        let (id, name) = container.as_ref().map_or(("", ""), |(id, name)| {
            (id.as_str(), name.as_deref().unwrap_or(""))
        });
        labels.push((id_label, Escaped(id)));
        labels.push((name_label, Escaped(name)));
    }
    labels
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let encoder = &mut encoder;
        let none = || Labels::new();
        gauge(
            encoder,
            "nsipc_build_info",
            "The agent's version (always 1).",
            None,
            [(vec![("version", Escaped(env!("CARGO_PKG_VERSION")))], 1u64)],
        )?;
        if let Some(cpu) = self.process.cpu_seconds {
            counter(
                encoder,
                "process_cpu",
                "User and system CPU time the agent spent.",
                Some(&Unit::Seconds),
                [(none(), cpu)],
            )?;
        }
        if let Some(resident) = self.process.resident_bytes {
            gauge(
                encoder,
                "process_resident_memory",
                "The agent's resident memory.",
                Some(&Unit::Bytes),
                [(none(), resident)],
            )?;
        }
        let Some(snapshot) = &self.snapshot else {
            return Ok(());
        };
        let namespaces = &snapshot.namespaces;
        gauge(
            encoder,
            "nsipc_ipc_namespaces",
            "Live IPC namespaces.",
            None,
            [(none(), namespaces.len() as u64)],
        )?;
        gauge(
            encoder,
            "nsipc_ipc_objects",
            "Live SysV IPC objects, all namespaces together, by type.",
            None,
            OBJECT_KINDS.iter().map(|&(object, kind)| {
                let total: u64 = namespaces.iter().map(|ns| count(&ns.objects, object)).sum();
                (vec![("kind", Escaped(kind))], total)
            }),
        )?;
        gauge(
            encoder,
            "nsipc_shm_size",
            "Size of the live shm segments, all namespaces together.",
            Some(&Unit::Bytes),
            [(
                none(),
                namespaces
                    .iter()
                    .fold(0u64, |sum, ns| sum.saturating_add(ns.shm_bytes)),
            )],
        )?;
        let inums: Vec<String> = namespaces.iter().map(|ns| ns.inum.to_string()).collect();
        let ns_labels = |i: usize| {
            let mut labels = vec![("ns", Escaped(&inums[i]))];
            if let Some((id, name)) = &namespaces[i].container {
                labels.push(("container_id", Escaped(id)));
                labels.push(("container_name", Escaped(name.as_deref().unwrap_or(""))));
            }
            labels
        };
        gauge(
            encoder,
            "nsipc_namespace_ipc_objects",
            "Live SysV IPC objects in each live IPC namespace, by type.",
            None,
            (0..namespaces.len()).flat_map(|i| {
                OBJECT_KINDS.iter().map(move |&(object, kind)| {
                    let mut labels = ns_labels(i);
                    labels.push(("kind", Escaped(kind)));
                    (labels, count(&namespaces[i].objects, object))
                })
            }),
        )?;
        gauge(
            encoder,
            "nsipc_namespace_ipc_limit",
            "Each live IPC namespace's limit on its objects, by type (kernel.msgmni, \
             kernel.shmmni, kernel.sem's semmni), as last read inside it.",
            None,
            (0..namespaces.len()).flat_map(|i| {
                namespaces[i].limits.into_iter().flat_map(move |limits| {
                    OBJECT_KINDS.iter().map(move |&(object, kind)| {
                        let mut labels = ns_labels(i);
                        labels.push(("kind", Escaped(kind)));
                        let limit = match object {
                            IpcObject::Msg => limits.msg,
                            IpcObject::Shm => limits.shm,
                            IpcObject::Sem => limits.sem,
                        };
                        (labels, limit)
                    })
                })
            }),
        )?;
        gauge(
            encoder,
            "nsipc_namespace_shm_size",
            "Size of the live shm segments of each live IPC namespace.",
            Some(&Unit::Bytes),
            (0..namespaces.len()).map(|i| (ns_labels(i), namespaces[i].shm_bytes)),
        )?;
        counter(
            encoder,
            "nsipc_events",
            "Lines written to the stream, by event kind (`--output none`: that would have been).",
            None,
            LINE_KINDS
                .iter()
                .zip(&snapshot.lines)
                .map(|(kind, &lines)| (vec![("event", Escaped(kind))], lines)),
        )?;
        counter(
            encoder,
            "nsipc_lost_records",
            "Records the probes could not write (ring buffer full), by the kind each would \
             have been, as agent.lost reports them.",
            None,
            snapshot
                .lost
                .iter()
                .map(|&(kind, lost)| (vec![("kind", Escaped(kind))], lost)),
        )?;
        counter(
            encoder,
            "nsipc_decode_errors",
            "Ring-buffer records that could not be decoded (agent.decode_error).",
            None,
            [(none(), snapshot.decode_errors)],
        )?;
        counter(
            encoder,
            "nsipc_resyncs",
            "Resynchronisations with a fresh inventory (agent.resync), by why.",
            None,
            snapshot
                .resyncs
                .iter()
                .map(|&(after, resyncs)| (vec![("after", Escaped(after))], resyncs)),
        )?;
        counter(
            encoder,
            "nsipc_missed_runs",
            "Runs of the probes the kernel skipped (agent.missed).",
            None,
            [(none(), snapshot.missed)],
        )?;
        counter(
            encoder,
            "nsipc_activity_calls",
            "Successful msgsnd, msgrcv and semop/semtimedop calls counted by \
             --activity-interval, by kind, as its reports said.",
            None,
            snapshot
                .activity_calls
                .iter()
                .map(|&(kind, calls)| (vec![("kind", Escaped(kind))], calls)),
        )?;
        counter(
            encoder,
            "nsipc_ipc_flow_messages",
            "Messages received from a SysV queue that a process of one container (or of none: \
             empty labels) had sent to a process of another, as the ipc.flow lines said.",
            None,
            snapshot
                .flows
                .iter()
                .map(|flow| (flow_labels(flow), flow.messages)),
        )?;
        counter(
            encoder,
            "nsipc_ipc_flow",
            "Bytes of those messages, as sent.",
            Some(&Unit::Bytes),
            snapshot
                .flows
                .iter()
                .map(|flow| (flow_labels(flow), flow.bytes)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        lifecycle::ObjectCounts,
        metrics::{NamespaceMetrics, ObjectLimits},
    };

    fn snapshot() -> Snapshot {
        let mut lines = vec![0; LINE_KINDS.len()];
        lines[1] = 3; // ipc_ns.create
        Snapshot {
            namespaces: vec![
                NamespaceMetrics {
                    inum: 4026531839,
                    objects: ObjectCounts {
                        msg: 1,
                        shm: 0,
                        sem: 0,
                    },
                    shm_bytes: 0,
                    container: None,
                    limits: None,
                },
                NamespaceMetrics {
                    inum: 4026532177,
                    objects: ObjectCounts {
                        msg: 2,
                        shm: 1,
                        sem: 3,
                    },
                    shm_bytes: 4096,
                    container: Some(("abc123".into(), Some("we\"ird\\na\nme".into()))),
                    limits: Some(ObjectLimits {
                        msg: 2,
                        shm: 4096,
                        sem: 32000,
                    }),
                },
            ],
            lines,
            lost: vec![("msg.get", 5), ("shm.freed", 0)],
            decode_errors: 2,
            resyncs: vec![("lost", 1), ("kfree_skipped", 0)],
            missed: 4,
            activity_calls: vec![("msgsnd", 7), ("msgrcv", 6), ("semop", 0)],
            flows: vec![
                FlowMetrics {
                    from: Some(("abc123".into(), Some("producer".into()))),
                    to: Some(("def456".into(), None)),
                    messages: 6,
                    bytes: 600,
                },
                FlowMetrics {
                    from: None,
                    to: Some(("def456".into(), None)),
                    messages: 1,
                    bytes: 10,
                },
            ],
        }
    }

    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|line| !line.starts_with('#')).collect()
    }

    #[test]
    fn names_labels_and_values() {
        let text = render(Some(&snapshot()));
        let samples = samples(&text);
        for expected in [
            "nsipc_build_info{version=\"0.1.0\"} 1",
            "nsipc_ipc_namespaces 2",
            "nsipc_ipc_objects{kind=\"msg\"} 3",
            "nsipc_ipc_objects{kind=\"shm\"} 1",
            "nsipc_ipc_objects{kind=\"sem\"} 3",
            "nsipc_shm_size_bytes 4096",
            "nsipc_namespace_ipc_objects{ns=\"4026531839\",kind=\"msg\"} 1",
            "nsipc_namespace_ipc_objects{ns=\"4026531839\",kind=\"sem\"} 0",
            "nsipc_namespace_shm_size_bytes{ns=\"4026531839\"} 0",
            "nsipc_namespace_ipc_limit{ns=\"4026532177\",container_id=\"abc123\",\
             container_name=\"we\\\"ird\\\\na\\nme\",kind=\"msg\"} 2",
            "nsipc_events_total{event=\"ipc_ns.create\"} 3",
            "nsipc_events_total{event=\"agent.stop\"} 0",
            "nsipc_lost_records_total{kind=\"msg.get\"} 5",
            "nsipc_lost_records_total{kind=\"shm.freed\"} 0",
            "nsipc_decode_errors_total 2",
            "nsipc_resyncs_total{after=\"lost\"} 1",
            "nsipc_resyncs_total{after=\"kfree_skipped\"} 0",
            "nsipc_missed_runs_total 4",
            "nsipc_activity_calls_total{kind=\"msgsnd\"} 7",
            "nsipc_activity_calls_total{kind=\"semop\"} 0",
            "nsipc_ipc_flow_messages_total{from_container_id=\"abc123\",\
             from_container_name=\"producer\",to_container_id=\"def456\",\
             to_container_name=\"\"} 6",
            "nsipc_ipc_flow_bytes_total{from_container_id=\"abc123\",\
             from_container_name=\"producer\",to_container_id=\"def456\",\
             to_container_name=\"\"} 600",
            "nsipc_ipc_flow_messages_total{from_container_id=\"\",from_container_name=\"\",\
             to_container_id=\"def456\",to_container_name=\"\"} 1",
        ] {
            assert!(samples.contains(&expected), "{expected} not in\n{text}");
        }
        // Every kind of line has its counter, from 0.
        let events = samples
            .iter()
            .filter(|line| line.starts_with("nsipc_events_total{"))
            .count();
        assert_eq!(events, LINE_KINDS.len());
        // A namespace whose limits were not read has no limit series.
        assert!(
            !samples
                .iter()
                .any(|line| line.starts_with("nsipc_namespace_ipc_limit{ns=\"4026531839\"")),
            "{text}"
        );
        assert!(text.contains("# TYPE nsipc_events counter\n"), "{text}");
        assert!(
            text.contains("# TYPE nsipc_ipc_namespaces gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("# UNIT nsipc_shm_size_bytes bytes\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        // The process's own numbers, from /proc/self.
        let cpu = samples
            .iter()
            .find_map(|line| line.strip_prefix("process_cpu_seconds_total "))
            .unwrap();
        assert!(cpu.parse::<f64>().unwrap() >= 0.0);
        let rss: u64 = samples
            .iter()
            .find_map(|line| line.strip_prefix("process_resident_memory_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(rss > 1 << 20, "{rss}");
    }

    #[test]
    fn label_values_are_escaped() {
        let text = render(Some(&snapshot()));
        let expected = "nsipc_namespace_shm_size_bytes{ns=\"4026532177\",\
                        container_id=\"abc123\",container_name=\"we\\\"ird\\\\na\\nme\"} 4096";
        assert!(
            samples(&text).contains(&expected),
            "{expected} not in\n{text}"
        );
        assert!(
            samples(&text).contains(
                &"nsipc_namespace_ipc_objects{ns=\"4026532177\",container_id=\"abc123\",\
                  container_name=\"we\\\"ird\\\\na\\nme\",kind=\"sem\"} 3"
            ),
            "{text}"
        );
        // One sample per line: the newline in the name did not break one.
        for line in samples(&text) {
            assert!(line.ends_with(|c: char| c.is_ascii_digit()), "{line:?}");
        }
    }

    #[test]
    fn before_the_first_snapshot_only_the_process_is_shown() {
        let text = render(None);
        assert!(text.contains("nsipc_build_info{"), "{text}");
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(!text.contains("nsipc_ipc_namespaces"), "{text}");
        assert!(!text.contains("nsipc_events_total"), "{text}");
    }

    #[test]
    fn proc_self_fields() {
        // A comm with spaces and parentheses; utime 250, stime 50 ticks.
        let stat = "42 (a) b (c) R 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 5 0 0";
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert_eq!(cpu_seconds(stat), Some(300.0 / ticks));
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        assert_eq!(resident_bytes("1000 250 30 1 0 100 0"), Some(250 * page));
        assert_eq!(resident_bytes(""), None);
        assert_eq!(cpu_seconds("garbage"), None);
    }
}
