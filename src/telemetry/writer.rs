//! The log writer: each line goes into a bounded lock-free queue, and one
//! thread writes the queue to stderr. The thread wakes on a 10 ms timer, or
//! at once when the queue is a quarter full, not for every line: with
//! `tracing-appender`'s writer (a channel whose receiver sleeps), every
//! line paid a futex wake-up on the worker, and the per-exchange line cost
//! +4.7 µs per catalog request (`benches/ladder.py`: off vs off-info).
//!
//! A full or slow stderr never stalls a worker: lines past the queue's
//! bound are dropped and counted. Lines reach stderr within about 10 ms.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle, Thread};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

/// How long the writer thread sleeps when the queue is not filling fast.
const TICK: Duration = Duration::from_millis(10);

struct Shared {
    queue: ArrayQueue<Vec<u8>>,
    dropped: AtomicUsize,
    stop: AtomicBool,
    thread: OnceLock<Thread>,
}

/// The writer the log layer writes lines to (cheap to clone: one per line).
#[derive(Clone)]
pub struct LineWriter(Arc<Shared>);

/// Stops the writer thread when dropped, after it wrote what is queued.
pub struct Guard {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

impl LineWriter {
    /// A writer queueing up to `lines` lines for a thread writing to
    /// `out`; the guard stops (and flushes) it.
    pub fn spawn(lines: usize, out: impl io::Write + Send + 'static) -> (LineWriter, Guard) {
        let shared = Arc::new(Shared {
            queue: ArrayQueue::new(lines.max(1)),
            dropped: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            thread: OnceLock::new(),
        });
        let s = shared.clone();
        let handle = thread::Builder::new()
            .name("osb-gateway-log".into())
            .spawn(move || write_loop(&s, io::BufWriter::with_capacity(64 * 1024, out)))
            .expect("spawn the log writer thread");
        let _ = shared.thread.set(handle.thread().clone());
        (
            LineWriter(shared.clone()),
            Guard {
                shared,
                handle: Some(handle),
            },
        )
    }

    /// Lines dropped because the queue was full.
    pub fn dropped(&self) -> usize {
        self.0.dropped.load(Relaxed)
    }
}

fn write_loop(s: &Shared, mut out: impl io::Write) {
    loop {
        let stopping = s.stop.load(Relaxed);
        let mut wrote = false;
        while let Some(line) = s.queue.pop() {
            // NB: a failing stderr (closed) loses the line; nothing to tell.
            let _ = out.write_all(&line);
            wrote = true;
        }
        if wrote {
            let _ = out.flush();
        }
        if stopping {
            return;
        }
        thread::park_timeout(TICK);
    }
}

impl io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let q = &self.0.queue;
        if q.push(buf.to_vec()).is_err() {
            self.0.dropped.fetch_add(1, Relaxed);
        } else if q.len() >= q.capacity() / 4 {
            if let Some(t) = self.0.thread.get() {
                t.unpark();
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LineWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_and_the_guard_flushes_them() {
        let sink = Sink::default();
        let (mut w, guard) = LineWriter::spawn(1024, sink.clone());
        for i in 0..500 {
            w.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let want: String = (0..500).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, want);
        assert_eq!(w.dropped(), 0);
    }

    /// A writer that never returns: the lines past the queue are dropped
    /// and counted, and writing never blocks.
    #[test]
    fn a_stuck_output_drops_and_counts_instead_of_blocking() {
        struct Stuck;
        impl io::Write for Stuck {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                // NB: not park(): the writers' unpark would end it.
                loop {
                    thread::sleep(Duration::from_secs(3600));
                }
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (mut w, guard) = LineWriter::spawn(16, Stuck);
        for _ in 0..100_000 {
            w.write_all(&[b'x'; 100]).unwrap();
        }
        // NB: its thread is stuck for good: dropping the guard would wait.
        std::mem::forget(guard);
        // The queue's 16 lines and the 64 KiB buffer's 655 at most got out.
        assert!(w.dropped() >= 100_000 - 16 - 656, "{}", w.dropped());
    }
}
