//! Keeping a pool's other workers awake through a phase of many short
//! parallel sections.
//!
//! A rayon worker that finds no work yields a few dozen times (tens of
//! microseconds) and then sleeps on a futex; the next `join` that hands it
//! work has to wake it, a system call on the handing thread and a wake-up
//! latency before the work starts. A PPO update on a 256-256 actor-critic
//! hands work over several times per minibatch step, ≈ 1 ms apart, and on a
//! 2-core virtual machine those wake-ups took ≈ 12 % of the update. Inside
//! [`with_workers_awake`] the other workers poll for rayon work instead of
//! sleeping, so a hand-off is a plain steal. Results do not change: the
//! same jobs run, only on threads that were already awake.

use std::sync::atomic::{AtomicBool, Ordering};

/// `f()` with the current rayon pool's other workers polling for work
/// (spinning) until it returns; just `f()` on a one-thread pool or outside
/// a pool. The polling workers run any rayon job handed out meanwhile, from
/// `join`, `scope` or parallel iterators, as they would when woken.
///
/// Use it around a phase that hands work to the other threads many times a
/// millisecond and keeps the pool to itself: the workers burn their cores
/// while they wait.
pub fn with_workers_awake<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let workers = rayon::current_num_threads();
    let Some(owner) = rayon::current_thread_index() else {
        return f();
    };
    if workers < 2 {
        return f();
    }
    let done = AtomicBool::new(false);
    rayon::in_place_scope(|s| {
        for _ in 1..workers {
            s.spawn(|_| poll_until(&done, owner));
        }
        // Set on the way out, also when `f` panics (the scope waits for the
        // pollers before it lets the panic go on).
        let _stop = Stop(&done);
        f()
    })
}

/// Sets its flag when dropped.
struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs rayon jobs as they appear until `done`. Returns at once on the
/// thread that runs [`with_workers_awake`]'s `f` (`owner`): it may pick this
/// job up while it waits inside `f`, and polling there until `f` returns
/// would never end.
fn poll_until(done: &AtomicBool, owner: usize) {
    if rayon::current_thread_index() == Some(owner) {
        return;
    }
    while !done.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => {}
            // Leave the core to anything else that wants it (on an otherwise
            // idle machine the call returns at once).
            Some(rayon::Yield::Idle) => std::thread::yield_now(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool")
    }

    /// `f`'s value comes back; work handed out inside runs on the other
    /// worker (the poller) while `f`'s thread is busy: each `join` below
    /// finishes only if its second half runs elsewhere (the first half
    /// waits for it), many hand-offs in a row and a nested call.
    #[test]
    fn hands_work_to_the_polling_worker() {
        use std::time::{Duration, Instant};
        let out = pool(2).install(|| {
            with_workers_awake(|| {
                for _ in 0..50 {
                    let ran = AtomicBool::new(false);
                    let (waited, _) = rayon::join(
                        || {
                            let t = Instant::now();
                            while !ran.load(Ordering::Acquire) {
                                if t.elapsed() > Duration::from_secs(20) {
                                    return false;
                                }
                                std::hint::spin_loop();
                            }
                            true
                        },
                        || ran.store(true, Ordering::Release),
                    );
                    assert!(waited, "the second half never ran on the other worker");
                }
                with_workers_awake(|| rayon::join(|| 1, || 2))
            })
        });
        assert_eq!(out, (1, 2));
    }

    /// One thread, or no pool: just `f()`.
    #[test]
    fn without_a_second_worker_it_is_a_call() {
        assert_eq!(pool(1).install(|| with_workers_awake(|| 7)), 7);
        assert_eq!(with_workers_awake(|| 8), 8);
    }

    /// A panic in `f` stops the pollers and reaches the caller (no hang).
    #[test]
    fn a_panic_in_f_stops_the_pollers() {
        let p = pool(2);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.install(|| with_workers_awake(|| -> usize { panic!("inside") }))
        }));
        assert!(caught.is_err());
        assert_eq!(p.install(|| with_workers_awake(|| 3)), 3);
    }
}
