//! Blocking work on the async runtime's threads.
//!
//! A few things the daemon does block a thread: writing a transfer's bytes
//! to its file, and waiting for the store's flush that makes a change
//! durable (group commit). Done on an async worker, they would hold up
//! every task queued on it (the API, other transfers); and with as many
//! workers as CPUs, a handful of waiting callers would leave no worker to
//! stage the next change, so no group would ever hold more than a couple.
//! [`off_the_async_workers`] hands the worker's other tasks to another
//! thread for as long as the blocking call lasts.

/// Runs a blocking `operation` so that it does not hold up an async worker:
/// on a multi-threaded runtime the worker hands its other tasks to another
/// thread while the operation blocks. Elsewhere (a single-threaded
/// runtime, a thread of its own) it simply runs.
pub fn off_the_async_workers<T>(operation: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(operation),
        _ => operation(),
    }
}

#[cfg(test)]
mod tests {
    use super::off_the_async_workers;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    /// A disk so slow that a file write holds up every async worker at once
    /// (here: writes that wait for a gate only another task opens) still
    /// leaves the runtime free to run that other task, as it leaves the API
    /// and the other transfers free in the daemon.
    #[test]
    fn file_writes_stuck_on_every_worker_leave_the_runtime_running() {
        const WORKERS: usize = 2;
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(WORKERS)
                .build()
                .unwrap();
            runtime.block_on(async {
                let gate = Arc::new((Mutex::new(false), Condvar::new()));
                let entered = Arc::new(AtomicUsize::new(0));
                let writes: Vec<_> = (0..WORKERS)
                    .map(|_| {
                        let (gate, entered) = (gate.clone(), entered.clone());
                        tokio::spawn(async move {
                            off_the_async_workers(|| {
                                entered.fetch_add(1, Ordering::SeqCst);
                                let (open, opened) = &*gate;
                                let mut open = open.lock().unwrap();
                                while !*open {
                                    open = opened.wait(open).unwrap();
                                }
                            })
                        })
                    })
                    .collect();
                let opener = tokio::spawn(async move {
                    while entered.load(Ordering::SeqCst) < WORKERS {
                        tokio::task::yield_now().await;
                    }
                    *gate.0.lock().unwrap() = true;
                    gate.1.notify_all();
                });
                opener.await.unwrap();
                for write in writes {
                    write.await.unwrap();
                }
            });
            let _ = done.send(());
        });
        assert!(
            finished.recv_timeout(Duration::from_secs(60)).is_ok(),
            "the stuck writes held every worker: the task that frees them never ran"
        );
    }
}
