#![no_std]
// Empty library target: nsipc-agent build-depends on this crate so that cargo rebuilds the agent
// when the probes change (aya-build compiles the `nsipc` binary for the bpf target).
