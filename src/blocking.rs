//! The server's work on tokio's blocking pool (index transactions, file reads, health checks), spawned through
//! here so the metrics can tell how much of it waits for a thread (`ociregistry_blocking_queue_depth`) and how
//! much runs. tokio's own queue-depth figure needs `--cfg tokio_unstable`; this counts what the server submits
//! (tokio's `fs` helpers, used on cold paths only, are not included).

use std::sync::atomic::{AtomicI64, Ordering};

static WAITING: AtomicI64 = AtomicI64::new(0);
static RUNNING: AtomicI64 = AtomicI64::new(0);

/// Jobs submitted and not yet started.
pub fn waiting() -> u64 {
    WAITING.load(Ordering::Relaxed).max(0) as u64
}

/// Jobs running on a blocking thread.
pub fn running() -> u64 {
    RUNNING.load(Ordering::Relaxed).max(0) as u64
}

/// `tokio::task::spawn_blocking`, counted.
pub fn spawn<F, R>(job: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    WAITING.fetch_add(1, Ordering::Relaxed);
    let queued = Queued { started: false };
    tokio::task::spawn_blocking(move || {
        let mut queued = queued;
        queued.started = true;
        WAITING.fetch_sub(1, Ordering::Relaxed);
        RUNNING.fetch_add(1, Ordering::Relaxed);
        let _running = Running;
        job()
    })
}

/// A job not yet started; if it is dropped unstarted (runtime shutting down), it leaves the queue count.
struct Queued {
    started: bool,
}

impl Drop for Queued {
    fn drop(&mut self) {
        if !self.started {
            WAITING.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_waiting_and_running_jobs() {
        // A runtime of its own with one blocking thread, so the second job must wait for the first.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let first = rt.spawn(async move {
            spawn(move || {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            })
            .await
            .unwrap()
        });
        started_rx.recv().unwrap();
        let second = rt.spawn(async { spawn(|| 7).await.unwrap() });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while waiting() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Other tests only add to the counts, so these hold whatever runs beside.
        assert!(
            waiting() >= 1,
            "the second job waits for the only blocking thread"
        );
        assert!(running() >= 1, "the first job runs");
        release_tx.send(()).unwrap();
        rt.block_on(async {
            first.await.unwrap();
            assert_eq!(second.await.unwrap(), 7);
        });
        rt.shutdown_background();
    }
}
