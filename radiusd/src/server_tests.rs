//! Tests of the server loop (`server.rs`).

use super::*;

fn request(user: &str) -> Request {
    Request {
        code: wire::RequestCode::AccessRequest,
        identifier: 1,
        authenticator: [0; 16],
        user_name: Some(user.into()),
        user_password: None,
        state: None,
        proxy_state: Vec::new(),
        has_message_authenticator: true,
        nas_identifier: None,
        nas_ip_address: None,
        calling_station_id: None,
    }
}

#[test]
fn only_requests_that_may_send_an_sms_go_to_the_send_lane() {
    let first = request("alice");
    assert!(may_send(&first, true));
    let mut code = request("alice");
    code.state = Some(vec![7; 16]);
    code.user_password = Some(zeroize::Zeroizing::new(b"123456".to_vec()));
    assert!(!may_send(&code, true), "a code with its State");
    let mut resend = code.clone();
    resend.user_password = Some(zeroize::Zeroizing::new(Vec::new()));
    assert!(
        may_send(&resend, true),
        "an empty answer asks for a new code"
    );
    resend.user_password = None;
    assert!(may_send(&resend, true), "so does no answer at all");
    let mut status = request("alice");
    status.code = wire::RequestCode::StatusServer;
    assert!(!may_send(&status, true), "Status-Server");
    // Nothing can wait (outbox only, no password check): all on the
    // workers.
    assert!(!may_send(&first, false));
    assert!(!may_send(&resend, false));
}

#[test]
fn a_rolled_back_decision_is_named_and_taken_back_in_the_log() {
    let alice = request(" alice ");
    let from = SocketAddr::from(([192, 0, 2, 7], 4000));
    let line = store_failed("disk full", &alice, "vpn", from, "accept").to_line();
    for part in [
        "event=store_failed",
        "user=alice",
        "service=radius:vpn",
        "rhost=192.0.2.7",
        "outcome=failure",
        "disk full",
        "the accept logged for this request was not stored: rejected instead",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line}");
    }
    // Named as the decision was: by Calling-Station-Id when the NAS
    // sends one.
    let mut via_nas = request("alice");
    via_nas.calling_station_id = Some("198.51.100.9".into());
    let line = store_failed("x", &via_nas, "vpn", from, "accept").to_line();
    assert!(line.contains("rhost=198.51.100.9"), "{line}");
    // A name not fit for lookup is not logged either.
    let odd = request("a\nb");
    let line = store_failed("x", &odd, "vpn", from, "challenge").to_line();
    assert!(
        line.contains("user=\"\"") && !line.contains("a\\nb"),
        "{line}"
    );
    assert!(line.contains("service=radius:vpn"), "{line}");
}
