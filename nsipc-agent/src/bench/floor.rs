//! `nsipc-bench floor`: the minimal programs on the probes' hooks, drained by an event loop
//! that discards.

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use serde_json::json;
use std::path::PathBuf;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval},
};

use super::print_line;
use crate::{kernel, probes::Probes, trace::IDLE_POLL};

pub(super) struct FloorOptions {
    pub btf_path: PathBuf,
    pub ring_buffer_bytes: u32,
    /// Also on the activity hooks.
    pub activity: bool,
}

/// Takes every waiting record out of the ring buffer and throws it away.
fn discard(ring: &mut RingBuf<MapData>) -> u64 {
    let mut records = 0;
    while ring.next().is_some() {
        records += 1;
    }
    records
}

/// Runs the floor until SIGINT/SIGTERM. Prints `floor.ready` once attached and `floor.stop`
/// with the records drained and the records the kernel could not buffer.
pub(super) async fn floor(options: FloorOptions) -> Result<()> {
    kernel::check_privileges()?;
    kernel::ensure_tracefs()?;
    let (mut probes, ring) = Probes::load_floor_and_attach(
        &options.btf_path,
        options.ring_buffer_bytes,
        options.activity,
    )?;
    // SAFETY: as in `trace::run`: AsyncFd owns the ring buffer, which owns its map fd.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| err.into_parts().1)
        .context("registering the ring buffer with the event loop")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    print_line(&json!({
        "event": "floor.ready",
        "programs": probes.attached,
        "ring_buffer_bytes": options.ring_buffer_bytes,
        "pid": std::process::id(),
    }))?;

    let mut records = 0;
    let mut tick = interval(IDLE_POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                records += discard(guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = tick.tick() => records += discard(ring.get_mut()),
        }
    }
    probes.detach();
    records += discard(&mut ring.into_inner());
    print_line(&json!({
        "event": "floor.stop",
        "records": records,
        "lost": probes.lost_per_slot()?.iter().sum::<u64>(),
    }))
}
