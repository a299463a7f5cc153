//! Just enough of a BTF reader to find struct member offsets in the running kernel.
//!
//! Format: include/uapi/linux/btf.h. A header, then a type section of variable-length records
//! (type id N is the N-th record, from 1), then a string section. aya's public `Btf` cannot list
//! struct members, and the crates that can are not permissively licensed, hence this module.

use std::collections::HashMap;

use thiserror::Error;

mod names;
mod parse;
mod queries;
#[cfg(test)]
pub(crate) mod tests;

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

impl Btf {
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
}
