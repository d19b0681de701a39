//! The I/O / CPU split: object-store requests on a small tokio runtime, decoding and frame work
//! on a rayon pool (Polars' own, see [`cpu_pool`]).
//!
//! Polars computations are CPU-bound and use rayon themselves; run on a tokio worker they would
//! stall every in-flight request (and a `collect()` there can deadlock against Polars' own
//! async runtime). So async code hands CPU work over explicitly with [`cpu`], and object-store
//! concurrency is bounded by one budget ([`Runtime::io_permit`]) so a run over thousands of
//! files neither floods the store nor holds thousands of downloaded files in memory.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// Runtime sizing. The defaults suit a 2-core machine: I/O needs few threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// tokio worker threads (I/O only).
    pub worker_threads: usize,
    /// Object-store requests in flight at once.
    pub io_concurrency: usize,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            worker_threads: 2,
            io_concurrency: 16,
        }
    }
}

/// The tokio runtime lethe's async I/O runs on, plus the object-store request budget.
#[derive(Debug)]
pub struct Runtime {
    rt: tokio::runtime::Runtime,
    io: Arc<Semaphore>,
    options: RuntimeOptions,
}

impl Runtime {
    /// A runtime with the default options.
    pub fn new() -> Result<Runtime> {
        Self::with_options(RuntimeOptions::default())
    }

    pub fn with_options(options: RuntimeOptions) -> Result<Runtime> {
        let options = RuntimeOptions {
            worker_threads: options.worker_threads.max(1),
            io_concurrency: options.io_concurrency.max(1),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.worker_threads)
            .thread_name("lethe-io")
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("cannot start the async runtime: {e}")))?;
        Ok(Runtime {
            rt,
            io: Arc::new(Semaphore::new(options.io_concurrency)),
            options,
        })
    }

    pub fn options(&self) -> RuntimeOptions {
        self.options
    }

    /// Runs `fut` to completion from synchronous code (the CLI's entry point into async).
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.rt.block_on(fut)
    }

    /// A handle for spawning onto this runtime from inside it.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.rt.handle()
    }

    /// Waits for a slot in the object-store request budget; hold the permit for the request.
    pub async fn io_permit(&self) -> Result<OwnedSemaphorePermit> {
        Self::acquire(Arc::clone(&self.io)).await
    }

    /// The budget itself: give it to every [`crate::storage::Location`] of a run
    /// (`Location::with_budget`) so each request holds a permit, or acquire from it in tasks
    /// that outlive a borrow of the runtime (`'static` spawns).
    pub fn io_budget(&self) -> Arc<Semaphore> {
        Arc::clone(&self.io)
    }

    /// Acquires a permit from a budget obtained with [`Runtime::io_budget`].
    pub async fn acquire(budget: Arc<Semaphore>) -> Result<OwnedSemaphorePermit> {
        // lethe never closes the budget, so failing here is a bug.
        budget
            .acquire_owned()
            .await
            .map_err(|_| Error::internal("the I/O budget semaphore was closed"))
    }
}

/// Runs CPU-bound `f` on the CPU pool ([`cpu_pool`]) and awaits its result without blocking the
/// tokio worker. A panic in `f` is resumed in the awaiting task, as if `f` had run inline.
pub async fn cpu<F, R>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    cpu_pool().spawn(move || {
        // The receiver may be gone (the awaiting task was cancelled); nothing to do then.
        let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.await {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => resume_unwind(panic),
        // rayon runs every spawned job and `f`'s panic is caught, so the sender is always used.
        Err(_) => unreachable!("rayon dropped a spawned job"),
    }
}

/// The CPU pool: Polars' own rayon pool (`POLARS_MAX_THREADS` threads), so Polars work inside a
/// [`cpu`] job, and `par_iter`s there, run on the job's own pool. With a pool of lethe's own
/// beside it, each job's Polars calls crossed to the other pool and waited there, and two pools
/// of idle threads spun on the same few CPUs: `lethe run` took 8–15% longer on 2 CPUs, and an
/// export (or its scan) about 5%.
pub fn cpu_pool() -> &'static rayon::ThreadPool {
    &polars_core::runtime::THREAD_POOL
}

/// Runs `f` over `items` with at most `limit` futures in flight, returning the outputs in the
/// order of `items` (so reports are deterministic). Stops at the first error, dropping (and so
/// cancelling) the futures still in flight.
pub async fn for_each_bounded<I, F, Fut, T, E>(
    items: I,
    limit: usize,
    mut f: F,
) -> std::result::Result<Vec<T>, E>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    // Futures are made lazily, as slots free up, so `f`'s synchronous part is bounded too.
    let mut stream = futures::stream::iter(items.into_iter().enumerate())
        .map(|(i, item)| {
            let fut = f(item);
            async move { fut.await.map(|v| (i, v)) }
        })
        .buffer_unordered(limit.max(1));
    let mut done = Vec::new();
    while let Some(next) = stream.next().await {
        done.push(next?);
    }
    done.sort_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, v)| v).collect())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn cpu_runs_off_the_tokio_workers() {
        let rt = Runtime::new().unwrap();
        let (on_rayon, worker_name) = rt.block_on(async {
            cpu(|| {
                (
                    cpu_pool().current_thread_index().is_some(),
                    std::thread::current().name().map(str::to_owned),
                )
            })
            .await
        });
        assert!(on_rayon);
        assert_ne!(worker_name.as_deref(), Some("lethe-io"));
    }

    #[test]
    fn cpu_resumes_panics() {
        let rt = Runtime::new().unwrap();
        let res = catch_unwind(AssertUnwindSafe(|| {
            rt.block_on(async { cpu(|| -> u8 { panic!("boom") }).await })
        }));
        assert!(res.is_err());
    }

    #[test]
    fn for_each_bounded_limits_and_orders() {
        let rt = Runtime::new().unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let out = rt.block_on(for_each_bounded(0..20u64, 3, |i| {
            let running = Arc::clone(&running);
            let peak = Arc::clone(&peak);
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                // Later items finish first, to show the output is in input order anyway.
                tokio::time::sleep(Duration::from_millis(20 - i)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, String>(i * 2)
            }
        }));
        assert_eq!(out.unwrap(), (0..20).map(|i| i * 2).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 3);
    }

    #[test]
    fn for_each_bounded_stops_at_first_error() {
        let rt = Runtime::new().unwrap();
        let res = rt.block_on(for_each_bounded(0..10, 2, |i| async move {
            if i == 4 {
                Err(format!("item {i}"))
            } else {
                Ok(i)
            }
        }));
        assert_eq!(res, Err("item 4".to_owned()));
    }

    #[test]
    fn io_budget_bounds_permits() {
        let rt = Runtime::with_options(RuntimeOptions {
            worker_threads: 1,
            io_concurrency: 2,
        })
        .unwrap();
        rt.block_on(async {
            let a = rt.io_permit().await.unwrap();
            let _b = rt.io_permit().await.unwrap();
            assert_eq!(rt.io_budget().available_permits(), 0);
            drop(a);
            let _c = rt.io_permit().await.unwrap();
        });
    }
}
