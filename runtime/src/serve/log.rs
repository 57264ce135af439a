//! The server's two log streams (stdout, stderr): lines written in order by a thread of each
//! stream's own, within a fixed memory budget. wasmbox's own lines (access lines, notices) never
//! wait: past the budget they are dropped and counted, and the count is written once there is
//! room. A handler's output waits for room instead (the handler waits with it, under its
//! request's deadline).

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

use crate::wasi::Output;

/// Longest line of handler output passed on whole; a longer one is split.
pub(super) const LINE_MAX: usize = 16 << 10;
/// Lines waiting for a slow log reader, per stream. With lines of at most [`LINE_MAX`] bytes
/// (and access lines far shorter), this bounds a stream's queue to 4 MiB.
const LINES_QUEUED: usize = 256;
/// How long a log thread lets lines gather after a write.
const GATHER: Duration = Duration::from_millis(10);
/// Most bytes of queued lines written at once.
const BATCH_MAX: usize = 64 << 10;

/// Lines for one of wasmbox's own streams, written in order by a thread of their own so that a
/// slow reader (a full FIFO) holds up only the guests writing, never an executor thread.
#[derive(Clone)]
pub(super) struct LineSink {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    /// wasmbox's own lines dropped since the last count was written.
    dropped: Arc<AtomicU64>,
}

impl LineSink {
    pub(super) fn start(name: &'static str, out: Output) -> (Self, std::thread::JoinHandle<()>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(LINES_QUEUED);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = dropped.clone();
        let thread = std::thread::Builder::new()
            .name(format!("wasmbox-{name}"))
            .spawn(move || {
                while let Some(mut line) = rx.blocking_recv() {
                    // Whatever else is queued goes in the same write: one system call for many
                    // lines under load.
                    while line.len() < BATCH_MAX {
                        match rx.try_recv() {
                            Ok(more) => line.extend_from_slice(&more),
                            Err(_) => break,
                        }
                    }
                    let lost = counted.swap(0, Ordering::Relaxed);
                    if lost > 0 {
                        line.extend_from_slice(&dropped_line(lost));
                    }
                    if write(name, &out, line).is_err() {
                        // The reader is gone; keep draining so writers never block.
                        continue;
                    }
                    // Lines gather meanwhile: under load this thread wakes a hundred times a
                    // second, not once a request.
                    std::thread::sleep(GATHER);
                }
                let lost = counted.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    let _ = write(name, &out, dropped_line(lost));
                }
            })
            .expect("starting a log thread");
        (LineSink { tx, dropped }, thread)
    }

    /// Queues one line of wasmbox's own (a newline is added) without waiting: when the queue is
    /// full, the line is dropped and counted.
    pub(super) fn line(&self, mut line: String) {
        line.push('\n');
        self.queue(line.into_bytes());
    }

    fn queue(&self, line: Vec<u8>) {
        if self.tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped and not yet reported.
    #[cfg(test)]
    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The line that says how many of wasmbox's own lines were dropped.
fn dropped_line(lost: u64) -> Vec<u8> {
    format!("wasmbox: {lost} log lines dropped: the log's reader is slower than they come\n")
        .into_bytes()
}

fn write(name: &str, out: &Output, line: Vec<u8>) -> std::io::Result<()> {
    match out {
        Output::Inherit if name == "stderr" => std::io::stderr().write_all(&line),
        Output::Inherit => {
            let mut o = std::io::stdout().lock();
            o.write_all(&line).and_then(|()| o.flush())
        }
        Output::Null => Ok(()),
        Output::File(f) => (&**f).write_all(&line),
        Output::Memory(p) => {
            use wasmtime_wasi::p2::OutputStream;
            p.clone()
                .write(Bytes::from(line))
                .map_err(|e| std::io::Error::other(e.to_string()))
        }
    }
}

/// A handler's stdout or stderr: each line goes to wasmbox's stream as `[ID] line`.
pub(super) struct Tagged {
    id: u64,
    sink: LineSink,
}

impl Tagged {
    pub(super) fn new(id: u64, sink: LineSink) -> Self {
        Self { id, sink }
    }
}

impl wasmtime_wasi::cli::IsTerminal for Tagged {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for Tagged {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(TaggedWriter {
            prefix: format!("[{}] ", self.id).into_bytes(),
            tx: tokio_util::sync::PollSender::new(self.sink.tx.clone()),
            sink: self.sink.clone(),
            partial: Vec::new(),
        })
    }
}

struct TaggedWriter {
    prefix: Vec<u8>,
    tx: tokio_util::sync::PollSender<Vec<u8>>,
    sink: LineSink,
    /// The line so far, without its prefix.
    partial: Vec<u8>,
}

impl TaggedWriter {
    fn take_line(&mut self) -> Vec<u8> {
        let mut line = Vec::with_capacity(self.prefix.len() + self.partial.len() + 1);
        line.extend_from_slice(&self.prefix);
        line.append(&mut self.partial);
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        line
    }
}

impl tokio::io::AsyncWrite for TaggedWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let room = LINE_MAX - self.partial.len();
        let (n, ends_line) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) if i < room => (i + 1, true),
            _ => (buf.len().min(room), buf.len() >= room),
        };
        if !ends_line {
            self.partial.extend_from_slice(&buf[..n]);
            return Poll::Ready(Ok(n));
        }
        // A whole line: wait for room in the queue (the guest waits with it), then send it.
        match self.tx.poll_reserve(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(Ok(n)),
            Poll::Ready(Ok(())) => {}
        }
        self.partial.extend_from_slice(&buf[..n]);
        let line = self.take_line();
        let _ = self.tx.send_item(line);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Drop for TaggedWriter {
    fn drop(&mut self) {
        // The last line, when the guest did not end it: queued without waiting, as wasmbox's
        // own lines are.
        if !self.partial.is_empty() {
            let line = self.take_line();
            self.sink.queue(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_lines_past_the_queue_are_dropped_counted_and_reported() {
        use std::io::Read;
        // A reader that reads nothing yet: the log thread blocks once the pipe is full.
        let (mut reader, writer) = std::io::pipe().unwrap();
        let file = std::fs::File::from(std::os::fd::OwnedFd::from(writer));
        let (sink, done) = LineSink::start("stderr", Output::File(Arc::new(file)));
        // A kibibyte a line: the pipe (64 KiB), one batch (64 KiB) and the queue hold about
        // 400 of them; the rest are dropped at once, and none waits.
        let sent = LINES_QUEUED as u64 * 8;
        let pad = "x".repeat(1000);
        for i in 0..sent {
            sink.line(format!("line {i} {pad}"));
        }
        // Not yet reported: the log thread resets the count each time it reports, whenever that
        // is, so only the total (below) says how many were dropped.
        let dropped = sink.dropped();
        drop(sink);
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        done.join().unwrap();
        let written = text.lines().filter(|l| l.starts_with("line ")).count() as u64;
        let reported: u64 = text
            .lines()
            .filter_map(|l| l.strip_prefix("wasmbox: "))
            .filter_map(|l| l.split_once(" log lines dropped"))
            .map(|(n, _)| n.parse::<u64>().unwrap())
            .sum();
        assert_eq!(written + reported, sent);
        assert!(reported >= dropped);
        assert!(
            reported >= sent - 500,
            "only {reported} of {sent} lines dropped"
        );
    }
}
