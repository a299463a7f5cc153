//! docs/events.md and the schema cannot disagree:
//!
//! - every field the schema has for a kind is named (in backticks) in that kind's `###`
//!   section, or is one of the fields common to events (its table, and the namespace identity
//!   fields); every field of a nested object (`$defs`) is named somewhere in the reference;
//! - every field a field table (`| field | … |`) gives a kind is in the schema for that kind
//!   (a row that says "`X` only" gives it to `X` only), nested paths (`held_by.fds`) included;
//!   every common field is written by some kind;
//! - every field name of the stream that a section's prose names is a field of the section's
//!   kinds, of the objects nested in them, or of a kind the section names (`agent.ready`'s
//!   `cgroup_hierarchy`), unless written as a line fragment (`late: true`);
//! - the reference documents every kind of the schema and no other (but `agent.check`, which
//!   is `check`'s one object, not a line of the stream).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{generate, tests::kinds};

const DOCS: &str = include_str!("../../../docs/events.md");

/// Fields a section names in prose that belong to no kind it names, each with why.
const PROSE_REFERENCES: &[(&str, &str)] = &[
    // "then no event has `container`": about every event's field.
    ("agent.ready", "container"),
    // "what died unseen is reported, `late`": the destroys' field.
    ("agent.kfree_check", "late"),
];

/// Not a line of the stream: `nsipc-agent check` prints one object.
const NOT_LINES: &[&str] = &["agent.check"];

struct Section {
    kinds: Vec<String>,
    body: String,
}

