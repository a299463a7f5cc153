//! Stdout behind a bounded queue and a writer thread. The event loop hands each batch of lines
//! over and goes back to the ring buffer, the signals and the resyncs while a slow reader (jq on
//! a busy host, a log shipper that pauses) takes its time: the loop blocks only once
//! [`QUEUE_BYTES`] wait, and then the kernel's ring buffer holds the records and counts
//! what it cannot (`agent.lost`), as before. Nothing is dropped here: a batch is either written
//! or the stream ends (the reader closed the pipe, or a write failed).
//!
//! A reader that stops reading without closing the pipe blocks the writer thread in write(2)
//! and, once the queue is full, the loop; the stop watchdog ([`crate::stop_watchdog`]) still
//! ends the process then, on a stop signal, since the writes it times are the writer thread's.

use std::{
    io::{self, Write},
    sync::mpsc::{Receiver, Sender, channel},
    thread::{self, JoinHandle},
};

/// Bytes that may wait for the writer thread before the loop waits too: about 4 000 lines, and
/// bounded in bytes, not batches, since a batch is what one pass of the loop wrote (one line on
/// a quiet host, up to the sink's 64 KiB buffer in a storm).
pub const QUEUE_BYTES: usize = 1024 * 1024;

/// Written-out buffers kept for reuse, so that the steady state allocates nothing.
const SPARES: usize = 4;

/// A `Write` whose `flush` queues what was written for the writer thread.
pub struct QueuedWriter {
    pending: Vec<u8>,
    /// None once dropped.
    chunks: Option<Sender<Vec<u8>>>,
    /// Chunks the writer thread has written, coming back (still full: their length is what
    /// left the queue).
    written: Receiver<Vec<u8>>,
    /// Bytes sent to the writer thread and not yet back.
    queued_bytes: usize,
    spares: Vec<Vec<u8>>,
    writer: Option<JoinHandle<io::Result<()>>>,
}

impl QueuedWriter {
    /// Starts the writer thread, which writes into what `open` makes there (stdout's lock is
    /// not `Send`, so it is taken on that thread).
    pub fn start<W: Write>(open: impl FnOnce() -> W + Send + 'static) -> io::Result<Self> {
        let (chunks, queued) = channel();
        let (give_back, written) = channel();
        let writer = thread::Builder::new()
            .name("stdout-writer".into())
            .spawn(move || write_chunks(open(), &queued, &give_back))?;
        Ok(Self {
            pending: Vec::new(),
            chunks: Some(chunks),
            written,
            queued_bytes: 0,
            spares: Vec::new(),
            writer: Some(writer),
        })
    }

    fn take_back(&mut self, mut chunk: Vec<u8>) {
        self.queued_bytes -= chunk.len();
        if self.spares.len() < SPARES {
            chunk.clear();
            self.spares.push(chunk);
        }
    }

    /// The writer thread's end: the error that stopped it (a closed pipe is `BrokenPipe`).
    fn writer_error(&mut self) -> io::Error {
        self.chunks = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(Err(err))) => err,
            Some(Err(_)) => io::Error::other("the stdout writer thread panicked"),
            Some(Ok(Ok(()))) | None => io::Error::from(io::ErrorKind::BrokenPipe),
        }
    }
}

/// The writer thread: each chunk written whole, in order, then given back.
fn write_chunks<W: Write>(
    mut out: W,
    queued: &Receiver<Vec<u8>>,
    give_back: &Sender<Vec<u8>>,
) -> io::Result<()> {
    for chunk in queued {
        out.write_all(&chunk)?;
        out.flush()?;
        // The loop may already be gone (dropping its end); the chunk is then simply freed.
        let _ = give_back.send(chunk);
    }
    Ok(())
}

impl Write for QueuedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    /// Queues what was written since the last flush; waits only while [`QUEUE_BYTES`] wait.
    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        while let Ok(chunk) = self.written.try_recv() {
            self.take_back(chunk);
        }
        while self.queued_bytes > 0 && self.queued_bytes + self.pending.len() > QUEUE_BYTES {
            match self.written.recv() {
                Ok(chunk) => self.take_back(chunk),
                Err(_) => return Err(self.writer_error()),
            }
        }
        let empty = self.spares.pop().unwrap_or_default();
        let chunk = std::mem::replace(&mut self.pending, empty);
        self.queued_bytes += chunk.len();
        let sent = self
            .chunks
            .as_ref()
            .is_some_and(|chunks| chunks.send(chunk).is_ok());
        if sent {
            Ok(())
        } else {
            Err(self.writer_error())
        }
    }
}

impl Drop for QueuedWriter {
    /// Queues what is left and waits until the writer thread has written everything: the last
    /// lines (`agent.stop`) are out before the process exits.
    fn drop(&mut self) {
        let _ = self.flush();
        self.chunks = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Mutex, mpsc},
        time::Duration,
    };

    use super::*;

    /// A writer whose bytes the test can read afterwards.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A writer that waits for the test's word before each write.
    struct Gated(mpsc::Receiver<()>);

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.recv().map_err(|_| io::Error::other("gate closed"))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_batch_is_written_in_order_by_the_time_it_is_dropped() {
        let out = Shared::default();
        let mut queued = QueuedWriter::start({
            let out = out.clone();
            move || out
        })
        .unwrap();
        for n in 0..1000 {
            writeln!(queued, "line {n}").unwrap();
            if n % 7 == 0 {
                queued.flush().unwrap();
            }
        }
        // The last lines are never flushed by hand: dropping writes them.
        drop(queued);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let expected: String = (0..1000).map(|n| format!("line {n}\n")).collect();
        assert_eq!(text, expected);
    }

    #[test]
    fn a_closed_pipe_comes_back_as_broken_pipe() {
        struct ClosedPipe;
        impl Write for ClosedPipe {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut queued = QueuedWriter::start(|| ClosedPipe).unwrap();
        // The writer thread meets the closed pipe with the first batch; a later flush learns it.
        let mut error = None;
        for _ in 0..3 {
            queued.write_all(b"x\n").unwrap();
            if let Err(err) = queued.flush() {
                error = Some(err);
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(error.map(|err| err.kind()), Some(io::ErrorKind::BrokenPipe));
    }

    #[test]
    fn a_stalled_reader_blocks_the_loop_only_once_the_queue_is_full() {
        const BATCH: usize = 1024;
        let batches = QUEUE_BYTES / BATCH;
        let (open_gate, gate) = mpsc::channel();
        let mut queued = QueuedWriter::start(move || Gated(gate)).unwrap();
        let (done, finished) = mpsc::channel();
        let producer = thread::spawn(move || {
            // Many small batches up to the budget: none of them waits.
            for _ in 0..batches {
                queued.write_all(&[b'x'; BATCH]).unwrap();
                queued.flush().unwrap();
            }
            done.send(()).unwrap();
            // One byte more must wait for the reader.
            queued.write_all(b"x").unwrap();
            queued.flush().unwrap();
            done.send(()).unwrap();
            queued
        });
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("the queue took its batches without waiting");
        assert!(
            finished.recv_timeout(Duration::from_millis(200)).is_err(),
            "a full queue makes the loop wait"
        );
        // The reader reads again: everything goes through.
        for _ in 0..=batches {
            open_gate.send(()).unwrap();
        }
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("the loop goes on once the reader reads");
        drop(producer.join().unwrap());
    }
}
