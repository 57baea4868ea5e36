//! The JSON access log's writer. The gateway formats each line into a shared buffer; a thread
//! of its own writes the buffer out, so a slow disk or a stdout nobody reads never holds up a
//! request (HAProxy logs with non-blocking sends for the same reason; Envoy has a flush thread).
//! When the writer falls far behind, new lines are dropped and counted rather than queued
//! without bound. A file log can be reopened in place (SIGHUP), so logrotate can move it away.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tracing::{info, warn};

/// How much the writer gathers before it writes (it also writes once a second).
const WRITE_BYTES: usize = 64 * 1024;
/// Longest a line waits before it is written.
const WRITE_INTERVAL: Duration = Duration::from_secs(1);
/// Most bytes waiting for the writer; past it, lines are dropped.
const MAX_PENDING_BYTES: usize = 8 * 1024 * 1024;

/// Opens the log's destination afresh (after logrotate moved the file away).
pub type Reopen = Box<dyn FnMut() -> std::io::Result<Box<dyn Write + Send>> + Send>;

/// A running access-log writer thread and the buffer it drains.
pub struct AccessLogWriter {
    shared: Arc<Shared>,
    /// The destination can be opened afresh (a file).
    reopens: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer: a buffer's worth is waiting, or the log is closing.
    wake: Condvar,
    /// Wakes [`AccessLogWriter::close`] when the writer has stopped.
    stopped: Condvar,
    limits: Limits,
    dropped_lines: Counter,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    write_bytes: usize,
    max_pending_bytes: usize,
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    /// Lines dropped since the writer last reported them.
    dropped: u64,
    closing: bool,
    /// A reopen was asked for and the writer has not done it yet.
    reopen: bool,
    /// The writer has stopped (closed, or the sink failed): appends are ignored.
    stopped: bool,
}

impl AccessLogWriter {
    /// Starts the writer thread for `sink`; `dropped_lines` counts the lines it had to drop.
    /// `reopen`, when the destination is a file, makes [`reopen`](Self::reopen) work.
    pub fn start(
        sink: Box<dyn Write + Send>,
        reopen: Option<Reopen>,
        dropped_lines: Counter,
    ) -> std::io::Result<Self> {
        Self::start_with(
            sink,
            reopen,
            dropped_lines,
            Limits {
                write_bytes: WRITE_BYTES,
                max_pending_bytes: MAX_PENDING_BYTES,
            },
        )
    }

    fn start_with(
        sink: Box<dyn Write + Send>,
        reopen: Option<Reopen>,
        dropped_lines: Counter,
        limits: Limits,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            stopped: Condvar::new(),
            limits,
            dropped_lines,
        });
        let writer = Arc::clone(&shared);
        let reopens = reopen.is_some();
        std::thread::Builder::new()
            .name("nimbus-access-log".into())
            .spawn(move || writer.run(sink, reopen))?;
        Ok(Self { shared, reopens })
    }

    /// Appends one line, which `format` writes at the end of the buffer (returning false when
    /// it could not, which leaves nothing behind). Never waits on the sink.
    pub fn append(&self, format: impl FnOnce(&mut Vec<u8>) -> bool) {
        let limits = self.shared.limits;
        let mut state = self.shared.lock();
        if state.stopped || state.closing {
            return;
        }
        let before = state.pending.len();
        if before >= limits.max_pending_bytes {
            state.dropped += 1;
            self.shared.dropped_lines.inc();
            return;
        }
        if !format(&mut state.pending) {
            state.pending.truncate(before);
            return;
        }
        if before < limits.write_bytes && state.pending.len() >= limits.write_bytes {
            self.shared.wake.notify_one();
        }
    }

    /// Has the writer write what is waiting to the current destination, then open it afresh:
    /// lines logged before the call stay in the old file. Returns at once; a log that cannot be
    /// reopened keeps its old destination (and says so in the server's log). False, and
    /// nothing done, when the destination is not a file.
    pub fn reopen(&self) -> bool {
        if !self.reopens {
            return false;
        }
        let mut state = self.shared.lock();
        state.reopen = true;
        self.shared.wake.notify_one();
        true
    }

    /// Writes what is waiting and stops the writer; waits at most `timeout` for it (a sink that
    /// blocks for good is left behind). True when everything was written in time.
    pub fn close(&self, timeout: Duration) -> bool {
        let mut state = self.shared.lock();
        state.closing = true;
        self.shared.wake.notify_one();
        let (state, _) = self
            .shared
            .stopped
            .wait_timeout_while(state, timeout, |state| !state.stopped)
            .unwrap_or_else(PoisonError::into_inner);
        state.stopped
    }
}

