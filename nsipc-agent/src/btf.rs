//! Just enough of a BTF reader to find struct member offsets in the running kernel.
//!
//! Format: include/uapi/linux/btf.h. A header, then a type section of variable-length records
//! (type id N is the N-th record, from 1), then a string section. aya's public `Btf` cannot list
//! struct members, and the crates that can are not permissively licensed, hence this module.

use std::collections::HashMap;

use thiserror::Error;

const BTF_MAGIC: u16 = 0xEB9F;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("not BTF data (bad magic)")]
    BadMagic,
    #[error("BTF data is truncated")]
    Truncated,
    #[error("BTF type kind {0} is unknown to this reader")]
    UnknownKind(u32),
    #[error("the kernel's BTF has no struct {0}")]
    NoStruct(String),
    #[error("the kernel's struct {0} has no member {1}")]
    NoMember(String, String),
    #[error("the kernel's struct {0} member {1} is not an array")]
    NotArray(String, String),
    #[error("the kernel's BTF has no function {0}, or not with that many parameters")]
    NoFunction(String),
}

#[derive(Debug, Clone)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// In bits from the start of the containing struct.
    bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    name_off: u32,
    kind: u32,
    /// The referenced type for modifiers, typedefs and pointers, the element type for arrays;
    /// the size in bytes for structs and ints.
    type_ref: u32,
    members: Vec<Member>,
    /// For an array: its number of elements (`btf_array.nelems`).
    nelems: u32,
    /// For an int: its encoding (`BTF_INT_SIGNED` 1, `BTF_INT_CHAR` 2, `BTF_INT_BOOL` 4).
    int_encoding: u32,
}

/// A function's return type and its parameters' names and types ([`Btf::canonical_type`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub ret: String,
    pub params: Vec<(String, String)>,
}

/// The parsed type graph of one BTF blob.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    /// Struct name → type ids (a name can appear more than once, e.g. forward declarations).
    structs_by_name: HashMap<String, Vec<u32>>,
    /// Name offsets of every enumerator (of enums and 64-bit enums).
    enumerators: Vec<u32>,
}

