use super::*;

/// Builds a BTF blob: `typedef int chunk_t[64]; struct outer { int a; union { struct { int
/// pad; long deep; }; }; const chunk_t slots; long pair[2]; }`, `enum ids { ID_A, ID_B }`,
/// a 64-bit `enum wide { WIDE_C }`, a function `do_it` and `void take(struct outer *a,
/// struct fwd *b)` where `struct fwd` is only declared; `typedef long unsigned int u64`,
/// the tracepoint `ev` (`typedef void (*btf_trace_ev)(void *, struct outer *o, u64 flags)`)
/// and `__x64_sys_ping`, whose prototype is take's.
pub(crate) fn sample_blob() -> Vec<u8> {
    let strings =
        b"\0int\0outer\0a\0deep\0pad\0long\0slots\0pair\0chunk_t\0ids\0ID_A\0ID_B\0wide\0WIDE_C\0do_it\0take\0fwd\0b\0long unsigned int\0u64\0__data\0o\0flags\0btf_trace_ev\0__x64_sys_ping\0"
            .to_vec();
    let off = |s: &str| {
        let needle = [s.as_bytes(), b"\0"].concat();
        strings
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .unwrap() as u32
    };
    let mut types = Vec::new();
    let mut push = |words: &[u32]| words.iter().for_each(|w| types.extend(w.to_le_bytes()));
    let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
    // 1: int, 2: long (BTF_INT_SIGNED)
    push(&[off("int"), info(KIND_INT, 0), 4, (1 << 24) | 32]);
    push(&[off("long"), info(KIND_INT, 0), 8, (1 << 24) | 64]);
    // 3: anonymous struct { int pad; long deep; } at bit offsets 0 and 64
    push(&[
        0,
        info(KIND_STRUCT, 2),
        16,
        off("pad"),
        1,
        0,
        off("deep"),
        2,
        64,
    ]);
    // 4: anonymous union { struct 3; }
    push(&[0, info(KIND_UNION, 1), 16, 0, 3, 0]);
    // 5: struct outer { int a; union 4 at byte 8; const chunk_t slots at byte 24; long
    // pair[2] at byte 280 }
    push(&[
        off("outer"),
        info(KIND_STRUCT, 4),
        296,
        off("a"),
        1,
        0,
        0,
        4,
        64,
        off("slots"),
        9,
        24 * 8,
        off("pair"),
        10,
        280 * 8,
    ]);
    // 6: typedef to outer, to check unknown-free parsing of zero-extra kinds
    push(&[off("outer"), info(KIND_TYPEDEF, 0), 5]);
    // 7: int[64]: struct btf_array { type 1, index_type 1, nelems 64 } after the header
    push(&[0, info(KIND_ARRAY, 0), 0, 1, 1, 64]);
    // 8: typedef int chunk_t[64]
    push(&[off("chunk_t"), info(KIND_TYPEDEF, 0), 7]);
    // 9: const chunk_t
    push(&[0, info(KIND_CONST, 0), 8]);
    // 10: long[2]
    push(&[0, info(KIND_ARRAY, 0), 0, 2, 1, 2]);
    // 11: enum ids { ID_A = 0, ID_B = 1 }
    push(&[
        off("ids"),
        info(KIND_ENUM, 2),
        4,
        off("ID_A"),
        0,
        off("ID_B"),
        1,
    ]);
    // 12: enum wide { WIDE_C = 1 << 40 }: btf_enum64 { name_off, val_lo32, val_hi32 }
    push(&[
        off("wide"),
        info(KIND_ENUM64, 1),
        8,
        off("WIDE_C"),
        0,
        1 << 8,
    ]);
    // 13: void do_it(void), its prototype left out (FUNC's type is not followed)
    push(&[off("do_it"), info(KIND_FUNC, 0), 0]);
    // 14: struct outer *; 15: struct fwd; (a forward declaration) 16: struct fwd *
    push(&[0, info(KIND_PTR, 0), 5]);
    push(&[off("fwd"), info(KIND_FWD, 0), 0]);
    push(&[0, info(KIND_PTR, 0), 15]);
    // 17: void (struct outer *a, struct fwd *b); 18: its function, take
    push(&[0, info(KIND_FUNC_PROTO, 2), 0, off("a"), 14, off("b"), 16]);
    push(&[off("take"), info(KIND_FUNC, 0), 17]);
    // 19: long unsigned int; 20: typedef u64; 21: void *
    push(&[off("long unsigned int"), info(KIND_INT, 0), 8, 64]);
    push(&[off("u64"), info(KIND_TYPEDEF, 0), 19]);
    push(&[0, info(KIND_PTR, 0), 0]);
    // 22: void (void *__data, struct outer *o, u64 flags); 23: a pointer to it; 24: the
    // typedef btf_trace_ev; 25: __x64_sys_ping
    push(&[
        0,
        info(KIND_FUNC_PROTO, 3),
        0,
        off("__data"),
        21,
        off("o"),
        14,
        off("flags"),
        20,
    ]);
    push(&[0, info(KIND_PTR, 0), 22]);
    push(&[off("btf_trace_ev"), info(KIND_TYPEDEF, 0), 23]);
    push(&[off("__x64_sys_ping"), info(KIND_FUNC, 0), 17]);

    let mut blob = Vec::new();
    blob.extend(BTF_MAGIC.to_le_bytes());
    blob.extend([1u8, 0]); // version, flags
    for w in [
        24u32,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        blob.extend(w.to_le_bytes());
    }
    blob.extend(types);
    blob.extend(strings);
    blob
}

