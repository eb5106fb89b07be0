//! Delivery receipts: the registry of sent codes waiting for theirs, the
//! counters, and the thread that reads idle SMPP sessions and sends a
//! failed code once more.
//!
//! The flow hands every code an SMPP provider took to the [`Registry`]
//! (a [`ReceiptSink`]) under the `message_id` of its `submit_sm_resp`
//! (an HTTP provider with a `status_callback`: the id of its answer,
//! whose callbacks `callback.rs` feeds in through
//! [`Registry::on_status`]).
//! Receipts are read on the pooled sessions (while a send waits for its
//! answer, and by the thread `start` starts, which polls idle sessions a few
//! times a second) and come to [`Registry::on_receipt`], which counts them
//! per provider, country and state. A receipt of UNDELIV, REJECTD or
//! EXPIRED within `receipts.resend_within` takes the code out of the
//! registry and hands it to the thread, which asks the engine to send it
//! once through the next provider ([`Engine::resend_after_receipt`]
//! checks in the store that the code is still open). Taking it out is
//! what makes the resend happen at most once. A code is held only in
//! memory (a `Zeroizing` buffer in [`SentCode`]) and forgotten at its
//! deadline, on its final receipt, or after its resend; the registry
//! holds at most `receipts.max_pending` codes, the oldest forgotten
//! first.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use smsotp_core::audit::{AuditSink, Level, ServerSinks};
use smsotp_core::clock::{Clock, SystemClock};
use smsotp_core::config::ReceiptSettings;
use smsotp_core::flow::{ReceiptResend, ReceiptSink, SentCode};
use smsotp_core::otp::ChallengeId;
use smsotp_core::sms::smpp::{Receipt, ReceiptError, ReceiptState};
use smsotp_core::store::{Counted, CounterKey};
use smsotp_core::Engine;
use zeroize::Zeroizing;

use crate::runtime::Runtime;
use crate::server::event;

/// How often idle SMPP sessions are read for receipts.
pub const POLL_EVERY: Duration = Duration::from_millis(200);
/// The most failed receipts waiting for the resend thread; more are
/// counted and dropped (each would only resend a code).
const QUEUE: usize = 256;
/// The most receipts counted and not yet written to the store (the
/// thread writes them a few times a second).
const UNSAVED_MAX: usize = 4096;
/// How long a receipt that matched no code waits for its code.
const EARLY_FOR: Duration = Duration::from_secs(5);
/// The most such receipts kept.
const EARLY_MAX: usize = 256;

fn country_of(code: &SentCode) -> String {
    code.phone
        .region()
        .map(|r| r.as_ref().to_owned())
        .unwrap_or_else(|| "--".into())
}

/// Receipts by provider, country (ISO code of the number, "--" when the
/// receipt matched no code held here) and state, since start or the last
/// reload, as this process saw them. `by_state` also goes to the store's
/// SMS counters (shared by every host, what `smsotp status` and
/// `/metrics` show): [`Registry::take_unsaved`], written by the receipt
/// thread.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReceiptCounts {
    /// (provider, country, state) → receipts.
    pub by_state: BTreeMap<(String, String, ReceiptState), u64>,
    /// Codes sent again through the next provider after a failed receipt.
    pub resent: u64,
    /// Failed receipts whose code was no longer open (used, replaced,
    /// expired), or that came after `resend_within`.
    pub not_resent: u64,
    /// `deliver_sm` receipts that could not be read.
    pub unreadable: u64,
    /// Codes forgotten before their receipt because `max_pending` was full.
    pub dropped: u64,
}

struct Pending {
    code: SentCode,
    deadline: Instant,
}

type Key = (String, String);

/// A receipt that came before its code was held: an SMSC may answer an
/// unknown number with UNDELIV at once, and the flow hands the code over
/// only once the send returned.
struct Early {
    at: Instant,
    key: Key,
    state: ReceiptState,
}

#[derive(Default)]
struct Table {
    by_id: HashMap<Key, Pending>,
    /// Insertion order, for dropping the oldest; may name entries already
    /// gone.
    order: VecDeque<Key>,
    /// Receipts no held code matched yet, oldest first, for [`EARLY_FOR`].
    early: VecDeque<Early>,
}

