//! The send lane: the requests that may send an SMS, each decided on a
//! thread of its own, so that a slow SMS gateway holds up only them.
//!
//! A gateway answers in 200 ms to 1.5 s (or not at all, until the
//! provider's timeout). A worker that sent the SMS itself would leave the
//! queues to the others for that long: with 4 workers, 4 sends in flight
//! at most, and an answer with a State or a Status-Server queued behind
//! them. So the workers hand such requests here ([`SendLane::submit`]) and
//! go back to their queues at once.
//!
//! Threads are started when a request finds none idle, up to the bound
//! (`[radius] max_pending_sends`), and end after [`IDLE_EXIT`] without
//! work, so a quiet server keeps none. Each keeps what the caller's
//! `work` function keeps between requests (smsotp-radiusd: its own
//! `Engine`, as a worker does). A request handed over is always decided:
//! [`SendLane::shutdown`] waits for the queue to drain.
//!
//! When the bound is reached, [`SendLane::submit`] gives the request back
//! and the caller drops it (see `server.rs` for why dropping rather than
//! rejecting).

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long a lane thread waits for work before it ends.
pub const IDLE_EXIT: Duration = Duration::from_secs(60);

/// What a lane thread does with one request, given what it keeps between
/// requests.
type Work<J, L> = dyn Fn(&mut L, J) + Send + Sync;

/// A bounded set of threads that grows on demand; see the module doc.
pub struct SendLane<J, L> {
    state: Mutex<State<J>>,
    /// Wakes an idle thread (a new request, or shutdown).
    wake: Condvar,
    /// Signalled when a thread ends.
    ended: Condvar,
    max: AtomicUsize,
    idle_exit: Duration,
    name: String,
    work: Arc<Work<J, L>>,
}

struct State<J> {
    queue: VecDeque<J>,
    /// Threads alive.
    threads: usize,
    /// Threads waiting for work, and threads started and not yet running
    /// (each will look at the queue before it waits): some may have been
    /// woken and not yet taken their request. Counting a starting thread
    /// here keeps a burst from starting a second thread for a request the
    /// first will take.
    idle: usize,
    /// Threads deciding a request.
    busy: usize,
    stopping: bool,
}

