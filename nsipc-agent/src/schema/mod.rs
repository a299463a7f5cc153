//! docs/events.schema.json: the JSON Schema of every line `trace` and `snapshot` write,
//! generated from the agent's own writers (`cargo xtask schema`), never written by hand.
//!
//! The stream is written by several mechanisms (serde derive, hand `Serialize`, the hot
//! path's `Line` writer), so the schema is not derived from types: [`samples`] runs every
//! line-writing path over samples of every event kind, and [`infer`] reads the lines back and
//! infers, per kind, the properties, their types, which are required, and the closed sets of
//! values. The tests here keep the checked-in file equal to what the code writes, and
//! docs/events.md and the schema in agreement.

pub mod common;
mod docs;
mod infer;
mod samples;

use std::path::PathBuf;

use serde_json::Value;

/// Where the schema is checked in.
pub fn schema_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/events.schema.json"
    ))
}

/// The schema of the lines the agent writes now, as the checked-in file has it.
pub fn generate() -> Value {
    let mut inference = infer::Inference::default();
    for line in samples::lines() {
        inference.add_line(&line);
    }
    inference.schema(
        "nsipc-agent event line",
        "One line of the JSON Lines stream of `nsipc-agent trace` and `nsipc-agent snapshot` \
         (docs/events.md documents each kind and field). Generated from the agent's code by \
         `cargo xtask schema`: do not edit.",
    )
}

