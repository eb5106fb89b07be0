//! Delivery status callbacks of HTTP gateways: the `status_callback` of a
//! provider, and the reading of one callback into the message id and
//! [`ReceiptState`] it reports.
//!
//! Sans-I/O: smsotp-radiusd's listener (`receipts.listen`) hands
//! [`read_callback`] the request as it came (query, headers, body) and the
//! provider's secret; this answers the report or why the request is
//! refused. The Twilio preset is authenticated by `X-Twilio-Signature`
//! (base64 HMAC-SHA1 keyed with the Auth Token over the URL Twilio was
//! given followed by each POST parameter's name and value, sorted by
//! name); a `kind = "http"` provider by a token (`status_token_file`) the
//! callback carries in a header or the `token` query parameter. Both are
//! compared in constant time. The signed URL is the configured one, not
//! one rebuilt from the request, so a reverse proxy in front changes
//! nothing.

use std::path::PathBuf;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

use crate::sms::smpp::ReceiptState;

/// The query parameter a `kind = "http"` callback carries its token in,
/// when no `status_token_header` is set.
pub const TOKEN_PARAM: &str = "token";

/// One provider's `status_callback`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCallback {
    /// The public URL as configured: what the gateway is given (Twilio:
    /// sent as `StatusCallback` with each message) and what Twilio signs.
    pub url: String,
    /// Its path: what smsotp-radiusd answers on for this provider.
    pub path: String,
    /// The file holding the key (Twilio: the Auth Token, the provider's
    /// `auth_token_file`; http: `status_token_file`).
    pub secret_file: PathBuf,
    /// How a callback is authenticated and read.
    pub read: CallbackRead,
}

/// How a provider's callbacks are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackRead {
    /// Twilio: `X-Twilio-Signature`; form fields `MessageSid` and
    /// `MessageStatus`; the send answer's `sid`.
    Twilio,
    /// `kind = "http"`: fields as configured.
    Fields(FieldMap),
}

/// Where a `kind = "http"` gateway puts the id and the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMap {
    /// `status_id_pointer`: the id in the send answer (RFC 6901 pointer).
    pub id_pointer: String,
    /// `status_id_field`: the callback field that names the message (a
    /// form or top-level JSON field, or a JSON pointer starting with `/`).
    pub id_field: String,
    /// `status_field`: the callback field that holds the status.
    pub status_field: String,
    /// `status_failure`: the status values that mean the SMS will not
    /// arrive (compared without regard to case).
    pub failure: Vec<String>,
    /// `status_delivered`: the values that mean it arrived.
    pub delivered: Vec<String>,
    /// `status_token_header`: the header carrying the token; `None`: the
    /// query parameter [`TOKEN_PARAM`].
    pub token_header: Option<String>,
}

impl StatusCallback {
    /// The message id in a successful send answer `body`, if it has one.
    pub fn message_id(&self, body: &str) -> Option<String> {
        let pointer = match &self.read {
            CallbackRead::Twilio => "/sid",
            CallbackRead::Fields(f) => &f.id_pointer,
        };
        let doc: serde_json::Value = serde_json::from_str(body).ok()?;
        scalar(doc.pointer(pointer)?).filter(|s| !s.is_empty())
    }
}

/// A callback as it came to the listener.
#[derive(Debug, Clone, Copy)]
pub struct CallbackRequest<'a> {
    /// The query string after `?` (empty when none), still encoded.
    pub query: &'a str,
    /// Every header, names in any case.
    pub headers: &'a [(String, String)],
    /// The body (form or JSON).
    pub body: &'a [u8],
}

impl CallbackRequest<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    fn is_json(&self) -> bool {
        self.header("Content-Type")
            .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"))
    }
}

/// What a callback reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// The gateway's id of the message (as its send answer gave it).
    pub message_id: String,
    /// What became of it.
    pub state: ReceiptState,
}

/// Why a callback is refused. The texts name the field or header; they
/// never quote a value (a number, a token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallbackError {
    /// Not from the gateway: signature or token missing or wrong (403).
    #[error("not authenticated: {0}")]
    Forbidden(&'static str),
    /// Authenticated but not readable (400).
    #[error("unreadable callback: {0}")]
    Malformed(String),
}

