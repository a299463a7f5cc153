//! A JSON Schema inferred from sample lines: per event kind, the properties seen, their JSON
//! types, which are required (present in every sample of the kind), enums for the fields whose
//! values are a closed set, nested objects as `$defs`, and no other properties.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::common;

/// Object values under these fields (or the items of these lists, or the values of these
/// maps) are one type each, kept once in `$defs` and referred to.
const DEFS: &[(&str, &str)] = &[
    ("container", "container"),
    ("containers", "container"),
    ("ns_containers", "container"),
    ("pod", "pod"),
    ("processes", "process"),
    ("held_by", "held_by"),
    ("fds", "fd_holder"),
    ("mounts", "mount_holder"),
    ("key_lives_in_ns", "key_home"),
    ("objects_destroyed", "object_counts"),
    ("limits", "limits"),
    ("limit", "limit_hit"),
    ("degraded.*", "hook_choice"),
    ("senders", "participant"),
    ("receivers", "participant"),
    ("operators", "participant"),
    ("from", "flow_end"),
    ("to", "flow_end"),
    ("via", "flow_queue"),
];

/// Objects under these fields are maps (any keys, values of one type), not records.
const MAPS: &[&str] = &[
    "hooks",
    "degraded",
    "kinds",
    "frees_refused",
    "refused",
    "fallbacks",
];

/// Maps whose keys are a closed set (the values seen).
const CLOSED_KEYS: &[&str] = &["kinds", "frees_refused", "refused", "fallbacks"];

/// Fields whose string values are a closed set, from the agent's enums and name tables: the
/// schema lists the values the samples have, and refuses others. (`hooks` is the map of hooks
/// to backends: its values.)
const CLOSED: &[&str] = &[
    "event", "reason", "via", "join", "cause", "after", "errno", "cmd", "backend", "frees",
    "runtime", "hooks.*",
];

/// Text fields with a fixed form.
const PATTERNS: &[(&str, &str, Option<&str>)] = &[
    (
        "time",
        r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{9}Z$",
        Some("date-time"),
    ),
    ("key_hex", "^0x[0-9a-f]{8}$", None),
    ("mode_octal", "^[0-7]{3}$", None),
];

#[derive(Default, Debug)]
struct Acc {
    types: BTreeSet<&'static str>,
    strings: BTreeSet<String>,
    /// Items of the lists seen.
    items: Option<Box<Acc>>,
    /// The record (or, for maps, the values and keys) of the objects seen.
    record: Option<Record>,
    map_values: Option<Box<Acc>>,
    map_keys: BTreeSet<String>,
    /// The `$defs` entry its objects are.
    def: Option<&'static str>,
}

#[derive(Default, Debug)]
struct Record {
    count: usize,
    props: BTreeMap<String, (usize, Acc)>,
}

/// Schemas of kinds and of nested types, accumulated over lines.
#[derive(Default)]
pub struct Inference {
    kinds: BTreeMap<String, Record>,
    defs: BTreeMap<&'static str, Record>,
}

fn def_of(field: &str) -> Option<&'static str> {
    DEFS.iter().find(|(f, _)| *f == field).map(|(_, d)| *d)
}

impl Inference {
    /// Adds one line; panics on a line that is not an object with an `event` string.
    pub fn add_line(&mut self, line: &str) {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: a sample line: {line}"));
        let object = value
            .as_object()
            .unwrap_or_else(|| panic!("a sample line is not an object: {line}"));
        let kind = object["event"]
            .as_str()
            .unwrap_or_else(|| panic!("no event name: {line}"))
            .to_owned();
        let mut record = std::mem::take(self.kinds.entry(kind.clone()).or_default());
        self.add_record(&mut record, object);
        self.kinds.insert(kind, record);
    }

    fn add_record(&mut self, record: &mut Record, object: &Map<String, Value>) {
        record.count += 1;
        for (name, value) in object {
            let (present, acc) = record.props.entry(name.clone()).or_default();
            *present += 1;
            self.add_value(acc, name, value);
        }
    }

    fn add_value(&mut self, acc: &mut Acc, field: &str, value: &Value) {
        match value {
            Value::Null => {
                acc.types.insert("null");
            }
            Value::Bool(_) => {
                acc.types.insert("boolean");
            }
            Value::Number(n) => {
                assert!(
                    n.is_i64() || n.is_u64(),
                    "{field}: {n}: the stream has integers only"
                );
                acc.types.insert("integer");
            }
            Value::String(s) => {
                acc.types.insert("string");
                acc.strings.insert(s.clone());
            }
            Value::Array(items) => {
                acc.types.insert("array");
                let inner = acc.items.get_or_insert_default();
                for item in items {
                    self.add_value(inner, field, item);
                }
            }
            Value::Object(object) => {
                acc.types.insert("object");
                if MAPS.contains(&field) {
                    // The values of map `m` are field `m.*` (`degraded.*`: a hook choice).
                    let value_field = format!("{field}.*");
                    let values = acc.map_values.get_or_insert_default();
                    for (key, value) in object {
                        acc.map_keys.insert(key.clone());
                        self.add_value(values, &value_field, value);
                    }
                } else if let Some(def) = def_of(field) {
                    acc.def = Some(def);
                    let mut record = std::mem::take(self.defs.entry(def).or_default());
                    self.add_record(&mut record, object);
                    self.defs.insert(def, record);
                } else {
                    let mut record = acc.record.take().unwrap_or_default();
                    self.add_record(&mut record, object);
                    acc.record = Some(record);
                }
            }
        }
    }