/// The schema as text, as it is checked in.
pub fn generate_text() -> String {
    let mut text = serde_json::to_string_pretty(&generate()).expect("a schema serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;
    use crate::filter::EVENT_NAMES;

    /// With `NSIPC_WRITE_SCHEMA=1` (what `cargo xtask schema` sets) it writes the file; else it
    /// fails when the file is not what the code writes.
    #[test]
    fn the_checked_in_schema_is_what_the_code_writes() {
        let text = generate_text();
        let path = schema_path();
        if std::env::var_os("NSIPC_WRITE_SCHEMA").is_some() {
            std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            eprintln!("wrote {}", path.display());
            return;
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == text,
            "docs/events.schema.json is not the schema of the lines the agent writes now: run \
             `cargo xtask schema` and commit the file"
        );
    }

    pub(super) fn kinds(schema: &Value) -> BTreeSet<String> {
        schema["oneOf"]
            .as_array()
            .expect("oneOf")
            .iter()
            .map(|branch| branch["title"].as_str().expect("a title").to_owned())
            .collect()
    }

    #[test]
    fn every_kind_is_in_the_schema() {
        let kinds = kinds(&generate());
        for name in EVENT_NAMES {
            assert!(kinds.contains(*name), "{name} has no sample");
        }
        for name in [
            "ipc_ns.exists",
            "msg.exists",
            "shm.exists",
            "sem.exists",
            "mqueue.exists",
            "agent.ready",
            "agent.lost",
            "agent.missed",
            "agent.resync",
            "agent.kfree_check",
            "agent.decode_error",
            "agent.stop",
        ] {
            assert!(kinds.contains(name), "{name} has no sample");
        }
        assert_eq!(kinds.len(), EVENT_NAMES.len() + 12, "{kinds:?}");
    }

    /// One name selects one kind of line: no event name is written by two writers (the raw
    /// records', the lifecycle engine's, the inventory's, the agent's own), whose lines would
    /// differ in shape under one name, as `--raw`'s `shm.attach` did (the raw and the
    /// lifecycle attach, two lines per `shmat`) and a resynchronisation's `ipc_ns.exists` did
    /// (no `processes`, no `held_by`).
    #[test]
    fn each_event_name_has_one_writer() {
        let mut writers: std::collections::BTreeMap<String, BTreeSet<&str>> =
            std::collections::BTreeMap::new();
        for (writer, lines) in samples::lines_by_writer() {
            for line in lines {
                let value: Value = serde_json::from_str(&line).unwrap();
                let name = value["event"].as_str().expect("an event name").to_owned();
                writers.entry(name).or_default().insert(writer);
            }
        }
        let shared: Vec<_> = writers
            .iter()
            .filter(|(_, writers)| writers.len() > 1)
            .collect();
        assert!(
            shared.is_empty(),
            "event names written by several writers: {shared:?}"
        );
        assert_eq!(writers.len(), every_kind().len());
    }

    /// Every kind of line: what `trace` writes (and its metrics count), and what only
    /// `snapshot` writes (`trace` does not follow POSIX queues yet).
    fn every_kind() -> BTreeSet<String> {
        crate::metrics::LINE_KINDS
            .iter()
            .chain(&["mqueue.exists"])
            .map(|k| k.to_string())
            .collect()
    }

    /// docs/events.md's common fields on every line of every kind, as each writer writes it:
    /// `event` and `time` on each, a task's fields together, `host_ipc` with `container`, a
    /// namespace's identity with its inum (and only one of `ns_id` and `ns_gen`), `key_hex`
    /// with `key`, `mode_octal` with `mode`, `ret` (and `errno` on failure) on the raw
    /// syscall events. The schema requires them as well.
    #[test]
    fn every_line_of_every_kind_has_the_common_fields() {
        let mut kinds = BTreeSet::new();
        let mut raw_kinds = BTreeSet::new();
        for (writer, lines) in samples::lines_by_writer() {
            for line in lines {
                let value: Value = serde_json::from_str(&line).unwrap();
                let problems = common::missing(&value);
                assert!(problems.is_empty(), "{writer}: {problems:?}: {line}");
                let name = value["event"].as_str().unwrap().to_owned();
                if writer == "raw" && value.get("ret").is_some() {
                    raw_kinds.insert(name.clone());
                }
                kinds.insert(name);
            }
        }
        // Every kind was checked, and the syscall events are the raw kinds with `ret`.
        assert_eq!(kinds, every_kind());
        let syscalls: BTreeSet<String> = common::SYSCALL_EVENTS
            .iter()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(raw_kinds, syscalls);
        // The schema requires them: `event` and `time` on every kind, the others together.
        let schema = generate();
        for branch in schema["oneOf"].as_array().unwrap() {
            let required = branch["required"].as_array().unwrap();
            for field in common::EVERY_LINE {
                assert!(
                    required.iter().any(|r| r == field),
                    "{}: {field} not required",
                    branch["title"]
                );
            }
        }
        let validator = validator();
        let shmat = json!({"event": "shm.shmat", "time": "2026-12-06T20:00:00.123456789Z",
                           "pid": 7, "tid": 7, "uid": 0, "comm": "x", "ns": 1, "id": 3,
                           "flags": 0, "requested_addr": 0, "addr": 4096, "ret": 4096});
        assert!(
            validator.is_valid(&shmat),
            "{:?}",
            validator.validate(&shmat)
        );
        let destroy = json!({"event": "msg.destroy", "time": "2026-12-06T20:00:00.123456789Z",
                             "pid": 7, "tid": 7, "uid": 0, "comm": "x", "ns": 1, "ns_id": 2,
                             "id": 0, "key": 0, "key_hex": "0x00000000", "reason": "rmid"});
        assert!(
            validator.is_valid(&destroy),
            "{:?}",
            validator.validate(&destroy)
        );
        for (line, field) in [(&shmat, "time"), (&destroy, "comm"), (&destroy, "time")] {
            let mut line = line.clone();
            line.as_object_mut().unwrap().remove(field);
            assert!(!common::missing(&line).is_empty(), "{field}: {line}");
            assert!(!validator.is_valid(&line), "without {field}: {line}");
        }
    }

    fn validator() -> jsonschema::Validator {
        jsonschema::options()
            .should_validate_formats(true)
            .build(&generate())
            .expect("the schema is a valid draft 2020-12 schema")
    }

    #[test]
    fn every_sample_validates() {
        let validator = validator();
        for line in samples::lines() {
            let value: Value = serde_json::from_str(&line).unwrap();
            if let Err(error) = validator.validate(&value) {
                panic!("{line}: {error}");
            }
        }
    }

    /// The schema refuses what the agent does not write.
    #[test]
    fn wrong_lines_are_refused() {
        let validator = validator();
        let good = json!({
            "event": "msg.create", "time": "2026-12-06T20:00:00.123456789Z", "pid": 7, "tid": 7,
            "uid": 0, "comm": "ipcmk", "ns": 4026532177u32, "ns_id": 4105, "id": 0,
            "key": 24301, "key_hex": "0x00005eed", "owner_uid": 0, "mode": 384,
            "mode_octal": "600",
        });
        assert!(validator.is_valid(&good), "{:?}", validator.validate(&good));
        let wrong = |change: &dyn Fn(&mut Value)| {
            let mut line = good.clone();
            change(&mut line);
            line
        };
        for (what, line) in [
            ("an unknown field", wrong(&|l| l["colour"] = json!("red"))),
            (
                "a field of another kind",
                wrong(&|l| l["size"] = json!(4096)),
            ),
            (
                "a required field missing",
                wrong(&|l| {
                    l.as_object_mut().unwrap().remove("key_hex");
                }),
            ),
            ("a string for a number", wrong(&|l| l["pid"] = json!("7"))),
            (
                "a fraction for an integer",
                wrong(&|l| l["id"] = json!(1.5)),
            ),
            (
                "a key in upper case",
                wrong(&|l| l["key_hex"] = json!("0x00005EED")),
            ),
            (
                "a mode in 4 digits",
                wrong(&|l| l["mode_octal"] = json!("0600")),
            ),
            (
                "a time without nanoseconds",
                wrong(&|l| l["time"] = json!("2026-12-06T20:00:00Z")),
            ),
            (
                "an unknown kind",
                wrong(&|l| l["event"] = json!("msg.created")),
            ),
            (
                "a destroy reason of no kind",
                json!({"event": "msg.destroy", "time": "2026-12-06T20:00:00.123456789Z",
                       "ns": 1, "ns_id": 2, "id": 0, "key": 0, "key_hex": "0x00000000",
                       "reason": "gone"}),
            ),
            (
                "a segment's reason on a queue",
                json!({"event": "msg.destroy", "time": "2026-12-06T20:00:00.123456789Z",
                       "ns": 1, "ns_id": 2, "id": 0, "key": 0, "key_hex": "0x00000000",
                       "reason": "last_detach"}),
            ),
            (
                "a container without runtime",
                wrong(&|l| {
                    l["container"] = json!({"id": "ab"});
                    l["host_ipc"] = json!(false);
                }),
            ),
            (
                "an unknown errno name",
                json!({"event": "msg.get", "time": "2026-12-06T20:00:00.123456789Z", "pid": 7,
                       "tid": 7, "uid": 0, "comm": "x", "ns": 1, "key": 0,
                       "key_hex": "0x00000000", "flags": 0, "mode": 0, "mode_octal": "000",
                       "ret": -2, "errno": "ENOTHERE"}),
            ),
        ] {
            assert!(!validator.is_valid(&line), "{what} was accepted: {line}");
        }
        // The same errno line with a real name, or a number, is accepted.
        let mut errno = json!({"event": "msg.get", "time": "2026-12-06T20:00:00.123456789Z",
                               "pid": 7, "tid": 7, "uid": 0, "comm": "x", "ns": 1, "key": 0,
                               "key_hex": "0x00000000", "flags": 0, "mode": 0,
                               "mode_octal": "000", "ret": -2, "errno": "ENOENT"});
        assert!(
            validator.is_valid(&errno),
            "{:?}",
            validator.validate(&errno)
        );
        errno["errno"] = json!(4095);
        assert!(
            validator.is_valid(&errno),
            "{:?}",
            validator.validate(&errno)
        );
    }
}
