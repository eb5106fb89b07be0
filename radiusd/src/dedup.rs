//! Duplicate detection (RFC 5080 §2.2.2): a NAS that retransmits a request
//! gets the reply we already sent, and never causes a second run of the
//! login flow (a second SMS, a second counted attempt).
//!
//! A request is a duplicate when client address and port, Identifier and
//! Request Authenticator all match ([`DedupKey`]). Check only requests that
//! [`crate::wire::decode_request`] accepted, so garbage and forgeries never
//! take a slot.
//!
//! # Lifetime of an entry
//!
//! [`DedupCache::check`] records a new key as in flight; the worker then calls
//! [`DedupCache::complete`] with the encoded reply, or
//! [`DedupCache::forget`] if it sent none (so the NAS's retransmission is
//! processed afresh). An entry expires `window` after completion; an
//! in-flight entry expires `window` after it was first seen, so a worker that
//! died does not pin its key forever.
//!
//! # Cost
//!
//! Beside the map, a queue holds `(expiry, key, generation)`, one record per
//! entry, in the order the entries arrived. With a monotonic clock that is
//! the order their first expiries come due, so each check pops only records
//! at the front: O(1) amortized, no scan. Completion gives an entry its
//! full window from the reply and leaves its record in place; when that
//! record comes due, the entry is queued again at the back for the rest of
//! its time. A requeued entry may so stay in the map past its expiry (at
//! most one more window), which `check` treats as not seen. Records of
//! forgotten or replaced entries are skipped (their generation no longer
//! matches); the queue is compacted when such stale records make up more
//! than half of it, which keeps it within about twice the capacity, again
//! O(1) amortized. When the map is full the front of the queue is evicted:
//! the oldest request.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Keyed per process (random seed) like std's SipHash, and several times
/// faster on these small keys: every request is looked up and inserted,
/// and only authenticated requests get in.
type Hasher = foldhash::fast::RandomState;

/// Longest window honoured; a longer one is cut to this. RFC 5080 suggests
/// a few seconds; this only guards against `Instant` overflow.
const MAX_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// What identifies a request for duplicate detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DedupKey {
    /// Source address and port of the datagram.
    pub client: SocketAddr,
    /// RADIUS Identifier.
    pub identifier: u8,
    /// Request Authenticator.
    pub authenticator: [u8; 16],
}

/// What [`DedupCache::check`] knows about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Not seen within the window; now recorded as in flight. Process the
    /// request, then call [`DedupCache::complete`] or [`DedupCache::forget`].
    New,
    /// Being processed: drop the retransmission, the reply is on its way.
    InFlight,
    /// Answered: send these bytes again, unchanged.
    Done(Vec<u8>),
}

/// Recent requests and their replies, bounded in time and count.
#[derive(Debug)]
pub struct DedupCache {
    window: Duration,
    max_entries: usize,
    entries: HashMap<DedupKey, Entry, Hasher>,
    /// `(expiry, key, generation)`, in the order expiries were set.
    queue: VecDeque<Record>,
    next_generation: u64,
}

#[derive(Debug)]
struct Entry {
    reply: Option<Vec<u8>>,
    expires: Instant,
    /// Matches the one live queue record of this entry.
    generation: u64,
}

#[derive(Debug)]
struct Record {
    expires: Instant,
    key: DedupKey,
    generation: u64,
}

impl DedupCache {
    /// A cache that remembers a request for `window` (capped at one day) and
    /// holds at most `max_entries` requests; `max_entries == 0` remembers
    /// nothing, so every check answers [`Seen::New`].
    pub fn new(window: Duration, max_entries: usize) -> Self {
        DedupCache {
            window: window.min(MAX_WINDOW),
            max_entries,
            entries: HashMap::with_hasher(Hasher::default()),
            queue: VecDeque::new(),
            next_generation: 0,
        }
    }

    /// Looks `key` up at time `now`.
    ///
    /// [`Seen::New`] records the key as in flight: the caller must later
    /// call [`DedupCache::complete`] or [`DedupCache::forget`] (if it does
    /// neither, the entry expires after the window).
    pub fn check(&mut self, key: DedupKey, now: Instant) -> Seen {
        self.purge_expired(now);
        if let Some(entry) = self.entries.get(&key) {
            if entry.expires > now {
                return match &entry.reply {
                    None => Seen::InFlight,
                    Some(reply) => Seen::Done(reply.clone()),
                };
            }
            // Expired but not yet purged: only if `now` went backwards
            // between calls and the queue is out of order.
            self.entries.remove(&key);
        }
        self.insert(key, None, now);
        Seen::New
    }

