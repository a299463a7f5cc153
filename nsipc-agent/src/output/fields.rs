//! The pieces every kind of line shares: the wall clock that turns the probes' monotonic
//! timestamps into times, RFC 3339 times, keys and modes as `ipcs` prints them, and the one
//! writer of each group of fields that several kinds of line carry: a task ([`put_task`]), the
//! container it runs in ([`put_container`]), a namespace ([`put_ns`]), an object's key
//! ([`put_key`]) and mode ([`put_mode`]). They write through [`Fields`], so the hot path's
//! [`Line`](crate::output::json::Line) and serde (through
//! [`SerdeFields`](crate::output::json::SerdeFields)) write the same fields.

use std::time::{Duration, SystemTime};

use serde::ser::{Serialize, Serializer};

use crate::{
    attribution::Attribution,
    decode::{ContainerRef, Task},
    names::errno_name,
    output::json::{Fields, Key, key},
};

/// Turns CLOCK_MONOTONIC timestamps (what probes record) into wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    /// CLOCK_REALTIME − CLOCK_MONOTONIC, in nanoseconds, measured once at start.
    offset_ns: i128,
}

/// The time of `clock` in ns.
pub fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer; the clocks asked for (realtime, monotonic, this
    // thread's CPU time) always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl WallClock {
    pub fn now() -> Self {
        Self {
            offset_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC),
        }
    }

    #[cfg(test)]
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    pub fn wall_time(&self, monotonic_ns: u64) -> SystemTime {
        let ns = (monotonic_ns as i128 + self.offset_ns).max(0) as u128;
        SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64)
    }
}

/// A wall-clock time serialized as an RFC 3339 string, written straight into the output
/// (no intermediate `String`).
pub struct Rfc3339(pub SystemTime);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_nanos(self.0))
    }
}

/// An IPC key as `ipcs` prints it (`key_hex`): `0x` and the 8 lowercase hex digits of its 32
/// bits, `0x00005eed`; `IPC_PRIVATE` (0) is `0x00000000`, a negative key its bit pattern (-1 is
/// `0xffffffff`). Made on the stack: the hot path writes one per object event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyHex([u8; 10]);

