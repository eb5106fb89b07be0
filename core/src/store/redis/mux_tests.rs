//! A server's handles on one pipelined connection (`mux.rs`), against a
//! real `redis-server` (see `tests.rs`): the conformance suite through
//! it, one connection for many threads, a restart and a stop under it,
//! and the key check.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::tests::Server;
use super::RedisStore;
use crate::store::conformance::{record, run_all, Backend};
use crate::store::{PhoneRecord, SharedBackend, Store, StoreError};

/// One server's store: every handle (each racing thread's) a handle of
/// one [`RedisStore::shared`], so all of them go through its one
/// connection, as smsotp-radiusd's workers do.
struct OnShared(RedisStore);

impl Backend for OnShared {
    fn with_handle(&self, f: &mut dyn FnMut(&dyn Store)) {
        f(&*self.0.handle());
    }
}

#[test]
fn a_servers_handles_conform_through_one_connection() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let n = AtomicU32::new(0);
    run_all(&|| {
        let prefix = format!("m{}:", n.fetch_add(1, Ordering::SeqCst));
        Box::new(OnShared(RedisStore::shared(&server.spec(&prefix))))
    });
}

/// How many clients the server has, asked on a connection of its own
/// (which is one of them).
fn clients(server: &Server) -> usize {
    let plain = RedisStore::open(&server.spec("x:")).unwrap();
    let list: String = plain
        .run(|c| redis::cmd("CLIENT").arg("LIST").query(c))
        .unwrap();
    list.lines().count()
}

#[test]
fn many_threads_share_one_connection_and_each_gets_its_own_answers() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let shared = RedisStore::shared(&server.spec("many:"));
    const THREADS: u8 = 16;
    const EACH: u8 = 50;
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let shared = &shared;
            scope.spawn(move || {
                let h = shared.handle();
                for i in 0..EACH {
                    // Each thread its own users and challenges: every
                    // answer must be the one asked for, never a
                    // neighbour's from the same batch.
                    let user = format!("u{t}-{i}");
                    let mut c = record(i, &user);
                    c.id.0[15] = t;
                    h.insert_challenge(&c).unwrap();
                    let got = h.challenge(&c.id).unwrap().unwrap();
                    assert_eq!(got.user, user);
                    assert!(h.consume(&c.id, &c.code_mac, &user).unwrap());
                    assert!(!h.consume(&c.id, &c.code_mac, &user).unwrap());
                    assert_eq!(h.challenge(&c.id).unwrap(), None);
                }
            });
        }
    });
    // Sixteen handles, one connection (and the one counting).
    assert_eq!(clients(&server), 2);
}

#[test]
fn a_restart_under_the_shared_connection_costs_no_login() {
    let Some(mut server) = Server::start(&[]) else {
        return;
    };
    let shared = RedisStore::shared(&server.spec("mrestart:"));
    let h = shared.handle();
    assert_eq!(h.phone("alice").unwrap(), None);
    server.stop();
    server.run();
    // The kept connection was closed before it answered anything: sent
    // once more on a new one.
    assert_eq!(h.locked_until("alice", 1).unwrap(), None);
    let rec = PhoneRecord {
        e164: "+12025550143".into(),
        set_at: 1,
        set_by: "admin:root".into(),
    };
    // A durable write goes on the handle's own connection; the shared
    // one reads it.
    h.set_phone("alice", &rec).unwrap();
    assert_eq!(shared.handle().phone("alice").unwrap(), Some(rec));
}

#[test]
fn a_stopped_server_fails_every_waiting_handle_quickly_then_recovers() {
    let Some(mut server) = Server::start(&[]) else {
        return;
    };
    let mut spec = server.spec("mdown:");
    spec.timeout = Duration::from_millis(500);
    spec.connect_timeout = Duration::from_millis(500);
    let shared = RedisStore::shared(&spec);
    assert_eq!(shared.handle().locked_until("bob", 1).unwrap(), None);
    server.stop();
    let t = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..8 {
            let shared = &shared;
            scope.spawn(move || {
                let h = shared.handle();
                for _ in 0..2 {
                    let e = h.locked_until("bob", 1).unwrap_err();
                    assert!(matches!(e, StoreError::Unavailable { .. }), "{e}");
                }
            });
        }
    });
    // Sixteen failures, each bounded by the timeouts, not summed up
    // behind one another for long.
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    server.run();
    assert_eq!(shared.handle().locked_until("bob", 1).unwrap(), None);
}

