//! nsipc-agent: kernel record → decoder → (lifecycle engine) → JSON Lines sink.
//!
//! A library so that two binaries share it: `nsipc-agent`, what is shipped, and
//! `nsipc-bench` (feature `bench`), the commands `cargo xtask bench` drives, which the shipped
//! binary does not carry.

mod activity;
#[cfg(any(test, feature = "bench"))]
mod alloc_count;
mod allocator;
mod attribution;
#[cfg(any(test, feature = "bench"))]
pub mod bench;
mod btf;
mod check;
mod cli;
mod containers;
mod decode;
mod filter;
mod free_check;
mod inventory;
mod kernel;
mod kernel_notes;
mod kfree_check;
mod lifecycle;
mod limits;
mod metrics;
mod names;
mod output;
mod packaging;
mod probes;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod schema;
mod snapshot;
mod stop_watchdog;
mod trace;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};

#[cfg(test)]
#[global_allocator]
static ALLOCATOR: alloc_count::CountingAllocator = alloc_count::CountingAllocator;

/// The `nsipc-agent` command: parses its arguments, runs the subcommand, reports a failure on
/// stderr.
pub fn main() -> ExitCode {
    allocator::return_freed_memory_promptly();
    let cli = Cli::parse();
    // Pretty on a terminal, JSON into a pipe or a file, unless asked: decided once, here.
    let format = match &cli.command {
        Command::Trace(args) => args.output.format_for_stdout(),
        Command::Snapshot(output) if output.output == Some(cli::OutputFormat::None) => {
            return fail(&anyhow::anyhow!(
                "snapshot --output none would print nothing: `none` is for `trace \
                 --metrics-addr`; use json or pretty"
            ));
        }
        Command::Snapshot(output) => output.format_for_stdout(),
        _ => output::sink::Format::Json,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&anyhow::Error::from(err).context("starting the event loop")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Trace(args) => {
                trace::run(trace::TraceOptions {
                    filter: args.filter(),
                    btf_path: args.btf,
                    ring_buffer_bytes: args.ring_buffer_size,
                    raw: args.raw,
                    cmdline: !args.no_cmdline,
                    backend: args.backend.wanted(),
                    format,
                    metrics_addr: args.metrics_addr,
                    activity_interval: args.activity_interval,
                })
                .await
            }
            Command::Check(args) => check::run(&args.btf),
            // Blocking /proc reads and short-lived helper threads; nothing else runs meanwhile.
            Command::Snapshot(_) => snapshot::run(format),
            Command::Man(args) => packaging::man_pages(&args.dir),
            Command::Completions(args) => {
                packaging::completions(args.shell, &mut std::io::stdout().lock())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

/// Prints the error chain as one line on stderr (no backtrace) and fails.
pub(crate) fn fail(err: &anyhow::Error) -> ExitCode {
    let message = format!("{err:#}");
    let one_line: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    eprintln!("nsipc-agent: {}", one_line.join("; "));
    ExitCode::FAILURE
}