impl KeyHex {
    pub fn new(key: i32) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bits = key as u32;
        let mut text = *b"0x00000000";
        for (i, digit) in text[2..].iter_mut().enumerate() {
            *digit = HEX[(bits >> (28 - 4 * i) & 0xf) as usize];
        }
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl Serialize for KeyHex {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Permission bits as octal text (`mode_octal`), always 3 digits: `600`, `666`, `044`. Only
/// the `0o777` bits: the `mode` fields carry no others (the kernel keeps only them as an
/// object's permissions; a segment's status bits, SHM_DEST and SHM_LOCKED, are `dest` and
/// `locked`), and anything above is dropped here too. `ipcs` writes the same digits without
/// leading zeros (`44` for `044`), which 3 digits keep from reading as a decimal number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModeOctal([u8; 3]);

impl ModeOctal {
    pub fn new(mode: u32) -> Self {
        let mode = mode & 0o777;
        Self([
            b'0' + (mode >> 6) as u8,
            b'0' + (mode >> 3 & 0o7) as u8,
            b'0' + (mode & 0o7) as u8,
        ])
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("octal digits are ASCII")
    }
}

impl Serialize for ModeOctal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The keys of a namespace: its inum, the kernel's id of it, and the life the agent counted.
pub type NsKeys = (Key, Key, Key);

/// The namespace a line is about.
pub const NS: NsKeys = (key!("ns"), key!("ns_id"), key!("ns_gen"));

/// The namespace a task left.
pub const FROM_NS: NsKeys = (key!("from_ns"), key!("from_ns_id"), key!("from_ns_gen"));

/// Writes a namespace: its inum, then its `_id` where the kernel has one (6.18+), else its
/// `_gen` where the agent counted its lives (the lifecycle engine, `trace`'s inventory), else
/// nothing more (a raw kernel event, `snapshot`).
pub fn put_ns<F: Fields>(
    f: &mut F,
    (inum_key, id_key, gen_key): NsKeys,
    inum: u32,
    id: Option<u64>,
    generation: Option<u32>,
) -> Result<(), F::Error> {
    f.uint(inum_key, inum.into())?;
    match (id, generation) {
        (Some(id), _) => f.uint(id_key, id),
        (None, Some(generation)) => f.uint(gen_key, generation.into()),
        (None, None) => Ok(()),
    }
}

/// Writes the task an event is about: `pid`, `tid`, `ppid` (where known), `uid`, `comm`, then
/// its `cmdline` where the agent has it.
pub fn put_task<F: Fields>(
    f: &mut F,
    task: &Task,
    attribution: &Attribution,
) -> Result<(), F::Error> {
    f.uint(key!("pid"), task.pid.into())?;
    f.uint(key!("tid"), task.tid.into())?;
    if task.ppid != 0 {
        f.uint(key!("ppid"), task.ppid.into())?;
    }
    f.uint(key!("uid"), task.uid.into())?;
    f.lossy(key!("comm"), task.comm_bytes())?;
    if let Some(cmdline) = attribution.cmdline(task) {
        f.lossy(key!("cmdline"), cmdline.as_bytes())?;
    }
    Ok(())
}

/// Writes the container a task runs in, and `host_ipc`: whether it uses the host's IPC
/// namespace (`ns`); nothing for a task in no known container.
pub fn put_container<F: Fields>(
    f: &mut F,
    container: ContainerRef,
    ns: u32,
    attribution: &Attribution,
) -> Result<(), F::Error> {
    if let Some(container) = attribution.get(container) {
        f.raw(key!("container"), &container.json)?;
        f.bool(key!("host_ipc"), ns == nsipc_common::HOST_IPC_NS_INUM)?;
    }
    Ok(())
}

/// Writes an object's `key`, then `key_hex`: the key as `ipcs` prints it.
pub fn put_key<F: Fields>(f: &mut F, key: i32) -> Result<(), F::Error> {
    f.int(key!("key"), key.into())?;
    f.ascii(key!("key_hex"), KeyHex::new(key).as_str())
}

/// Writes `mode` (the permission bits only), then `mode_octal`: the same bits as `ipcs`
/// prints them.
/// Writes a failed call's `errno`: its name, or its number if it has none here.
pub fn put_errno<F: Fields>(f: &mut F, errno: i32) -> Result<(), F::Error> {
    match errno_name(errno) {
        Some(name) => f.name(key!("errno"), name),
        None => f.int(key!("errno"), errno.into()),
    }
}

pub fn put_mode<F: Fields>(f: &mut F, mode: u32) -> Result<(), F::Error> {
    f.uint(key!("mode"), (mode & 0o777).into())?;
    f.ascii(key!("mode_octal"), ModeOctal::new(mode).as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_hex_as_ipcs_prints_them() {
        for (key, hex) in [
            (0, "0x00000000"),
            (0x5eed, "0x00005eed"),
            (0x1234, "0x00001234"),
            (0x79c9_8b9f, "0x79c98b9f"),
            (i32::MAX, "0x7fffffff"),
            (-1, "0xffffffff"),
            (-5, "0xfffffffb"),
            (0xe851_1f7b_u32 as i32, "0xe8511f7b"),
            (i32::MIN, "0x80000000"),
        ] {
            assert_eq!(KeyHex::new(key).as_str(), hex, "key {key}");
            // ipcs: printf("0x%08x", key)
            assert_eq!(format!("0x{:08x}", key as u32), hex);
            assert_eq!(serde_json::to_value(KeyHex::new(key)).unwrap(), hex);
        }
    }

    #[test]
    fn modes_in_octal_as_ipcs_prints_them_in_three_digits() {
        for (mode, octal) in [
            (0o600, "600"),
            (0o666, "666"),
            (0o644, "644"),
            (0o640, "640"),
            (0o777, "777"),
            // ipcs: `44` and `0`; three digits here, so that no one reads them in decimal.
            (0o044, "044"),
            (0o007, "007"),
            (0, "000"),
            // Only the permission bits: IPC_CREAT (0o1000 in a get's flags), the sticky bit of
            // a chmod-like 0o1777, SHM_DEST / SHM_LOCKED in a segment's mode.
            (0o1777, "777"),
            (0o1600, "600"),
            (0o3640, "640"),
            (u32::MAX, "777"),
        ] {
            assert_eq!(ModeOctal::new(mode).as_str(), octal, "mode {mode:o}");
            assert_eq!(format!("{:03o}", mode & 0o777), octal);
            assert_eq!(serde_json::to_value(ModeOctal::new(mode)).unwrap(), octal);
        }
    }
}
