//! `nsipc-bench`: the commands `cargo xtask bench` drives (feature `bench`; never shipped).

#[global_allocator]
static ALLOCATOR: nsipc_agent::bench::CountingAllocator = nsipc_agent::bench::CountingAllocator;

fn main() -> std::process::ExitCode {
    nsipc_agent::bench::main()
}
