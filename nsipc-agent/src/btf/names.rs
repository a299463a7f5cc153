//! Types named as the kernel notes compare them.

use super::*;

impl Btf {
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
}
