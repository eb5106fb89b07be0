//! The first round in one store step (`at_once.rs`), on a real
//! `redis-server` (the store that has it): one step where nothing in the
//! store stands in the way, and the same outcome as the usual order
//! where something does.

use super::tests::{ctx, harness_full, Harness, ALICE};
use super::{Reject, Start, Verdict};
use crate::store::redis::tests::Server;
use crate::store::redis::RedisStore;
use crate::store::{PhoneRecord, Store};

/// An engine on `server`'s store under `prefix`, and a handle of the
/// test's own on that store.
fn on_redis(server: &Server, prefix: &str, toml: &str) -> (Harness, RedisStore) {
    let spec = server.spec(prefix);
    let h = harness_full(
        toml,
        vec![],
        Vec::new(),
        Box::new(RedisStore::open(&spec).unwrap()),
    );
    (h, RedisStore::open(&spec).unwrap())
}

fn phone(e164: &str) -> PhoneRecord {
    PhoneRecord {
        e164: e164.into(),
        set_at: 1,
        set_by: "admin:root".into(),
    }
}

#[test]
fn a_first_round_is_one_store_step_and_its_code_works() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let (h, _) = on_redis(&server, "one:", "");
    // Dave has Alice's number: his login loads the scripts and caches
    // the number, so what follows counts Alice's login alone.
    h.start(&ctx("dave", "sshd"));
    server.reset_stats();
    let c = ctx("alice", "sshd");
    let ch = h.start(&c);
    assert_eq!(h.sms.sent.borrow().last().unwrap().0, ALICE);
    // One script, and not the usual order's read (a MULTI block) before
    // it. (The commands the script runs count too, so only these tell.)
    assert_eq!(server.calls("evalsha"), 1);
    for other in ["multi", "exec"] {
        assert_eq!(server.calls(other), 0, "{other}: a step besides the script");
    }
    let code = h.last_code();
    assert_eq!(
        h.answer(&c, &ch, &code),
        super::Answer::Done(Verdict::Accept(super::Accept::CodeVerified))
    );
}

#[test]
fn what_the_store_holds_decides_as_in_the_usual_order() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let (h, s) = on_redis(&server, "held:", "[limits]\nlockout_after = 3\n");
    // A number registered in the store wins over the directory's.
    s.set_phone("bob", &phone("+12025550142")).unwrap();
    h.start(&ctx("bob", "sshd"));
    assert_eq!(h.sms.sent.borrow().last().unwrap().0, "+12025550142");
    // The directory's number, registered in the store as well: one step,
    // and taken as the store's, as the usual order takes it.
    s.set_phone("alice", &phone(ALICE)).unwrap();
    h.start(&ctx("alice", "sshd"));
    assert_eq!(h.sms.sent.borrow().last().unwrap().0, ALICE);
    let text = h.audit_text();
    let alice: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("phone_found") && l.contains("alice"))
        .collect();
    assert!(
        alice
            .last()
            .is_some_and(|l| l.contains("from store (set by admin:root)")),
        "{text}"
    );
    // A user the directory does not know, registered in the store.
    s.set_phone("frank", &phone("+12025550177")).unwrap();
    h.start(&ctx("frank", "sshd"));
    assert_eq!(h.sms.sent.borrow().last().unwrap().0, "+12025550177");
    // A lockout: refused, no SMS.
    let sent = h.sent_count();
    for _ in 0..3 {
        s.record_failure(
            "erin",
            1_700_000_000_000,
            3,
            std::time::Duration::from_secs(600),
        )
        .unwrap();
    }
    match h.engine.start(&ctx("erin", "sshd")).unwrap() {
        Start::Done(Verdict::Reject(Reject::LockedOut)) => {}
        other => panic!("a locked-out user got {other:?}"),
    }
    assert_eq!(h.sent_count(), sent);
    // A repeated RADIUS request: its challenge again, no second SMS.
    let c = ctx("alice", "radius:vpn");
    let start = |key: &[u8; 16]| match h.engine.start_for_request(&c, key).unwrap() {
        Start::Challenge(ch) => ch,
        Start::Done(v) => panic!("expected a challenge, got {v:?}"),
    };
    let first = start(&[7; 16]);
    let sent = h.sent_count();
    assert_eq!(start(&[7; 16]).id, first.id);
    assert_eq!(h.sent_count(), sent, "a second SMS for a repeated request");
    // A user with no number anywhere: as the policy says (deny).
    match h.engine.start(&ctx("nobody", "sshd")).unwrap() {
        Start::Done(Verdict::Reject(Reject::NoPhone)) => {}
        other => panic!("a user without a number got {other:?}"),
    }
}
