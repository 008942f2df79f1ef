//! Log lines to stderr in batches: events append their lines to a shared
//! buffer, and one thread writes whatever has gathered, a millisecond after
//! the first line of a batch, in one `write`. Under load that is one system
//! call for many lines instead of one per line (three log lines per message
//! accepted and delivered made half of the daemon's `write` calls;
//! tests/bench/syscalls.sh). A line reaches stderr within a few
//! milliseconds; [`flush`] writes what is left, at exit.
//!
//! The buffer is bounded: if stderr stops taking lines (a stuck log
//! reader), lines beyond [`MAX_BUFFERED`] are dropped and counted, and the
//! count is written once stderr takes lines again; the daemon never waits
//! for its log.

use std::io::Write;
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer lets a batch gather after its first line.
const GATHER: Duration = Duration::from_millis(1);
/// Octets held at most while stderr does not take them.
const MAX_BUFFERED: usize = 4 * 1024 * 1024;

struct Shared {
    state: Mutex<State>,
    /// Rung when the first line of a batch arrives, and by [`flush`].
    ready: Condvar,
    /// Rung by the writer thread when the buffer has been written.
    written: Condvar,
}

#[derive(Default)]
struct State {
    lines: Vec<u8>,
    dropped: u64,
    /// A batch is being written (its lines are out of `lines`).
    writing: bool,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let shared = Shared {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            written: Condvar::new(),
        };
        // Without the thread, lines are written by `flush` at exit only;
        // a process that cannot start a thread has worse problems.
        let _ = std::thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn(run);
        shared
    })
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writer thread: waits for a first line, lets the batch gather, writes it.
fn run() {
    let shared = shared();
    let mut stderr = std::io::stderr();
    loop {
        {
            let mut state = lock(shared);
            while state.lines.is_empty() && state.dropped == 0 {
                state = shared
                    .ready
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        std::thread::sleep(GATHER);
        write_batch(shared, &mut stderr);
    }
}

/// Takes what has gathered and writes it (without holding the lock while
/// writing), then tells waiting flushes.
fn write_batch(shared: &Shared, out: &mut impl Write) {
    let (lines, dropped) = {
        let mut state = lock(shared);
        state.writing = true;
        (
            std::mem::take(&mut state.lines),
            std::mem::take(&mut state.dropped),
        )
    };
    let mut batch = lines;
    if dropped > 0 {
        batch.extend_from_slice(
            format!("relayq: {dropped} log lines dropped: stderr did not take them\n").as_bytes(),
        );
    }
    // Nowhere to report a failing stderr.
    let _ = out.write_all(&batch);
    let _ = out.flush();
    let mut state = lock(shared);
    state.writing = false;
    // Give the allocation back for the next batch, if it is still empty.
    if state.lines.is_empty() && batch.capacity() <= 64 * 1024 {
        batch.clear();
        state.lines = batch;
    }
    shared.written.notify_all();
}

/// Writes every line logged so far before returning (at exit).
pub fn flush() {
    let shared = shared();
    let mut state = lock(shared);
    while !state.lines.is_empty() || state.writing || state.dropped > 0 {
        shared.ready.notify_one();
        let (next, _) = shared
            .written
            .wait_timeout(state, Duration::from_millis(100))
            .unwrap_or_else(PoisonError::into_inner);
        state = next;
        if !state.writing && (!state.lines.is_empty() || state.dropped > 0) {
            // The writer thread may be gone (or never started): write here.
            drop(state);
            write_batch(shared, &mut std::io::stderr());
            state = lock(shared);
        }
    }
}

/// The `MakeWriter` of the log subscriber.
#[derive(Clone, Copy, Default)]
pub struct BatchedStderr;

/// Appends one event's output to the batch.
pub struct LineWriter;

impl Write for LineWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let shared = shared();
        let mut state = lock(shared);
        if state.lines.len() + data.len() > MAX_BUFFERED {
            // Counted by line ends, so a line cut across two writes counts once.
            state.dropped += data.iter().filter(|&&octet| octet == b'\n').count().max(1) as u64;
            return Ok(data.len());
        }
        let first = state.lines.is_empty();
        state.lines.extend_from_slice(data);
        drop(state);
        if first {
            shared.ready.notify_one();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_gathered_are_written_in_one_batch_and_counted_when_dropped() {
        let shared = Shared {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            written: Condvar::new(),
        };
        lock(&shared).lines.extend_from_slice(b"one\ntwo\n");
        lock(&shared).dropped = 3;
        let mut out = Vec::new();
        write_batch(&shared, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "one\ntwo\nrelayq: 3 log lines dropped: stderr did not take them\n"
        );
        let state = lock(&shared);
        assert!(state.lines.is_empty() && state.dropped == 0 && !state.writing);
    }
}