    /// Stores the reply sent for `key`; retransmissions within `window`
    /// from `now` get these bytes. A key that was forgotten or evicted
    /// meanwhile is stored afresh.
    pub fn complete(&mut self, key: DedupKey, reply: Vec<u8>, now: Instant) {
        self.purge_expired(now);
        let expires = now.checked_add(self.window).unwrap_or(now);
        if let Some(entry) = self.entries.get_mut(&key) {
            // Its queue record (from `check`) stays: when it comes due,
            // the entry is requeued for the rest of its time rather than
            // dropped. One record per request, not two, in a busy queue.
            entry.reply = Some(reply);
            entry.expires = expires;
            return;
        }
        self.insert(key, Some(reply), now);
    }

    /// Drops `key`, so its next retransmission is processed as new. For a
    /// worker that sent no reply (the request is to be retried).
    pub fn forget(&mut self, key: &DedupKey) {
        // The queue record stays behind, stale, until it is popped or
        // compacted away.
        self.entries.remove(key);
    }

    /// Number of requests held, including expired ones not yet purged (that
    /// happens at the next `check` or `complete`).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no request is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, key: DedupKey, reply: Option<Vec<u8>>, now: Instant) {
        if self.max_entries == 0 {
            return;
        }
        while self.entries.len() >= self.max_entries {
            if !self.evict_front() {
                break;
            }
        }
        // Unreachable in practice (now + one day); expiring at once is the
        // harmless fallback.
        let expires = now.checked_add(self.window).unwrap_or(now);
        let generation = self.next_generation;
        self.next_generation += 1;
        self.entries.insert(
            key,
            Entry {
                reply,
                expires,
                generation,
            },
        );
        self.queue.push_back(Record {
            expires,
            key,
            generation,
        });
        self.compact_if_stale();
    }

    /// Pops expired records from the front, dropping their entries.
    fn purge_expired(&mut self, now: Instant) {
        while self.queue.front().is_some_and(|r| r.expires <= now) {
            self.evict_front();
        }
    }

    /// Pops the front record and drops its entry if the record is live,
    /// unless the entry was given more time since (a reply stored): then
    /// it is queued again for that, behind the others. Returns false if the
    /// queue was empty.
    fn evict_front(&mut self) -> bool {
        let Some(record) = self.queue.pop_front() else {
            return false;
        };
        if self.is_live(&record) {
            match self.entries.get(&record.key).map(|e| e.expires) {
                Some(expires) if expires > record.expires => {
                    self.queue.push_back(Record { expires, ..record });
                }
                _ => {
                    self.entries.remove(&record.key);
                }
            }
        }
        true
    }

    fn is_live(&self, record: &Record) -> bool {
        self.entries
            .get(&record.key)
            .is_some_and(|e| e.generation == record.generation)
    }

    /// Drops stale records once they are more than half of the queue. After
    /// a compaction the queue holds only live records, so at least as many
    /// inserts as there are entries pass before the next one: O(1) amortized.
    fn compact_if_stale(&mut self) {
        if self.queue.len() > 2 * self.entries.len() + 16 {
            let entries = &self.entries;
            self.queue.retain(|r| {
                entries
                    .get(&r.key)
                    .is_some_and(|e| e.generation == r.generation)
            });
        }
    }
}

/// A [`DedupCache`] split in shards by key, each behind a lock of its
/// own: the workers checking requests and the thread completing replies
/// seldom wait for each other, and a thread descheduled while it holds
/// one shard holds up only the requests that fall in it.
#[derive(Debug)]
pub struct ShardedDedup {
    shards: Box<[Mutex<DedupCache>]>,
    hasher: Hasher,
}

impl ShardedDedup {
    /// `shards` caches (at least one) sharing `max_entries` between them.
    pub fn new(window: Duration, max_entries: usize, shards: usize) -> Self {
        let n = shards.max(1);
        ShardedDedup {
            shards: (0..n)
                .map(|_| Mutex::new(DedupCache::new(window, max_entries.div_ceil(n))))
                .collect(),
            hasher: Hasher::default(),
        }
    }

    /// The shard that holds `key`, locked.
    pub fn shard(&self, key: &DedupKey) -> MutexGuard<'_, DedupCache> {
        let i = self.hasher.hash_one(key) as usize % self.shards.len();
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests held in all shards.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Whether no shard holds a request.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(30);

    fn key(port: u16, identifier: u8, seed: u8) -> DedupKey {
        DedupKey {
            client: SocketAddr::from(([192, 0, 2, 1], port)),
            identifier,
            authenticator: [seed; 16],
        }
    }

