//! The queries by name: struct members and sizes, enumerators, functions and their
//! signatures, tracepoints' parameters.

use super::*;

impl Btf {
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
