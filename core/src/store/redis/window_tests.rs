//! The send windows' running sums (`scripts::WINDOW`) against a real
//! `redis-server`: they decide as the memory store, which adds up every
//! bucket, over long random runs (boundaries that move, windows idle
//! long enough to be rebuilt, a host whose clock is behind by more than
//! a short window, a spend budget, monitored windows), and they survive
//! a host of the previous version, which summed every bucket and takes
//! the sums for stale buckets.

use super::tests::Server;
use super::RedisStore;
use crate::clock::Millis;
use crate::random::{FixedRandom, RandomSource};
use crate::store::conformance::rate;
use crate::store::limits::{KeyedWindow, LimitKind, LimitMode, SendDecision, SendLimits};
use crate::store::memory::MemoryStore;
use crate::store::Store;

/// Reproducible dice: [`FixedRandom`]'s bytes, so that a failure replays.
struct Dice(FixedRandom);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        let mut b = [0u8; 8];
        self.0.fill(&mut b).unwrap();
        u64::from_le_bytes(b) % n
    }
}

/// Tight windows of every shape: the global one (an hour, minute
/// buckets), a number's (30 s: 1 s buckets, fewer than 60 a window), a
/// country's (a day, monitored) and a costed budget.
fn limits(number: &str) -> SendLimits {
    let mut l = SendLimits::user_and_global(rate(1_000, 3600), rate(25, 3600));
    l.windows.push(KeyedWindow::new(
        LimitKind::PerNumber,
        number,
        rate(6, 30),
        LimitMode::Enforce,
    ));
    l.windows.push(KeyedWindow::new(
        LimitKind::PerCountry,
        "GB",
        rate(25, 86_400),
        LimitMode::Monitor,
    ));
    l.windows.push(KeyedWindow::budget(
        rate(450_000, 86_400),
        1_500,
        LimitMode::Enforce,
    ));
    l
}

#[test]
fn running_sums_decide_as_summing_every_bucket() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let redis = RedisStore::open(&server.spec("sums:")).unwrap();
    let memory = MemoryStore::new();
    let mut dice = Dice(FixedRandom::new(0x05EE_D0F5_A1E5));
    // Not at the epoch: buckets are large numbers, as in production.
    let mut now: Millis = 1_764_000_000_000;
    let mut refused = std::collections::BTreeSet::new();
    let mut monitored = std::collections::BTreeSet::new();
    let budget = limits("").windows[3].clone();
    for step in 0..3_000 {
        now += match dice.below(100) {
            // Within a bucket, across a few, or a long pause (a window
            // idle for more than 64 buckets is rebuilt).
            0..=59 => dice.below(900) as Millis,
            60..=94 => dice.below(5_000) as Millis,
            95..=97 => 60_000 + dice.below(200_000) as Millis,
            _ => 3_900_000 + dice.below(3_600_000) as Millis,
        };
        // A third of the SMS from another host, whose clock is up to 45 s
        // behind: more than the number's window, less than a bucket of
        // the global one.
        let behind = if dice.below(3) == 0 {
            dice.below(45_000)
        } else {
            0
        };
        let at = now - behind as Millis;
        let user = format!("u{}", dice.below(7));
        let number = format!("+4477009000{}", dice.below(3));
        let l = limits(&number);
        let want = memory.reserve_sends(&user, at, &l).unwrap();
        let got = redis.reserve_sends(&user, at, &l).unwrap();
        assert_eq!(got, want, "step {step}, at {at}, {user}, {number}");
        refused.extend(want.refused);
        monitored.extend(want.monitored);
        if step % 250 == 0 {
            assert_eq!(
                redis.breaker(&budget, at).unwrap(),
                memory.breaker(&budget, at).unwrap(),
                "the budget's spend at step {step}"
            );
        }
        if step == 1_500 {
            assert_eq!(
                redis.reset_breaker(&budget, at).unwrap(),
                memory.reset_breaker(&budget, at).unwrap()
            );
        }
    }
    // The run reached every limit.
    use LimitKind::*;
    assert_eq!(
        refused.into_iter().collect::<Vec<_>>(),
        [Global, PerNumber, DailyBudget],
        "the limits that refused"
    );
    assert_eq!(monitored.into_iter().collect::<Vec<_>>(), [PerCountry]);
}

/// What the previous version left in a window's hash (buckets only) is
/// counted; and after one of its hosts reserved again (deleting the sums
/// as stale buckets and adding to a bucket), the next reserve here counts
/// that SMS too.
#[test]
fn a_window_the_previous_version_wrote_is_counted() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let s = RedisStore::open(&server.spec("old:")).unwrap();
    let now: Millis = 1_764_000_000_000;
    let l = SendLimits::user_and_global(rate(100, 3600), rate(5, 3600));
    let global = s.window_key(&l.windows[0]);
    let size = l.windows[0].bucket_ms();
    let hash = |c: &mut dyn redis::ConnectionLike| -> redis::RedisResult<Vec<(String, String)>> {
        redis::cmd("HGETALL")
            .arg(&global)
            .query::<Vec<(String, String)>>(c)
    };
    // Three SMS by the previous version: two in a bucket 20 minutes ago,
    // one in a bucket gone from the window (kept as not yet stale).
    s.run(|c| {
        redis::cmd("HSET")
            .arg(&global)
            .arg((now - 1_200_000) / size)
            .arg(2)
            .arg((now - 3_630_000) / size)
            .arg(1)
            .query::<()>(c)
    })
    .unwrap();
    let ok = SendDecision::granted();
    assert_eq!(s.reserve_sends("alice", now, &l).unwrap(), ok);
    assert_eq!(s.reserve_sends("alice", now + 1, &l).unwrap(), ok);
    // The sums are there now, beside the buckets.
    let fields = s.run(hash).unwrap();
    assert!(
        fields.iter().any(|(f, v)| f == "-1e15" && v == "4"),
        "{fields:?}"
    );
    // A host of the previous version: deletes every field it takes for a
    // stale bucket, the sums among them, then counts one more SMS.
    s.run(|c| {
        redis::cmd("HDEL")
            .arg(&global)
            .arg("-1e15")
            .arg("-2e15")
            .arg("-3e15")
            .query::<()>(c)?;
        redis::cmd("HINCRBY")
            .arg(&global)
            .arg(now / size)
            .arg(1)
            .query::<()>(c)
    })
    .unwrap();
    // Five counted: the window is full.
    assert_eq!(
        s.reserve_sends("bob", now + 2, &l).unwrap().refused,
        Some(LimitKind::Global)
    );
    // Twenty minutes on, the old bucket of two has left: room for two.
    let later = now + 2_400_000 + size;
    assert_eq!(s.reserve_sends("bob", later, &l).unwrap(), ok);
    assert_eq!(s.reserve_sends("carol", later, &l).unwrap(), ok);
    assert_eq!(
        s.reserve_sends("dave", later, &l).unwrap().refused,
        Some(LimitKind::Global)
    );
    // The bucket that had left the window was forgotten on the way.
    let fields = s.run(hash).unwrap();
    let stale = ((now - 3_630_000) / size).to_string();
    assert!(!fields.iter().any(|(f, _)| *f == stale), "{fields:?}");
}
