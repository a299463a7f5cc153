//! Checking claims against a kernel's BTF.

use super::{Claim, Decl, Version, parse};
use crate::btf::Btf;

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
