//! The `kernel:` notes of the eBPF sources, as claims checked against a kernel's BTF.
//!
//! Every kernel hook and struct the probes rely on is named in a note of nsipc-ebpf/src:
//!
//! ```text
//! //! kernel: [5.10 6.1 6.12 6.18] ipc/msg.c: SYSCALL_DEFINE2(msgget, key_t, key, int, msgflg)
//! ```
//!
//! the kernels it was checked on in brackets, then the file, then one of: `SYSCALL_DEFINEn(name,
//! type, arg, …)` (BTF has `__x64_sys_<name>`, which the probes attach to, and `__do_sys_<name>`,
//! where not inlined, has those parameters), `TRACE_EVENT(name, TP_PROTO(…))` or
//! `DEFINE_EVENT(class, name, TP_PROTO(…))` (BTF has the typedef `btf_trace_<name>` with those
//! arguments), a C prototype (BTF has that function with those parameters; `(may be inlined)`
//! after it: only where BTF has it at all), or `struct X { … type member; … }` (X has those members, of
//! those types), several structs separated by `, `. `...` stands for what the note leaves out
//! (members, or further arguments). A version in parentheses after a member or an argument,
//! `u64 ns_id (6.18)`, requires it from that kernel on; `(5.5+…)` right after the claim requires
//! the whole claim from that kernel on. Text after the claim is commentary, and so are the note's
//! continuation lines (indented by more than one space). Types are compared as the ABI sees them:
//! typedefs followed, integers by signedness and width (`u64` is `unsigned long`), qualifiers
//! and `__user`/`__rcu` dropped.
//!
//! The sources are embedded at compile time, so the installed binary checks its own notes.

mod check;
mod parse;
#[cfg(test)]
mod tests;

use serde::Serialize;

pub use self::{
    check::check_note,
    parse::{parse, release_version},
};
use crate::btf::Btf;

/// The eBPF crate's sources, every file of nsipc-ebpf/src (a test keeps the list complete).
pub const SOURCES: &[(&str, &str)] = &[
    (
        "nsipc-ebpf/src/activity.rs",
        include_str!("../../../nsipc-ebpf/src/activity.rs"),
    ),
    (
        "nsipc-ebpf/src/bin/floor.rs",
        include_str!("../../../nsipc-ebpf/src/bin/floor.rs"),
    ),
    (
        "nsipc-ebpf/src/ipc_objects.rs",
        include_str!("../../../nsipc-ebpf/src/ipc_objects.rs"),
    ),
    (
        "nsipc-ebpf/src/lib.rs",
        include_str!("../../../nsipc-ebpf/src/lib.rs"),
    ),
    (
        "nsipc-ebpf/src/main.rs",
        include_str!("../../../nsipc-ebpf/src/main.rs"),
    ),
    (
        "nsipc-ebpf/src/mqueue.rs",
        include_str!("../../../nsipc-ebpf/src/mqueue.rs"),
    ),
    (
        "nsipc-ebpf/src/namespaces.rs",
        include_str!("../../../nsipc-ebpf/src/namespaces.rs"),
    ),
    (
        "nsipc-ebpf/src/process.rs",
        include_str!("../../../nsipc-ebpf/src/process.rs"),
    ),
    (
        "nsipc-ebpf/src/record.rs",
        include_str!("../../../nsipc-ebpf/src/record.rs"),
    ),
    (
        "nsipc-ebpf/src/syscall.rs",
        include_str!("../../../nsipc-ebpf/src/syscall.rs"),
    ),
    (
        "nsipc-ebpf/src/task.rs",
        include_str!("../../../nsipc-ebpf/src/task.rs"),
    ),
    (
        "nsipc-ebpf/src/tracked.rs",
        include_str!("../../../nsipc-ebpf/src/tracked.rs"),
    ),
];

/// A kernel version, major and minor.
pub type Version = (u32, u32);

/// One `kernel:` note: where it is and its text after `kernel:`, continuation lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub file: &'static str,
    pub line: usize,
    pub text: String,
}

