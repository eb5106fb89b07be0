//! The worker loop on a store whose waits suspend (Redis): many
//! requests per worker, each in a fiber (see the module doc of
//! `server.rs` and `fibers.rs`).

use std::net::{SocketAddr, UdpSocket};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use smsotp_core::audit::Level;
use smsotp_core::store::suspend::Driver;
use smsotp_core::Engine;

use super::{admit, decide, event, hand_over, may_send, open_engine, Lane, Shared};
use crate::fibers::{Ended, Fibers};
use crate::outgoing;
use crate::triage::{Datagram, Next, Queues};

/// The engine of a worker with fibers, shared by them, the runtime
/// generation it was opened for, and what sends its fibers' store
/// commands (their store handle's own connection, when the store has
/// one for fibers).
struct FiberEngine {
    generation: u64,
    engine: Option<Rc<Engine>>,
    driver: Option<Box<dyn Driver>>,
}

/// One worker with fibers (a store that suspends: see `fibers.rs`):
/// takes the datagrams queued (answers first) while it has room, checks
/// each and starts its decision in a fiber, resumes the fibers whose
/// store answers came, sends the round's replies together, and when
/// every fiber waits sends their store commands and reads the answers
/// (or parks, when they wait on something else); again until the queues
/// stop and no answer or fiber is left.
pub(super) fn fiber_worker(
    shared: &Arc<Shared>,
    lane: &Arc<Lane>,
    queues: &Queues,
    sock: &Arc<UdpSocket>,
    per_worker: usize,
) {
    let mut engine: Option<FiberEngine> = None;
    let mut fibers = Fibers::new(per_worker);
    let mut done: Option<Vec<u8>> = None;
    loop {
        // Wait for work only when no fiber waits for the store.
        let first = if fibers.is_empty() {
            match queues.next(done.take(), Duration::from_millis(200)) {
                Next::Work(d) => Some(d),
                Next::Idle => continue,
                Next::Stop => return,
            }
        } else {
            None
        };
        outgoing::hold();
        fibers.resume_ready(|ended| {
            if matches!(ended, Ended::Panicked) {
                fiber_panicked(shared, None);
            }
        });
        let mut next = first;
        loop {
            let d = match next.take() {
                Some(d) => d,
                None if fibers.has_room() => match queues.try_next(done.take()) {
                    Some(d) => d,
                    None => break,
                },
                None => break,
            };
            let from = d.from;
            let started = catch_unwind(AssertUnwindSafe(|| {
                start_fiber(shared, lane, sock, &mut engine, &mut fibers, &d)
            }));
            if !matches!(started, Ok(Ended::Fine)) {
                fiber_panicked(shared, from);
            }
            done = Some(d.buf);
        }
        outgoing::release();
        if fibers.is_empty() {
            continue;
        }
        // Every fiber waits: send their commands and take in the
        // answers, on this thread; or, with nothing to send (they wait on
        // something else), park until a datagram or an answer comes.
        let drove = engine
            .as_ref()
            .and_then(|e| e.driver.as_ref())
            .is_some_and(|d| {
                catch_unwind(AssertUnwindSafe(|| d.drive())).unwrap_or_else(|_| {
                    fiber_panicked(shared, None);
                    false
                })
            });
        if !drove {
            queues.park(|| fibers.park(Duration::from_millis(200)));
        }
    }
}

/// Checks a datagram and starts its decision: in a fiber, or on the send
/// lane for what may wait on something other than the store.
fn start_fiber(
    shared: &Arc<Shared>,
    lane: &Arc<Lane>,
    sock: &Arc<UdpSocket>,
    engine: &mut Option<FiberEngine>,
    fibers: &mut Fibers,
    d: &Datagram,
) -> Ended {
    let Some(job) = admit(shared, sock, d.bytes(), d.len, d.from) else {
        return Ended::Fine;
    };
    let rt = &job.runtime;
    if may_send(&job.request, rt.first_rounds_wait || rt.lookups_wait) {
        hand_over(shared, lane, job);
        return Ended::Fine;
    }
    let generation = rt.generation;
    // Opened again for a new generation, and while it could not be (the
    // store down at start): the first request after it is back opens it.
    if engine
        .as_ref()
        .is_none_or(|e| e.generation != generation || e.engine.is_none())
    {
        let (store, driver) = match rt.store.fiber_handle() {
            Some((store, driver)) => (store, Some(driver)),
            None => (rt.store.handle(), None),
        };
        *engine = Some(FiberEngine {
            generation,
            engine: open_engine(shared, rt, store).map(Rc::new),
            driver,
        });
    }
    let e = engine.as_ref().and_then(|e| e.engine.clone());
    let shared = shared.clone();
    fibers.start(move || decide(&shared, e.as_deref(), job))
}

/// Logs a panic in a fiber or while starting one (its datagram's source,
/// when known).
fn fiber_panicked(shared: &Shared, from: impl Into<Option<SocketAddr>>) {
    let detail = match from.into() {
        Some(from) => format!("internal error on a datagram from {from}; dropped"),
        None => "internal error while deciding a request; dropped".into(),
    };
    shared.runtime().log(Level::Error, &event("panic", detail));
}
