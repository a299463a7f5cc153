//! The raw type table: the header, the type section's records, the string section.

use std::collections::HashMap;

use super::*;

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
}