impl Note {
    /// `file:line: text`, the text cut at the end of the note's first line.
    pub fn label(&self) -> String {
        let first = self.text.split("  ").next().unwrap_or_default();
        format!("{}:{}: {}", self.file, self.line, first.trim())
    }
}

/// A parameter, argument or member: its C type, its name, and the kernel it is required from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decl {
    pub ty: String,
    pub name: String,
    pub since: Option<Version>,
}

/// What a note says the kernel has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Syscall {
        name: String,
        params: Vec<Decl>,
        more: bool,
    },
    TraceEvent {
        name: String,
        params: Vec<Decl>,
        more: bool,
    },
    Function {
        name: String,
        ret: String,
        params: Vec<Decl>,
        more: bool,
        may_be_inlined: bool,
    },
    Struct {
        name: String,
        members: Vec<Decl>,
    },
}

/// A note, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The kernels the note was checked on.
    pub versions: Vec<Version>,
    pub claims: Vec<Claim>,
    /// The claims hold from this kernel on (`(5.5+…)` after them).
    pub since: Option<Version>,
}

/// Every `kernel:` note of the embedded sources.
pub fn notes() -> Vec<Note> {
    SOURCES
        .iter()
        .flat_map(|(file, source)| notes_in(file, source))
        .collect()
}

/// The notes of one source file: doc comments (`//!`, `///`) that start with `kernel:`, each
/// with the lines after it that continue it (the same comment, indented by two spaces or more).
pub fn notes_in(file: &'static str, source: &str) -> Vec<Note> {
    let lines: Vec<&str> = source.lines().collect();
    let comment = |line: &str| -> Option<(&'static str, String)> {
        let trimmed = line.trim_start();
        ["//!", "///"]
            .into_iter()
            .find(|p| trimmed.starts_with(p))
            .map(|p| (p, trimmed[p.len()..].to_owned()))
    };
    let mut notes = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((prefix, body)) = comment(line) else {
            continue;
        };
        let Some(text) = body.trim_start().strip_prefix("kernel:") else {
            continue;
        };
        let mut text = text.trim().to_owned();
        for next in &lines[i + 1..] {
            match comment(next) {
                Some((p, body)) if p == prefix && body.starts_with("  ") => {
                    text.push_str("  ");
                    text.push_str(body.trim());
                }
                _ => break,
            }
        }
        notes.push(Note {
            file,
            line: i + 1,
            text,
        });
    }
    notes
}

/// `check`'s `kernel_notes`: every note checked against the running kernel's BTF.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Notes checked: every note of the sources.
    pub checked: usize,
    pub held: usize,
    /// Notes that do not hold here, or cannot be read, with why.
    pub failed: Vec<Failure>,
    /// Some note does not list this kernel among those it was checked on (or this kernel's
    /// version is unknown): a pass here is news to the notes.
    pub unverified_here: bool,
    /// The notes (`file:line`) that do not list this kernel.
    pub unlisted: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Failure {
    pub note: String,
    pub why: String,
}

/// Checks every note against `btf`, the BTF of kernel `release`.
pub fn check_all(btf: &Btf, release: &str) -> Report {
    let kernel = release_version(release);
    let notes = notes();
    let mut report = Report {
        checked: notes.len(),
        held: 0,
        failed: Vec::new(),
        unverified_here: kernel.is_none(),
        unlisted: Vec::new(),
    };
    for note in &notes {
        let listed =
            parse(&note.text).is_ok_and(|p| kernel.is_some_and(|k| p.versions.contains(&k)));
        if !listed {
            report.unverified_here = true;
            report.unlisted.push(format!("{}:{}", note.file, note.line));
        }
        match check_note(btf, &note.text, kernel.unwrap_or((u32::MAX, u32::MAX))) {
            Ok(()) => report.held += 1,
            Err(why) => report.failed.push(Failure {
                note: note.label(),
                why,
            }),
        }
    }
    report
}
