//! `nsipc-bench`, the commands `cargo xtask bench` drives: built only with the `bench` feature,
//! so that the shipped `nsipc-agent` carries none of it (nor the counting allocator, nor the
//! floor's eBPF object).
//!
//! - `floor`: the floor tracer. The minimal programs of `nsipc-ebpf/src/bin/floor.rs` on
//!   the probes' hooks, drained by the same kind of event loop as `trace`, which discards.
//! - `json`: the decode + JSON path of `trace` alone, fed records shaped like the ones the
//!   IPC storm workload makes the probes write, into a buffered writer that discards: once as
//!   from a host task and once as from a container's, for the cost of attribution per event.
//! - `memory`: the lifecycle engine's resident set with many live namespaces and objects.

mod floor;
mod json;
mod memory;
#[cfg(test)]
mod tests;

use std::{
    io::{self, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

use self::{
    floor::{FloorOptions, floor},
    json::json_path,
    memory::engine_memory,
};
use crate::{
    allocator,
    cli::{OutputFormat, parse_ring_buffer_size},
    kernel::DEFAULT_BTF_PATH,
    output::pretty::Style,
    output::sink::Format,
};

/// The bench binary's allocator counts allocations, as the unit tests' does.
pub use crate::alloc_count::CountingAllocator;

#[derive(Debug, Parser)]
#[command(
    name = "nsipc-bench",
    about = "The commands `cargo xtask bench` drives: the floor tracer, the JSON path alone, the \
             lifecycle engine's memory"
)]
struct BenchCli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The benchmark floor: minimal programs on the probes' hooks, drained by a consumer that
    /// discards (needs root).
    Floor(FloorArgs),
    /// The decode + JSON path alone.
    Json(JsonArgs),
    /// The lifecycle engine's memory with many live namespaces and objects.
    Memory(MemoryArgs),
}

#[derive(Debug, clap::Args)]
struct FloorArgs {
    /// Size of the ring buffer, as for `trace`.
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = parse_ring_buffer_size)]
    ring_buffer_size: u32,

    /// BTF of the running kernel (to attach the BTF tracepoints).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_BTF_PATH)]
    btf: PathBuf,

    /// Also the hooks of `trace --activity-interval` (msgsnd, msgrcv, semop, semtimedop),
    /// with the empty program: the least counting the calls could cost.
    #[arg(long)]
    activity: bool,
}

#[derive(Debug, clap::Args)]
struct JsonArgs {
    /// How many records to decode and serialize.
    #[arg(long, default_value_t = 2_000_000)]
    records: u64,

    /// The format to write them in (into a writer that discards).
    #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
    output: OutputFormat,

    /// Colour the pretty lines.
    #[arg(long)]
    color: bool,
}

impl JsonArgs {
    fn format(&self) -> Format {
        match self.output {
            OutputFormat::Json => Format::Json,
            OutputFormat::Pretty => Format::Pretty(Style::new(self.color)),
            OutputFormat::None => Format::None,
        }
    }
}

#[derive(Debug, clap::Args)]
struct MemoryArgs {
    /// Live namespaces to create.
    #[arg(long, default_value_t = 10_000)]
    namespaces: u32,
    /// Live objects to create, spread over the namespaces.
    #[arg(long, default_value_t = 100_000)]
    objects: u32,
}

/// The `nsipc-bench` command.
pub fn main() -> ExitCode {
    // The agent's allocator settings, so that the memory measured is the agent's.
    allocator::return_freed_memory_promptly();
    let cli = BenchCli::parse();
    let result = match cli.command {
        BenchCommand::Floor(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the event loop")
            .and_then(|runtime| {
                runtime.block_on(floor(FloorOptions {
                    btf_path: args.btf,
                    ring_buffer_bytes: args.ring_buffer_size,
                    activity: args.activity,
                }))
            }),
        BenchCommand::Json(args) => json_path(args.records, args.format()),
        BenchCommand::Memory(args) => engine_memory(args.namespaces, args.objects),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => crate::fail(&err),
    }
}

/// The host IPC namespace's `ns_id` on the 6.18 development machine.
pub(super) const HOST_NS_ID: u64 = 4098;

pub(super) fn print_line(value: &serde_json::Value) -> Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush().context("writing to stdout")
}
