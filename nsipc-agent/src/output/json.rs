//! The hot path's JSON: flat objects written straight into the output buffer.
//!
//! A line of the stream is a flat object of known, plain keys. serde_json escapes every key
//! and goes through `core::fmt` for timestamps, which was most of the agent's CPU per event;
//! [`Line`] writes the keys as they are, numbers with `itoa`, and RFC 3339 times digit by
//! digit, with no allocation. Event types describe their fields once, through [`Fields`]:
//! [`Line`] writes them on the hot path, [`SerdeFields`] gives the same fields to serde (tests,
//! `serde_json::to_value`), and a test checks that both write the same bytes.

use std::{
    cell::Cell,
    convert::Infallible,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::output::fields::Rfc3339;

/// A key of an object, with its JSON form (`,"name":`) made at compile time by [`key!`], so
/// that writing it is one copy.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    pub name: &'static str,
    json: &'static str,
}

impl Key {
    /// Use [`key!`], which makes `json` right.
    pub const fn new(name: &'static str, json: &'static str) -> Self {
        Self { name, json }
    }
}

/// `key!("pid")`: the [`Key`] `pid`. Keys are plain identifiers (letters, digits, `_`, `.`):
/// nothing in them needs escaping.
macro_rules! key {
    ($name:literal) => {
        $crate::output::json::Key::new($name, concat!(",\"", $name, "\":"))
    };
}
pub(crate) use key;

/// Writes one object's fields.
pub trait Fields {
    type Error;
    /// One of the stream's fixed names (event names, reasons, errno names): nothing in them
    /// needs escaping, so they are copied as they are.
    fn name(&mut self, key: Key, value: &'static str) -> Result<(), Self::Error>;
    /// Short text made for this line in which nothing needs escaping: a key in hex
    /// ([`KeyHex`](crate::output::fields::KeyHex)), a mode in octal
    /// ([`ModeOctal`](crate::output::fields::ModeOctal)).
    fn ascii(&mut self, key: Key, value: &str) -> Result<(), Self::Error>;
    /// Bytes that should be UTF-8: invalid sequences become U+FFFD, as
    /// `String::from_utf8_lossy` does.
    fn lossy(&mut self, key: Key, value: &[u8]) -> Result<(), Self::Error>;
    fn uint(&mut self, key: Key, value: u64) -> Result<(), Self::Error>;
    fn int(&mut self, key: Key, value: i64) -> Result<(), Self::Error>;
    fn bool(&mut self, key: Key, value: bool) -> Result<(), Self::Error>;
    /// An RFC 3339 UTC time with nanoseconds (what [`Rfc3339`] writes).
    fn time(&mut self, key: Key, value: SystemTime) -> Result<(), Self::Error>;
    /// A nested object of unsigned counts.
    fn counts(&mut self, key: Key, value: &[(Key, u64)]) -> Result<(), Self::Error>;
    fn u32_list(&mut self, key: Key, value: &[u32]) -> Result<(), Self::Error>;
    /// A value already in JSON (an object made once and written many times, such as a
    /// container's).
    fn raw(&mut self, key: Key, json: &str) -> Result<(), Self::Error>;
    /// A list of values already in JSON.
    fn raw_list<'j>(
        &mut self,
        key: Key,
        items: impl Iterator<Item = &'j str>,
    ) -> Result<(), Self::Error>;
}

/// A line whose fields are written through [`Fields`]: by [`Line`] into the sink's buffer, and
/// by [`SerdeFields`] where serde needs the same line.
pub trait FieldsLine {
    fn fields<F: Fields>(&self, f: &mut F) -> Result<(), F::Error>;

    /// Writes the line as one JSON object (without the newline) into `buf`: the hot path, no
    /// allocation.
    fn write_json(&self, buf: &mut Vec<u8>) {
        let mut line = Line::start(buf);
        let Ok(()) = self.fields(&mut line);
        line.end();
    }
}

/// One JSON object written into a byte buffer (the sink's), without the newline.
pub struct Line<'b> {
    buf: &'b mut Vec<u8>,
    empty: bool,
}

impl<'b> Line<'b> {
    pub fn start(buf: &'b mut Vec<u8>) -> Self {
        buf.push(b'{');
        Self { buf, empty: true }
    }

    pub fn end(self) {
        self.buf.push(b'}');
    }