#[test]
fn finds_direct_and_anonymous_members() {
    let btf = Btf::parse(&sample_blob()).unwrap();
    assert_eq!(btf.member_offset("outer", "a"), Ok(0));
    assert_eq!(btf.member_offset("outer", "pad"), Ok(8));
    assert_eq!(btf.member_offset("outer", "deep"), Ok(16));
    assert_eq!(btf.member_offset("outer", "slots"), Ok(24));
    assert_eq!(btf.member_offset("outer", "pair"), Ok(280));
    assert_eq!(btf.struct_size("outer"), Ok(296));
    assert_eq!(
        btf.member_offset("outer", "missing"),
        Err(BtfError::NoMember("outer".into(), "missing".into()))
    );
    assert_eq!(
        btf.member_offset("nothere", "a"),
        Err(BtfError::NoStruct("nothere".into()))
    );
}

#[test]
fn finds_array_lengths_through_typedefs_and_qualifiers() {
    let btf = Btf::parse(&sample_blob()).unwrap();
    assert_eq!(btf.member_array_len("outer", "slots"), Ok(64));
    assert_eq!(btf.member_array_len("outer", "pair"), Ok(2));
    assert_eq!(
        btf.member_array_len("outer", "a"),
        Err(BtfError::NotArray("outer".into(), "a".into()))
    );
    assert_eq!(
        btf.member_array_len("outer", "deep"),
        Err(BtfError::NotArray("outer".into(), "deep".into())),
        "a member of an anonymous struct is found, and is not an array"
    );
    assert_eq!(
        btf.member_array_len("outer", "missing"),
        Err(BtfError::NoMember("outer".into(), "missing".into()))
    );
    assert_eq!(
        btf.member_array_len("nothere", "slots"),
        Err(BtfError::NoStruct("nothere".into()))
    );
}

#[test]
fn finds_enumerators_and_functions_by_name() {
    let btf = Btf::parse(&sample_blob()).unwrap();
    for name in ["ID_A", "ID_B", "WIDE_C"] {
        assert!(btf.has_enumerator(name), "{name}");
    }
    for name in ["ids", "wide", "do_it", "ID_"] {
        assert!(!btf.has_enumerator(name), "{name} is no enumerator");
    }
    // The function comes after the enums: found, so their entries were skipped exactly.
    assert!(btf.has_function("do_it"));
    assert!(!btf.has_function("outer"), "a struct is no function");
    assert!(!btf.has_function("ID_A"));
}