/// Reads one callback for `cb`, authenticated with `secret` (the Twilio
/// Auth Token, or the `status_token_file` token).
pub fn read_callback(
    cb: &StatusCallback,
    secret: &str,
    req: &CallbackRequest<'_>,
) -> Result<StatusReport, CallbackError> {
    match &cb.read {
        CallbackRead::Twilio => {
            let params = form_pairs(req.body);
            let Some(sig) = req.header("X-Twilio-Signature") else {
                return Err(CallbackError::Forbidden("no X-Twilio-Signature header"));
            };
            if !twilio_signature_ok(secret, &cb.url, &params, sig) {
                return Err(CallbackError::Forbidden(
                    "X-Twilio-Signature does not match (check auth_token_file and that \
                     status_callback is the exact URL Twilio calls)",
                ));
            }
            let field = |name: &str| {
                params
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .filter(|v| !v.is_empty())
            };
            let message_id = field("MessageSid")
                .ok_or_else(|| CallbackError::Malformed("no MessageSid".into()))?;
            let status = field("MessageStatus")
                .ok_or_else(|| CallbackError::Malformed("no MessageStatus".into()))?;
            Ok(StatusReport {
                message_id,
                state: twilio_state(&status),
            })
        }
        CallbackRead::Fields(map) => {
            let given = match &map.token_header {
                Some(h) => req.header(h).map(str::to_owned),
                None => form_pairs(req.query.as_bytes())
                    .into_iter()
                    .find(|(n, _)| n == TOKEN_PARAM)
                    .map(|(_, v)| v),
            };
            let Some(given) = given else {
                return Err(match map.token_header {
                    Some(_) => CallbackError::Forbidden("no token header"),
                    None => CallbackError::Forbidden("no token query parameter"),
                });
            };
            if secret.is_empty() || !bool::from(given.as_bytes().ct_eq(secret.as_bytes())) {
                return Err(CallbackError::Forbidden("wrong token"));
            }
            read_fields(map, req)
        }
    }
}

/// The id and state of a `kind = "http"` callback, as `map` says.
pub fn read_fields(
    map: &FieldMap,
    req: &CallbackRequest<'_>,
) -> Result<StatusReport, CallbackError> {
    let (id, status) = if req.is_json() || req.body.trim_ascii_start().starts_with(b"{") {
        let doc: serde_json::Value = serde_json::from_slice(req.body)
            .map_err(|e| CallbackError::Malformed(format!("body is not JSON: {e}")))?;
        let get = |f: &str| {
            if f.starts_with('/') {
                doc.pointer(f).and_then(scalar)
            } else {
                doc.get(f).and_then(scalar)
            }
        };
        (get(&map.id_field), get(&map.status_field))
    } else {
        // A form body, or the fields in the query (GET callbacks).
        let mut pairs = form_pairs(req.body);
        pairs.extend(form_pairs(req.query.as_bytes()));
        let get = |f: &str| pairs.iter().find(|(n, _)| n == f).map(|(_, v)| v.clone());
        (get(&map.id_field), get(&map.status_field))
    };
    let message_id = id
        .filter(|v| !v.is_empty())
        .ok_or_else(|| CallbackError::Malformed(format!("no {} field", map.id_field)))?;
    let status =
        status.ok_or_else(|| CallbackError::Malformed(format!("no {} field", map.status_field)))?;
    let is = |list: &[String]| list.iter().any(|s| s.eq_ignore_ascii_case(&status));
    let state = if is(&map.failure) {
        ReceiptState::Undeliverable
    } else if is(&map.delivered) {
        ReceiptState::Delivered
    } else {
        // Anything else may be followed by a final status: keep waiting.
        ReceiptState::Enroute
    };
    Ok(StatusReport { message_id, state })
}

/// A JSON string, number or boolean as text.
fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Twilio's `MessageStatus` as a receipt state: `undelivered` and
/// `failed` are failures; the states before the carrier's last word
/// (`queued`, `sending`, `sent`, …, and any new one) keep the code held.
pub fn twilio_state(status: &str) -> ReceiptState {
    match status.to_ascii_lowercase().as_str() {
        "delivered" | "read" => ReceiptState::Delivered,
        "undelivered" => ReceiptState::Undeliverable,
        "failed" => ReceiptState::Rejected,
        "canceled" => ReceiptState::Deleted,
        _ => ReceiptState::Enroute,
    }
}

