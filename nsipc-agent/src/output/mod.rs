//! Everything the agent writes to its stream: one line per event, as JSON or for a person.
//!
//! The flow: a kernel record is decoded ([`crate::decode`]) into a kernel event; with `--raw`
//! that event is written as it is, else the lifecycle engine ([`crate::lifecycle`]) turns it
//! into what was born, joined or died; the agent adds lines about itself, and the inventory
//! taken at start (and at a resynchronisation) adds what already existed. Each of these is an
//! [`EventLine`](sink::EventLine): the sink asks it for its JSON or its human line and writes
//! it, buffered, to stdout (through [`stdout_queue`] for `trace`).
//!
//! What each file writes:
//! - [`kernel_events`]: the kernel events (`msg.get`, `ipc_ns.unshare`, `shm.freed`…), as
//!   `--raw` writes them;
//! - [`lifecycle_events`]: the lifecycle engine's events (`ipc_ns.create`, `shm.destroy`…),
//!   which the engine defines in [`crate::lifecycle`];
//! - [`activity_events`]: the activity report's lines (`msg.activity`, `sem.activity`,
//!   `ipc.flow`), which [`crate::activity`] works out;
//! - [`agent_events`]: the agent's own lines (`agent.start`, `agent.lost`…);
//! - [`inventory`]: the inventory's lines (`ipc_ns.exists`, `msg.exists`…);
//! - [`fields`]: the pieces every kind of line shares (wall clock, RFC 3339 time, `key_hex`,
//!   `mode_octal`);
//! - [`json`]: the hot path's JSON writer ([`json::Line`]) and the field vocabulary
//!   ([`json::Fields`]) it shares with serde;
//! - [`pretty`]: the human view (`--output pretty`): columns, colours, time of day (each event
//!   kind's own human line is written next to its JSON, by its `EventLine::pretty`);
//! - [`sink`]: the buffered writer of lines, JSON or pretty, that notices a reader gone;
//! - [`stdout_queue`]: stdout behind a bounded queue and a writer thread, so that a slow reader
//!   does not hold up the event loop.

pub mod activity_events;
pub mod agent_events;
pub mod fields;
pub mod inventory;
pub mod json;
pub mod kernel_events;
pub mod lifecycle_events;
pub mod pretty;
pub mod sink;
pub mod stdout_queue;
