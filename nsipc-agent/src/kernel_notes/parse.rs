//! Reading a note's text into claims.

use super::{Claim, Decl, Parsed, Version};

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