fn u16_at(data: &[u8], at: usize) -> Result<u16, BtfError> {
    let bytes = data.get(at..at + 2).ok_or(BtfError::Truncated)?;
    Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    let bytes = data.get(at..at + 4).ok_or(BtfError::Truncated)?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

impl Btf {
    /// Parses a little-endian BTF blob such as `/sys/kernel/btf/vmlinux`.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if u16_at(data, 0)? != BTF_MAGIC {
            return Err(BtfError::BadMagic);
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let type_section = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Truncated)?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Truncated)?
            .to_vec();

        // Type id 0 is `void`.
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            type_ref: 0,
            members: Vec::new(),
            nelems: 0,
            int_encoding: 0,
        }];
        let mut enumerators = Vec::new();
        let mut at = 0;
        while at < type_section.len() {
            let name_off = u32_at(type_section, at)?;
            let info = u32_at(type_section, at + 4)?;
            let size_or_type = u32_at(type_section, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let mut nelems = 0;
            let mut int_encoding = 0;
            // An array's element type, kept where other kinds keep their referenced type.
            let mut element = None;
            let extra = match kind {
                KIND_INT => {
                    // The top byte of the word after the header: BTF_INT_ENCODING.
                    int_encoding = u32_at(type_section, at)? >> 24;
                    4
                }
                KIND_VAR | KIND_DECL_TAG => 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ARRAY => {
                    // struct btf_array { __u32 type; __u32 index_type; __u32 nelems; }
                    nelems = u32_at(type_section, at + 8)?;
                    element = Some(u32_at(type_section, at)?);
                    12
                }
                KIND_ENUM | KIND_ENUM64 => {
                    // btf_enum { name_off, val }; btf_enum64 { name_off, val_lo32, val_hi32 }
                    let size = if kind == KIND_ENUM { 8 } else { 12 };
                    for i in 0..vlen {
                        enumerators.push(u32_at(type_section, at + size * i)?);
                    }
                    size * vlen
                }
                KIND_FUNC_PROTO => {
                    // btf_param { name_off, type }, kept as members at offset 0
                    for i in 0..vlen {
                        members.push(Member {
                            name_off: u32_at(type_section, at + 8 * i)?,
                            type_id: u32_at(type_section, at + 8 * i + 4)?,
                            bit_offset: 0,
                        });
                    }
                    8 * vlen
                }
                KIND_DATASEC => 12 * vlen,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + 12 * i;
                        let raw_offset = u32_at(type_section, m + 8)?;
                        members.push(Member {
                            name_off: u32_at(type_section, m)?,
                            type_id: u32_at(type_section, m + 4)?,
                            // With kind_flag set, the top 8 bits hold a bitfield size.
                            bit_offset: if kind_flag {
                                raw_offset & 0x00ff_ffff
                            } else {
                                raw_offset
                            },
                        });
                    }
                    12 * vlen
                }
                other => return Err(BtfError::UnknownKind(other)),
            };
            at += extra;
            if at > type_section.len() {
                return Err(BtfError::Truncated);
            }
            types.push(Type {
                name_off,
                kind,
                type_ref: element.unwrap_or(size_or_type),
                members,
                nelems,
                int_encoding,
            });
        }

        let mut btf = Self {
            types,
            strings,
            structs_by_name: HashMap::new(),
            enumerators,
        };
        for (id, ty) in btf.types.iter().enumerate() {
            if ty.kind == KIND_STRUCT || ty.kind == KIND_UNION {
                let name = btf.name(ty.name_off);
                if !name.is_empty() {
                    btf.structs_by_name
                        .entry(name.to_owned())
                        .or_default()
                        .push(id as u32);
                }
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let tail = self.strings.get(off as usize..).unwrap_or_default();
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).unwrap_or_default()
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let ty = self.types.get(id as usize)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.type_ref
                }
                _ => return Some(ty),
            }
        }
        None
    }

    /// Byte offset of `member` in `struct_name`, looking inside anonymous structs and unions
    /// (6.18 keeps `ns_common.ns_id` in one).
    pub fn member_offset(&self, struct_name: &str, member: &str) -> Result<u32, BtfError> {
        let ids = self
            .structs_by_name
            .get(struct_name)
            .ok_or_else(|| BtfError::NoStruct(struct_name.to_owned()))?;
        ids.iter()
            .find_map(|&id| self.find_member(&self.types[id as usize], member, 0))
            .map(|(bits, _)| bits / 8)
            .ok_or_else(|| BtfError::NoMember(struct_name.to_owned(), member.to_owned()))
    }

    /// Number of elements of array `member` of `struct_name` (found as [`Self::member_offset`]
    /// finds members), through typedefs and qualifiers: 64 for `void __rcu
    /// *slots[XA_CHUNK_SIZE]` in `struct xa_node`, where XA_CHUNK_SIZE is 64.
    pub fn member_array_len(&self, struct_name: &str, member: &str) -> Result<u32, BtfError> {
        let ids = self
            .structs_by_name
            .get(struct_name)
            .ok_or_else(|| BtfError::NoStruct(struct_name.to_owned()))?;
        let (_, type_id) = ids
            .iter()
            .find_map(|&id| self.find_member(&self.types[id as usize], member, 0))
            .ok_or_else(|| BtfError::NoMember(struct_name.to_owned(), member.to_owned()))?;
        self.resolve(type_id)
            .filter(|ty| ty.kind == KIND_ARRAY)
            .map(|ty| ty.nelems)
            .ok_or_else(|| BtfError::NotArray(struct_name.to_owned(), member.to_owned()))
    }

    /// Whether some enum has an enumerator called `name`: `BPF_FUNC_task_pt_regs` in `enum
    /// bpf_func_id` says the kernel has that helper.
    pub fn has_enumerator(&self, name: &str) -> bool {
        self.enumerators.iter().any(|&off| self.name(off) == name)
    }

    /// Whether the kernel has a function called `name` (a BTF `FUNC`).
    pub fn has_function(&self, name: &str) -> bool {
        self.types
            .iter()
            .any(|ty| ty.kind == KIND_FUNC && self.name(ty.name_off) == name)
    }

    /// Whether parameter `n` of function `func` points to a struct this BTF defines, not to a
    /// forward declaration: what an fentry program needs to read it. (5.10's BTF gives the
    /// syscall wrappers `const struct pt_regs *` of a forward-declared `pt_regs`.)
    pub fn param_points_to_struct(&self, func: &str, n: usize) -> Result<bool, BtfError> {
        let missing = || BtfError::NoFunction(func.to_owned());
        let function = self
            .types
            .iter()
            .find(|ty| ty.kind == KIND_FUNC && self.name(ty.name_off) == func)
            .ok_or_else(missing)?;
        let param = self
            .types
            .get(function.type_ref as usize)
            .filter(|proto| proto.kind == KIND_FUNC_PROTO)
            .and_then(|proto| proto.members.get(n))
            .ok_or_else(missing)?;
        Ok(self
            .resolve(param.type_id)
            .filter(|ty| ty.kind == KIND_PTR)
            .and_then(|ptr| self.resolve(ptr.type_ref))
            .is_some_and(|target| target.kind == KIND_STRUCT))
    }

    /// `sizeof(struct struct_name)`.
    pub fn struct_size(&self, struct_name: &str) -> Result<u32, BtfError> {
        self.structs_by_name
            .get(struct_name)
            .and_then(|ids| {
                ids.iter()
                    .map(|&id| &self.types[id as usize])
                    .find(|ty| !ty.members.is_empty())
            })
            .map(|ty| ty.type_ref)
            .ok_or_else(|| BtfError::NoStruct(struct_name.to_owned()))
    }

    /// A type as the kernel notes compare types: typedefs and qualifiers followed, ints by
    /// signedness and width (`u64` for `unsigned long`, `long unsigned int` and `u64` alike),
    /// `char` and `bool` by name, structs, unions and enums by name, pointers as `T *` and
    /// arrays as `T[n]`: `struct task_struct *`, `struct ipc_ids[3]`.
    pub fn canonical_type(&self, id: u32) -> String {
        self.canonical_at(id, 0)
    }

    fn canonical_at(&self, id: u32, depth: u32) -> String {
        let Some(ty) = self.types.get(id as usize).filter(|_| depth < 32) else {
            return "?".to_owned();
        };
        let name = self.name(ty.name_off);
        match ty.kind {
            0 => "void".to_owned(),
            KIND_INT if ty.int_encoding & 4 != 0 => "bool".to_owned(),
            KIND_INT if name == "char" => "char".to_owned(),
            KIND_INT => format!(
                "{}{}",
                if ty.int_encoding & 1 != 0 { "s" } else { "u" },
                ty.type_ref * 8
            ),
            KIND_PTR => format!("{} *", self.canonical_at(ty.type_ref, depth + 1)),
            KIND_ARRAY => format!(
                "{}[{}]",
                self.canonical_at(ty.type_ref, depth + 1),
                ty.nelems
            ),
            KIND_STRUCT | KIND_FWD => format!("struct {name}"),
            KIND_UNION => format!("union {name}"),
            KIND_ENUM | KIND_ENUM64 => format!("enum {name}"),
            KIND_FUNC_PROTO => "function".to_owned(),
            KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                self.canonical_at(ty.type_ref, depth + 1)
            }
            _ => name.to_owned(),
        }
    }

    /// A C type as written in a kernel note (`const char __user *`, `u64`, `unsigned long`,
    /// `struct ipc_ids[3]`) in the form of [`Self::canonical_type`], its typedef names looked up
    /// in this BTF. An array length that is not a number (`CGROUP_SUBSYS_COUNT`) becomes `[*]`.
    pub fn canonical_c_type(&self, text: &str) -> Result<String, String> {
        const QUALIFIERS: &[&str] = &[
            "const", "volatile", "restrict", "__user", "__rcu", "__percpu", "__iomem", "__force",
            "__kernel",
        ];
        const INT_WORDS: &[&str] = &["unsigned", "signed", "char", "short", "int", "long"];
        let (base, dims) = text.split_once('[').map_or((text, ""), |(b, d)| (b, d));
        let mut suffix = String::new();
        if !dims.is_empty() {
            for dim in format!("[{dims}").split_inclusive(']') {
                let len = dim
                    .strip_prefix('[')
                    .and_then(|d| d.strip_suffix(']'))
                    .map(str::trim)
                    .ok_or_else(|| format!("cannot read the array length of {text:?}"))?;
                if len.parse::<u32>().is_ok() {
                    suffix.push_str(&format!("[{len}]"));
                } else {
                    suffix.push_str("[*]");
                }
            }
        }
        let spaced = base.replace('*', " * ");
        let tokens: Vec<&str> = spaced
            .split_whitespace()
            .filter(|t| !QUALIFIERS.contains(t))
            .collect();
        let stars = tokens.iter().rev().take_while(|t| **t == "*").count();
        let words = &tokens[..tokens.len() - stars];
        if words.is_empty() || words.contains(&"*") {
            return Err(format!("cannot read the C type {text:?}"));
        }
        let mut canonical = match words {
            ["void"] => "void".to_owned(),
            // include/linux/types.h: `#define rcu_head callback_head`.
            ["struct", "rcu_head"] => "struct callback_head".to_owned(),
            ["struct" | "union" | "enum", name] => format!("{} {name}", words[0]),
            _ if words.iter().all(|w| INT_WORDS.contains(w)) => {
                let unsigned = words.contains(&"unsigned");
                let longs = words.iter().filter(|w| **w == "long").count();
                let bits = if words.contains(&"char") {
                    8
                } else if words.contains(&"short") {
                    16
                } else if longs > 0 {
                    64 // x86_64 is LP64
                } else {
                    32
                };
                if bits == 8 && !words.contains(&"unsigned") && !words.contains(&"signed") {
                    "char".to_owned()
                } else {
                    format!("{}{bits}", if unsigned { "u" } else { "s" })
                }
            }
            [name] => {
                let id = self
                    .types
                    .iter()
                    .position(|ty| ty.kind == KIND_TYPEDEF && self.name(ty.name_off) == *name)
                    .ok_or_else(|| format!("the kernel's BTF has no type {name}"))?;
                self.canonical_type(id as u32)
            }
            _ => return Err(format!("cannot read the C type {text:?}")),
        };
        for _ in 0..stars {
            canonical.push_str(" *");
        }
        canonical.push_str(&suffix);
        Ok(canonical)
    }

    /// Every BTF function called `func` (static functions of several files can share a name),
    /// each as its return type and its parameters' names and types, in the form of
    /// [`Self::canonical_type`].
    pub fn function_signatures(&self, func: &str) -> Vec<Signature> {
        self.types
            .iter()
            .filter(|ty| ty.kind == KIND_FUNC && self.name(ty.name_off) == func)
            .filter_map(|ty| self.signature(ty.type_ref))
            .collect()
    }

    /// The arguments of the tracepoint `event` as the kernel passes them to BPF: the prototype
    /// of the typedef `btf_trace_<event>` every tracepoint has, without its leading `void *`.
    pub fn trace_event_params(&self, event: &str) -> Option<Vec<(String, String)>> {
        let typedef = format!("btf_trace_{event}");
        let ty = self
            .types
            .iter()
            .find(|ty| ty.kind == KIND_TYPEDEF && self.name(ty.name_off) == typedef)?;
        let ptr = self.resolve(ty.type_ref).filter(|p| p.kind == KIND_PTR)?;
        let mut signature = self.signature(ptr.type_ref)?;
        if signature.params.is_empty() {
            return None;
        }
        signature.params.remove(0);
        Some(signature.params)
    }

    fn signature(&self, proto: u32) -> Option<Signature> {
        let proto = self
            .types
            .get(proto as usize)
            .filter(|p| p.kind == KIND_FUNC_PROTO)?;
        Some(Signature {
            ret: self.canonical_type(proto.type_ref),
            params: proto
                .members
                .iter()
                .map(|m| {
                    (
                        self.name(m.name_off).to_owned(),
                        self.canonical_type(m.type_id),
                    )
                })
                .collect(),
        })
    }

    /// The type of `member` of `struct_name` (found as [`Self::member_offset`] finds members),
    /// in the form of [`Self::canonical_type`].
    pub fn member_type(&self, struct_name: &str, member: &str) -> Result<String, BtfError> {
        let ids = self
            .structs_by_name
            .get(struct_name)
            .ok_or_else(|| BtfError::NoStruct(struct_name.to_owned()))?;
        ids.iter()
            .find_map(|&id| self.find_member(&self.types[id as usize], member, 0))
            .map(|(_, type_id)| self.canonical_type(type_id))
            .ok_or_else(|| BtfError::NoMember(struct_name.to_owned(), member.to_owned()))
    }

    /// The offset in bits and the type id of `member` in `ty`, looking inside anonymous structs
    /// and unions.
    fn find_member(&self, ty: &Type, member: &str, base_bits: u32) -> Option<(u32, u32)> {
        for m in &ty.members {
            let bits = base_bits + m.bit_offset;
            let name = self.name(m.name_off);
            if name == member {
                return Some((bits, m.type_id));
            }
            if name.is_empty()
                && let Some(inner) = self.resolve(m.type_id)
                && (inner.kind == KIND_STRUCT || inner.kind == KIND_UNION)
                && let Some(found) = self.find_member(inner, member, bits)
            {
                return Some(found);
            }
        }
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
}
