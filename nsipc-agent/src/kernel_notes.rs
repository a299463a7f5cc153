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

use serde::Serialize;

use crate::btf::Btf;

/// The eBPF crate's sources, every file of nsipc-ebpf/src (a test keeps the list complete).
pub const SOURCES: &[(&str, &str)] = &[
    (
        "nsipc-ebpf/src/bin/floor.rs",
        include_str!("../../nsipc-ebpf/src/bin/floor.rs"),
    ),
    (
        "nsipc-ebpf/src/ipc_objects.rs",
        include_str!("../../nsipc-ebpf/src/ipc_objects.rs"),
    ),
    (
        "nsipc-ebpf/src/lib.rs",
        include_str!("../../nsipc-ebpf/src/lib.rs"),
    ),
    (
        "nsipc-ebpf/src/main.rs",
        include_str!("../../nsipc-ebpf/src/main.rs"),
    ),
    (
        "nsipc-ebpf/src/namespaces.rs",
        include_str!("../../nsipc-ebpf/src/namespaces.rs"),
    ),
    (
        "nsipc-ebpf/src/process.rs",
        include_str!("../../nsipc-ebpf/src/process.rs"),
    ),
    (
        "nsipc-ebpf/src/record.rs",
        include_str!("../../nsipc-ebpf/src/record.rs"),
    ),
    (
        "nsipc-ebpf/src/syscall.rs",
        include_str!("../../nsipc-ebpf/src/syscall.rs"),
    ),
    (
        "nsipc-ebpf/src/task.rs",
        include_str!("../../nsipc-ebpf/src/task.rs"),
    ),
    (
        "nsipc-ebpf/src/tracked.rs",
        include_str!("../../nsipc-ebpf/src/tracked.rs"),
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

fn version(text: &str) -> Option<Version> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The major and minor version of a kernel release (`6.18.44-fc` → 6.18).
pub fn release_version(release: &str) -> Option<Version> {
    let mut numbers = release.split(|c: char| !c.is_ascii_digit());
    Some((numbers.next()?.parse().ok()?, numbers.next()?.parse().ok()?))
}

/// Index of the parenthesis closing the one at `open`.
fn closing(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0;
    for (i, c) in text[open..].char_indices() {
        match c {
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `text` split at its commas outside parentheses.
fn split_top(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(text[start..].trim());
    parts
}

fn is_ident(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `type name`, `type *name`, `type name[N]`, each optionally followed by `(X.Y)`.
fn declaration(text: &str) -> Result<Decl, String> {
    let mut text = text.trim();
    let mut since = None;
    if let Some(open) = text.rfind('(')
        && text.ends_with(')')
    {
        let inner = text[open + 1..text.len() - 1].trim();
        since = Some(
            version(inner.trim_end_matches('+'))
                .ok_or_else(|| format!("{text:?}: ({inner}) is not a kernel version"))?,
        );
        text = text[..open].trim();
    }
    let (decl, dims) = text
        .find('[')
        .map_or((text, ""), |at| (text[..at].trim(), &text[at..]));
    let split = decl
        .rfind([' ', '*'])
        .ok_or_else(|| format!("{text:?} is not `type name`"))?;
    let (ty, name) = (decl[..=split].trim(), decl[split + 1..].trim());
    if !is_ident(name) || ty.is_empty() {
        return Err(format!("{text:?} is not `type name`"));
    }
    Ok(Decl {
        ty: format!("{ty}{dims}"),
        name: name.to_owned(),
        since,
    })
}

/// A parameter list, `...` last meaning more may follow.
fn parameters(text: &str) -> Result<(Vec<Decl>, bool), String> {
    let parts = split_top(text);
    let more = parts.last() == Some(&"...");
    let parts = &parts[..parts.len() - usize::from(more)];
    if parts == [""] || parts == ["void"] {
        return Ok((Vec::new(), more));
    }
    let params = parts
        .iter()
        .map(|p| declaration(p))
        .collect::<Result<_, _>>()?;
    Ok((params, more))
}

/// One claim at the start of `text`, and the text after it.
fn claim(text: &str) -> Result<(Claim, &str), String> {
    let open = text.find('(');
    let call = |prefix: &str| -> Result<(&str, &str), String> {
        let open = open.ok_or_else(|| format!("{prefix}: no `(`"))?;
        let close =
            closing(text, open).ok_or_else(|| format!("{prefix}: unbalanced parentheses"))?;
        Ok((&text[open + 1..close], &text[close + 1..]))
    };
    if let Some(n) = text.strip_prefix("SYSCALL_DEFINE") {
        let count: usize = n[..n.find('(').unwrap_or(0)]
            .parse()
            .map_err(|_| "SYSCALL_DEFINE without its argument count".to_owned())?;
        let (inner, rest) = call("SYSCALL_DEFINE")?;
        let parts = split_top(inner);
        let name = parts[0];
        if !is_ident(name) {
            return Err(format!(
                "SYSCALL_DEFINE{count}: {name:?} is no syscall name"
            ));
        }
        let more = parts.last() == Some(&"...");
        let pairs = &parts[1..parts.len() - usize::from(more)];
        if !pairs.len().is_multiple_of(2)
            || (!more && pairs.len() != 2 * count)
            || pairs.len() > 2 * count
        {
            return Err(format!(
                "SYSCALL_DEFINE{count}({name}, …) gives {} types and names, not {count} pairs",
                pairs.len()
            ));
        }
        let params = pairs
            .chunks(2)
            .map(|pair| {
                if is_ident(pair[1]) {
                    Ok(Decl {
                        ty: pair[0].to_owned(),
                        name: pair[1].to_owned(),
                        since: None,
                    })
                } else {
                    Err(format!(
                        "SYSCALL_DEFINE{count}({name}, …): {:?} is no name",
                        pair[1]
                    ))
                }
            })
            .collect::<Result<_, _>>()?;
        let name = name.to_owned();
        return Ok((Claim::Syscall { name, params, more }, rest));
    }
    for (prefix, skip) in [("TRACE_EVENT(", 0), ("DEFINE_EVENT(", 1)] {
        if text.starts_with(prefix) {
            let (inner, rest) = call(prefix)?;
            let parts = split_top(inner);
            let macro_name = prefix.trim_end_matches('(');
            let (Some(name), Some(proto)) = (parts.get(skip), parts.get(skip + 1)) else {
                return Err(format!(
                    "{macro_name}: expected the event's name, then TP_PROTO"
                ));
            };
            let args = proto
                .strip_prefix("TP_PROTO(")
                .and_then(|p| p.strip_suffix(')'))
                .ok_or_else(|| format!("{macro_name}({name}, …): no TP_PROTO(…)"))?;
            if !is_ident(name) {
                return Err(format!("{macro_name}: {name:?} is no event name"));
            }
            let (params, more) = parameters(args)?;
            let name = (*name).to_owned();
            return Ok((Claim::TraceEvent { name, params, more }, rest));
        }
    }
    if let Some(after) = text.strip_prefix("struct ")
        && let Some(brace) = after.find('{')
        && is_ident(after[..brace].trim())
    {
        let name = after[..brace].trim().to_owned();
        let at = "struct ".len() + brace;
        let close = closing(text, at).ok_or_else(|| format!("struct {name}: no closing `}}`"))?;
        let mut members = Vec::new();
        for item in text[at + 1..close].split(';') {
            let item = item
                .trim()
                .trim_start_matches("...")
                .trim_end_matches("...");
            if !item.trim().is_empty() {
                members.push(declaration(item)?);
            }
        }
        if members.is_empty() {
            return Err(format!("struct {name} {{ … }} names no member"));
        }
        return Ok((Claim::Struct { name, members }, &text[close + 1..]));
    }
    if let Some(open) = open {
        let head: Vec<&str> = text[..open]
            .split_whitespace()
            .filter(|w| !matches!(*w, "static" | "inline" | "extern"))
            .collect();
        if let Some((last, ret)) = head.split_last()
            && !ret.is_empty()
            && is_ident(last.trim_start_matches('*'))
            && ret.iter().all(|w| is_ident(w.trim_end_matches('*')))
        {
            // `void *f(…)`: the stars are the return type's.
            let name = last.trim_start_matches('*');
            let stars = "*".repeat(last.len() - name.len());
            let (inner, rest) = call(name)?;
            let (params, more) = parameters(inner)?;
            let (may_be_inlined, rest) = match rest.trim_start().strip_prefix("(may be inlined)") {
                Some(after) => (true, after),
                None => (false, rest),
            };
            let ret = format!("{}{stars}", ret.join(" "));
            let name = name.to_owned();
            return Ok((
                Claim::Function {
                    name,
                    ret,
                    params,
                    more,
                    may_be_inlined,
                },
                rest,
            ));
        }
    }
    Err(format!(
        "not a claim: expected SYSCALL_DEFINEn(…), TRACE_EVENT(…), DEFINE_EVENT(…), a C \
         prototype or `struct X {{ … }}`, found {:?}",
        text.chars().take(40).collect::<String>()
    ))
}

/// Reads a note's text: `[versions] path: claim[, claim] [(X.Y+…)] [commentary]`.
pub fn parse(text: &str) -> Result<Parsed, String> {
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.split_once(']'))
        .ok_or("no [versions] bracket")?;
    let (bracket, rest) = inner;
    let versions = bracket
        .split_whitespace()
        .map(|v| version(v).ok_or_else(|| format!("{v:?} is not a kernel version")))
        .collect::<Result<Vec<_>, _>>()?;
    if versions.is_empty() {
        return Err("no kernel version in the bracket".to_owned());
    }
    let (path, mut rest) = rest
        .trim()
        .split_once(": ")
        .ok_or("expected `path: claim` after the bracket")?;
    if !path.contains('/') {
        return Err(format!("{path:?} is not a kernel source path"));
    }
    let mut claims = Vec::new();
    loop {
        let (claim, after) = claim(rest.trim_start())?;
        claims.push(claim);
        match after.strip_prefix(", struct ") {
            Some(_) if matches!(claims.last(), Some(Claim::Struct { .. })) => {
                rest = &after[2..];
            }
            _ => {
                rest = after;
                break;
            }
        }
    }
    let mut since = None;
    let rest = rest.trim_start();
    if rest.starts_with('(')
        && let Some(first) = rest[1..].split([';', ')']).next()
        && let Some(v) = first.strip_suffix('+')
    {
        since = Some(version(v).ok_or_else(|| format!("({first}) is not a kernel version"))?);
    }
    Ok(Parsed {
        versions,
        claims,
        since,
    })
}

/// Whether a type from a note (`[*]`: any length) is the type BTF has.
fn types_match(note: &str, btf: &str) -> bool {
    match note.strip_suffix("[*]") {
        Some(element) => btf.rsplit_once('[').is_some_and(|(b, len)| {
            b == element && len.trim_end_matches(']').parse::<u32>().is_ok()
        }),
        None => note == btf,
    }
}

fn required(since: Option<Version>, kernel: Version) -> bool {
    since.is_none_or(|since| kernel >= since)
}

/// The parameters a note gives against those BTF has, in order.
fn check_params(
    btf: &Btf,
    what: &str,
    want: &[Decl],
    more: bool,
    got: &[(String, String)],
    kernel: Version,
) -> Result<(), String> {
    let want: Vec<&Decl> = want.iter().filter(|d| required(d.since, kernel)).collect();
    if got.len() < want.len() || (!more && got.len() != want.len()) {
        return Err(format!(
            "{what} has {} parameters, the note {}{}",
            got.len(),
            if more { "at least " } else { "" },
            want.len()
        ));
    }
    for (i, (decl, (_, ty))) in want.iter().zip(got).enumerate() {
        let expected = btf
            .canonical_c_type(&decl.ty)
            .map_err(|why| format!("{what} parameter {} ({}): {why}", i + 1, decl.name))?;
        if !types_match(&expected, ty) {
            return Err(format!(
                "{what} parameter {} ({}) is {ty}, the note says {} ({expected})",
                i + 1,
                decl.name,
                decl.ty
            ));
        }
    }
    Ok(())
}

/// Whether `claim` holds on the kernel of this BTF, at version `kernel`.
pub fn check_claim(btf: &Btf, claim: &Claim, kernel: Version) -> Result<(), String> {
    match claim {
        Claim::Syscall { name, params, more } => {
            let wrapper = format!("__x64_sys_{name}");
            if !btf.has_function(&wrapper) {
                return Err(format!("no function {wrapper}: no syscall {name}"));
            }
            // The function with the syscall's own parameters, where it is not inlined.
            let inner = format!("__do_sys_{name}");
            let signatures = btf.function_signatures(&inner);
            let checks: Vec<_> = signatures
                .iter()
                .map(|s| check_params(btf, &inner, params, *more, &s.params, kernel))
                .collect();
            if checks.iter().any(Result::is_ok) || checks.is_empty() {
                Ok(())
            } else {
                checks.into_iter().next().unwrap()
            }
        }
        Claim::TraceEvent { name, params, more } => {
            let got = btf
                .trace_event_params(name)
                .ok_or_else(|| format!("no typedef btf_trace_{name}: no tracepoint {name}"))?;
            check_params(
                btf,
                &format!("tracepoint {name}"),
                params,
                *more,
                &got,
                kernel,
            )
        }
        Claim::Function {
            name,
            ret,
            params,
            more,
            may_be_inlined,
        } => {
            let signatures = btf.function_signatures(name);
            if signatures.is_empty() {
                return if *may_be_inlined {
                    Ok(())
                } else {
                    Err(format!("no function {name}"))
                };
            }
            let expected_ret = btf.canonical_c_type(ret)?;
            let mut first_error = None;
            for signature in &signatures {
                let result = if types_match(&expected_ret, &signature.ret) {
                    check_params(btf, name, params, *more, &signature.params, kernel)
                } else {
                    Err(format!(
                        "{name} returns {}, the note says {ret} ({expected_ret})",
                        signature.ret
                    ))
                };
                match result {
                    Ok(()) => return Ok(()),
                    Err(why) => {
                        first_error.get_or_insert(why);
                    }
                }
            }
            Err(first_error.unwrap())
        }
        Claim::Struct { name, members } => {
            btf.struct_size(name).map_err(|e| e.to_string())?;
            for member in members.iter().filter(|m| required(m.since, kernel)) {
                let got = btf
                    .member_type(name, &member.name)
                    .map_err(|e| e.to_string())?;
                let expected = btf
                    .canonical_c_type(&member.ty)
                    .map_err(|why| format!("struct {name} member {}: {why}", member.name))?;
                if !types_match(&expected, &got) {
                    return Err(format!(
                        "struct {name} member {} is {got}, the note says {} ({expected})",
                        member.name, member.ty
                    ));
                }
            }
            Ok(())
        }
    }
}

/// Whether a whole note holds.
pub fn check_note(btf: &Btf, text: &str, kernel: Version) -> Result<(), String> {
    let parsed = parse(text).map_err(|why| format!("unreadable note: {why}"))?;
    if !required(parsed.since, kernel) {
        return Ok(());
    }
    parsed
        .claims
        .iter()
        .try_for_each(|claim| check_claim(btf, claim, kernel))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btf::tests::sample_blob;

    /// Every note of the sources reads as claims; none is prose.
    #[test]
    fn every_note_in_the_tree_parses_into_claims() {
        let notes = notes();
        assert_eq!(notes.len(), 31, "{notes:#?}");
        let mut kinds = std::collections::BTreeMap::new();
        for note in &notes {
            let parsed = parse(&note.text).unwrap_or_else(|why| panic!("{}: {why}", note.label()));
            assert!(!parsed.claims.is_empty());
            assert!(
                parsed.versions.contains(&(6, 18)),
                "{}: checked on the host's 6.18",
                note.label()
            );
            for claim in parsed.claims {
                let kind = match claim {
                    Claim::Syscall { .. } => "syscall",
                    Claim::TraceEvent { .. } => "trace event",
                    Claim::Function { .. } => "function",
                    Claim::Struct { .. } => "struct",
                };
                *kinds.entry(kind).or_insert(0) += 1;
            }
        }
        eprintln!("{} notes, claims by kind: {kinds:?}", notes.len());
    }

    /// The embedded sources are every file of nsipc-ebpf/src.
    #[test]
    fn every_ebpf_source_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        let mut dirs = vec![root.join("nsipc-ebpf/src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let relative = path.strip_prefix(&root).unwrap();
                    files.push(relative.to_string_lossy().into_owned());
                }
            }
        }
        files.sort();
        let embedded: Vec<&str> = SOURCES.iter().map(|(f, _)| *f).collect();
        assert_eq!(files, embedded);
    }

    #[test]
    fn reads_each_form_of_note() {
        let parsed =
            parse("[5.10 6.18] ipc/shm.c: SYSCALL_DEFINE3(shmat, int, shmid, char __user *, shmaddr, int, shmflg)")
                .unwrap();
        assert_eq!(parsed.versions, [(5, 10), (6, 18)]);
        let Claim::Syscall { name, params, more } = &parsed.claims[0] else {
            panic!("{parsed:?}")
        };
        assert_eq!((name.as_str(), params.len(), *more), ("shmat", 3, false));
        assert_eq!(params[1].ty, "char __user *");
        let parsed = parse(
            "[6.18] include/linux/ns_common.h: struct ns_common { ... unsigned int inum; ... u64 ns_id (6.18) }",
        )
        .unwrap();
        assert_eq!(
            parsed.claims,
            [Claim::Struct {
                name: "ns_common".into(),
                members: vec![
                    Decl {
                        ty: "unsigned int".into(),
                        name: "inum".into(),
                        since: None
                    },
                    Decl {
                        ty: "u64".into(),
                        name: "ns_id".into(),
                        since: Some((6, 18))
                    },
                ]
            }]
        );
        let parsed = parse(
            "[6.18] a/b.h: struct a { struct b *subsys[COUNT]; }, struct c { void *stack; } (5.5+; why)",
        )
        .unwrap();
        assert_eq!(parsed.claims.len(), 2);
        assert_eq!(parsed.since, Some((5, 5)));
        let Claim::Struct { members, .. } = &parsed.claims[0] else {
            panic!()
        };
        assert_eq!(members[0].ty, "struct b *[COUNT]");
        let parsed = parse(
            "[6.18] ipc/x.c: static void gone(struct x *ns) (may be inlined) ends with kfree(ns)",
        )
        .unwrap();
        assert!(matches!(
            &parsed.claims[0],
            Claim::Function { may_be_inlined: true, params, .. } if params.len() == 1
        ));
        let parsed = parse("[6.18] a/b.c: void *alloc(int n)").unwrap();
        assert!(matches!(
            &parsed.claims[0],
            Claim::Function { name, ret, .. } if name == "alloc" && ret == "void*"
        ));
        let parsed = parse(
            "[6.18] include/trace/events/cgroup.h: DEFINE_EVENT(cgroup, cgroup_mkdir, TP_PROTO(struct cgroup *cgrp, const char *path))",
        )
        .unwrap();
        assert!(matches!(
            &parsed.claims[0],
            Claim::TraceEvent { name, params, more: false } if name == "cgroup_mkdir" && params.len() == 2
        ));
    }

    #[test]
    fn refuses_bad_notes_with_a_reason() {
        for (text, why) in [
            ("ipc/msg.c: SYSCALL_DEFINE0(x)", "no [versions] bracket"),
            ("[] ipc/msg.c: SYSCALL_DEFINE0(x)", "no kernel version"),
            (
                "[6.x] ipc/msg.c: SYSCALL_DEFINE0(x)",
                "\"6.x\" is not a kernel version",
            ),
            ("[6.18] SYSCALL_DEFINE0(x)", "expected `path: claim`"),
            (
                "[6.18] ipc/msg.c: SYSCALL_DEFINE2(msgget, key_t, key)",
                "gives 2 types and names, not 2 pairs",
            ),
            (
                "[6.18] ipc/msg.c: SYSCALL_DEFINE1(msgget, key_t, key",
                "unbalanced",
            ),
            (
                "[6.18] lib/idr.c: ids map indexes to objects",
                "not a claim",
            ),
            ("[6.18] a/b.h: struct a { ... }", "names no member"),
            ("[6.18] a/b.h: struct a { int; }", "is not `type name`"),
            (
                "[6.18] a/b.h: struct a { int b (six) }",
                "is not a kernel version",
            ),
            ("[6.18] a/t.h: TRACE_EVENT(ev, (int a))", "no TP_PROTO"),
        ] {
            let error = parse(text).expect_err(text);
            assert!(error.contains(why), "{text}: {error}");
        }
    }

    #[test]
    fn finds_notes_and_their_continuations() {
        let source = "//! kernel: [6.18] a/b.c: void f(int x)\n//!   more about it\n//! Other.\n\
                      /// kernel: [6.18] a/b.h: struct s { int a; }\nfn x() {}\n// kernel: not a doc comment\n";
        let notes = notes_in("f.rs", source);
        assert_eq!(notes.len(), 2);
        assert_eq!(notes[0].text, "[6.18] a/b.c: void f(int x)  more about it");
        assert_eq!(notes[0].label(), "f.rs:1: [6.18] a/b.c: void f(int x)");
        assert_eq!(notes[1].line, 4);
    }

    #[test]
    fn checks_claims_against_a_synthetic_btf() {
        let btf = Btf::parse(&sample_blob()).unwrap();
        let v618 = (6, 18);
        for text in [
            "[6.18] a/x.h: struct outer { int a; ... long deep; ... long pair[2]; int slots[CHUNK] }",
            "[6.18] a/x.h: struct outer { int a; int gone (6.19) }",
            "[6.18] a/x.h: TRACE_EVENT(ev, TP_PROTO(struct outer *o, unsigned long flags))",
            "[6.18] a/x.h: TRACE_EVENT(ev, TP_PROTO(struct outer *o, ...))",
            "[6.18] a/x.c: void take(struct outer __rcu *a, struct fwd *b): the commentary",
            "[6.18] a/x.c: void take(struct outer *a, ...)",
            "[6.18] a/x.c: static void inlined_away(struct outer *a) (may be inlined) does things",
            "[6.18] a/x.c: SYSCALL_DEFINE0(ping)",
            "[6.18] a/x.h: struct missing { int a; } (6.19+)",
        ] {
            assert_eq!(check_note(&btf, text, v618), Ok(()), "{text}");
        }
        for (text, why) in [
            (
                "[6.18] a/x.h: struct outer { u64 a; }",
                "member a is s32, the note says u64 (u64)",
            ),
            (
                "[6.18] a/x.h: struct outer { int gone (6.19) }",
                "has no member gone",
            ),
            (
                "[6.18] a/x.h: struct missing { int a; }",
                "has no struct missing",
            ),
            ("[6.18] a/x.h: struct outer { key_t a; }", "no type key_t"),
            (
                "[6.18] a/x.h: TRACE_EVENT(ev, TP_PROTO(struct outer *o))",
                "tracepoint ev has 2 parameters, the note 1",
            ),
            (
                "[6.18] a/x.h: TRACE_EVENT(ev, TP_PROTO(struct outer *o, int flags))",
                "parameter 2 (flags) is u64, the note says int (s32)",
            ),
            (
                "[6.18] a/x.h: TRACE_EVENT(nope, TP_PROTO(int a))",
                "no typedef btf_trace_nope",
            ),
            (
                "[6.18] a/x.c: void take(struct outer *a)",
                "take has 2 parameters, the note 1",
            ),
            (
                "[6.18] a/x.c: int take(struct outer *a, ...)",
                "take returns void",
            ),
            (
                "[6.18] a/x.c: void gone(struct outer *a)",
                "no function gone",
            ),
            (
                "[6.18] a/x.c: SYSCALL_DEFINE0(pong)",
                "no function __x64_sys_pong",
            ),
            ("[6.18] lib/idr.c: prose", "unreadable note: not a claim"),
        ] {
            let error = check_note(&btf, text, (6, 19)).expect_err(text);
            assert!(error.contains(why), "{text}: {error}");
        }
    }

    /// Every note holds on the running kernel, when it has BTF (the privileged test checks the
    /// same through `check`, in every cell of the VM matrix).
    #[test]
    fn every_note_holds_on_the_running_kernel() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("no /sys/kernel/btf/vmlinux on this machine; nothing to check");
            return;
        };
        let btf = Btf::parse(&data).unwrap();
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let report = check_all(&btf, release.trim());
        assert!(report.failed.is_empty(), "{report:#?}");
        assert_eq!(report.held, report.checked);
        eprintln!(
            "{} notes, {} held on {}",
            report.checked,
            report.held,
            release.trim()
        );
    }
}
