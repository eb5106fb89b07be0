use super::sinks::stderr_line;
use super::*;
use std::cell::RefCell;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::rc::Rc;

/// Keeps events for assertions.
#[derive(Clone, Default)]
pub(crate) struct MemorySink(pub Rc<RefCell<Vec<(Level, Event)>>>);

impl AuditSink for MemorySink {
    fn record(&self, level: Level, _at: Millis, event: &Event) {
        self.0.borrow_mut().push((level, event.clone()));
    }
}

#[test]
fn syslog_lines_go_to_authpriv() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("log");
    let rx = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let sink = SyslogSink {
        ident: "pam_smsotp".into(),
        debug: false,
        socket: sock,
    };
    let e = Event {
        event: "accept",
        user: "alice".into(),
        service: "sshd".into(),
        ..Event::default()
    };
    assert!(sink.takes(Level::Info) && !sink.takes(Level::Debug));
    sink.record(Level::Info, 0, &e);
    sink.record(Level::Debug, 0, &e); // dropped: debug is off
    sink.record(Level::Warning, 0, &e);
    sink.record(Level::Alert, 0, &e);
    let mut buf = [0u8; 512];
    let n = rx.recv(&mut buf).unwrap();
    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
    // authpriv (10) * 8 + info (6) = 86
    assert!(line.starts_with("<86>"), "{line}");
    assert!(line.contains("pam_smsotp["), "{line}");
    assert!(
        line.ends_with("event=accept user=alice service=sshd"),
        "{line}"
    );
    let n = rx.recv(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("<84>"),
        "warning next, debug skipped"
    );
    // authpriv * 8 + alert (1) = 81: the spend breaker's trip.
    let n = rx.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("<81>"));
}

#[test]
fn audit_takes_debug_only_if_a_sink_does() {
    let quiet = || StderrSink {
        ident: "t".into(),
        debug: false,
    };
    let mut audit = Audit {
        sinks: vec![Box::new(quiet()), Box::new(quiet())],
    };
    assert!(audit.takes(Level::Info));
    assert!(!audit.takes(Level::Debug));
    audit.sinks.push(Box::new(FileSink {
        path: PathBuf::from("/nonexistent/audit.jsonl"),
        debug: true,
    }));
    assert!(audit.takes(Level::Debug));
    assert!(
        !Audit::default().takes(Level::Error),
        "no sink, nothing kept"
    );
}

#[test]
fn stderr_lines_quote_what_needs_it() {
    let e = Event {
        event: "reject",
        user: "alice".into(),
        service: "radius:vpn".into(),
        outcome: Some("failure"),
        detail: Some("said \"no\" = no".into()),
        ..Event::default()
    };
    assert_eq!(
        stderr_line("smsotp-radiusd", Level::Info, &e),
        "smsotp-radiusd: info: event=reject user=alice service=radius:vpn outcome=failure \
         detail=\"said \\\"no\\\" = no\"\n"
    );
    let server = Event {
        event: "start",
        rhost: Some(String::new()),
        ..Event::default()
    };
    assert_eq!(server.to_line(), "event=start rhost=\"\"");
}

#[test]
fn server_sinks_keep_one_syslog_connection_and_write_the_file_at_flush() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("log");
    let bind = || {
        let rx = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        rx
    };
    let rx = bind();
    let file = d.path().join("audit.jsonl");
    let sinks = ServerSinks::new(
        "smsotp-radiusd",
        false,
        Some(sock.clone()),
        false,
        Some(file.clone()),
    );
    let e = |user: &str| Event {
        event: "accept",
        user: user.into(),
        service: "vpn".into(),
        ..Event::default()
    };
    let recv = |rx: &std::os::unix::net::UnixDatagram| {
        let mut buf = [0u8; 512];
        let n = rx.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    sinks.record(Level::Info, 0, &e("alice"));
    sinks.record(Level::Debug, 0, &e("nobody")); // debug is off
    sinks.record(Level::Warning, 0, &e("bob"));
    assert!(recv(&rx).ends_with("user=alice service=vpn"));
    let bob = recv(&rx);
    assert!(
        bob.starts_with("<84>") && bob.contains("smsotp-radiusd["),
        "{bob}"
    );
    // The file gets its lines at flush, in one go.
    assert!(std::fs::read_to_string(&file)
        .unwrap_or_default()
        .is_empty());
    sinks.flush();
    let text = std::fs::read_to_string(&file).unwrap();
    let users: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["user"].to_string())
        .collect();
    assert_eq!(users, ["\"alice\"", "\"bob\""]);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // syslog restarted: the next line connects again and arrives.
    drop(rx);
    std::fs::remove_file(&sock).unwrap();
    let rx = bind();
    sinks.record(Level::Info, 0, &e("carol"));
    assert!(recv(&rx).ends_with("user=carol service=vpn"));

    // The file rotated away: the next flush writes to a new one.
    std::fs::rename(&file, d.path().join("audit.jsonl.1")).unwrap();
    sinks.flush();
    assert!(std::fs::read_to_string(&file).unwrap().contains("carol"));
}

