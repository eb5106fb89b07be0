//! Store calls that wait without holding their thread.
//!
//! smsotp-radiusd on Redis decides many requests on one thread: each runs
//! in a coroutine of that thread, and a store call that waits for Redis
//! suspends its coroutine instead of parking the thread, which decides
//! other requests meanwhile (see `radiusd/src/fibers.rs`). Parking a
//! thread per request, and waking it again, cost more CPU than the rest
//! of a login (bench-radius STORE=redis).
//!
//! The server sets a [`Suspender`] around each coroutine's work
//! ([`with_suspender`]); the store's waits go through [`wait_for`], which
//! suspends when one is set and says so, else leaves the caller to wait
//! as it always did. A call that blocks in a system call rather than
//! waiting on something it can poll (a handle's own connection:
//! `WAIT`, `WATCH`) runs on a thread of its own meanwhile
//! (`off_thread`), so that it holds up no other request. Everywhere else
//! (the PAM module, the admin tool, SQLite, a server's threads outside the
//! coroutines) nothing is set and nothing changes.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, Thread};

/// Something a suspended call waits for. Whatever makes it ready
/// unparks the thread the call runs on, so that thread can park while
/// nothing is ready.
pub trait Pending: Send + Sync {
    /// Whether the call can go on.
    fn ready(&self) -> bool;
}

/// What suspends the coroutine running on a thread.
pub trait Suspender {
    /// Suspends the calling coroutine until the thread running it
    /// resumes it: when `until` is ready, or sooner (the caller looks
    /// again).
    fn suspend(&self, until: Arc<dyn Pending>);
}

/// Sends the commands a thread's suspended calls queued, and takes in
/// their answers, on that thread (see
/// [`super::SharedBackend::fiber_handle`]).
pub trait Driver {
    /// Sends what is queued and reads the answers, waiting for them (up
    /// to the store's timeouts); each call it answers is then ready.
    /// Returns whether anything was queued.
    fn drive(&self) -> bool;
}

thread_local! {
    /// The suspender of the coroutine running on this thread, while it
    /// runs (taken out while it is suspended: see [`wait_for`]).
    static CURRENT: Cell<Option<NonNull<dyn Suspender>>> = const { Cell::new(None) };
}

/// Puts back what [`CURRENT`] held, however the scope ends.
struct Restore(Option<NonNull<dyn Suspender>>);