    #[test]
    fn retransmit_in_flight_then_done_then_expired() {
        let t0 = Instant::now();
        let mut cache = DedupCache::new(WINDOW, 100);
        let k = key(1812, 7, 1);
        assert_eq!(cache.check(k, t0), Seen::New);
        assert_eq!(cache.check(k, t0 + Duration::from_secs(1)), Seen::InFlight);

        let done = t0 + Duration::from_secs(2);
        cache.complete(k, b"reply bytes".to_vec(), done);
        assert_eq!(
            cache.check(k, done + Duration::from_secs(5)),
            Seen::Done(b"reply bytes".to_vec())
        );
        // The window runs from completion, not from the first sighting.
        assert_eq!(
            cache.check(k, t0 + WINDOW + Duration::from_secs(1)),
            Seen::Done(b"reply bytes".to_vec())
        );
        assert_eq!(cache.check(k, done + WINDOW), Seen::New);
        assert_eq!(cache.len(), 1, "the new sighting is in flight");
    }

    #[test]
    fn in_flight_entry_expires_after_window() {
        let t0 = Instant::now();
        let mut cache = DedupCache::new(WINDOW, 100);
        let k = key(1812, 1, 1);
        assert_eq!(cache.check(k, t0), Seen::New);
        assert_eq!(
            cache.check(k, t0 + WINDOW - Duration::from_millis(1)),
            Seen::InFlight
        );
        assert_eq!(cache.check(k, t0 + WINDOW), Seen::New);
    }

    #[test]
    fn key_fields_all_count() {
        let t0 = Instant::now();
        let mut cache = DedupCache::new(WINDOW, 100);
        let k = key(1812, 7, 1);
        assert_eq!(cache.check(k, t0), Seen::New);
        // Same identifier, another authenticator: a new request.
        assert_eq!(cache.check(key(1812, 7, 2), t0), Seen::New);
        // Same authenticator, another identifier or port: new as well.
        assert_eq!(cache.check(key(1812, 8, 1), t0), Seen::New);
        assert_eq!(cache.check(key(1813, 7, 1), t0), Seen::New);
        let other_host = DedupKey {
            client: SocketAddr::from(([192, 0, 2, 2], 1812)),
            ..k
        };
        assert_eq!(cache.check(other_host, t0), Seen::New);
        assert_eq!(cache.check(k, t0), Seen::InFlight);
        assert_eq!(cache.len(), 5);
    }

    #[test]
    fn forget_lets_the_retransmission_through() {
        let t0 = Instant::now();
        let mut cache = DedupCache::new(WINDOW, 100);
        let k = key(1812, 7, 1);
        assert_eq!(cache.check(k, t0), Seen::New);
        cache.forget(&k);
        assert!(cache.is_empty());
        assert_eq!(cache.check(k, t0), Seen::New);
        assert_eq!(cache.check(k, t0), Seen::InFlight);
    }

    #[test]
    fn complete_after_forget_or_eviction_stores_the_reply() {
        let t0 = Instant::now();
        let mut cache = DedupCache::new(WINDOW, 100);
        let k = key(1812, 7, 1);
        cache.complete(k, vec![1, 2, 3], t0);
        assert_eq!(cache.check(k, t0), Seen::Done(vec![1, 2, 3]));
    }

