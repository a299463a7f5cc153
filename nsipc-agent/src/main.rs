//! The shipped binary: the agent on the system allocator (the library sets how glibc's
//! allocator keeps and gives back memory).

fn main() -> std::process::ExitCode {
    nsipc_agent::main()
}
