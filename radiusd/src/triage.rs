//! Triage of what a listening socket receives, so that users typing their
//! codes are answered first when the server gets more than it can answer
//! (RFC 5080 §2.2.3: drop new requests, keep the conversations going).
//!
//! When the workers are busy deciding, the kernel's socket buffer fills
//! and the kernel drops datagrams without looking at them: an answer with
//! a State is then lost as often as a request of the flood, and at ten
//! times the server's capacity most code rounds fail even with the NAS's
//! retransmits. So one reader thread per socket does nothing but read: it
//! keeps the kernel's buffer empty, sorts each datagram by a look at its
//! header and attributes ([`classify`]: no secret, no crypto, nothing that
//! could block) into one of two bounded queues ([`Queues`]), and drops
//! what finds its queue full. Workers take answers first.
//!
//! The look is only a hint: a forged packet can claim a State, and is then
//! dropped by the worker's checks as any other, ahead of the new requests
//! it did not deserve to pass. The checks themselves (client, decoding,
//! Message-Authenticator, duplicates) stay on the workers.
//!
//! Each queued datagram holds one buffer of `wire::MAX_PACKET + 1` bytes;
//! buffers go back to the reader once decided and are reused, so a
//! datagram costs no allocation once the pool has grown, and the memory
//! is bounded by twice the bound plus one buffer per worker.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::Duration;

use crate::wire;

/// Which queue a datagram waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An Access-Request with a State (a user answering a challenge) or a
    /// Status-Server: cheap to decide, and what a login in progress waits
    /// for.
    Answer,
    /// Anything else: a first round, or what the worker will drop.
    New,
}

impl Kind {
    /// How logs name the queue.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Answer => "answers with a State",
            Kind::New => "new requests",
        }
    }
}

const ACCESS_REQUEST: u8 = 1;
const STATUS_SERVER: u8 = 12;
const STATE: u8 = 24;
const HEADER: usize = 20;

/// Sorts `datagram` by its code and, for an Access-Request, whether an
/// attribute is a State. A malformed packet is [`Kind::New`]: it cannot
/// take an answer's place.
pub fn classify(datagram: &[u8]) -> Kind {
    match datagram.first() {
        Some(&STATUS_SERVER) => Kind::Answer,
        Some(&ACCESS_REQUEST) if has_state(datagram) => Kind::Answer,
        _ => Kind::New,
    }
}

fn has_state(datagram: &[u8]) -> bool {
    let Some(&[hi, lo]) = datagram.get(2..4) else {
        return false;
    };
    let end = usize::from(u16::from_be_bytes([hi, lo])).min(datagram.len());
    let mut at = HEADER;
    while let Some(&[t, len]) = datagram.get(at..at + 2) {
        let len = usize::from(len);
        if len < 2 || at + len > end {
            return false;
        }
        if t == STATE {
            return true;
        }
        at += len;
    }
    false
}

/// One datagram as read: its buffer, its size (which may exceed the
/// buffer: an oversized datagram the worker drops) and its source.
pub struct Datagram {
    pub buf: Vec<u8>,
    pub len: usize,
    pub from: SocketAddr,
}

impl Datagram {
    /// What was kept of the datagram.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len.min(self.buf.len())]
    }
}

/// A buffer for one datagram: one byte more than the largest legal
/// packet, to see oversized ones.
pub fn buffer() -> Vec<u8> {
    vec![0u8; wire::MAX_PACKET + 1]
}

/// What a worker gets from [`Queues::next`].
pub enum Next {
    Work(Datagram),
    /// Nothing within the wait; look at the stop flag and ask again.
    Idle,
    /// Stopping, and no answer left to decide.
    Stop,
}

/// The two bounded queues of one socket; see the module doc.
pub struct Queues {
    state: Mutex<State>,
    wake: Condvar,
    max: AtomicUsize,
}

struct State {
    answers: VecDeque<Datagram>,
    new: VecDeque<Datagram>,
    /// Buffers of decided datagrams, for the reader to reuse.
    free: Vec<Vec<u8>>,
    /// Workers waiting for work: the reader wakes one only then.
    idle: usize,
    /// Workers whose fibers all wait on the store (see
    /// [`Queues::park`]): the reader unparks one when no worker is idle.
    parked: Vec<Thread>,
    stopping: bool,
}

