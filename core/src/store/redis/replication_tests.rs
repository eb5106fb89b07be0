//! What reaches the replicas and the append-only file, on real
//! `redis-server`s on 127.0.0.1: a challenge stays on the master, the SMS
//! counts go everywhere, and a copy of a challenge that a snapshot (a new
//! replica's full sync) took along is deleted there at the challenge's
//! first change and at its end (see the doc of `scripts`).

use std::time::{Duration, Instant};

use super::sentinel_tests::{installed, Node};
use super::tests::tcp_spec;
use super::RedisStore;
use crate::store::conformance::{rate, record};
use crate::store::{SendPermit, Store};

/// A new replica of `master`, synced: it holds a snapshot of the
/// master's keys as they are now.
fn new_replica(master: &Node) -> Node {
    let r = Node::server(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !r
        .cmd::<String>(&["INFO", "replication"])
        .contains("master_link_status:up")
    {
        assert!(Instant::now() < deadline, "the replica did not sync in 5 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    r
}

/// The replication offset `node` is at (as a master: what it sent; as
/// a replica: what it has).
fn offset(node: &Node) -> i64 {
    let info: redis::InfoDict = node.cmd(&["INFO", "replication"]);
    info.get("master_repl_offset").unwrap()
}

/// Waits (< 5 s) until each of `replicas` has what the master wrote so
/// far. (WAIT would not do: it counts from its own connection's writes.)
fn settle(master: &Node, replicas: &[&Node]) {
    let sent = offset(master);
    let deadline = Instant::now() + Duration::from_secs(5);
    for r in replicas {
        while offset(r) < sent {
            assert!(Instant::now() < deadline, "a replica lags by 5 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn has(node: &Node, key: &str) -> bool {
    node.cmd::<i64>(&["EXISTS", key]) == 1
}

#[test]
fn a_challenge_stays_on_the_master_and_its_changes_delete_every_copy() {
    if !installed("redis-server") {
        return;
    }
    let master = Node::server(&["--appendonly", "yes", "--appendfsync", "always"]);
    let first = Node::server(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    master.wait_for_replica();
    let s = RedisStore::open(&tcp_spec(master.port, "repl:", Duration::from_secs(2))).unwrap();

    // A login: its SMS is counted everywhere, its challenge is not
    // written anywhere but on the master.
    let c = record(1, "alice");
    let key = s.ch(&c.id);
    let permit = s
        .start_challenge(&c, rate(5, 3600), rate(1000, 3600))
        .unwrap();
    assert_eq!(permit, SendPermit::Granted);
    settle(&master, &[&first]);
    assert!(has(&master, &key));
    assert!(!has(&first, &key), "the challenge reached a replica");
    assert!(has(&first, &s.sends("alice")), "the SMS count did not");
    let aof = append_only_files(&master);
    assert!(
        !aof.contains(&key),
        "the challenge is in the append-only file"
    );
    assert!(aof.contains(&s.sends("alice")), "the SMS count is not");

    // A replica that syncs now gets a copy in its snapshot. A wrong
    // answer deletes that copy; the master keeps the challenge, one try
    // less.
    let second = new_replica(&master);
    assert!(has(&second, &key), "a full sync copies the challenge");
    assert_eq!(s.wrong_attempt(&c.id).unwrap(), Some(2));
    settle(&master, &[&first, &second]);
    assert!(!has(&second, &key), "a tried challenge kept its copy");
    assert_eq!(s.challenge(&c.id).unwrap().unwrap().attempts_left, 2);
    assert!(!has(&first, &key));

    // A resend: the copy holding the old code goes.
    let third = new_replica(&master);
    assert!(has(&third, &key));
    assert!(s
        .replace_code(&c.id, &[9; 32], 2_000, 302_000, 3, 1)
        .unwrap());
    settle(&master, &[&first, &second, &third]);
    assert!(!has(&third, &key), "a copy of the old code is left");
    assert_eq!(s.challenge(&c.id).unwrap().unwrap().code_mac, [9; 32]);

    // The code taken: gone from the master and from any copy.
    let fourth = new_replica(&master);
    assert!(has(&fourth, &key));
    let taken = s
        .consume_code(&c.id, "alice", "sshd", &[9; 32], 3_000)
        .unwrap();
    assert!(taken.is_some());
    settle(&master, &[&fourth]);
    for (node, name) in [(&master, "master"), (&fourth, "replica")] {
        assert!(!has(node, &key), "the used challenge is on the {name}");
    }

    // A login with a request's id over a copy left by an old one: the old
    // one is deleted everywhere, the new one written on the master only.
    let old = record(2, "bob");
    s.insert_challenge(&old).unwrap();
    let fifth = new_replica(&master);
    let key2 = s.ch(&old.id);
    assert!(has(&fifth, &key2));
    let mut again = record(2, "bob");
    again.code_mac = [7; 32];
    s.insert_challenge(&again).unwrap();
    settle(&master, &[&fifth]);
    assert!(!has(&fifth, &key2), "the old challenge's copy is left");
    assert_eq!(s.challenge(&again.id).unwrap().unwrap().code_mac, [7; 32]);

    // Everything left expires by itself, on the master and on a copy:
    // the SMS window too, whose TTL is set once a bucket.
    let keys: Vec<String> = master.cmd(&["KEYS", "repl:*"]);
    assert!(keys.iter().any(|k| k.starts_with("repl:g:")), "{keys:?}");
    for k in &keys {
        for node in [&master, &fifth] {
            let ttl: i64 = node.cmd(&["PTTL", k]);
            assert!(ttl > 0 || !has(node, k), "{k} has no TTL ({ttl})");
        }
    }
}

/// Everything in `node`'s append-only file(s), as text.
fn append_only_files(node: &Node) -> String {
    let mut all = String::new();
    let mut dirs = vec![node.dir().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.to_string_lossy().contains("appendonly") {
                all.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
            }
        }
    }
    assert!(!all.is_empty(), "no append-only file in {:?}", node.dir());
    all
}
