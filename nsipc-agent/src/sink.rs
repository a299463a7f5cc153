//! The JSON Lines output: one object per line on stdout, buffered, flushed after each batch.

use std::io::{self, Write};

use serde::Serialize;

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
/// can format straight into it ([`JsonLines::write_with`]) without a `Write` call per field.
pub struct JsonLines<W: Write> {
    buf: Vec<u8>,
    out: W,
    /// `--output none`: lines are counted by the caller but neither made nor written.
    discard: bool,
}

fn reader_gone(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::BrokenPipe
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> Self {
        Self {
            buf: Vec::with_capacity(BUFFER_BYTES),
            out,
            discard: false,
        }
    }

    /// From now on, writes nothing (`--output none`): `out` is never written to again.
    pub fn discard(&mut self) {
        self.buf = Vec::new();
        self.discard = true;
    }

    /// Appends one line. I/O errors other than a closed pipe are real errors.
    pub fn write<T: Serialize>(&mut self, value: &T) -> io::Result<SinkState> {
        if self.discard {
            return Ok(SinkState::Open);
        }
        let start = self.buf.len();
        if let Err(err) = serde_json::to_writer(&mut self.buf, value) {
            // Nothing half-written goes out.
            self.buf.truncate(start);
            return Err(err.into());
        }
        self.end_line()
    }

    /// Appends one line that `write` puts into the buffer (an object, no newline).
    pub fn write_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> io::Result<SinkState> {
        if self.discard {
            return Ok(SinkState::Open);
        }
        write(&mut self.buf);
        self.end_line()
    }

    fn end_line(&mut self) -> io::Result<SinkState> {
        self.buf.push(b'\n');
        if self.buf.len() >= BUFFER_BYTES {
            return self.flush();
        }
        Ok(SinkState::Open)
    }

    /// The writer underneath the buffer (what is still buffered is not in it yet).
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    pub fn flush(&mut self) -> io::Result<SinkState> {
        if self.discard {
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
    use serde_json::json;

    use super::*;

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
    fn a_discarding_sink_writes_nothing() {
        let mut sink = JsonLines::new(ClosedPipe);
        sink.discard();
        assert_eq!(sink.write(&json!({"event": "a"})).unwrap(), SinkState::Open);
        let mut called = false;
        sink.write_with(|_| called = true).unwrap();
        assert!(!called, "no line is made");
        assert_eq!(sink.flush().unwrap(), SinkState::Open);
    }

    #[test]
    fn a_closed_pipe_is_reported_not_an_error() {
        let mut sink = JsonLines::new(ClosedPipe);
        // Buffered: the first write fits in the buffer, the flush meets the closed pipe.
        assert_eq!(sink.write(&json!({"event": "a"})).unwrap(), SinkState::Open);
        assert_eq!(sink.flush().unwrap(), SinkState::ReaderGone);
    }
}
