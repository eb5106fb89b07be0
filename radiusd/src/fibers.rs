//! Many requests on one worker thread, while they wait on Redis:
//! [`Fibers`].
//!
//! On Redis every store step is a round trip. With a thread per request,
//! each step parked its worker and woke it again when the answer came:
//! two context switches per step, which on a small machine cost more CPU
//! than the login itself (bench-radius STORE=redis). Here a worker runs
//! each request it decides in a coroutine of its own (a fiber: its own
//! stack, on the worker's thread). A store call that waits suspends its
//! fiber (`smsotp_core::store::suspend`) and the worker goes on with the
//! others: it takes the next datagrams, starts their fibers, and parks
//! only when every fiber waits; the store's answers wake it, one wake-up
//! for all the answers that came meanwhile. The replies of a round leave
//! together (`outgoing::hold`).
//!
//! Only a store that suspends its waits has fibers
//! ([`SharedBackend::suspends`]: Redis). What may wait on something else
//! (an SMS gateway, a password check, an LDAP directory) goes to the send
//! lane, as before, never into a fiber: a fiber that blocked in a system
//! call would hold up every request of its worker. A store call that
//! blocks (a `WAIT` for the replicas on a connection of its own) runs on
//! a thread of its own while its fiber is suspended.
//!
//! A panic in a fiber ends that fiber only: the worker logs it, as it
//! would a panic on its own thread, and goes on.
//!
//! [`SharedBackend::suspends`]: smsotp_core::store::SharedBackend::suspends

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use smsotp_core::store::suspend::{self, Pending, Suspender};

/// Each fiber's stack: what a request's decision uses, with a wide
/// margin (a login uses a few tens of KiB; pages never touched cost no
/// memory). Stacks are kept for the next fibers.
const STACK: usize = 512 * 1024;

/// A suspended fiber is resumed after this long even if what it waits
/// for has not said it is ready: it looks again and applies its own
/// deadline (the store's timeouts).
const RECHECK: Duration = Duration::from_millis(250);

type Co = Coroutine<(), Arc<dyn Pending>, (), DefaultStack>;

struct Fiber {
    co: Co,
    /// What it waits for.
    waits: Arc<dyn Pending>,
    /// When it was suspended.
    since: Instant,
}

/// What a fiber's store calls suspend through.
struct YieldTo<'a>(&'a Yielder<(), Arc<dyn Pending>>);

impl Suspender for YieldTo<'_> {
    fn suspend(&self, until: Arc<dyn Pending>) {
        self.0.suspend(until);
    }
}

/// How a fiber ended, for the worker to log.
pub enum Ended {
    /// It returned, or is suspended.
    Fine,
    /// It panicked (the panic is over; the fiber is gone).
    Panicked,
}

/// The fibers of one worker thread.
pub struct Fibers {
    waiting: Vec<Fiber>,
    /// Stacks of fibers that ended, for the next ones.
    stacks: Vec<DefaultStack>,
    max: usize,
}

impl Fibers {
    /// At most `max` fibers at once.
    pub fn new(max: usize) -> Fibers {
        Fibers {
            waiting: Vec::new(),
            stacks: Vec::new(),
            max: max.max(1),
        }
    }

    /// How many are suspended.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether none is suspended.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Whether another may start.
    pub fn has_room(&self) -> bool {
        self.waiting.len() < self.max
    }

    /// Runs `work` in a new fiber until it ends or first waits. Without a
    /// stack (the system refused the memory), runs it on this thread.
    pub fn start(&mut self, work: impl FnOnce() + 'static) -> Ended {
        let stack = match self.stacks.pop() {
            Some(s) => s,
            None => match DefaultStack::new(STACK) {
                Ok(s) => s,
                Err(_) => {
                    return match catch_unwind(AssertUnwindSafe(work)) {
                        Ok(()) => Ended::Fine,
                        Err(_) => Ended::Panicked,
                    }
                }
            },
        };
        let co = Co::with_stack(stack, move |y: &Yielder<(), Arc<dyn Pending>>, ()| {
            suspend::with_suspender(&YieldTo(y), work)
        });
        self.step(co)
    }