/// The text without its fenced code blocks (jq programs name paths, not fields).
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// What is between backticks.
fn ticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The field a ticked token names: `late: true` → `late`, `held_by.fds` → both.
fn names(token: &str) -> Vec<&str> {
    let head = token.split([':', ' ', '=']).next().unwrap_or_default();
    head.split('.')
        .filter(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        .collect()
}

/// `##`/`###` sections: heading → body.
fn sections(doc: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in doc.lines() {
        if line.starts_with("## ") || line.starts_with("### ") {
            out.push((line.to_owned(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// The `###` sections of event kinds.
fn kind_sections(doc: &str) -> Vec<Section> {
    sections(doc)
        .into_iter()
        .filter(|(heading, _)| heading.starts_with("### "))
        .map(|(heading, body)| Section {
            kinds: ticked(&heading)
                .into_iter()
                .filter(|t| t.contains('.') && !t.contains(' '))
                .map(str::to_owned)
                .collect(),
            body: prose(&body),
        })
        .filter(|section| !section.kinds.is_empty())
        .collect()
}

/// Rows of the markdown tables in `text` whose first header cell is `field`: cells.
fn field_rows(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        let cells: Vec<String> = line
            .trim()
            .strip_prefix('|')
            .and_then(|l| l.strip_suffix('|'))
            .map(|l| l.split('|').map(|c| c.trim().to_owned()).collect())
            .unwrap_or_default();
        if cells.is_empty() {
            in_table = false;
        } else if cells[0] == "field" {
            in_table = true;
        } else if in_table && !cells[0].starts_with("---") {
            rows.push(cells);
        }
    }
    rows
}

struct Schema {
    /// Kind → its properties, each with the `$defs` entry it refers to (directly or as items).
    kinds: BTreeMap<String, BTreeMap<String, Option<String>>>,
    defs: BTreeMap<String, BTreeMap<String, Option<String>>>,
    /// Every value of the closed sets of every kind (`rmid_forced` is a reason and a field).
    values: BTreeSet<String>,
}

fn def_ref(schema: &Value) -> Option<String> {
    let reference = schema["$ref"]
        .as_str()
        .or_else(|| schema["items"]["$ref"].as_str())
        .or_else(|| schema["additionalProperties"]["$ref"].as_str())?;
    Some(reference.trim_start_matches("#/$defs/").to_owned())
}

fn collect_values(schema: &Value, values: &mut BTreeSet<String>) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map {
                if key == "enum" {
                    values.extend(
                        value
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|v| v.as_str().map(str::to_owned)),
                    );
                } else {
                    collect_values(value, values);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_values(item, values)),
        _ => {}
    }
}

fn properties(record: &Value) -> BTreeMap<String, Option<String>> {
    record["properties"]
        .as_object()
        .expect("properties")
        .iter()
        .map(|(name, schema)| (name.clone(), def_ref(schema)))
        .collect()
}

fn schema() -> Schema {
    let schema = generate();
    let kinds = schema["oneOf"]
        .as_array()
        .expect("oneOf")
        .iter()
        .map(|branch| {
            (
                branch["title"].as_str().expect("title").to_owned(),
                properties(branch),
            )
        })
        .collect();
    let defs = schema["$defs"]
        .as_object()
        .expect("$defs")
        .iter()
        .map(|(name, def)| (name.clone(), properties(def)))
        .collect();
    let mut values = BTreeSet::new();
    collect_values(&schema, &mut values);
    Schema {
        kinds,
        defs,
        values,
    }
}

impl Schema {
    /// The fields of `kind` and of every object nested in it.
    fn reachable(&self, kind: &str) -> BTreeSet<String> {
        let mut fields = BTreeSet::new();
        let mut pending: Vec<&BTreeMap<String, Option<String>>> = vec![&self.kinds[kind]];
        let mut seen = BTreeSet::new();
        while let Some(props) = pending.pop() {
            for (name, def) in props {
                fields.insert(name.clone());
                if let Some(def) = def
                    && seen.insert(def.clone())
                {
                    pending.push(&self.defs[def]);
                }
            }
        }
        fields
    }

    /// Whether `path` (`held_by.fds`) is a field of `kind`.
    fn has_path(&self, kind: &str, path: &[&str]) -> bool {
        let mut props = &self.kinds[kind];
        for (i, part) in path.iter().enumerate() {
            let Some(def) = props.get(*part) else {
                return false;
            };
            if i + 1 < path.len() {
                let Some(def) = def else { return false };
                props = &self.defs[def];
            }
        }
        true
    }

    fn all_fields(&self) -> BTreeSet<&str> {
        self.kinds
            .values()
            .chain(self.defs.values())
            .flat_map(|props| props.keys().map(String::as_str))
            .collect()
    }
}

/// The fields common to events: their table, and the namespace identity section's.
fn common_fields(doc: &str) -> BTreeSet<String> {
    let mut common = BTreeSet::new();
    for (heading, body) in sections(doc) {
        if heading == "## Fields common to events" {
            for row in field_rows(&body) {
                common.extend(
                    ticked(&row[0])
                        .into_iter()
                        .flat_map(names)
                        .map(str::to_owned),
                );
            }
        } else if heading == "## Namespace identity" {
            common.extend(ticked(&body).into_iter().flat_map(names).map(str::to_owned));
        }
    }
    assert!(
        common.contains("time") && common.contains("ns_gen"),
        "{common:?}"
    );
    common
}

#[test]
fn the_reference_documents_every_kind_and_no_other() {
    let documented: BTreeSet<String> = kind_sections(DOCS)
        .into_iter()
        .flat_map(|section| section.kinds)
        .filter(|kind| !NOT_LINES.contains(&kind.as_str()))
        .collect();
    assert_eq!(documented, kinds(&generate()));
}

/// The schema's fields that `doc` does not document.
fn undocumented(doc: &str, schema: &Schema) -> Vec<String> {
    let common = common_fields(doc);
    let sections = kind_sections(doc);
    let mut missing = Vec::new();
    for (kind, props) in &schema.kinds {
        let named: BTreeSet<&str> = sections
            .iter()
            .filter(|section| section.kinds.contains(kind))
            .flat_map(|section| ticked(&section.body).into_iter().flat_map(names))
            .collect();
        for field in props.keys() {
            if !common.contains(field) && !named.contains(field.as_str()) {
                missing.push(format!("{kind}: {field}"));
            }
        }
    }
    let text = prose(doc);
    let everywhere: BTreeSet<&str> = ticked(&text).into_iter().flat_map(names).collect();
    for (def, props) in &schema.defs {
        for field in props.keys() {
            if !everywhere.contains(field.as_str()) {
                missing.push(format!("$defs/{def}: {field}"));
            }
        }
    }
    missing
}

#[test]
fn every_field_of_the_schema_is_documented() {
    let missing = undocumented(DOCS, &schema());
    assert!(
        missing.is_empty(),
        "fields the agent writes that docs/events.md does not document:\n{}",
        missing.join("\n")
    );
}

/// The fields `doc` documents that the schema does not have.
fn unwritten(doc: &str, schema: &Schema) -> Vec<String> {
    let mut wrong = Vec::new();
    // The field tables.
    for section in kind_sections(doc) {
        for row in field_rows(&section.body) {
            let only: Vec<&str> = row
                .get(1)
                .map(|cell| {
                    let ticks = ticked(cell);
                    let mut only = Vec::new();
                    for (i, tick) in ticks.iter().enumerate() {
                        let after = cell.split(&format!("`{tick}`")).nth(1).unwrap_or("");
                        if after.trim_start().starts_with("only") && i < ticks.len() {
                            only.push(*tick);
                        }
                    }
                    only
                })
                .unwrap_or_default();
            for kind in &section.kinds {
                if !only.is_empty() && !only.contains(&kind.as_str()) {
                    continue;
                }
                for token in ticked(&row[0]) {
                    let path = names(token);
                    if !schema.has_path(kind, &path) {
                        wrong.push(format!("{kind}: {token} (its field table)"));
                    }
                }
            }
        }
    }
    // The common fields.
    let written: BTreeSet<&str> = schema.all_fields();
    for field in common_fields(doc) {
        if !written.contains(field.as_str()) {
            wrong.push(format!("common field {field}: written by no kind"));
        }
    }
    // The prose's field names.
    let fields = schema.all_fields();
    for section in kind_sections(doc) {
        let mut allowed: BTreeSet<String> = BTreeSet::new();
        let ticks = ticked(&section.body);
        let named_kinds: Vec<&str> = section
            .kinds
            .iter()
            .map(String::as_str)
            .chain(ticks.iter().copied())
            .collect();
        for kind in schema.kinds.keys() {
            let named = named_kinds.iter().any(|name| {
                name == kind
                    || name
                        .strip_prefix('*')
                        .is_some_and(|suffix| kind.ends_with(suffix))
            });
            if named {
                allowed.extend(schema.reachable(kind));
            }
        }
        for token in ticks {
            // A line fragment (`late: true`, `after: "lost"`) quotes a line, not a field.
            if token.contains(": ") || token.contains('.') {
                continue;
            }
            if fields.contains(token)
                && !allowed.contains(token)
                && !schema.values.contains(token)
                && !section
                    .kinds
                    .iter()
                    .any(|kind| PROSE_REFERENCES.contains(&(kind.as_str(), token)))
            {
                wrong.push(format!("{}: {token} (its prose)", section.kinds.join(", ")));
            }
        }
    }
    wrong
}

#[test]
fn every_documented_field_is_in_the_schema() {
    let wrong = unwritten(DOCS, &schema());
    assert!(
        wrong.is_empty(),
        "fields docs/events.md documents that the agent does not write:\n{}",
        wrong.join("\n")
    );
}

/// The checks above can fail: a field the agent does not write, in a table or in prose, and a
/// field of the schema the reference leaves out, are found.
#[test]
fn the_checks_see_a_wrong_reference() {
    let schema = schema();
    let changed = |from: &str, to: &str| {
        assert!(DOCS.contains(from), "{from:?} is in docs/events.md");
        DOCS.replacen(from, to, 1)
    };
    let doc = changed(
        "| `nsems` | `sem.exists` only: semaphores in the set |",
        "| `nsems` | `sem.exists` only: semaphores in the set |\n| `colour` | its colour |",
    );
    let wrong = unwritten(&doc, &schema);
    for kind in ["msg.exists", "shm.exists", "sem.exists"] {
        assert!(
            wrong.contains(&format!("{kind}: colour (its field table)")),
            "{wrong:?}"
        );
    }
    // A field of segments documented for every kind of object (`nattch` is `shm.exists`').
    let doc = changed(
        "| `nsems` | `sem.exists` only: semaphores in the set |",
        "| `nsems` | `sem.exists` only: semaphores in the set |\n| `nattch` | attachments |",
    );
    let wrong = unwritten(&doc, &schema);
    assert!(
        wrong.contains(&"msg.exists: nattch (its field table)".to_owned()),
        "{wrong:?}"
    );
    assert!(
        !wrong.contains(&"shm.exists: nattch (its field table)".to_owned()),
        "{wrong:?}"
    );
    // In prose: a queue's creation said to carry a segment's `nattch`.
    let doc = changed(
        "A get created a new object",
        "A get created a new object (`nattch`)",
    );
    let wrong = unwritten(&doc, &schema);
    assert!(
        wrong.contains(&"msg.create, shm.create, sem.create: nattch (its prose)".to_owned()),
        "{wrong:?}"
    );
    // A field the agent writes that the reference no longer names.
    let doc = changed(
        "| `nsems` | `sem.exists` only",
        "| nsems | `sem.exists` only",
    );
    let missing = undocumented(&doc, &schema);
    assert_eq!(missing, ["sem.exists: nsems"]);
}
