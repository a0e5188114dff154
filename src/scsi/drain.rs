//! The commands running on one LUN, so that a LUN taken out of the table
//! is flushed only after the last of them has ended.
//!
//! A write that completed GOOD may sit in the backstore's volatile cache
//! (WCE = 1, SBC-3 6.4.5) until SYNCHRONIZE CACHE; once the LUN is gone the
//! initiator can no longer send one, so the target flushes it itself, and
//! that flush must come after every write it acknowledged. A command counts
//! itself in ([`InFlight::enter`]) before it touches the backstore and out
//! when it has ended; [`InFlight::close`] refuses later entries and runs the
//! flush once the count is zero.
//!
//! Sans I/O: the flush is a closure. The count and the closed flag share one
//! atomic word, so a command either entered before the close (and is waited
//! for) or is refused; no other ordering is relied on.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Set in [`InFlight::state`] once the LUN is closed.
const CLOSED: u64 = 1 << 63;

/// What runs once the last command has ended (the removed LUN's flush).
pub(super) type Flush = Box<dyn FnOnce() -> io::Result<()> + Send>;

/// Commands running on a LUN.
#[derive(Default)]
pub(super) struct InFlight {
    /// Running commands, plus [`CLOSED`].
    state: AtomicU64,
    /// The flush handed to the last command when [`close`](Self::close)
    /// stopped waiting.
    handoff: Mutex<Option<Flush>>,
    ended: Condvar,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.load(Ordering::Relaxed);
        f.debug_struct("InFlight")
            .field("running", &(s & !CLOSED))
            .field("closed", &(s & CLOSED != 0))
            .finish()
    }
}

/// One command counted in; it counts out when dropped.
#[must_use]
pub(super) struct Running<'a>(&'a InFlight);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// How [`InFlight::close`] ended.
#[derive(Debug)]
pub(super) enum Closed {
    /// No command was running (any more): the flush ran, with this result.
    Flushed(io::Result<()>),
    /// Commands were still running at the bound; the last to end runs the
    /// flush (on a thread of its own).
    Pending { running: u64 },
}

impl InFlight {
    /// Counts a command in, or refuses it: the LUN was closed (removed), so
    /// it must not touch the backstore.
    pub(super) fn enter(&self) -> Option<Running<'_>> {
        self.try_enter().then(|| Running(self))
    }

    /// Counts a command in unless the LUN is closed; a `true` must be
    /// matched by one [`leave`](Self::leave) (for an owner that outlives
    /// a borrow, such as [`Counted`](super::table::Counted)).
    pub(super) fn try_enter(&self) -> bool {
        let s = self.state.fetch_add(1, Ordering::AcqRel);
        if s & CLOSED != 0 {
            self.leave();
            return false;
        }
        true
    }

    /// Commands counted in now.
    pub(super) fn running(&self) -> u64 {
        self.state.load(Ordering::Acquire) & !CLOSED
    }

    /// Counts a command out.
    pub(super) fn leave(&self) {
        let s = self.state.fetch_sub(1, Ordering::AcqRel);
        if s == CLOSED | 1 {
            self.last_ended();
        }
    }

    /// The count reached zero after the close.
    fn last_ended(&self) {
        let mut h = self.handoff.lock().unwrap_or_else(|p| p.into_inner());
        self.ended.notify_all();
        if let Some(flush) = h.take() {
            drop(h);
            // Never on the caller's thread: it may be a poller serving other
            // LUNs, and a flush may take long.
            let run = move || {
                if let Err(e) = flush() {
                    tracing::error!(error = %e, "flushing a removed LUN failed");
                } else {
                    tracing::info!("removed LUN flushed after its last command");
                }
            };
            let spawned = std::thread::Builder::new().name("srptd-flush".into()).spawn(run);
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the thread that flushes a removed LUN");
            }
        }
    }

    /// Refuses commands from now on and runs `flush` once none is running:
    /// here if that happens within `bound`, else by the last command to end.
    pub(super) fn close(&self, bound: Duration, flush: Flush) -> Closed {
        self.state.fetch_or(CLOSED, Ordering::AcqRel);
        let deadline = Instant::now() + bound;
        let mut h = self.handoff.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // Checked under the lock the last command takes to look for the
            // handoff: either it sees the flush handed to it, or we see zero.
            let running = self.running();
            if running == 0 {
                drop(h);
                return Closed::Flushed(flush());
            }
            let now = Instant::now();
            if now >= deadline {
                *h = Some(flush);
                return Closed::Pending { running };
            }
            h = self
                .ended
                .wait_timeout(h, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::Arc;

    use super::*;

    fn flush_to(tx: mpsc::Sender<&'static str>) -> Flush {
        Box::new(move || {
            tx.send("flush").unwrap();
            Ok(())
        })
    }

    #[test]
    fn closing_an_idle_lun_flushes_at_once_and_refuses_later_commands() {
        let f = InFlight::default();
        drop(f.enter().unwrap());
        let (tx, rx) = mpsc::channel();
        assert!(matches!(
            f.close(Duration::ZERO, flush_to(tx)),
            Closed::Flushed(Ok(()))
        ));
        assert_eq!(rx.try_recv(), Ok("flush"));
        assert!(f.enter().is_none());
        assert_eq!(f.running(), 0);
        assert!(rx.try_recv().is_err(), "a refused command flushes nothing");
    }

    #[test]
    fn close_waits_for_the_running_command() {
        let f = Arc::new(InFlight::default());
        let (tx, rx) = mpsc::channel();
        let (go, wait) = mpsc::channel::<()>();
        let entered = Arc::clone(&f);
        let tx2 = tx.clone();
        let cmd = std::thread::spawn(move || {
            let r = entered.enter().unwrap();
            wait.recv().unwrap();
            tx2.send("write done").unwrap();
            drop(r);
        });
        while f.running() == 0 {
            std::thread::yield_now();
        }
        let closer = Arc::clone(&f);
        let close = std::thread::spawn(move || closer.close(Duration::from_secs(60), flush_to(tx)));
        std::thread::sleep(Duration::from_millis(20));
        assert!(rx.try_recv().is_err(), "nothing flushed while the command runs");
        go.send(()).unwrap();
        cmd.join().unwrap();
        assert!(matches!(close.join().unwrap(), Closed::Flushed(Ok(()))));
        assert_eq!(rx.recv().unwrap(), "write done");
        assert_eq!(rx.recv().unwrap(), "flush");
    }

    #[test]
    fn past_the_bound_the_last_command_flushes() {
        let f = InFlight::default();
        let a = f.enter().unwrap();
        let b = f.enter().unwrap();
        let (tx, rx) = mpsc::channel();
        match f.close(Duration::from_millis(5), flush_to(tx)) {
            Closed::Pending { running } => assert_eq!(running, 2),
            c => panic!("{c:?}"),
        }
        // A command refused meanwhile does not count as the last one.
        assert!(f.enter().is_none());
        drop(a);
        assert!(rx.recv_timeout(Duration::from_millis(20)).is_err());
        drop(b);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok("flush"));
    }
}
