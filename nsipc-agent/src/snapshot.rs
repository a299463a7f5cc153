//! `nsipc-agent snapshot`: the inventory as JSON Lines, then exit. `ipc_ns.exists` per
//! namespace, then `msg.exists` / `shm.exists` / `sem.exists` per object, then
//! `mqueue.exists` per POSIX message queue (docs/events.md).
//! Collecting is [`inventory`]'s; writing the lines is [`output::inventory`]'s.

use std::io;

use anyhow::{Context as _, Result};

use crate::{
    inventory, kernel,
    output::{self, sink::Format},
};

pub fn run(format: Format) -> Result<()> {
    kernel::check_inventory_privileges("snapshot")?;
    let inventory = inventory::take_inventory_with_mqueues()?;
    output::inventory::write(&inventory, io::stdout().lock(), format)
        .context("writing to stdout")?;
    if !inventory.unreadable.is_empty() {
        eprintln!(
            "nsipc-agent: warning: {}",
            unreadable_warning(&inventory.unreadable)
        );
    }
    for (inum, why) in &inventory.mqueues_unlisted {
        eprintln!(
            "nsipc-agent: warning: the POSIX message queues of IPC namespace {inum} are not \
             listed: {why}"
        );
    }
    Ok(())
}

/// The snapshot is still worth having when some processes could not be looked at, but the
/// reader must know it may be incomplete.
fn unreadable_warning(pids: &[u32]) -> String {
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    format!(
        "permission denied reading /proc of {} process{} (pid {}): IPC namespaces held only by \
         {} are not listed",
        pids.len(),
        if pids.len() == 1 { "" } else { "es" },
        list.join(", "),
        if pids.len() == 1 { "it" } else { "them" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_processes_are_named() {
        assert_eq!(
            unreadable_warning(&[1]),
            "permission denied reading /proc of 1 process (pid 1): IPC namespaces held only by \
             it are not listed"
        );
        assert!(unreadable_warning(&[1, 77]).contains("2 processes (pid 1, 77)"));
    }
}