#[test]
fn another_key_is_refused_on_every_handle_of_a_server() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let spec = server.spec("mkf:");
    let a = super::tests::fp(1, "/etc/a/otp.key");
    let b = super::tests::fp(2, "/etc/b/otp.key");
    RedisStore::open_keyed(&spec, &a).unwrap();
    let shared = RedisStore::shared(&spec);
    let before = shared.handle();
    // The server's start-up check, on a handle, connects now.
    let e = shared.handle().check_key_fingerprint(&b).unwrap_err();
    assert!(matches!(e, StoreError::KeyMismatch(_)), "{e}");
    // Every handle, made before the check or after, fails the same way,
    // each time, with the whole advice.
    for h in [before, shared.handle()] {
        for _ in 0..2 {
            let e = h.phone("alice").unwrap_err();
            assert!(matches!(e, StoreError::KeyMismatch(_)), "{e}");
            assert!(e.to_string().contains("/etc/b/otp.key"), "{e}");
        }
    }
    // The right key: the check passes and the handles work.
    shared.handle().check_key_fingerprint(&a).unwrap();
    assert_eq!(shared.handle().phone("alice").unwrap(), None);
}

/// A thread's fiber handle used where nothing suspends: each call drives
/// the handle's own connection itself.
struct OnFiberHandle(RedisStore);

impl Backend for OnFiberHandle {
    fn with_handle(&self, f: &mut dyn FnMut(&dyn Store)) {
        let (h, _driver) = self.0.fiber_handle().unwrap();
        f(&*h);
    }
}

#[test]
fn a_fiber_handle_conforms_driving_its_own_connection() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let n = AtomicU32::new(0);
    run_all(&|| {
        let prefix = format!("f{}:", n.fetch_add(1, Ordering::SeqCst));
        Box::new(OnFiberHandle(RedisStore::shared(&server.spec(&prefix))))
    });
}

/// Stands for smsotp-radiusd's worker: when a call suspends, drives the
/// handle's connection, as the worker does once all its fibers wait.
struct DrivingWorker<'a> {
    driver: &'a dyn crate::store::suspend::Driver,
    suspended: std::cell::Cell<u32>,
    drove: std::cell::Cell<u32>,
}

impl crate::store::suspend::Suspender for DrivingWorker<'_> {
    fn suspend(&self, until: std::sync::Arc<dyn crate::store::suspend::Pending>) {
        self.suspended.set(self.suspended.get() + 1);
        if self.driver.drive() {
            self.drove.set(self.drove.get() + 1);
        }
        assert!(until.ready(), "one drive answers what was queued");
    }
}

#[test]
fn a_suspended_call_waits_for_its_thread_to_drive_the_connection() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let shared = RedisStore::shared(&server.spec("drive:"));
    let (h, driver) = shared.fiber_handle().unwrap();
    // Nothing queued: nothing to send.
    assert!(!driver.drive());
    let worker = DrivingWorker {
        driver: &*driver,
        suspended: Default::default(),
        drove: Default::default(),
    };
    let c = record(1, "alice");
    crate::store::suspend::with_suspender(&worker, || {
        h.insert_challenge(&c).unwrap();
        assert_eq!(h.challenge(&c.id).unwrap().unwrap().user, "alice");
        assert!(h.consume(&c.id, &c.code_mac, "alice").unwrap());
        assert!(!h.consume(&c.id, &c.code_mac, "alice").unwrap());
    });
    // Every call suspended and went out when the worker drove.
    assert!(worker.suspended.get() >= 4);
    assert_eq!(worker.suspended.get(), worker.drove.get());
    // The fiber handle has a connection of its own, beside the counting
    // one; the shared connection was never opened.
    assert_eq!(clients(&server), 2);
    // A stopped server fails the call within the timeouts, through the
    // same drive, and the handle recovers when it is back.
    drop(server);
    let started = Instant::now();
    let r = crate::store::suspend::with_suspender(&worker, || h.challenge(&c.id));
    assert!(matches!(r, Err(StoreError::Unavailable { .. })), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Stands for a worker that resumes a fiber without driving its
/// connection: after a reload it drives the new generation's.
struct NotDriving(std::cell::Cell<u32>);

impl crate::store::suspend::Suspender for NotDriving {
    fn suspend(&self, _until: std::sync::Arc<dyn crate::store::suspend::Pending>) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn a_call_resumed_unanswered_drives_its_connection_itself() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let shared = RedisStore::shared(&server.spec("orphan:"));
    let (h, _driver) = shared.fiber_handle().unwrap();
    let worker = NotDriving(Default::default());
    let c = record(2, "bob");
    crate::store::suspend::with_suspender(&worker, || {
        h.insert_challenge(&c).unwrap();
        assert_eq!(h.challenge(&c.id).unwrap().unwrap().user, "bob");
        assert!(h.consume(&c.id, &c.code_mac, "bob").unwrap());
    });
    // Each call suspended once, then sent its command itself.
    assert!(worker.0.get() >= 3, "{}", worker.0.get());
}