/// The codes waiting for their receipt, and the receipt counters.
pub struct Registry {
    settings: ReceiptSettings,
    table: Mutex<Table>,
    counts: Mutex<ReceiptCounts>,
    resends: SyncSender<(SentCode, ReceiptState)>,
    sinks: Arc<ServerSinks>,
    unreadable_logged: AtomicU64,
    /// Receipts counted here and not yet in the store, at most
    /// [`UNSAVED_MAX`].
    unsaved: Mutex<Vec<CounterKey>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

fn now() -> Instant {
    Instant::now()
}

impl Registry {
    /// A registry, and the receiving end of its resend queue (for
    /// `start`).
    pub fn new(
        settings: ReceiptSettings,
        sinks: Arc<ServerSinks>,
    ) -> (Arc<Registry>, Receiver<(SentCode, ReceiptState)>) {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        (
            Arc::new(Registry {
                settings,
                table: Mutex::new(Table::default()),
                counts: Mutex::new(ReceiptCounts::default()),
                resends: tx,
                sinks,
                unreadable_logged: AtomicU64::new(0),
                unsaved: Mutex::new(Vec::new()),
            }),
            rx,
        )
    }

    /// The hook the SMPP session pool calls with each receipt.
    pub fn hook(self: &Arc<Registry>) -> smsotp_core::sms::smpp::ReceiptHook {
        let r = Arc::downgrade(self);
        Arc::new(move |provider: &str, receipt| {
            if let Some(r) = r.upgrade() {
                r.on_receipt(provider, receipt, now());
            }
        })
    }

