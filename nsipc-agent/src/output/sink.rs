//! The output: one line per event on stdout, buffered, flushed after each batch. A JSON
//! object per line (the stable format), or with `--output pretty` the human view
//! ([`crate::pretty`]); both are written from the same event values ([`EventLine`]).

use std::io::{self, Write};

use crate::output::pretty::{PrettyLine, Style};

/// What the lines are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JSON Lines (docs/events.md).
    Json,
    /// The human view.
    Pretty(Style),
    /// No lines at all (`--output none`, for metrics only): they are still counted.
    None,
}

/// An event the stream writes as one line, in either format.
pub trait EventLine {
    /// Appends the JSON object, without the newline.
    fn json(&self, buf: &mut Vec<u8>) -> serde_json::Result<()>;
    /// Writes the human view's line.
    fn pretty(&self, line: &mut PrettyLine<'_>);
}

/// Whether the reader of the stream is still there.
#[derive(Debug, PartialEq, Eq)]
pub enum SinkState {
    Open,
    /// The reader closed the pipe (`| head -3`): stop quietly.
    ReaderGone,
}

/// How much is buffered before it is written out (a flush writes the rest).
const BUFFER_BYTES: usize = 64 * 1024;

/// Lines are written into a buffer of our own rather than a `BufWriter`, so that the hot path
/// can format straight into it ([`EventLine`]) without a `Write` call per field. JSON unless
/// made [`JsonLines::formatting`] otherwise.
pub struct JsonLines<W: Write> {
    buf: Vec<u8>,
    out: W,
    /// How lines are written.
    format: Format,
}

fn reader_gone(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::BrokenPipe
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> Self {
        Self {
            buf: Vec::with_capacity(BUFFER_BYTES),
            out,
            format: Format::Json,
        }
    }

    /// Writes lines in `format`; with [`Format::None`], `out` is never written to again.
    pub fn formatting(mut self, format: Format) -> Self {
        if format == Format::None {
            self.buf = Vec::new();
        }
        self.format = format;
        self
    }

    /// Appends one line. I/O errors other than a closed pipe are real errors.
    pub fn write<T: EventLine + ?Sized>(&mut self, value: &T) -> io::Result<SinkState> {
        match self.format {
            Format::Json => {
                let start = self.buf.len();
                if let Err(err) = value.json(&mut self.buf) {
                    // Nothing half-written goes out.
                    self.buf.truncate(start);
                    return Err(err.into());
                }
            }
            Format::Pretty(style) => value.pretty(&mut PrettyLine::new(&mut self.buf, style)),
            Format::None => return Ok(SinkState::Open),
        }
        self.end_line()
    }

    fn end_line(&mut self) -> io::Result<SinkState> {
        self.buf.push(b'\n');
        if self.buf.len() >= BUFFER_BYTES {
            return self.flush();
        }
        Ok(SinkState::Open)
    }

    #[cfg(any(test, feature = "bench"))]
    /// The writer underneath the buffer (what is still buffered is not in it yet).
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    pub fn flush(&mut self) -> io::Result<SinkState> {
        if self.format == Format::None {
            return Ok(SinkState::Open);
        }
        let result = self
            .out
            .write_all(&self.buf)
            .and_then(|()| self.out.flush());
        // What failed to go out is dropped: the stream stops on any error.
        self.buf.clear();
        match result {
            Ok(()) => Ok(SinkState::Open),
            Err(err) if reader_gone(&err) => Ok(SinkState::ReaderGone),
            Err(err) => Err(err),
        }
    }
}

impl<W: Write> Drop for JsonLines<W> {
    /// Writes what is left, as a `BufWriter` would; errors have nowhere to go.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Writes a one-shot command's whole output (`check`, `completions`) to `out`; a reader that
/// closed the pipe first (`| head -c0`, `| true`) is not an error: nobody is left to tell.
pub fn write_all_quietly(out: &mut dyn Write, bytes: &[u8]) -> io::Result<()> {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(err) if reader_gone(&err) => Ok(()),
        result => result,
    }
}

/// True when stdout is a pipe whose reader has closed it, even if nothing was written since:
/// a quiet stream would otherwise only notice at its next event.
pub fn stdout_reader_gone() -> bool {
    let mut pfd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
    ready > 0 && pfd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    impl EventLine for Value {
        fn json(&self, buf: &mut Vec<u8>) -> serde_json::Result<()> {
            serde_json::to_writer(buf, self)
        }

        fn pretty(&self, line: &mut PrettyLine<'_>) {
            line.raw(self["event"].as_str().unwrap_or("?"));
        }
    }

    struct ClosedPipe;
    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
    }

    #[test]
    fn writes_one_object_per_line() {
        let mut sink = JsonLines::new(Vec::new());
        sink.write(&json!({"event": "a", "s": "q\"\n\u{1}"}))
            .unwrap();
        sink.write(&json!({"event": "b"})).unwrap();
        sink.flush().unwrap();
        let out = String::from_utf8(sink.get_ref().clone()).unwrap();
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(
            lines,
            [r#"{"event":"a","s":"q\"\n\u0001"}"#, r#"{"event":"b"}"#]
        );
    }

    #[test]
    fn a_sink_without_format_writes_nothing() {
        let mut sink = JsonLines::new(ClosedPipe).formatting(Format::None);
        assert_eq!(sink.write(&json!({"event": "a"})).unwrap(), SinkState::Open);
        assert_eq!(sink.flush().unwrap(), SinkState::Open);
    }

    #[test]
    fn the_format_chooses_how_each_value_is_written() {
        let mut sink = JsonLines::new(Vec::new()).formatting(Format::Pretty(Style::new(false)));
        sink.write(&json!({"event": "a"})).unwrap();
        sink.write(&json!({"event": "b"})).unwrap();
        sink.flush().unwrap();
        assert_eq!(sink.get_ref(), b"a\nb\n");
        let mut sink = JsonLines::new(Vec::new()).formatting(Format::Json);
        sink.write(&json!({"event": "a"})).unwrap();
        sink.flush().unwrap();
        assert_eq!(sink.get_ref(), b"{\"event\":\"a\"}\n");
    }

    #[test]
    fn a_one_shot_output_into_a_closed_pipe_is_not_an_error() {
        assert!(write_all_quietly(&mut ClosedPipe, b"{}\n").is_ok());
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        assert!(write_all_quietly(&mut Full, b"{}\n").is_err());
    }

    #[test]
    fn a_closed_pipe_is_reported_not_an_error() {
        let mut sink = JsonLines::new(ClosedPipe);
        // Buffered: the first write fits in the buffer, the flush meets the closed pipe.
        assert_eq!(sink.write(&json!({"event": "a"})).unwrap(), SinkState::Open);
        assert_eq!(sink.flush().unwrap(), SinkState::ReaderGone);
    }
}