    /// The schema: one `oneOf` branch per kind, told apart by `event`.
    pub fn schema(&self, title: &str, description: &str) -> Value {
        let branches: Vec<Value> = self
            .kinds
            .iter()
            .map(|(kind, record)| {
                let mut branch = render_record(record, Some(kind));
                branch
                    .as_object_mut()
                    .expect("a record")
                    .insert("title".into(), json!(kind));
                branch
            })
            .collect();
        let defs: Map<String, Value> = self
            .defs
            .iter()
            .map(|(name, record)| (name.to_string(), render_record(record, None)))
            .collect();
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": title,
            "description": description,
            "type": "object",
            "oneOf": branches,
            "$defs": defs,
        })
    }
}

/// `{"type": "object", "properties", "required", "additionalProperties": false}`; `kind`
/// makes `event` a constant.
fn render_record(record: &Record, kind: Option<&str>) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, (present, acc)) in &record.props {
        let schema = match kind {
            Some(kind) if name == "event" => json!({"const": kind}),
            _ => render(acc, name),
        };
        properties.insert(name.clone(), schema);
        if *present == record.count {
            required.push(json!(name));
        }
    }
    let mut schema = json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    });
    // A kind's line: the common fields that come together where they are optional (a destroy's
    // task fields, a line's `container` and `host_ipc`), as docs/events.md has them.
    if let Some(kind) = kind
        && !common::is_agent_line(kind)
    {
        let is_required = |field: &str| required.iter().any(|r| r == field);
        let dependent: Map<String, Value> = common::TOGETHER
            .iter()
            .filter(|(field, _)| properties.contains_key(*field))
            .filter_map(|(field, others)| {
                let others: Vec<&str> = others
                    .iter()
                    .copied()
                    .filter(|other| !is_required(other))
                    .collect();
                (!others.is_empty()).then(|| (field.to_string(), json!(others)))
            })
            .collect();
        if !dependent.is_empty() {
            schema["dependentRequired"] = Value::Object(dependent);
        }
    }
    schema
}

fn render(acc: &Acc, field: &str) -> Value {
    let mut simple = Vec::new();
    let mut complex = Vec::new();
    for &ty in &acc.types {
        match ty {
            "string" => {
                let mut schema = json!({"type": "string"});
                if CLOSED.contains(&field) {
                    schema["enum"] = json!(acc.strings);
                } else if let Some((_, pattern, format)) =
                    PATTERNS.iter().find(|(f, _, _)| *f == field)
                {
                    let re = pattern_matcher(pattern);
                    for s in &acc.strings {
                        assert!(re(s), "{field}: {s:?} does not match {pattern}");
                    }
                    schema["pattern"] = json!(pattern);
                    if let Some(format) = format {
                        schema["format"] = json!(format);
                    }
                } else {
                    simple.push(ty);
                    continue;
                }
                complex.push(schema);
            }
            "array" => {
                let items = acc
                    .items
                    .as_deref()
                    .filter(|items| !items.types.is_empty())
                    .unwrap_or_else(|| panic!("{field}: no sample has an item in the list"));
                complex.push(json!({"type": "array", "items": render(items, field)}));
            }
            "object" => {
                if let Some(values) = &acc.map_values {
                    let values = render(values, &format!("{field}.*"));
                    let mut schema = json!({"type": "object", "additionalProperties": values});
                    if CLOSED_KEYS.contains(&field) {
                        schema["propertyNames"] = json!({"enum": acc.map_keys});
                    }
                    complex.push(schema);
                } else if let Some(def) = acc.def {
                    complex.push(json!({"$ref": format!("#/$defs/{def}")}));
                } else {
                    let record = acc.record.as_ref().expect("objects were seen");
                    complex.push(render_record(record, None));
                }
            }
            _ => simple.push(ty),
        }
    }
    if !simple.is_empty() {
        let ty = if simple.len() == 1 {
            json!(simple[0])
        } else {
            json!(simple)
        };
        complex.insert(0, json!({"type": ty}));
    }
    match complex.len() {
        0 => panic!("{field}: no value seen"),
        1 => complex.pop().expect("one"),
        _ => json!({"anyOf": complex}),
    }
}

/// A matcher for the few patterns above (the validator checks them for real; this only
/// checks that the samples have the form the schema says).
fn pattern_matcher(pattern: &str) -> impl Fn(&str) -> bool + '_ {
    move |s: &str| {
        let schema = json!({"type": "string", "pattern": pattern});
        jsonschema::is_valid(&schema, &json!(s))
    }
}
