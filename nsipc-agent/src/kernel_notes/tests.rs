//! The notes of the tree, the parser and the checker.

use super::*;
use crate::btf::tests::sample_blob;

/// Every note of the sources reads as claims; none is prose.
#[test]
fn every_note_in_the_tree_parses_into_claims() {
    let notes = notes();
    assert_eq!(notes.len(), 39, "{notes:#?}");
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