    fn key(&mut self, key: Key) {
        debug_assert!(
            key.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.'),
            "{key:?} needs escaping"
        );
        let json = key.json.as_bytes();
        // The first key has no comma before it.
        self.buf
            .extend_from_slice(if self.empty { &json[1..] } else { json });
        self.empty = false;
    }
}

impl Fields for Line<'_> {
    type Error = Infallible;

    fn name(&mut self, key: Key, value: &'static str) -> Result<(), Infallible> {
        self.ascii(key, value)
    }

    fn ascii(&mut self, key: Key, value: &str) -> Result<(), Infallible> {
        debug_assert!(
            value
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'),
            "{value:?} needs escaping"
        );
        self.key(key);
        self.buf.push(b'"');
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.push(b'"');
        Ok(())
    }

    fn lossy(&mut self, key: Key, value: &[u8]) -> Result<(), Infallible> {
        self.key(key);
        self.buf.push(b'"');
        if value.is_ascii() {
            // The usual comm: valid as it is.
            push_escaped(self.buf, value);
            self.buf.push(b'"');
            return Ok(());
        }
        for chunk in value.utf8_chunks() {
            push_escaped(self.buf, chunk.valid().as_bytes());
            if !chunk.invalid().is_empty() {
                self.buf.extend_from_slice(
                    char::REPLACEMENT_CHARACTER
                        .encode_utf8(&mut [0; 4])
                        .as_bytes(),
                );
            }
        }
        self.buf.push(b'"');
        Ok(())
    }

    fn uint(&mut self, key: Key, value: u64) -> Result<(), Infallible> {
        self.key(key);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        Ok(())
    }

    fn int(&mut self, key: Key, value: i64) -> Result<(), Infallible> {
        self.key(key);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        Ok(())
    }

    fn bool(&mut self, key: Key, value: bool) -> Result<(), Infallible> {
        self.key(key);
        self.buf
            .extend_from_slice(if value { b"true" } else { b"false" });
        Ok(())
    }

    fn time(&mut self, key: Key, value: SystemTime) -> Result<(), Infallible> {
        self.key(key);
        self.buf.push(b'"');
        push_rfc3339(self.buf, value);
        self.buf.push(b'"');
        Ok(())
    }

    fn counts(&mut self, key: Key, value: &[(Key, u64)]) -> Result<(), Infallible> {
        self.key(key);
        let mut inner = Line::start(self.buf);
        for &(key, count) in value {
            inner.uint(key, count)?;
        }
        inner.end();
        Ok(())
    }

    fn u32_list(&mut self, key: Key, value: &[u32]) -> Result<(), Infallible> {
        self.key(key);
        self.buf.push(b'[');
        for (i, item) in value.iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            self.buf
                .extend_from_slice(itoa::Buffer::new().format(*item).as_bytes());
        }
        self.buf.push(b']');
        Ok(())
    }

    fn raw(&mut self, key: Key, json: &str) -> Result<(), Infallible> {
        self.key(key);
        self.buf.extend_from_slice(json.as_bytes());
        Ok(())
    }

    fn raw_list<'j>(
        &mut self,
        key: Key,
        items: impl Iterator<Item = &'j str>,
    ) -> Result<(), Infallible> {
        self.key(key);
        self.buf.push(b'[');
        for (i, item) in items.enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            self.buf.extend_from_slice(item.as_bytes());
        }
        self.buf.push(b']');
        Ok(())
    }
}

/// The escapes serde_json writes: the two-letter ones where JSON has them, `\u00xx` for the
/// other control characters, everything else (UTF-8 included) as it is.
fn push_escaped(buf: &mut Vec<u8>, value: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Almost always nothing to escape: one branch-free pass, then one copy.
    let plain = value.iter().fold(true, |plain, &b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        buf.extend_from_slice(value);
        return;
    }
    let mut start = 0;
    for (i, &byte) in value.iter().enumerate() {
        let escape = match byte {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0..=0x1f => b'u',
            _ => continue,
        };
        buf.extend_from_slice(&value[start..i]);
        if escape == b'u' {
            buf.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]);
        } else {
            buf.extend_from_slice(&[b'\\', escape]);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&value[start..]);
}

/// The first second of year 10000, past what RFC 3339's four-digit years can write.
const YEAR_10000: u64 = 253_402_300_800;