    /// Resumes every fiber whose wait is over (or has lasted `RECHECK`),
    /// each until it ends or waits again; calls `ended` for each that
    /// panicked.
    pub fn resume_ready(&mut self, mut ended: impl FnMut(Ended)) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.waiting.len() {
            let f = &self.waiting[i];
            if f.waits.ready() || now.duration_since(f.since) >= RECHECK {
                let f = self.waiting.swap_remove(i);
                ended(self.step(f.co));
            } else {
                i += 1;
            }
        }
    }

    /// Parks this thread until a fiber may go on: its store answer
    /// unparks it. At most `wait`, and not at all when one is ready.
    pub fn park(&self, wait: Duration) {
        if self.waiting.iter().any(|f| f.waits.ready()) {
            return;
        }
        let soonest = self
            .waiting
            .iter()
            .map(|f| RECHECK.saturating_sub(f.since.elapsed()))
            .min()
            .unwrap_or(wait);
        std::thread::park_timeout(wait.min(soonest));
    }

    /// Runs `co` until it ends or waits.
    fn step(&mut self, mut co: Co) -> Ended {
        match catch_unwind(AssertUnwindSafe(|| co.resume(()))) {
            Ok(CoroutineResult::Yield(waits)) => {
                self.waiting.push(Fiber {
                    co,
                    waits,
                    since: Instant::now(),
                });
                Ended::Fine
            }
            Ok(CoroutineResult::Return(())) => {
                self.stacks.push(co.into_stack());
                Ended::Fine
            }
            Err(_) => {
                // Done: the panic unwound its stack, which is reused.
                if co.done() {
                    self.stacks.push(co.into_stack());
                }
                Ended::Panicked
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread::Thread;

    /// Ready once another thread says so, which then unparks the waiter.
    struct Flag(AtomicBool);

    impl Pending for Flag {
        fn ready(&self) -> bool {
            self.0.load(Ordering::Acquire)
        }
    }

    fn set_later(flag: Arc<Flag>, waiter: Thread, after: Duration) {
        std::thread::spawn(move || {
            std::thread::sleep(after);
            flag.0.store(true, Ordering::Release);
            waiter.unpark();
        });
    }

    /// A store call as the store makes it: suspends until `flag` is set.
    fn wait_on(flag: &Arc<Flag>) {
        while !flag.ready() {
            assert!(suspend::wait_for(flag.clone()));
        }
    }

    #[test]
    fn fibers_interleave_on_one_thread_and_each_ends_when_its_wait_is_over() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut fibers = Fibers::new(8);
        let flags: Vec<Arc<Flag>> = (0..3)
            .map(|_| Arc::new(Flag(AtomicBool::new(false))))
            .collect();
        for (i, flag) in flags.iter().enumerate() {
            let (log, flag) = (log.clone(), flag.clone());
            let ended = fibers.start(move || {
                log.borrow_mut().push(format!("{i} waits"));
                wait_on(&flag);
                log.borrow_mut().push(format!("{i} done"));
            });
            assert!(matches!(ended, Ended::Fine));
        }
        // All three started and wait; none holds the thread.
        assert_eq!(fibers.len(), 3);
        assert_eq!(*log.borrow(), ["0 waits", "1 waits", "2 waits"]);
        // The last one's answer comes first.
        let me = std::thread::current();
        set_later(flags[2].clone(), me.clone(), Duration::from_millis(10));
        set_later(flags[0].clone(), me.clone(), Duration::from_millis(60));
        set_later(flags[1].clone(), me, Duration::from_millis(110));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !fibers.is_empty() && Instant::now() < deadline {
            fibers.park(Duration::from_millis(200));
            fibers.resume_ready(|e| assert!(matches!(e, Ended::Fine)));
        }
        assert!(fibers.is_empty());
        let log = log.borrow();
        assert_eq!(log[3..], ["2 done", "0 done", "1 done"]);
        // Stacks are kept for the next fibers.
        assert_eq!(fibers.stacks.len(), 3);
        // Outside the fibers nothing suspends.
        assert!(!suspend::can_suspend());
    }

    #[test]
    fn a_panic_in_a_fiber_ends_that_fiber_only() {
        let mut fibers = Fibers::new(4);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let done = Rc::new(RefCell::new(false));
        {
            let (flag, done) = (flag.clone(), done.clone());
            fibers.start(move || {
                wait_on(&flag);
                *done.borrow_mut() = true;
            });
        }
        let ended = fibers.start(|| std::panic::panic_any("a bug"));
        assert!(matches!(ended, Ended::Panicked));
        assert_eq!(fibers.len(), 1, "the other fiber still waits");
        set_later(flag, std::thread::current(), Duration::from_millis(5));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !fibers.is_empty() && Instant::now() < deadline {
            fibers.park(Duration::from_millis(200));
            fibers.resume_ready(|_| {});
        }
        assert!(*done.borrow());
        assert!(!suspend::can_suspend());
    }

    #[test]
    fn a_fiber_whose_wait_never_says_ready_is_resumed_to_look_again() {
        let mut fibers = Fibers::new(1);
        let looks = Rc::new(RefCell::new(0));
        {
            let looks = looks.clone();
            fibers.start(move || {
                let never = Arc::new(Flag(AtomicBool::new(false)));
                // Gives up after its third look, as a store call gives up
                // at its deadline.
                for _ in 0..3 {
                    *looks.borrow_mut() += 1;
                    assert!(suspend::wait_for(never.clone()));
                }
            });
        }
        assert!(!fibers.has_room());
        let deadline = Instant::now() + Duration::from_secs(5);
        while !fibers.is_empty() && Instant::now() < deadline {
            fibers.park(Duration::from_millis(50));
            fibers.resume_ready(|_| {});
        }
        assert!(fibers.is_empty());
        assert_eq!(*looks.borrow(), 3);
    }
}
