//! nsipc-agent: kernel record → decoder → (lifecycle engine) → JSON Lines sink.

mod agent_events;
mod bench;
mod btf;
mod cli;
mod decode;
mod inventory;
mod kernel;
mod lifecycle;
mod names;
mod probes;
#[cfg(test)]
mod proptests;
mod render;
mod sink;
mod snapshot;
mod trace;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Backend, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
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
                // Only the tracepoint backend exists so far: `auto` resolves to it.
                let (Backend::Auto | Backend::Tracepoint) = args.backend;
                trace::run(trace::TraceOptions {
                    btf_path: args.btf,
                    ring_buffer_bytes: args.ring_buffer_size,
                    raw: args.raw,
                })
                .await
            }
            // Blocking /proc reads and short-lived helper threads; nothing else runs meanwhile.
            Command::Snapshot => snapshot::run(),
            Command::BenchFloor(args) => {
                bench::floor(bench::FloorOptions {
                    btf_path: args.btf,
                    ring_buffer_bytes: args.ring_buffer_size,
                })
                .await
            }
            Command::BenchJson(args) => bench::json_path(args.records),
            Command::BenchMemory(args) => bench::engine_memory(args.namespaces, args.objects),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

/// Prints the error chain as one line on stderr (no backtrace) and fails.
fn fail(err: &anyhow::Error) -> ExitCode {
    let message = format!("{err:#}");
    let one_line: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    eprintln!("nsipc-agent: {}", one_line.join("; "));
    ExitCode::FAILURE
}
