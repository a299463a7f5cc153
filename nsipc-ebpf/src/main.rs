//! The nsipc eBPF probes: the same records from three backends (tracepoints, kprobes, fentry).
//!
//! Flow: a syscall's entry program (tracepoint, kprobe or fentry) remembers its arguments per
//! thread ([`syscall`]), its exit program turns them and the return value into one
//! [`nsipc_common::Record`] ([`record`]), tagged with the task's IPC namespace ([`task`]);
//! userspace attaches one backend's programs per syscall. Namespaces and shm segments that die without
//! a syscall are seen by their `kfree` ([`tracked`]). One module per probe family.
#![no_std]
#![no_main]
// atomic_xadd: see activity.rs. The probes are built with nightly (aya-build's default).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod activity;
mod ipc_objects;
mod mqueue;
mod namespaces;
mod process;
mod record;
mod syscall;
mod task;
mod tracked;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// bpf_probe_read_kernel and the ring buffer helpers are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