/// Twilio's request signature: base64 of HMAC-SHA1, keyed with the Auth
/// Token, over `url` followed by each parameter's name and value, sorted
/// by name (then value), without separators.
pub fn twilio_signature(token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    // HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()) else {
        return String::new();
    };
    mac.update(url.as_bytes());
    for (n, v) in sorted {
        mac.update(n.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `given` is Twilio's signature of `url` and `params` under
/// `token`, compared in constant time.
pub fn twilio_signature_ok(
    token: &str,
    url: &str,
    params: &[(String, String)],
    given: &str,
) -> bool {
    let want = twilio_signature(token, url, params);
    !token.is_empty() && bool::from(want.as_bytes().ct_eq(given.as_bytes()))
}

/// `a=1&b=x+y%21` as decoded pairs, in order (`+` is a space; bad
/// escapes are kept as written).
pub fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = match p.iter().position(|b| *b == b'=') {
                Some(i) => (&p[..i], &p[i + 1..]),
                None => (p, &[][..]),
            };
            (decode(n), decode(v))
        })
        .collect()
}

fn decode(s: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn twilio_signature_known_vector() {
        // Computed independently:
        // python3 -c 'import hmac,hashlib,base64;
        //   s="https://sms.example.org/smsotp/receipt/twilio"+"AccountSidAC123"
        //     +"MessageSidSM0123456789abcdef"+"MessageStatusundelivered"+"To+4915112345678";
        //   print(base64.b64encode(hmac.new(b"tok3n",s.encode(),hashlib.sha1).digest()).decode())'
        let url = "https://sms.example.org/smsotp/receipt/twilio";
        let p = pairs(&[
            ("To", "+4915112345678"),
            ("MessageStatus", "undelivered"),
            ("MessageSid", "SM0123456789abcdef"),
            ("AccountSid", "AC123"),
        ]);
        let want = "4EYGFu3Kq5x0By1TxBBa1PMaIuc=";
        assert_eq!(twilio_signature("tok3n", url, &p), want);
        assert!(twilio_signature_ok("tok3n", url, &p, want));
        // Another token, another URL, another value: no.
        assert!(!twilio_signature_ok("tok3m", url, &p, want));
        assert!(!twilio_signature_ok("tok3n", &format!("{url}/"), &p, want));
        let mut q = p.clone();
        q[1].1 = "delivered".into();
        assert!(!twilio_signature_ok("tok3n", url, &q, want));
        assert!(!twilio_signature_ok(
            "",
            url,
            &p,
            &twilio_signature("", url, &p)
        ));
    }

    #[test]
    fn twilio_documented_vector() {
        // The example of Twilio's security page (query kept in the URL,
        // POST parameters sorted), recomputed with python3's hmac.
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let p = pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        assert_eq!(
            twilio_signature("12345", url, &p),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }

    fn twilio_cb() -> StatusCallback {
        StatusCallback {
            url: "https://sms.example.org/smsotp/receipt/twilio".into(),
            path: "/smsotp/receipt/twilio".into(),
            secret_file: "/etc/smsotp/secrets/twilio".into(),
            read: CallbackRead::Twilio,
        }
    }

    #[test]
    fn a_twilio_callback_is_read_only_when_signed() {
        let cb = twilio_cb();
        let body = b"MessageSid=SM1&MessageStatus=undelivered&To=%2B4915112345678&ErrorCode=30003";
        let sig = twilio_signature("tok", &cb.url, &form_pairs(body));
        let headers = vec![("x-twilio-signature".to_string(), sig)];
        let req = CallbackRequest {
            query: "",
            headers: &headers,
            body,
        };
        assert_eq!(
            read_callback(&cb, "tok", &req),
            Ok(StatusReport {
                message_id: "SM1".into(),
                state: ReceiptState::Undeliverable
            })
        );
        assert!(matches!(
            read_callback(&cb, "other", &req),
            Err(CallbackError::Forbidden(_))
        ));
        let none = CallbackRequest {
            headers: &[],
            ..req
        };
        assert!(matches!(
            read_callback(&cb, "tok", &none),
            Err(CallbackError::Forbidden(_))
        ));
        assert_eq!(twilio_state("failed"), ReceiptState::Rejected);
        assert!(twilio_state("failed").is_failure());
        assert_eq!(twilio_state("delivered"), ReceiptState::Delivered);
        assert_eq!(twilio_state("sent"), ReceiptState::Enroute);
        assert_eq!(
            cb.message_id(r#"{"sid": "SMabc", "status": "queued"}"#),
            Some("SMabc".into())
        );
        assert_eq!(cb.message_id("not json"), None);
    }

    fn generic(header: Option<&str>) -> StatusCallback {
        StatusCallback {
            url: "https://sms.example.org/cb/gw".into(),
            path: "/cb/gw".into(),
            secret_file: "/etc/smsotp/secrets/gw-callback".into(),
            read: CallbackRead::Fields(FieldMap {
                id_pointer: "/messages/0/id".into(),
                id_field: "msgid".into(),
                status_field: "/report/status".into(),
                failure: vec!["FAILED".into(), "undeliverable".into()],
                delivered: vec!["delivered".into()],
                token_header: header.map(str::to_owned),
            }),
        }
    }

    #[test]
    fn generic_fields_map_to_states_and_need_the_token() {
        let cb = generic(None);
        let body = br#"{"msgid": 42, "report": {"status": "failed"}}"#;
        let json = vec![("Content-Type".to_string(), "application/json".to_string())];
        let req = CallbackRequest {
            query: "token=s%3Dcret",
            headers: &json,
            body,
        };
        assert_eq!(
            read_callback(&cb, "s=cret", &req),
            Ok(StatusReport {
                message_id: "42".into(),
                state: ReceiptState::Undeliverable
            })
        );
        for q in ["token=wrong", "", "tok=s%3Dcret"] {
            let r = read_callback(&cb, "s=cret", &CallbackRequest { query: q, ..req });
            assert!(matches!(r, Err(CallbackError::Forbidden(_))), "{q}: {r:?}");
        }
        // Delivered, and an unknown status keeps waiting.
        let body = br#"{"msgid": "a", "report": {"status": "Delivered"}}"#;
        let r = read_callback(&cb, "s=cret", &CallbackRequest { body, ..req });
        assert_eq!(r.map(|r| r.state), Ok(ReceiptState::Delivered));
        let body = br#"{"msgid": "a", "report": {"status": "buffered"}}"#;
        let r = read_callback(&cb, "s=cret", &CallbackRequest { body, ..req });
        assert_eq!(r.map(|r| r.state), Ok(ReceiptState::Enroute));
        let body = br#"{"report": {"status": "failed"}}"#;
        let r = read_callback(&cb, "s=cret", &CallbackRequest { body, ..req });
        assert!(matches!(r, Err(CallbackError::Malformed(m)) if m.contains("msgid")));

        // A form, the token in a header.
        let cb = generic(Some("X-Callback-Token"));
        let CallbackRead::Fields(mut map) = cb.read.clone() else {
            unreachable!()
        };
        map.status_field = "status".into();
        let cb = StatusCallback {
            read: CallbackRead::Fields(map),
            ..cb
        };
        let headers = vec![("x-callback-token".to_string(), "t0k".to_string())];
        let req = CallbackRequest {
            query: "",
            headers: &headers,
            body: b"msgid=m%2B1&status=UNDELIVERABLE",
        };
        let r = read_callback(&cb, "t0k", &req).unwrap();
        assert_eq!(
            (r.message_id.as_str(), r.state),
            ("m+1", ReceiptState::Undeliverable)
        );
        assert!(read_callback(&cb, "t0K", &req).is_err());
        assert_eq!(
            cb.message_id(r#"{"messages": [{"id": "x9"}]}"#),
            Some("x9".into())
        );
    }

    #[test]
    fn form_decoding() {
        assert_eq!(
            form_pairs(b"a=1&b=x+y%21&c&d=%zz&e=%4"),
            pairs(&[
                ("a", "1"),
                ("b", "x y!"),
                ("c", ""),
                ("d", "%zz"),
                ("e", "%4")
            ])
        );
    }
}