#[test]
fn tells_pointers_to_structs_from_pointers_to_declarations() {
    let btf = Btf::parse(&sample_blob()).unwrap();
    assert_eq!(btf.param_points_to_struct("take", 0), Ok(true));
    assert_eq!(btf.param_points_to_struct("take", 1), Ok(false));
    for (func, n) in [("take", 2), ("do_it", 0), ("nothere", 0)] {
        assert_eq!(
            btf.param_points_to_struct(func, n),
            Err(BtfError::NoFunction(func.into())),
            "{func} {n}"
        );
    }
}

#[test]
fn names_types_as_the_notes_compare_them() {
    let btf = Btf::parse(&sample_blob()).unwrap();
    assert_eq!(btf.member_type("outer", "a"), Ok("s32".into()));
    assert_eq!(btf.member_type("outer", "deep"), Ok("s64".into()));
    assert_eq!(btf.member_type("outer", "slots"), Ok("s32[64]".into()));
    assert_eq!(btf.member_type("outer", "pair"), Ok("s64[2]".into()));
    for (c, canonical) in [
        ("int", "s32"),
        ("unsigned long", "u64"),
        ("u64", "u64"),
        ("const void *", "void *"),
        ("char __user * *", "char * *"),
        ("struct outer __rcu *", "struct outer *"),
        ("long[2]", "s64[2]"),
        ("struct x *[COUNT]", "struct x *[*]"),
        ("unsigned char", "u8"),
        ("struct rcu_head *", "struct callback_head *"),
        ("char", "char"),
    ] {
        assert_eq!(btf.canonical_c_type(c).as_deref(), Ok(canonical), "{c}");
    }
    assert_eq!(
        btf.canonical_c_type("key_t"),
        Err("the kernel's BTF has no type key_t".into())
    );
    let take = &btf.function_signatures("take")[0];
    assert_eq!(take.ret, "void");
    assert_eq!(
        take.params,
        [
            ("a".into(), "struct outer *".into()),
            ("b".into(), "struct fwd *".into())
        ]
    );
    assert_eq!(
        btf.trace_event_params("ev"),
        Some(vec![
            ("o".into(), "struct outer *".into()),
            ("flags".into(), "u64".into())
        ])
    );
    assert_eq!(btf.trace_event_params("take"), None);
    assert!(btf.function_signatures("ev").is_empty());
}

#[test]
fn rejects_bad_magic_and_truncation() {
    assert_eq!(Btf::parse(&[0, 0, 0, 0]).err(), Some(BtfError::BadMagic));
    let blob = sample_blob();
    assert_eq!(
        Btf::parse(&blob[..blob.len() - 10]).err(),
        Some(BtfError::Truncated)
    );
}

/// The running kernel's BTF, when there is one, parses completely and has the fields the
/// probes need.
#[test]
fn parses_running_kernel_btf() {
    let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
        eprintln!("no /sys/kernel/btf/vmlinux on this machine; nothing to check");
        return;
    };
    let btf = Btf::parse(&data).unwrap();
    for (s, m) in [
        ("task_struct", "nsproxy"),
        ("nsproxy", "ipc_ns"),
        ("ipc_namespace", "ns"),
    ] {
        assert!(btf.member_offset(s, m).unwrap() > 0 || m == "ns", "{s}.{m}");
    }
    btf.member_offset("ns_common", "inum").unwrap();
    // XA_CHUNK_SIZE: 64, or 16 with CONFIG_BASE_SMALL.
    let slots = btf.member_array_len("xa_node", "slots").unwrap();
    assert!(slots == 64 || slots == 16, "xa_node.slots[{slots}]");
    // enum bpf_func_id, since the first helper; a function every kernel has.
    assert!(btf.has_enumerator("BPF_FUNC_map_lookup_elem"));
    assert!(btf.has_function("schedule"));
}