    #[test]
    fn capacity_bound_holds_and_oldest_goes_first() {
        let t0 = Instant::now();
        let mut cache = DedupCache::new(WINDOW, 3);
        for (i, id) in (0u8..3).enumerate() {
            let at = t0 + Duration::from_secs(i as u64);
            assert_eq!(cache.check(key(1, id, 0), at), Seen::New);
        }
        assert_eq!(cache.len(), 3);
        // Completing id 0 moves its expiry last; id 1 is now the oldest.
        cache.complete(key(1, 0, 0), vec![0], t0 + Duration::from_secs(3));
        assert_eq!(
            cache.check(key(1, 3, 0), t0 + Duration::from_secs(4)),
            Seen::New
        );
        assert_eq!(cache.len(), 3);
        let now = t0 + Duration::from_secs(5);
        assert_eq!(cache.check(key(1, 2, 0), now), Seen::InFlight);
        assert_eq!(cache.check(key(1, 0, 0), now), Seen::Done(vec![0]));
        assert_eq!(cache.len(), 3);
        // id 1 was evicted, so it is new again (and evicts the next oldest).
        assert_eq!(cache.check(key(1, 1, 0), now), Seen::New);
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn an_answered_request_keeps_one_queue_record_and_its_full_window() {
        let t0 = Instant::now();
        let mut cache = DedupCache::new(WINDOW, 1000);
        for id in 0u8..100 {
            assert_eq!(cache.check(key(1, id, 0), t0), Seen::New);
            cache.complete(key(1, id, 0), vec![id], t0 + Duration::from_secs(1));
        }
        assert_eq!(cache.queue.len(), 100, "one record per request");
        // Due by the time of the request, kept for the window after the
        // reply: requeued, not dropped.
        let late = t0 + WINDOW + Duration::from_millis(500);
        assert_eq!(cache.check(key(1, 7, 0), late), Seen::Done(vec![7]));
        assert_eq!(cache.queue.len(), 100);
        let gone = t0 + WINDOW + Duration::from_secs(1);
        assert_eq!(cache.check(key(1, 7, 0), gone), Seen::New);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn expired_entries_are_evicted_before_live_ones() {
        let t0 = Instant::now();
        let mut cache = DedupCache::new(WINDOW, 2);
        assert_eq!(cache.check(key(1, 0, 0), t0), Seen::New);
        let later = t0 + Duration::from_secs(20);
        assert_eq!(cache.check(key(1, 1, 0), later), Seen::New);
        // At t0 + 30 s the first has expired: it makes room, the second stays.
        let now = t0 + WINDOW;
        assert_eq!(cache.check(key(1, 2, 0), now), Seen::New);
        assert_eq!(cache.check(key(1, 1, 0), now), Seen::InFlight);
        assert_eq!(cache.check(key(1, 2, 0), now), Seen::InFlight);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn many_requests_stay_within_bounds() {
        let t0 = Instant::now();
        let mut cache = DedupCache::new(WINDOW, 50);
        for i in 0u32..10_000 {
            let now = t0 + Duration::from_millis(u64::from(i));
            let [a, b, c, d] = i.to_be_bytes();
            let k = DedupKey {
                client: SocketAddr::from(([10, a, b, c], 1812)),
                identifier: d,
                authenticator: [d; 16],
            };
            assert_eq!(cache.check(k, now), Seen::New);
            match i % 3 {
                0 => cache.complete(k, vec![d], now),
                1 => cache.forget(&k),
                _ => {}
            }
            assert!(cache.len() <= 50);
            assert!(
                cache.queue.len() <= 2 * 50 + 17,
                "queue {}",
                cache.queue.len()
            );
        }
    }

    #[test]
    fn zero_capacity_remembers_nothing() {
        let t0 = Instant::now();
        let mut cache = DedupCache::new(WINDOW, 0);
        let k = key(1, 1, 1);
        assert_eq!(cache.check(k, t0), Seen::New);
        cache.complete(k, vec![1], t0);
        assert_eq!(cache.check(k, t0), Seen::New);
        assert!(cache.is_empty());
    }

    #[test]
    fn clock_going_backwards_does_not_resurrect_expired_entries() {
        let t0 = Instant::now();
        let mut cache = DedupCache::new(WINDOW, 10);
        let late = t0 + Duration::from_secs(100);
        assert_eq!(cache.check(key(1, 1, 1), late), Seen::New);
        // An earlier `now` puts this record behind a later expiry.
        let k = key(1, 2, 2);
        assert_eq!(cache.check(k, t0), Seen::New);
        cache.complete(k, vec![9], t0);
        assert_eq!(
            cache.check(k, t0 + WINDOW - Duration::from_secs(1)),
            Seen::Done(vec![9])
        );
        // Expired although still queued behind the other record.
        assert_eq!(cache.check(k, t0 + WINDOW), Seen::New);
        assert_eq!(cache.check(key(1, 1, 1), t0 + WINDOW), Seen::InFlight);
    }

    #[test]
    fn huge_window_does_not_overflow() {
        let t0 = Instant::now();
        let mut cache = DedupCache::new(Duration::MAX, 10);
        let k = key(1, 1, 1);
        assert_eq!(cache.check(k, t0), Seen::New);
        assert_eq!(
            cache.check(k, t0 + Duration::from_secs(3600)),
            Seen::InFlight
        );
    }

    #[test]
    fn shards_answer_retransmits_and_share_the_bound() {
        let t0 = Instant::now();
        let dedup = ShardedDedup::new(WINDOW, 64, 8);
        let keys: Vec<DedupKey> = (0..200u16).map(|i| key(i, i as u8, i as u8)).collect();
        for (n, k) in keys.iter().enumerate() {
            assert_eq!(dedup.shard(k).check(*k, t0), Seen::New);
            dedup.shard(k).complete(*k, vec![n as u8], t0);
            // The retransmit finds the reply in the same shard.
            assert_eq!(dedup.shard(k).check(*k, t0), Seen::Done(vec![n as u8]));
        }
        // 8 shards of 8: never more than the bound, however keys fall.
        assert!(dedup.len() <= 64, "{} held", dedup.len());
        // The newest request of each shard is still there.
        let last = keys.last().unwrap();
        assert_eq!(dedup.shard(last).check(*last, t0), Seen::Done(vec![199]));
        let empty = ShardedDedup::new(WINDOW, 10, 0);
        assert!(empty.is_empty());
        assert_eq!(empty.shard(last).check(*last, t0), Seen::New);
    }
}