    /// The receipts counted since the last call, for the store's counters.
    pub fn take_unsaved(&self) -> Vec<CounterKey> {
        std::mem::take(&mut *self.unsaved.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Writes the receipts counted since the last time to the store's
    /// counters; a store that cannot take them is logged, and they are
    /// lost (a counter, not a login).
    fn save_counts(&self, store: &dyn smsotp_core::store::Store) {
        let keys = self.take_unsaved();
        if keys.is_empty() {
            return;
        }
        if let Err(e) = store.count(SystemClock.now_ms(), &keys) {
            self.log(
                Level::Warning,
                "count_failed",
                format!(
                    "{} not counted in the store: {e}",
                    smsotp_core::counted(keys.len(), "delivery receipt", "delivery receipts")
                ),
            );
        }
    }

    /// Codes held now.
    pub fn pending(&self) -> usize {
        self.lock_table().by_id.len()
    }

    /// A copy of the counters.
    pub fn counts(&self) -> ReceiptCounts {
        self.lock_counts().clone()
    }

    fn lock_table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_counts(&self) -> std::sync::MutexGuard<'_, ReceiptCounts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn resend_on(&self) -> bool {
        !self.settings.resend_within.is_zero()
    }

    /// Holds `code` until `at + resend_within` (at most its life). With the
    /// resend off, only what its receipt is counted under (provider,
    /// country) is held, for the code's life; the code itself is dropped.
    pub fn hold(&self, mut code: SentCode, at: Instant) {
        let keep_for = if self.resend_on() {
            self.settings.resend_within.min(code.valid_for)
        } else {
            code.code = Zeroizing::new(String::new());
            code.valid_for
        };
        let key = (code.provider.clone(), code.message_id.clone());
        let mut t = self.lock_table();
        let mut dropped = 0;
        while t.by_id.len() >= self.settings.max_pending {
            let Some(old) = t.order.pop_front() else {
                break;
            };
            if t.by_id.remove(&old).is_some() {
                dropped += 1;
            }
        }
        let deadline = at + keep_for;
        let provider = code.provider.clone();
        let early = t.early.iter().position(|e| e.key == key);
        let settled = match early.and_then(|i| t.early.remove(i)) {
            Some(e) => Some((e.state, Pending { code, deadline })),
            None => {
                t.order.push_back(key.clone());
                t.by_id.insert(key, Pending { code, deadline });
                None
            }
        };
        drop(t);
        if dropped > 0 {
            self.lock_counts().dropped += dropped;
        }
        if let Some((state, p)) = settled {
            self.count(&provider, country_of(&p.code), state);
            self.settle(&provider, p, state, at);
        }
    }

    fn count(&self, provider: &str, country: String, state: ReceiptState) {
        {
            let mut u = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
            if u.len() < UNSAVED_MAX {
                u.push(CounterKey::new(
                    provider,
                    Some(&country),
                    Counted::Receipt(state.as_str().to_owned()),
                ));
            }
        }
        *self
            .lock_counts()
            .by_state
            .entry((provider.to_owned(), country, state))
            .or_default() += 1;
    }

    /// Counts the early receipts that no code claimed, under country "--".
    fn count_unmatched(&self, gone: Vec<Early>) {
        for e in gone {
            self.count(&e.key.0, "--".into(), e.state);
        }
    }

    /// Forgets the codes whose deadline passed at `at`.
    pub fn expire(&self, at: Instant) {
        let mut t = self.lock_table();
        t.by_id.retain(|_, p| p.deadline > at);
        if t.order.len() > 2 * t.by_id.len() + 64 {
            let Table { by_id, order, .. } = &mut *t;
            order.retain(|k| by_id.contains_key(k));
        }
        let mut gone = Vec::new();
        while t
            .early
            .front()
            .is_some_and(|e| at.saturating_duration_since(e.at) >= EARLY_FOR)
        {
            gone.extend(t.early.pop_front());
        }
        drop(t);
        self.count_unmatched(gone);
    }

    /// A receipt (or why one could not be read) from `provider`'s session.
    pub fn on_receipt(&self, provider: &str, receipt: Result<Receipt, ReceiptError>, at: Instant) {
        let receipt = match receipt {
            Ok(r) => r,
            Err(e) => {
                self.lock_counts().unreadable += 1;
                // Garbage can come fast: the first lines, then every 100th.
                let n = self.unreadable_logged.fetch_add(1, Ordering::Relaxed);
                if n < 10 || n % 100 == 0 {
                    self.log(
                        Level::Warning,
                        "receipt_unreadable",
                        format!("provider={provider}: {e}; acknowledged and ignored"),
                    );
                }
                return;
            }
        };
        let key = (provider.to_owned(), receipt.message_id.clone());
        let state = receipt.state;
        let mut t = self.lock_table();
        let Some(country) = t.by_id.get(&key).map(|p| country_of(&p.code)) else {
            if state == ReceiptState::Enroute {
                drop(t);
                self.count(provider, "--".into(), state);
                return;
            }
            t.early.push_back(Early { at, key, state });
            let mut gone = Vec::new();
            while t.early.len() > EARLY_MAX {
                gone.extend(t.early.pop_front());
            }
            drop(t);
            self.count_unmatched(gone);
            return;
        };
        // More may follow an intermediate report.
        let taken = if state == ReceiptState::Enroute {
            None
        } else {
            t.by_id.remove(&key)
        };
        drop(t);
        self.count(provider, country, state);
        if let Some(p) = taken {
            self.settle(provider, p, state, at);
        }
    }

    /// A report that is no SMPP receipt (an HTTP provider's status
    /// callback): counted and acted on exactly as one.
    pub fn on_status(&self, provider: &str, message_id: String, state: ReceiptState, at: Instant) {
        self.on_receipt(
            provider,
            Ok(Receipt {
                message_id,
                state,
                error: None,
            }),
            at,
        );
    }

    /// A final receipt for a held code: a failure in time goes to the
    /// resend thread.
    fn settle(&self, provider: &str, p: Pending, state: ReceiptState, at: Instant) {
        if !state.is_failure() || !self.resend_on() {
            return;
        }
        if at > p.deadline {
            self.lock_counts().not_resent += 1;
            return;
        }
        if let Err(e) = self.resends.try_send((p.code, state)) {
            let (code, _) = match e {
                mpsc::TrySendError::Full(v) | mpsc::TrySendError::Disconnected(v) => v,
            };
            self.lock_counts().not_resent += 1;
            self.log(
                Level::Warning,
                "receipt_failed",
                format!(
                    "provider={provider} state={state} message_id={}: too many receipts waiting; \
                     the code is not sent again",
                    code.message_id
                ),
            );
        }
    }

    pub(crate) fn log(&self, level: Level, name: &'static str, detail: String) {
        self.sinks
            .record(level, SystemClock.now_ms(), &event(name, detail));
        self.sinks.flush();
    }
}

impl ReceiptSink for Registry {
    fn sent(&self, code: SentCode) {
        self.hold(code, now());
    }

