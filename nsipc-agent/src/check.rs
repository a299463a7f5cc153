//! `nsipc-agent check`: what this kernel allows, found by loading and attaching.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use crate::{
    attribution::{CgroupHierarchy, attributed_hierarchy},
    kernel, kernel_notes,
    output::sink::write_all_quietly,
    probes::{self, Backend, Capabilities, FreeHooks, KFREE_COPIES, KfreeCallers, LoadOptions},
};

/// Where the kernel says how locked down it is (`[none] integrity confidentiality`).
const LOCKDOWN: &str = "/sys/kernel/security/lockdown";
/// Smallest ring buffer: nothing is traced, the programs only need the map to exist.
const CHECK_RING_BUFFER_BYTES: u32 = 4096;

#[derive(Serialize)]
struct Report<'a> {
    event: &'static str,
    kernel: String,
    btf: Btf<'a>,
    /// The lockdown mode, or None where the kernel does not say (no lockdown LSM, or
    /// securityfs not mounted).
    lockdown: Option<String>,
    /// The functions whose kfree calls the probes look at (every kfree when empty).
    kfree_callers: &'a [String],
    /// The cgroup hierarchy tasks are attributed to containers by (None: none is).
    cgroup_hierarchy: Option<String>,
    /// Helpers the kernel lacks, and what the probes do instead.
    fallbacks: BTreeMap<&'static str, &'static str>,
    #[serde(flatten)]
    capabilities: &'a Capabilities,
    auto: Auto<'a>,
    /// The `kernel:` notes of the eBPF sources checked against this kernel's BTF.
    kernel_notes: kernel_notes::Report,
}

#[derive(Serialize)]
struct Btf<'a> {
    path: &'a Path,
    present: bool,
}

/// What `trace --backend auto` would do here.
#[derive(Serialize)]
struct Auto<'a> {
    backend: Option<Backend>,
    hooks: BTreeMap<&'a str, Backend>,
    /// How it would see frees.
    frees: Option<FreeHooks>,
}

pub fn run(btf_path: &Path) -> Result<()> {
    kernel::check_privileges()?;
    let btf = kernel::load_btf(btf_path)?;
    let hierarchy = CgroupHierarchy::of_this_host();
    let offsets = kernel::kernel_offsets(&btf, hierarchy.as_ref())
        .context("the kernel's BTF lacks a field the probes read")?;
    let release = kernel::release();
    let kernel_notes = kernel_notes::check_all(&btf, &release);
    drop(btf);
    kernel::ensure_tracefs()?;
    let kfree_callers = KfreeCallers::from_kallsyms();
    let capabilities = probes::capabilities(&LoadOptions {
        offsets,
        kfree_callers: &kfree_callers,
        btf_path,
        ring_buffer_bytes: CHECK_RING_BUFFER_BYTES,
        backend: None,
        cgroup_hierarchy: -1,
        // Every hook is tried, the activity ones included.
        activity: true,
    })?;
    let hooks = capabilities.auto();
    let backend = hooks.values().min().copied();
    let frees = FreeHooks::candidates(backend.unwrap_or(Backend::Tracepoint))
        .iter()
        .copied()
        .find(|hooks| capabilities.frees.get(hooks).is_some_and(|o| o.ok));
    let report = Report {
        event: "agent.check",
        kernel: release,
        btf: Btf {
            path: btf_path,
            present: true,
        },
        lockdown: lockdown_mode(),
        kfree_callers: &kfree_callers.functions,
        cgroup_hierarchy: attributed_hierarchy(hierarchy.as_ref(), &offsets),
        fallbacks: kernel::fallbacks(&offsets),
        capabilities: &capabilities,
        auto: Auto {
            backend,
            hooks,
            frees,
        },
        kernel_notes,
    };
    let mut line = serde_json::to_vec(&report)?;
    line.push(b'\n');
    write_all_quietly(&mut std::io::stdout().lock(), &line).context("writing the report")?;
    let hooks_total = capabilities
        .backends
        .values()
        .map(|report| report.hooks.len())
        .max()
        .unwrap_or(0);
    if report.auto.hooks.len() < hooks_total
        || report.auto.frees.is_none()
        || capabilities
            .common
            .iter()
            .any(|(name, o)| !o.ok && !KFREE_COPIES.contains(name))
    {
        bail!("some hooks attach with no backend on this kernel: `trace` would fail");
    }
    Ok(())
}

/// The bracketed word of /sys/kernel/security/lockdown.
fn lockdown_mode() -> Option<String> {
    let modes = std::fs::read_to_string(LOCKDOWN).ok()?;
    parse_lockdown(&modes).map(str::to_owned)
}

fn parse_lockdown(modes: &str) -> Option<&str> {
    let start = modes.find('[')? + 1;
    let end = start + modes[start..].find(']')?;
    Some(&modes[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lockdown_mode_is_the_bracketed_one() {
        assert_eq!(
            parse_lockdown("none [integrity] confidentiality\n"),
            Some("integrity")
        );
        assert_eq!(
            parse_lockdown("[none] integrity confidentiality"),
            Some("none")
        );
        assert_eq!(parse_lockdown(""), None);
    }
}