#[test]
fn line_quotes_values_that_need_it() {
    let e = Event {
        event: "reject",
        user: "alice".into(),
        service: "sshd".into(),
        rhost: Some("192.0.2.1".into()),
        outcome: Some("failure"),
        reason: Some("wrong_code"),
        limit: None,
        phone: MaskedPhone::from_stored("+12025550143"),
        provider: None,
        segments: None,
        detail: Some("tries left: 2".into()),
    };
    assert_eq!(
        e.to_line(),
        "event=reject user=alice service=sshd rhost=192.0.2.1 outcome=failure reason=wrong_code phone=******0143 detail=\"tries left: 2\""
    );
    let j = e.to_json(0, Level::Info);
    assert_eq!(j["reason"], "wrong_code");
    assert_eq!(j["level"], "info");
    assert_eq!(j["limit"], serde_json::Value::Null);
    assert_eq!(e.to_json(0, Level::Alert)["level"], "alert");
    assert_eq!(super::tag(Level::Alert), "alert");
    let limited = Event {
        reason: Some("rate_limited"),
        limit: Some("sms_per_user"),
        phone: None,
        detail: Some("sms_per_user = 5/1h reached".into()),
        ..e
    };
    assert_eq!(
        limited.to_line(),
        "event=reject user=alice service=sshd rhost=192.0.2.1 outcome=failure reason=rate_limited limit=sms_per_user detail=\"sms_per_user = 5/1h reached\""
    );
    assert_eq!(limited.to_json(0, Level::Info)["limit"], "sms_per_user");
    // A send names its provider and how many SMS it took.
    let sent = Event {
        event: "sent",
        outcome: None,
        reason: None,
        provider: Some("smsc".into()),
        segments: Some(2),
        detail: None,
        ..limited
    };
    assert_eq!(
        sent.to_line(),
        "event=sent user=alice service=sshd rhost=192.0.2.1 limit=sms_per_user provider=smsc segments=2"
    );
    assert_eq!(sent.to_json(0, Level::Info)["segments"], 2);
}

#[test]
fn server_sinks_do_not_wait_for_a_slow_syslog_daemon_and_keep_the_order() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("log");
    let rx = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let sinks = ServerSinks::new("smsotp-radiusd", false, Some(sock.clone()), false, None);
    let e = |n: usize| Event {
        event: "accept",
        user: format!("u{n}"),
        service: "vpn".into(),
        ..Event::default()
    };
    // Nothing reads yet: the socket's queue (net.unix.max_dgram_qlen, 10
    // without systemd) fills, and a worker sending itself would block.
    let t0 = std::time::Instant::now();
    for n in 0..200 {
        sinks.record(Level::Info, 0, &e(n));
    }
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(2),
        "recording waited for the syslog daemon: {:?}",
        t0.elapsed()
    );
    // Now the daemon reads: every line arrives, in the order recorded.
    let mut buf = [0u8; 512];
    for n in 0..200 {
        let len = rx.recv(&mut buf).unwrap();
        let line = String::from_utf8_lossy(&buf[..len]).into_owned();
        assert!(
            line.ends_with(&format!("user=u{n} service=vpn")),
            "{n}: {line}"
        );
    }
    // After close, lines are sent by the recording thread itself.
    sinks.close(std::time::Duration::from_secs(2));
    sinks.record(Level::Info, 0, &e(999));
    let len = rx.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..len]).ends_with("user=u999 service=vpn"));
}

#[test]
fn closing_server_sinks_is_bounded_when_syslog_reads_nothing() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("log");
    let _rx = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    let sinks = ServerSinks::new("smsotp-radiusd", false, Some(sock.clone()), false, None);
    // More than the socket queues, even where systemd raised its length.
    for n in 0..2000 {
        sinks.record(
            Level::Info,
            0,
            &Event {
                event: "accept",
                user: format!("u{n}"),
                ..Event::default()
            },
        );
    }
    let t0 = std::time::Instant::now();
    sinks.close(std::time::Duration::from_millis(300));
    let took = t0.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(250) && took < std::time::Duration::from_secs(2),
        "{took:?}"
    );
}