    fn done(&self, id: &ChallengeId) {
        let mut t = self.lock_table();
        if !t.by_id.is_empty() {
            t.by_id.retain(|_, p| p.code.challenge != *id);
        }
    }
}

/// What a generation keeps for receipts: the registry, and the resend
/// queue's receiving end until `start` takes it.
pub struct Receipts {
    /// The codes waiting and the counters.
    pub registry: Arc<Registry>,
    queue: Mutex<Option<Receiver<(SentCode, ReceiptState)>>>,
}

impl Receipts {
    /// A registry for `settings`, logging to `sinks`.
    pub fn new(settings: ReceiptSettings, sinks: Arc<ServerSinks>) -> Receipts {
        let (registry, rx) = Registry::new(settings, sinks);
        Receipts {
            registry,
            queue: Mutex::new(Some(rx)),
        }
    }
}

/// Starts the thread that reads `rt`'s idle SMPP sessions a few times a
/// second and sends failed codes once more. It holds the generation only
/// weakly and ends (within [`POLL_EVERY`]) once a reload or shutdown let
/// it go; its engine (store handle, providers on the generation's pool)
/// is opened on the thread.
pub(crate) fn start(rt: &Arc<Runtime>) {
    let Some(receipts) = &rt.receipts else {
        return;
    };
    let Some(queue) = receipts
        .queue
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    else {
        return;
    };
    let weak = Arc::downgrade(rt);
    let spawned = std::thread::Builder::new()
        .name("receipts".into())
        .spawn(move || run(weak, queue));
    if let Err(e) = spawned {
        rt.log(
            Level::Error,
            &event(
                "receipts",
                format!(
                    "cannot start the receipt reader: {e}; receipts are read only during sends"
                ),
            ),
        );
    }
}

fn run(weak: Weak<Runtime>, queue: Receiver<(SentCode, ReceiptState)>) {
    let mut engine: Option<Engine> = None;
    loop {
        let next = queue.recv_timeout(POLL_EVERY);
        let Some(rt) = weak.upgrade() else {
            return;
        };
        let Some(receipts) = &rt.receipts else {
            return;
        };
        let registry = &receipts.registry;
        match next {
            Ok((code, state)) => {
                if engine.is_none() {
                    match Engine::open_shared(
                        rt.config.clone(),
                        &rt.log_options(),
                        rt.store.handle(),
                        &rt.directories,
                        &rt.sms,
                    ) {
                        Ok(e) => engine = Some(e),
                        Err(e) => registry.log(
                            Level::Error,
                            "receipt_failed",
                            format!("cannot open the engine: {e}; the code is not sent again"),
                        ),
                    }
                }
                let r = engine.as_ref().map(|engine| {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        engine.resend_after_receipt(&code, state)
                    }))
                });
                match r {
                    Some(Ok(Ok(ReceiptResend::Resent(_)))) => registry.lock_counts().resent += 1,
                    Some(Ok(Ok(_))) | None => registry.lock_counts().not_resent += 1,
                    Some(Ok(Err(e))) => {
                        registry.lock_counts().not_resent += 1;
                        registry.log(
                            Level::Error,
                            "receipt_failed",
                            format!(
                                "provider={} state={state}: cannot check the code: {e}; not sent again",
                                code.provider
                            ),
                        );
                    }
                    Some(Err(_)) => registry.log(
                        Level::Error,
                        "panic",
                        "internal error while resending after a receipt".into(),
                    ),
                }
                rt.sinks.flush();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if let Some(pool) = &rt.sms.smpp_sessions {
            pool.poll_idle();
        }
        registry.expire(now());
        if registry.unsaved.lock().map_or(true, |u| !u.is_empty()) {
            registry.save_counts(&*rt.store.handle());
        }
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use smsotp_core::flow::LoginContext;
    use smsotp_core::phone::Phone;

    pub(super) fn registry(
        within: u64,
        max: usize,
    ) -> (Arc<Registry>, Receiver<(SentCode, ReceiptState)>) {
        Registry::new(
            ReceiptSettings {
                resend_within: Duration::from_secs(within),
                max_pending: max,
                listen: None,
            },
            Arc::new(ServerSinks::new("test", false, None, false, None)),
        )
    }

    pub(super) fn code(id: &str) -> SentCode {
        SentCode {
            message_id: id.into(),
            provider_index: 0,
            provider: "smsc".into(),
            challenge: ChallengeId([7; 16]),
            login: LoginContext {
                user: "alice".into(),
                service: "radius:vpn".into(),
                rhost: None,
            },
            phone: Phone::parse("+4915112345678", None).unwrap(),
            code: Zeroizing::new("123456".into()),
            sent_at: 0,
            valid_for: Duration::from_secs(300),
        }
    }

    pub(super) fn receipt(id: &str, state: ReceiptState) -> Result<Receipt, ReceiptError> {
        Ok(Receipt {
            message_id: id.into(),
            state,
            error: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn a_failed_receipt_in_time_resends_once() {
        let (r, rx) = registry(120, 10);
        let t0 = Instant::now();
        r.hold(code("m1"), t0);
        assert_eq!(r.pending(), 1);
        r.on_receipt(
            "smsc",
            receipt("m1", ReceiptState::Undeliverable),
            t0 + Duration::from_secs(5),
        );
        let (c, state) = rx.try_recv().unwrap();
        assert_eq!(
            (c.message_id.as_str(), state),
            ("m1", ReceiptState::Undeliverable)
        );
        assert_eq!(&*c.code, "123456");
        // The code left the registry: a second receipt resends nothing.
        assert_eq!(r.pending(), 0);
        r.on_receipt(
            "smsc",
            receipt("m1", ReceiptState::Undeliverable),
            t0 + Duration::from_secs(6),
        );
        assert!(rx.try_recv().is_err());
        let counts = r.counts();
        assert_eq!(
            counts
                .by_state
                .get(&("smsc".into(), "DE".into(), ReceiptState::Undeliverable)),
            Some(&1)
        );
        // The second, unclaimed, is counted once its wait is over.
        assert_eq!(counts.by_state.len(), 1);
        r.expire(t0 + Duration::from_secs(12));
        assert_eq!(
            r.counts()
                .by_state
                .get(&("smsc".into(), "--".into(), ReceiptState::Undeliverable)),
            Some(&1)
        );
    }

    #[test]
    fn an_http_status_report_goes_the_same_way_as_a_receipt() {
        let (r, rx) = registry(120, 10);
        let t0 = Instant::now();
        r.hold(code("SM1"), t0);
        r.on_status("smsc", "SM1".into(), ReceiptState::Enroute, t0);
        assert!(rx.try_recv().is_err());
        r.on_status("smsc", "SM1".into(), ReceiptState::Undeliverable, t0);
        let (c, _) = rx.try_recv().expect("resent");
        assert_eq!(c.message_id, "SM1");
        r.on_status("smsc", "SM1".into(), ReceiptState::Undeliverable, t0);
        assert!(rx.try_recv().is_err(), "once only");
        assert_eq!(
            r.counts()
                .by_state
                .get(&("smsc".into(), "DE".into(), ReceiptState::Enroute)),
            Some(&1)
        );
    }

    #[test]
    fn after_the_deadline_nothing_is_sent() {
        let (r, rx) = registry(120, 10);
        let t0 = Instant::now();
        r.hold(code("m1"), t0);
        r.on_receipt(
            "smsc",
            receipt("m1", ReceiptState::Rejected),
            t0 + Duration::from_secs(121),
        );
        assert!(rx.try_recv().is_err());
        assert_eq!(r.counts().not_resent, 1);
        // And expiry forgets the code without a receipt.
        r.hold(code("m2"), t0);
        r.expire(t0 + Duration::from_secs(120));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn delivered_forgets_the_code_and_enroute_keeps_it() {
        let (r, rx) = registry(120, 10);
        let t0 = Instant::now();
        r.hold(code("m1"), t0);
        r.on_receipt("smsc", receipt("m1", ReceiptState::Enroute), t0);
        assert_eq!(r.pending(), 1);
        r.on_receipt("smsc", receipt("m1", ReceiptState::Delivered), t0);
        assert_eq!(r.pending(), 0);
        r.on_receipt("smsc", receipt("m1", ReceiptState::Expired), t0);
        assert!(rx.try_recv().is_err());
        // Another provider's message of the same id is not ours.
        r.hold(code("m3"), t0);
        r.on_receipt("other", receipt("m3", ReceiptState::Undeliverable), t0);
        assert!(rx.try_recv().is_err());
        assert_eq!(r.pending(), 1);
    }

    #[test]
    fn forgotten_once_used_and_never_held_past_the_code_s_life() {
        let (r, rx) = registry(1800, 10);
        let t0 = Instant::now();
        r.hold(code("m1"), t0);
        r.done(&ChallengeId([7; 16]));
        assert_eq!(r.pending(), 0);
        r.on_receipt("smsc", receipt("m1", ReceiptState::Undeliverable), t0);
        assert!(rx.try_recv().is_err());
        // resend_within 30m, otp.ttl 5m: gone after 5m.
        r.hold(code("m2"), t0);
        r.expire(t0 + Duration::from_secs(299));
        assert_eq!(r.pending(), 1);
        r.expire(t0 + Duration::from_secs(300));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn a_receipt_before_its_code_is_held_still_counts() {
        let (r, rx) = registry(120, 10);
        let t0 = Instant::now();
        r.on_receipt("smsc", receipt("m1", ReceiptState::Undeliverable), t0);
        r.hold(code("m1"), t0 + Duration::from_millis(5));
        let (c, state) = rx.try_recv().expect("resent");
        assert_eq!(
            (c.message_id.as_str(), state),
            ("m1", ReceiptState::Undeliverable)
        );
        assert_eq!(r.pending(), 0);
        assert_eq!(
            r.counts()
                .by_state
                .get(&("smsc".into(), "DE".into(), ReceiptState::Undeliverable)),
            Some(&1)
        );
        // Too late: after EARLY_FOR the receipt is counted unmatched and
        // the code waits for another.
        r.on_receipt("smsc", receipt("m2", ReceiptState::Undeliverable), t0);
        r.expire(t0 + EARLY_FOR);
        r.hold(code("m2"), t0 + EARLY_FOR);
        assert!(rx.try_recv().is_err());
        assert_eq!(r.pending(), 1);
    }

    #[test]
    fn bounded_oldest_dropped_and_counted() {
        let (r, _rx) = registry(120, 2);
        let t0 = Instant::now();
        for id in ["a", "b", "c"] {
            r.hold(code(id), t0);
        }
        assert_eq!(r.pending(), 2);
        assert_eq!(r.counts().dropped, 1);
        r.on_receipt("smsc", receipt("a", ReceiptState::Undeliverable), t0);
        assert_eq!(r.pending(), 2);
    }

    #[test]
    fn off_counts_without_holding_the_code_and_garbage_is_counted() {
        let (r, rx) = registry(0, 10);
        r.hold(code("m1"), Instant::now());
        assert_eq!(r.pending(), 1);
        assert!(r
            .lock_table()
            .by_id
            .values()
            .all(|p| p.code.code.is_empty()));
        r.on_receipt(
            "smsc",
            receipt("m1", ReceiptState::Undeliverable),
            Instant::now(),
        );
        assert!(rx.try_recv().is_err(), "resend off");
        assert_eq!(
            r.counts()
                .by_state
                .get(&("smsc".into(), "DE".into(), ReceiptState::Undeliverable)),
            Some(&1)
        );
        r.on_receipt("smsc", Err(ReceiptError::NoId), Instant::now());
        assert_eq!(r.counts().unreadable, 1);
    }
}

#[cfg(test)]
mod store_counts {
    use super::tests_support::*;
    use super::*;
    use smsotp_core::store::memory::MemoryStore;
    use smsotp_core::store::{Day, Store};

    /// What the registry counts goes to the store's counters (once), with
    /// the country of the held code, or "--" for a receipt no code
    /// claimed.
    #[test]
    fn receipts_go_to_the_store_once() {
        let (r, _rx) = registry(0, 10);
        let t0 = Instant::now();
        r.hold(code("m1"), t0);
        r.on_receipt("smsc", receipt("m1", ReceiptState::Delivered), t0);
        r.on_receipt("smsc", receipt("zz", ReceiptState::Enroute), t0);
        let store = MemoryStore::new();
        r.save_counts(&store);
        r.save_counts(&store);
        let now = SystemClock.now_ms();
        let got: Vec<(String, String, String, u64)> = store
            .counters(Day::of(now), now)
            .unwrap()
            .into_iter()
            .map(|(k, n)| (k.provider, k.country, k.what.name(), n))
            .collect();
        assert_eq!(
            got,
            vec![
                ("smsc".into(), "--".into(), "receipt:ENROUTE".into(), 1),
                ("smsc".into(), "DE".into(), "receipt:DELIVRD".into(), 1),
            ]
        );
        assert!(r.take_unsaved().is_empty());
    }
}