impl Drop for Restore {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

/// Runs `f` with `s` as this thread's suspender: the store calls `f`
/// makes suspend through `s` while they wait.
pub fn with_suspender<R>(s: &dyn Suspender, f: impl FnOnce() -> R) -> R {
    let ptr: NonNull<dyn Suspender + '_> = NonNull::from(s);
    // SAFETY: only the lifetime is erased. The pointer is in CURRENT
    // only within this call (`Restore` takes it out however `f` ends,
    // unwinding included), and `s` outlives this call; `wait_for` takes
    // it out while its coroutine is suspended, so no other code on this
    // thread can reach it meanwhile.
    let ptr: NonNull<dyn Suspender + 'static> = unsafe { std::mem::transmute(ptr) };
    let _restore = Restore(CURRENT.with(|c| c.replace(Some(ptr))));
    f()
}

/// Whether a call on this thread would suspend rather than wait.
pub fn can_suspend() -> bool {
    CURRENT.with(|c| c.get().is_some())
}

/// Suspends the caller until `until` may be ready, if it runs where it
/// can be suspended: then returns true, and the caller looks at what it
/// waits for again. Returns false at once elsewhere: the caller waits
/// as it would have.
pub fn wait_for(until: Arc<dyn Pending>) -> bool {
    let Some(s) = CURRENT.with(Cell::take) else {
        return false;
    };
    // Taken out while suspended: what the thread runs meanwhile (other
    // coroutines, its own loop) must not suspend through this one.
    let _restore = Restore(Some(s));
    // SAFETY: set by `with_suspender`, whose frame (on this coroutine's
    // stack) is live for as long as this coroutine runs.
    unsafe { s.as_ref() }.suspend(until);
    true
}

/// A call that ends on another thread: ready once it has, and the
/// waiting thread is woken then.
struct Finished {
    done: AtomicBool,
    waiter: Thread,
}

impl Pending for Finished {
    fn ready(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

/// Marks its call finished, and wakes its waiter, when dropped.
struct Tell(Arc<Finished>);

impl Drop for Tell {
    fn drop(&mut self) {
        self.0.done.store(true, Ordering::Release);
        self.0.waiter.unpark();
    }
}

/// Runs `f`, which may block the thread (a handle's own connection),
/// so that only its caller waits: where the caller can be suspended, on a
/// thread of its own while the caller is; elsewhere (or when no thread can
/// be started), right here. A panic in `f` goes on in the caller.
pub(crate) fn off_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if !can_suspend() {
        return f();
    }
    let finished = Arc::new(Finished {
        done: AtomicBool::new(false),
        waiter: thread::current(),
    });
    // The closure comes back if the thread cannot be started.
    let f = std::sync::Mutex::new(Some(f));
    thread::scope(|scope| {
        let tell = finished.clone();
        let f = &f;
        let started = thread::Builder::new()
            .name("store-wait".into())
            .spawn_scoped(scope, move || {
                // Done however `f` ends, a panic included.
                let _tell = Tell(tell);
                let f = f.lock().ok().and_then(|mut g| g.take());
                f.map(|f| f())
            });
        let Ok(handle) = started else {
            // No thread: block here, as outside a coroutine.
            return run_taken(f);
        };
        while !finished.ready() {
            if !wait_for(finished.clone()) {
                break;
            }
        }
        match handle.join() {
            Ok(Some(r)) => r,
            // The closure was not there (cannot happen: only this thread
            // took it); run what is left here.
            Ok(None) => run_taken(f),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Runs the closure left in `f` (the thread that was to run it did not).
fn run_taken<R>(f: &std::sync::Mutex<Option<impl FnOnce() -> R>>) -> R {
    match f
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    {
        Some(f) => f(),
        None => unreachable_taken(),
    }
}

#[cold]
fn unreachable_taken() -> ! {
    std::panic::resume_unwind(Box::new("store call taken twice"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A suspender that records what it was given and waits on the
    /// thread, as a coroutine's thread would before resuming it.
    struct Recorder(RefCell<usize>);

    impl Suspender for Recorder {
        fn suspend(&self, until: Arc<dyn Pending>) {
            *self.0.borrow_mut() += 1;
            // No other suspender is reachable while suspended.
            assert!(!can_suspend());
            while !until.ready() {
                thread::park_timeout(std::time::Duration::from_millis(10));
            }
        }
    }

    #[test]
    fn outside_a_suspender_nothing_suspends() {
        assert!(!can_suspend());
        struct Never;
        impl Pending for Never {
            fn ready(&self) -> bool {
                false
            }
        }
        assert!(!wait_for(Arc::new(Never)));
        // Runs right here.
        let here = thread::current().id();
        assert_eq!(off_thread(|| thread::current().id()), here);
    }

    #[test]
    fn a_suspender_is_used_within_its_scope_only_and_put_back_after_each_wait() {
        let r = Recorder(RefCell::new(0));
        let here = thread::current().id();
        let (id, again) = with_suspender(&r, || {
            assert!(can_suspend());
            // Runs on another thread while the caller is suspended.
            let id = off_thread(|| {
                thread::sleep(std::time::Duration::from_millis(20));
                thread::current().id()
            });
            (id, can_suspend())
        });
        assert_ne!(id, here);
        assert!(again, "the suspender is back after the wait");
        assert!(*r.0.borrow() >= 1, "the caller was suspended");
        assert!(!can_suspend(), "gone after the scope");
    }

    #[test]
    fn a_panic_off_thread_goes_on_in_the_caller_and_the_scope_ends_clean() {
        let r = Recorder(RefCell::new(0));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            with_suspender(&r, || {
                off_thread(|| -> u8 { std::panic::panic_any("boom") })
            })
        }));
        assert!(caught.is_err());
        assert!(!can_suspend());
    }
}