impl Queues {
    /// Queues of at most `max` datagrams each.
    pub fn new(max: usize) -> Queues {
        let max = max.max(1);
        Queues {
            state: Mutex::new(State {
                answers: VecDeque::with_capacity(max),
                new: VecDeque::with_capacity(max),
                free: Vec::new(),
                idle: 0,
                parked: Vec::new(),
                stopping: false,
            }),
            wake: Condvar::new(),
            max: AtomicUsize::new(max),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bound of each queue.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// A new bound (a reload); a lower one holds as the queues drain.
    pub fn set_max(&self, max: usize) {
        self.max.store(max.max(1), Ordering::Relaxed);
    }

    /// Queues `d` as `kind` and returns a buffer for the next datagram;
    /// gives `d` back when its queue is full or the server is stopping.
    pub fn push(&self, kind: Kind, d: Datagram) -> Result<Vec<u8>, Datagram> {
        let max = self.max();
        let mut s = self.lock();
        if s.stopping {
            return Err(d);
        }
        let queue = match kind {
            Kind::Answer => &mut s.answers,
            Kind::New => &mut s.new,
        };
        if queue.len() >= max {
            return Err(d);
        }
        queue.push_back(d);
        if s.idle > 0 {
            self.wake.notify_one();
        } else if let Some(t) = s.parked.pop() {
            t.unpark();
        }
        let reused = s.free.pop();
        drop(s);
        Ok(reused.unwrap_or_else(buffer))
    }

    /// Gives back the buffer of the datagram just decided (if any) and
    /// takes the next one, answers first; waits up to `wait` for one.
    pub fn next(&self, done: Option<Vec<u8>>, wait: Duration) -> Next {
        let mut s = self.lock();
        if let Some(buf) = done {
            s.free.push(buf);
        }
        let mut waited = false;
        loop {
            if let Some(d) = s.answers.pop_front() {
                return Next::Work(d);
            }
            if s.stopping {
                return Next::Stop;
            }
            if let Some(d) = s.new.pop_front() {
                return Next::Work(d);
            }
            if waited {
                return Next::Idle;
            }
            s.idle += 1;
            s = self
                .wake
                .wait_timeout(s, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            s.idle -= 1;
            waited = true;
        }
    }

    /// Gives back the buffer of the datagram just decided (if any) and
    /// takes the next one, answers first, without waiting: for a worker
    /// with fibers (`fibers.rs`), which waits in [`Queues::park`].
    pub fn try_next(&self, done: Option<Vec<u8>>) -> Option<Datagram> {
        let mut s = self.lock();
        if let Some(buf) = done {
            s.free.push(buf);
        }
        match s.answers.pop_front() {
            Some(d) => Some(d),
            None if s.stopping => None,
            None => s.new.pop_front(),
        }
    }

    /// Parks the calling worker, whose fibers all wait on the store,
    /// until a datagram is queued or it is unparked otherwise (a store
    /// answer); `park` does the parking, for as long as the fibers allow.
    /// Returns at once when a datagram waits already.
    pub fn park(&self, park: impl FnOnce()) {
        let me = std::thread::current();
        {
            let mut s = self.lock();
            if !s.answers.is_empty() || (!s.stopping && !s.new.is_empty()) {
                return;
            }
            s.parked.push(me.clone());
        }
        park();
        let mut s = self.lock();
        if let Some(i) = s.parked.iter().position(|t| t.id() == me.id()) {
            s.parked.swap_remove(i);
        }
    }

    /// Stops taking datagrams: the answers queued are still decided (a
    /// user typed that code), the new requests are dropped (nothing has
    /// been done for them; the NAS retransmits to the server that comes
    /// back, or fails over). Returns how many were dropped.
    pub fn stop(&self) -> usize {
        let mut s = self.lock();
        s.stopping = true;
        let dropped = s.new.len();
        s.new.clear();
        self.wake.notify_all();
        dropped
    }

    /// Datagrams waiting, answers and new requests (for logs and tests).
    pub fn lengths(&self) -> (usize, usize) {
        let s = self.lock();
        (s.answers.len(), s.new.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: u8, attrs: &[(u8, &[u8])]) -> Vec<u8> {
        let mut p = vec![code, 7, 0, 0];
        p.extend_from_slice(&[0u8; 16]);
        for (t, v) in attrs {
            p.push(*t);
            p.push(v.len() as u8 + 2);
            p.extend_from_slice(v);
        }
        let len = (p.len() as u16).to_be_bytes();
        p[2..4].copy_from_slice(&len);
        p
    }

    #[test]
    fn answers_are_told_from_new_requests_by_code_and_state() {
        let ma: &[u8] = &[0; 16];
        let first = packet(ACCESS_REQUEST, &[(80, ma), (1, b"alice"), (2, &[9; 16])]);
        assert_eq!(classify(&first), Kind::New);
        let answer = packet(
            ACCESS_REQUEST,
            &[(80, ma), (1, b"alice"), (2, &[9; 16]), (STATE, &[1; 16])],
        );
        assert_eq!(classify(&answer), Kind::Answer);
        assert_eq!(classify(&packet(STATUS_SERVER, &[(80, ma)])), Kind::Answer);
        // Anything else waits with the new requests, to be dropped there.
        assert_eq!(classify(&packet(4, &[(STATE, &[1; 4])])), Kind::New);
        assert_eq!(classify(&[]), Kind::New);
        assert_eq!(classify(&answer[..3]), Kind::New);
        // A State past the length field, or after a broken attribute,
        // does not count.
        let mut short = answer.clone();
        let len = (answer.len() as u16 - 18).to_be_bytes();
        short[2..4].copy_from_slice(&len);
        assert_eq!(classify(&short), Kind::New);
        let mut broken = packet(ACCESS_REQUEST, &[(1, b"alice"), (STATE, &[1; 16])]);
        broken[21] = 1; // User-Name of length 1
        assert_eq!(classify(&broken), Kind::New);
        let mut overlong = packet(ACCESS_REQUEST, &[(1, b"alice")]);
        overlong[21] = 200;
        overlong.extend_from_slice(&[STATE, 18]);
        assert_eq!(classify(&overlong), Kind::New);
        // A datagram cut short at the attribute header.
        let cut = &answer[..answer.len() - 17];
        assert_eq!(classify(cut), Kind::New);
    }

    fn datagram(tag: u8) -> Datagram {
        let mut buf = buffer();
        buf[0] = tag;
        Datagram {
            buf,
            len: 1,
            from: SocketAddr::from(([127, 0, 0, 1], 1000 + u16::from(tag))),
        }
    }

    fn take(q: &Queues) -> Option<u8> {
        match q.next(None, Duration::from_millis(1)) {
            Next::Work(d) => Some(d.bytes()[0]),
            Next::Idle => None,
            Next::Stop => Some(0),
        }
    }

    #[test]
    fn answers_go_first_and_each_queue_is_bounded() {
        let q = Queues::new(2);
        assert!(q.push(Kind::New, datagram(1)).is_ok());
        assert!(q.push(Kind::New, datagram(2)).is_ok());
        let back = q.push(Kind::New, datagram(3)).err().map(|d| d.bytes()[0]);
        assert_eq!(back, Some(3), "a full queue gives the datagram back");
        // The answers have a queue of their own, and go first.
        assert!(q.push(Kind::Answer, datagram(10)).is_ok());
        assert!(q.push(Kind::Answer, datagram(11)).is_ok());
        assert!(q.push(Kind::Answer, datagram(12)).is_err());
        assert_eq!(q.lengths(), (2, 2));
        let order: Vec<_> = std::iter::from_fn(|| take(&q)).collect();
        assert_eq!(order, [10, 11, 1, 2]);
        // A lower bound (a reload) holds for what comes next.
        q.set_max(1);
        assert!(q.push(Kind::New, datagram(4)).is_ok());
        assert!(q.push(Kind::New, datagram(5)).is_err());
    }

    #[test]
    fn buffers_of_decided_datagrams_are_reused() {
        let q = Queues::new(4);
        let d = datagram(1);
        let ptr = d.buf.as_ptr();
        assert!(q.push(Kind::New, d).is_ok());
        let Next::Work(d) = q.next(None, Duration::from_millis(1)) else {
            panic!("queued")
        };
        assert!(matches!(
            q.next(Some(d.buf), Duration::from_millis(1)),
            Next::Idle
        ));
        let fresh = q.push(Kind::New, datagram(2)).ok().unwrap_or_default();
        assert_eq!(fresh.as_ptr(), ptr, "the decided datagram's buffer");
        assert_eq!(fresh.len(), wire::MAX_PACKET + 1);
    }

    #[test]
    fn stopping_decides_the_answers_queued_and_drops_the_new_requests() {
        let q = Queues::new(8);
        for tag in [1, 2, 3] {
            assert!(q.push(Kind::New, datagram(tag)).is_ok());
        }
        assert!(q.push(Kind::Answer, datagram(10)).is_ok());
        assert_eq!(q.stop(), 3, "three new requests dropped");
        assert!(q.push(Kind::Answer, datagram(11)).is_err(), "none taken");
        assert_eq!(take(&q), Some(10), "the answer is still decided");
        assert!(matches!(q.next(None, Duration::from_secs(5)), Next::Stop));
    }

    #[test]
    fn a_waiting_worker_is_woken_by_a_datagram_and_by_stop() {
        let q = std::sync::Arc::new(Queues::new(8));
        let worker = {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    match q.next(None, Duration::from_secs(10)) {
                        Next::Work(d) => got.push(d.bytes()[0]),
                        Next::Idle => {}
                        Next::Stop => return got,
                    }
                }
            })
        };
        let started = std::time::Instant::now();
        while q.lock().idle == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(q.push(Kind::New, datagram(1)).is_ok());
        while q.lengths() != (0, 0) {
            std::thread::sleep(Duration::from_millis(1));
        }
        q.stop();
        assert_eq!(worker.join().ok(), Some(vec![1]));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "woken, not timed out"
        );
    }