thread_local! {
    /// The last second written, as `YYYY-MM-DDTHH:MM:SS.`: events come many to a second.
    static LAST_SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`, byte for byte what `humantime::format_rfc3339_nanos`
/// writes. Past year 9999, where humantime fails, the last time it can write.
fn push_rfc3339(buf: &mut Vec<u8>, time: SystemTime) {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    if secs >= YEAR_10000 {
        buf.extend_from_slice(b"9999-12-31T23:59:59.999999999Z");
        return;
    }
    let prefix = LAST_SECOND.with(|last| match last.get() {
        (second, prefix) if second == secs => prefix,
        _ => {
            let prefix = second_prefix(secs);
            last.set((secs, prefix));
            prefix
        }
    });
    buf.extend_from_slice(&prefix);
    let mut nanos = since_epoch.subsec_nanos();
    let mut out = *b"000000000Z";
    for digit in out[..9].iter_mut().rev() {
        *digit = b'0' + (nanos % 10) as u8;
        nanos /= 10;
    }
    buf.extend_from_slice(&out);
}

/// `YYYY-MM-DDTHH:MM:SS.` of a second since the epoch (before year 10000).
fn second_prefix(secs: u64) -> [u8; 20] {
    let (year, month, day) = civil_from_days(secs / 86_400);
    let in_day = secs % 86_400;
    let mut out = *b"0000-00-00T00:00:00.";
    let mut digits = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    digits(0, 4, year);
    digits(5, 2, month);
    digits(8, 2, day);
    digits(11, 2, in_day / 3600);
    digits(14, 2, in_day / 60 % 60);
    digits(17, 2, in_day % 60);
    out
}

/// (year, month, day) of a day counted from 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The same fields given to a serde map.
pub struct SerdeFields<'m, M>(pub &'m mut M);

struct Counts<'a>(&'a [(Key, u64)]);

impl Serialize for Counts<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, count) in self.0 {
            map.serialize_entry(key.name, count)?;
        }
        map.end()
    }
}

impl<M: SerializeMap> Fields for SerdeFields<'_, M> {
    type Error = M::Error;

    fn name(&mut self, key: Key, value: &'static str) -> Result<(), M::Error> {
        self.0.serialize_entry(key.name, value)
    }

    fn ascii(&mut self, key: Key, value: &str) -> Result<(), M::Error> {
        self.0.serialize_entry(key.name, value)
    }

    fn lossy(&mut self, key: Key, value: &[u8]) -> Result<(), M::Error> {
        self.0
            .serialize_entry(key.name, &String::from_utf8_lossy(value))
    }

    fn uint(&mut self, key: Key, value: u64) -> Result<(), M::Error> {
        self.0.serialize_entry(key.name, &value)
    }

    fn int(&mut self, key: Key, value: i64) -> Result<(), M::Error> {
        self.0.serialize_entry(key.name, &value)
    }

    fn bool(&mut self, key: Key, value: bool) -> Result<(), M::Error> {
        self.0.serialize_entry(key.name, &value)
    }

    fn time(&mut self, key: Key, value: SystemTime) -> Result<(), M::Error> {
        self.0.serialize_entry(key.name, &Rfc3339(value))
    }

    fn counts(&mut self, key: Key, value: &[(Key, u64)]) -> Result<(), M::Error> {
        self.0.serialize_entry(key.name, &Counts(value))
    }

    fn u32_list(&mut self, key: Key, value: &[u32]) -> Result<(), M::Error> {
        self.0.serialize_entry(key.name, value)
    }

    fn raw(&mut self, key: Key, json: &str) -> Result<(), M::Error> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(serde::ser::Error::custom)?;
        self.0.serialize_entry(key.name, &value)
    }

    fn raw_list<'j>(
        &mut self,
        key: Key,
        items: impl Iterator<Item = &'j str>,
    ) -> Result<(), M::Error> {
        let values = items
            .map(serde_json::from_str)
            .collect::<Result<Vec<serde_json::Value>, _>>()
            .map_err(serde::ser::Error::custom)?;
        self.0.serialize_entry(key.name, &values)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::output::fields::{KeyHex, ModeOctal};

    /// Every field kind, through both writers.
    struct Sample<'a> {
        text: &'a str,
        bytes: &'a [u8],
        time: SystemTime,
        numbers: (u64, i64),
    }

    impl Sample<'_> {
        fn fields<F: Fields>(&self, f: &mut F) -> Result<(), F::Error> {
            f.lossy(key!("event"), self.text.as_bytes())?;
            f.name(key!("name"), "msg.get_failed")?;
            f.time(key!("time"), self.time)?;
            f.lossy(key!("comm"), self.bytes)?;
            f.uint(key!("u"), self.numbers.0)?;
            f.int(key!("i"), self.numbers.1)?;
            f.ascii(key!("key_hex"), KeyHex::new(self.numbers.1 as i32).as_str())?;
            f.ascii(
                key!("mode_octal"),
                ModeOctal::new(self.numbers.0 as u32).as_str(),
            )?;
            f.bool(key!("yes"), true)?;
            f.bool(key!("no"), false)?;
            f.counts(
                key!("objects_destroyed"),
                &[
                    (key!("msg"), 1),
                    (key!("shm"), self.numbers.0),
                    (key!("sem"), 0),
                ],
            )?;
            f.u32_list(key!("empty"), &[])?;
            f.u32_list(key!("list"), &[4_026_531_839, 0, 7])?;
            // (keys in the order serde_json's maps write them)
            f.raw(
                key!("container"),
                r#"{"id":"ab","name":"pé","runtime":"docker"}"#,
            )?;
            f.raw_list(key!("nothing"), [].into_iter())?;
            f.raw_list(key!("containers"), [r#"{"id":"a"}"#, "[1,2]"].into_iter())
        }
    }

    impl Serialize for Sample<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(None)?;
            self.fields(&mut SerdeFields(&mut map))?;
            map.end()
        }
    }

    fn fast(sample: &Sample<'_>) -> String {
        let mut buf = Vec::new();
        let mut line = Line::start(&mut buf);
        let Ok(()) = sample.fields(&mut line);
        line.end();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn writes_what_serde_json_writes() {
        let texts = [
            "",
            "msg.create",
            "q\"\\\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}é€😀 end",
        ];
        let bytes: [&[u8]; 6] = [
            b"",
            b"nsipc-bench-wl",
            b"ipcmk\xff",
            b"\xf0\x9f\x98",
            b"a\xc3\xa9\xe2\x82\xacz\x80\x80\"",
            b"\x00\x01\x1fx\\",
        ];
        let times = [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::new(1_700_000_000, 5_000),
            UNIX_EPOCH + Duration::new(951_782_400, 999_999_999), // 2000-02-29
            UNIX_EPOCH + Duration::new(4_107_542_400, 1),         // 2100-03-01
            UNIX_EPOCH + Duration::new(YEAR_10000 - 1, 123),
        ];
        let numbers = [(0, 0), (u64::MAX, i64::MIN), (4096, -22), (1, i64::MAX)];
        for (i, time) in times.into_iter().enumerate() {
            for text in texts {
                for bytes in bytes {
                    let sample = Sample {
                        text,
                        bytes,
                        time,
                        numbers: numbers[i % numbers.len()],
                    };
                    assert_eq!(fast(&sample), serde_json::to_string(&sample).unwrap());
                }
            }
        }
    }

    #[test]
    fn times_in_the_same_second_and_the_next() {
        let base = 1_700_000_000;
        for (secs, nanos) in [
            (base, 1),
            (base, 999_999_999),
            (base + 1, 0),
            (base, 5),
            (base + 86_400, 7),
        ] {
            let time = UNIX_EPOCH + Duration::new(secs, nanos);
            let mut buf = Vec::new();
            push_rfc3339(&mut buf, time);
            assert_eq!(
                String::from_utf8(buf).unwrap(),
                humantime::format_rfc3339_nanos(time).to_string()
            );
        }
    }

    #[test]
    fn times_past_year_9999_stay_valid() {
        let mut buf = Vec::new();
        push_rfc3339(
            &mut buf,
            UNIX_EPOCH + Duration::new(YEAR_10000 + 86_400 * 400, 7),
        );
        assert_eq!(buf, b"9999-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn dates_match_humantime_day_by_day() {
        // Every day from 1970 to 2200, at a time that changes with it.
        for day in 0..84_000u64 {
            let time = UNIX_EPOCH + Duration::new(day * 86_400 + day % 86_400, (day * 7919) as u32);
            let mut buf = Vec::new();
            push_rfc3339(&mut buf, time);
            assert_eq!(
                String::from_utf8(buf).unwrap(),
                humantime::format_rfc3339_nanos(time).to_string()
            );
        }
    }
}
