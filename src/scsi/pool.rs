//! A fixed pool of worker threads for blocking backstore I/O, so a slow file
//! or block device never stalls the RDMA completion path.
//!
//! Jobs go through a bounded `std::sync::mpsc::sync_channel`: submitting
//! never allocates and never blocks; a full queue hands the job back so the
//! caller can answer BUSY / TASK SET FULL (SAM-5 5.3.1) instead of waiting.

use std::fmt;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Worker threads sharing one handler `Fn(J)` and one bounded queue.
/// Dropping the pool closes the queue, lets the workers finish the jobs
/// already queued, and joins them.
pub struct WorkerPool<J: Send + 'static> {
    tx: Option<SyncSender<J>>,
    workers: Vec<JoinHandle<()>>,
    name: String,
    depth: usize,
}

impl<J: Send + 'static> fmt::Debug for WorkerPool<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerPool")
            .field("name", &self.name)
            .field("threads", &self.workers.len())
            .field("depth", &self.depth)
            .finish()
    }
}

impl<J: Send + 'static> WorkerPool<J> {
    /// Starts `threads` workers named `name-N` behind a queue of `depth`
    /// jobs. Both must be at least 1.
    pub fn new(
        threads: usize,
        depth: usize,
        name: &str,
        handler: impl Fn(J) + Send + Sync + 'static,
    ) -> io::Result<Self> {
        if threads == 0 || depth == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "worker pool needs at least one thread and a queue depth of at least one",
            ));
        }
        let (tx, rx) = sync_channel::<J>(depth);
        let rx = Arc::new(Mutex::new(rx));
        let handler = Arc::new(handler);
        let mut pool = WorkerPool {
            tx: Some(tx),
            workers: Vec::with_capacity(threads),
            name: name.to_owned(),
            depth,
        };
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let handler = Arc::clone(&handler);
            let h = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || worker(&rx, &*handler))?;
            // On a spawn error the pool built so far is dropped: its sender
            // closes and the started workers are joined.
            pool.workers.push(h);
        }
        Ok(pool)
    }

    /// Queues `job`. Returns it back when the queue is full or the pool is
    /// shutting down. Never blocks.
    pub fn submit(&self, job: J) -> Result<(), J> {
        match &self.tx {
            Some(tx) => tx.try_send(job).map_err(|e| match e {
                TrySendError::Full(j) | TrySendError::Disconnected(j) => j,
            }),
            None => Err(job),
        }
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }
}

fn worker<J>(rx: &Mutex<Receiver<J>>, handler: &(dyn Fn(J) + Send + Sync)) {
    loop {
        // Hold the lock only while taking one job. A poisoned lock cannot
        // happen (nothing panics while holding it) but is tolerated.
        let job = {
            let guard = rx.lock().unwrap_or_else(|p| p.into_inner());
            guard.recv()
        };
        let Ok(job) = job else { return };
        if catch_unwind(AssertUnwindSafe(|| handler(job))).is_err() {
            tracing::error!("worker pool job panicked; worker continues");
        }
    }
}

impl<J: Send + 'static> Drop for WorkerPool<J> {
    fn drop(&mut self) {
        self.tx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc::channel;

    #[test]
    fn runs_all_jobs_and_joins() {
        let count = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&count);
        let pool = WorkerPool::new(2, 64, "t", move |n: usize| {
            c.fetch_add(n, Ordering::SeqCst);
        })
        .unwrap();
        for _ in 0..50 {
            pool.submit(1).unwrap();
        }
        drop(pool);
        assert_eq!(count.load(Ordering::SeqCst), 50);
    }

    #[test]
    fn full_queue_hands_job_back() {
        let (gate_tx, gate_rx) = channel::<()>();
        let gate = Mutex::new(gate_rx);
        let (started_tx, started_rx) = channel::<()>();
        let started = Mutex::new(started_tx);
        let pool = WorkerPool::new(1, 1, "t", move |_: u32| {
            started.lock().unwrap().send(()).unwrap();
            gate.lock().unwrap().recv().unwrap();
        })
        .unwrap();
        pool.submit(1).unwrap();
        started_rx.recv().unwrap(); // the worker holds job 1
        pool.submit(2).unwrap(); // queued
        assert_eq!(pool.submit(3), Err(3), "queue full");
        gate_tx.send(()).unwrap();
        gate_tx.send(()).unwrap();
        drop(pool);
    }

    #[test]
    fn survives_panicking_job() {
        let count = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&count);
        let pool = WorkerPool::new(1, 8, "t", move |n: u32| {
            if n == 0 {
                panic!("boom");
            }
            c.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        pool.submit(0).unwrap();
        pool.submit(1).unwrap();
        drop(pool);
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn rejects_zero_sizes() {
        assert!(WorkerPool::new(0, 1, "t", |_: u8| {}).is_err());
        assert!(WorkerPool::new(1, 0, "t", |_: u8| {}).is_err());
    }
}