impl<J: Send + 'static, L: Default + 'static> SendLane<J, L> {
    /// A lane of at most `max` requests at once (threads named `name-N`),
    /// each handled by `work`.
    pub fn new(
        name: &str,
        max: usize,
        idle_exit: Duration,
        work: impl Fn(&mut L, J) + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(SendLane {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                threads: 0,
                idle: 0,
                busy: 0,
                stopping: false,
            }),
            wake: Condvar::new(),
            ended: Condvar::new(),
            max: AtomicUsize::new(max.max(1)),
            idle_exit,
            name: name.to_owned(),
            work: Arc::new(work),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<J>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bound, as set by [`SendLane::new`] or [`SendLane::set_max`].
    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// A new bound (a reload): requests being decided are not affected; a
    /// lower bound holds as they end.
    pub fn set_max(&self, max: usize) {
        self.max.store(max.max(1), Ordering::Relaxed);
    }

    /// Requests handed over and not yet decided.
    pub fn pending(&self) -> usize {
        let s = self.lock();
        s.busy + s.queue.len()
    }

    /// Threads alive (for tests and status).
    pub fn threads(&self) -> usize {
        self.lock().threads
    }

    /// Hands `job` to a lane thread, starting one if none is idle. Gives
    /// `job` back when the lane is full or shutting down, or no thread
    /// can be started.
    pub fn submit(self: &Arc<Self>, job: J) -> Result<(), J> {
        let max = self.max();
        let mut s = self.lock();
        if s.stopping || s.busy + s.queue.len() >= max {
            return Err(job);
        }
        s.queue.push_back(job);
        if s.queue.len() <= s.idle {
            self.wake.notify_one();
            return Ok(());
        }
        let lane = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{}-{}", self.name, s.threads))
            .spawn(move || lane.thread());
        match spawned {
            Ok(_) => {
                s.threads += 1;
                // Counted idle until it runs (see `State::idle`).
                s.idle += 1;
                Ok(())
            }
            // A thread that is alive takes it when it is done; with none,
            // it would wait forever.
            Err(_) if s.threads > 0 => Ok(()),
            Err(_) => match s.queue.pop_back() {
                Some(job) => Err(job),
                None => Ok(()),
            },
        }
    }

    /// Stops taking requests, and waits until every request handed over
    /// has been decided and every thread has ended.
    pub fn shutdown(&self) {
        let mut s = self.lock();
        s.stopping = true;
        self.wake.notify_all();
        while s.threads > 0 {
            s = self.ended.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn thread(&self) {
        // Counts the thread out however it ends.
        struct Out<'a, J, L>(&'a SendLane<J, L>);
        impl<J, L> Drop for Out<'_, J, L> {
            fn drop(&mut self) {
                let mut s = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
                s.threads -= 1;
                self.0.ended.notify_all();
            }
        }
        let _out = Out(self);
        let mut kept = L::default();
        let mut s = self.lock();
        // Counted idle since `submit` started it.
        s.idle -= 1;
        loop {
            if let Some(job) = s.queue.pop_front() {
                s.busy += 1;
                drop(s);
                // The caller's work catches its own panics; this keeps the
                // counts right if something else in it panics.
                if catch_unwind(AssertUnwindSafe(|| (self.work)(&mut kept, job))).is_err() {
                    kept = L::default();
                }
                s = self.lock();
                s.busy -= 1;
                continue;
            }
            if s.stopping {
                return;
            }
            s.idle += 1;
            let (next, waited) = self
                .wake
                .wait_timeout(s, self.idle_exit)
                .unwrap_or_else(|p| p.into_inner());
            s = next;
            s.idle -= 1;
            if waited.timed_out() && s.queue.is_empty() && !s.stopping {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    /// A lane whose jobs wait on the receiver they carry, and report the
    /// thread-kept count on `done`.
    fn lane(
        max: usize,
        idle_exit: Duration,
    ) -> (Arc<SendLane<mpsc::Receiver<()>, u32>>, mpsc::Receiver<u32>) {
        let (done_tx, done) = mpsc::channel();
        let done_tx = Mutex::new(done_tx);
        let lane = SendLane::new(
            "test",
            max,
            idle_exit,
            move |n: &mut u32, go: mpsc::Receiver<()>| {
                let _ = go.recv_timeout(Duration::from_secs(10));
                *n += 1;
                let _ = done_tx.lock().unwrap().send(*n);
            },
        );
        (lane, done)
    }

    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn grows_on_demand_up_to_the_bound_and_gives_back_the_rest() {
        let (lane, done) = lane(3, IDLE_EXIT);
        let mut gates = Vec::new();
        for _ in 0..3 {
            let (tx, rx) = mpsc::channel();
            assert!(lane.submit(rx).is_ok());
            gates.push(tx);
        }
        // Three slow sends: three threads, each holding one.
        assert_eq!(lane.threads(), 3);
        assert_eq!(lane.pending(), 3);
        let (_tx, rx) = mpsc::channel();
        assert!(lane.submit(rx).is_err(), "a fourth is given back");
        // One ends: room for one more, on the thread that is now idle.
        gates.remove(0).send(()).unwrap();
        assert_eq!(done.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
        wait_until("the count to drop", || lane.pending() == 2);
        let (tx, rx) = mpsc::channel();
        assert!(lane.submit(rx).is_ok());
        gates.push(tx);
        assert_eq!(lane.threads(), 3, "the idle thread took it");
        for g in gates {
            g.send(()).unwrap();
        }
        for _ in 0..3 {
            done.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        lane.shutdown();
        assert_eq!(lane.threads(), 0);
    }

    #[test]
    fn idle_threads_end_and_are_started_again() {
        let (lane, done) = lane(4, Duration::from_millis(50));
        let (tx, rx) = mpsc::channel();
        lane.submit(rx).unwrap();
        tx.send(()).unwrap();
        done.recv_timeout(Duration::from_secs(5)).unwrap();
        wait_until("the idle thread to end", || lane.threads() == 0);
        let (tx, rx) = mpsc::channel();
        lane.submit(rx).unwrap();
        assert_eq!(lane.threads(), 1);
        tx.send(()).unwrap();
        // A new thread starts with fresh kept state.
        assert_eq!(done.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
        lane.shutdown();
    }

    #[test]
    fn shutdown_decides_everything_handed_over_then_refuses() {
        let (lane, done) = lane(8, IDLE_EXIT);
        let mut gates = Vec::new();
        for _ in 0..5 {
            let (tx, rx) = mpsc::channel();
            lane.submit(rx).unwrap();
            gates.push(tx);
        }
        let opener = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            for g in gates {
                g.send(()).unwrap();
            }
        });
        lane.shutdown();
        opener.join().unwrap();
        assert_eq!(done.try_iter().count(), 5, "all five decided");
        assert_eq!(lane.threads(), 0);
        let (_tx, rx) = mpsc::channel();
        assert!(lane.submit(rx).is_err(), "nothing taken after shutdown");
    }

    #[test]
    fn a_lower_bound_holds_as_requests_end() {
        let (lane, done) = lane(4, IDLE_EXIT);
        let mut gates = Vec::new();
        for _ in 0..3 {
            let (tx, rx) = mpsc::channel();
            lane.submit(rx).unwrap();
            gates.push(tx);
        }
        lane.set_max(2);
        let (_tx, rx) = mpsc::channel();
        assert!(lane.submit(rx).is_err());
        for g in gates.drain(..2) {
            g.send(()).unwrap();
        }
        for _ in 0..2 {
            done.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        wait_until("two to end", || lane.pending() == 1);
        let (tx, rx) = mpsc::channel();
        assert!(lane.submit(rx).is_ok());
        gates.push(tx);
        let (_tx2, rx) = mpsc::channel();
        assert!(lane.submit(rx).is_err(), "two pending at the new bound");
        for g in gates {
            g.send(()).unwrap();
        }
        lane.shutdown();
    }
}