    #[test]
    fn a_worker_with_fibers_takes_without_waiting_answers_first() {
        let q = Queues::new(4);
        assert!(q.try_next(None).is_none(), "nothing queued: no wait");
        assert!(q.push(Kind::New, datagram(1)).is_ok());
        assert!(q.push(Kind::Answer, datagram(2)).is_ok());
        let first = q.try_next(None).map(|d| d.bytes()[0]);
        assert_eq!(first, Some(2), "the answer first");
        let second = q.try_next(Some(buffer())).map(|d| d.bytes()[0]);
        assert_eq!(second, Some(1));
        // Stopping: answers still come, new requests no more.
        assert!(q.push(Kind::New, datagram(3)).is_ok());
        assert!(q.push(Kind::Answer, datagram(4)).is_ok());
        assert_eq!(q.stop(), 1);
        assert_eq!(q.try_next(None).map(|d| d.bytes()[0]), Some(4));
        assert!(q.try_next(None).is_none());
    }

    #[test]
    fn a_parked_worker_is_woken_by_a_datagram_and_not_parked_when_one_waits() {
        let q = std::sync::Arc::new(Queues::new(4));
        // A datagram waiting already: no park at all.
        assert!(q.push(Kind::New, datagram(1)).is_ok());
        let mut parked = false;
        q.park(|| parked = true);
        assert!(!parked);
        assert!(q.try_next(None).is_some());
        // Nothing waiting: parked until the reader queues one.
        let reader = {
            let q = q.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                q.push(Kind::New, datagram(2)).is_ok()
            })
        };
        let started = std::time::Instant::now();
        // Looped: a park may return early (a spurious wake-up), never late.
        while q.lengths() == (0, 0) && started.elapsed() < Duration::from_secs(30) {
            q.park(|| std::thread::park_timeout(Duration::from_secs(10)));
        }
        assert!(reader.join().unwrap());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "woken by the datagram, not the timeout"
        );
        assert_eq!(q.try_next(None).map(|d| d.bytes()[0]), Some(2));
    }
}