impl Drop for AccessLogWriter {
    fn drop(&mut self) {
        self.close(Duration::from_secs(5));
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer thread: waits for a buffer's worth (or a second, a reopen, or the close),
    /// swaps the buffer out and writes it without holding the lock.
    fn run(&self, mut sink: Box<dyn Write + Send>, mut reopen: Option<Reopen>) {
        let mut out = Vec::new();
        loop {
            let (closing, dropped, reopen_now) = {
                let (mut state, _) = self
                    .wake
                    .wait_timeout_while(self.lock(), WRITE_INTERVAL, |state| {
                        state.pending.len() < self.limits.write_bytes
                            && !state.closing
                            && !state.reopen
                    })
                    .unwrap_or_else(PoisonError::into_inner);
                std::mem::swap(&mut out, &mut state.pending);
                (
                    state.closing,
                    std::mem::take(&mut state.dropped),
                    std::mem::take(&mut state.reopen),
                )
            };
            if dropped > 0 {
                warn!(
                    dropped,
                    "Access log lines dropped: the log's destination is not keeping up."
                );
            }
            let wrote = !out.is_empty();
            if wrote {
                if let Err(error) = sink.write_all(&out).and_then(|()| sink.flush()) {
                    warn!(%error, "Cannot write the access log; turning it off.");
                    break;
                }
                out.clear();
                if out.capacity() > 4 * self.limits.write_bytes {
                    // A burst grew the buffer: give the memory back.
                    out = Vec::new();
                }
            }
            if reopen_now {
                if let Some(open) = reopen.as_mut() {
                    match open() {
                        Ok(fresh) => {
                            sink = fresh;
                            info!("Access log reopened.");
                        }
                        Err(error) => warn!(
                            %error,
                            "Cannot reopen the access log; still writing where it was."
                        ),
                    }
                }
            }
            // Closing: keep going until a pass finds nothing more to write.
            if closing && !wrote {
                break;
            }
        }
        let mut state = self.lock();
        state.stopped = true;
        state.pending = Vec::new();
        self.stopped.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// Whether the sink takes writes, and what it has taken.
    type GateState = (bool, Vec<u8>);

    /// A sink that keeps what it gets and blocks while it is closed.
    #[derive(Clone, Default)]
    struct Gate {
        inner: Arc<(Mutex<GateState>, Condvar)>,
    }

    impl Gate {
        fn set_open(&self, open: bool) {
            let (lock, cond) = &*self.inner;
            lock.lock().unwrap().0 = open;
            cond.notify_all();
        }
        fn written(&self) -> String {
            String::from_utf8(self.inner.0.lock().unwrap().1.clone()).unwrap()
        }
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cond) = &*self.inner;
            let mut state = lock.lock().unwrap();
            while !state.0 {
                state = cond.wait(state).unwrap();
            }
            state.1.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Failing;

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn line(n: usize) -> impl FnOnce(&mut Vec<u8>) -> bool {
        move |buf: &mut Vec<u8>| {
            buf.extend_from_slice(format!("line {n}\n").as_bytes());
            true
        }
    }

    const SMALL: Limits = Limits {
        write_bytes: 64,
        max_pending_bytes: 256,
    };

    /// A writer with the small limits, writing into a gate that takes everything.
    fn writer_into_open_gate() -> (Gate, AccessLogWriter) {
        let gate = Gate::default();
        gate.set_open(true);
        let writer =
            AccessLogWriter::start_with(Box::new(gate.clone()), None, Counter::default(), SMALL)
                .unwrap();
        (gate, writer)
    }

    #[test]
    fn lines_reach_the_sink_in_order_and_close_writes_the_rest() {
        let (gate, writer) = writer_into_open_gate();
        for n in 0..20 {
            writer.append(line(n));
        }
        assert!(writer.close(Duration::from_secs(5)));
        let expected: String = (0..20).map(|n| format!("line {n}\n")).collect();
        assert_eq!(gate.written(), expected);
        writer.append(line(99));
        assert_eq!(gate.written(), expected, "nothing is taken after the close");
    }

    #[test]
    fn a_stalled_sink_never_blocks_appends_and_the_overflow_is_counted() {
        let gate = Gate::default();
        let dropped = Counter::default();
        let writer =
            AccessLogWriter::start_with(Box::new(gate.clone()), None, dropped.clone(), SMALL)
                .unwrap();
        // The writer takes the first buffer's worth and blocks on it; the rest piles up to the
        // limit and past it is dropped. Every append returns at once.
        let started = Instant::now();
        for n in 0..200 {
            writer.append(line(n));
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(dropped.get() > 0, "lines past the limit are dropped");
        assert!(
            !writer.close(Duration::from_millis(50)),
            "the sink is still stalled"
        );
        gate.set_open(true);
        assert!(writer.close(Duration::from_secs(5)));
        let written = gate.written();
        let kept = written.lines().count() as u64;
        assert_eq!(
            kept + dropped.get(),
            200,
            "every line is either written or counted"
        );
        assert!(written.starts_with("line 0\nline 1\n"), "{written}");
    }

    #[test]
    fn a_line_that_cannot_be_formatted_leaves_nothing_behind() {
        let (gate, writer) = writer_into_open_gate();
        writer.append(line(1));
        writer.append(|buf: &mut Vec<u8>| {
            buf.extend_from_slice(b"half a li");
            false
        });
        writer.append(line(2));
        assert!(writer.close(Duration::from_secs(5)));
        assert_eq!(gate.written(), "line 1\nline 2\n");
    }

    /// Waits until the writer has taken the reopen asked for.
    fn reopen_taken(writer: &AccessLogWriter) {
        let started = Instant::now();
        while writer.shared.lock().reopen {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the writer never reopened"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_reopen_moves_later_lines_to_the_fresh_destination_and_a_failed_one_keeps_it() {
        let first = Gate::default();
        let second = Gate::default();
        first.set_open(true);
        second.set_open(true);
        let fresh = second.clone();
        let mut opens = 0;
        let reopen: Reopen = Box::new(move || {
            opens += 1;
            if opens == 1 {
                Ok(Box::new(fresh.clone()) as Box<dyn Write + Send>)
            } else {
                Err(std::io::Error::other("permission denied"))
            }
        });
        let writer = AccessLogWriter::start_with(
            Box::new(first.clone()),
            Some(reopen),
            Counter::default(),
            SMALL,
        )
        .unwrap();
        writer.append(line(1));
        assert!(writer.reopen());
        reopen_taken(&writer);
        writer.append(line(2));
        assert!(writer.reopen());
        reopen_taken(&writer);
        writer.append(line(3));
        assert!(writer.close(Duration::from_secs(5)));
        assert_eq!(
            first.written(),
            "line 1\n",
            "lines before the reopen stay behind"
        );
        assert_eq!(second.written(), "line 2\nline 3\n");
    }

    #[test]
    fn a_reopen_without_a_file_changes_nothing() {
        let (gate, writer) = writer_into_open_gate();
        writer.append(line(1));
        assert!(
            !writer.reopen(),
            "a destination that is no file is not reopened"
        );
        assert!(!writer.shared.lock().reopen);
        writer.append(line(2));
        assert!(writer.close(Duration::from_secs(5)));
        assert_eq!(gate.written(), "line 1\nline 2\n");
    }

    #[test]
    fn a_failing_sink_turns_the_log_off() {
        let writer =
            AccessLogWriter::start_with(Box::new(Failing), None, Counter::default(), SMALL)
                .unwrap();
        for n in 0..20 {
            writer.append(line(n));
        }
        assert!(writer.close(Duration::from_secs(5)), "the writer stopped");
        writer.append(line(21));
        assert!(writer.shared.lock().pending.is_empty());
    }
}
