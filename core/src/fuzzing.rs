//! Entry points for the fuzz targets (`fuzz/`, feature `fuzzing`): the
//! decoders that are private to their module, each from a byte slice or a
//! string, with no socket and no file. Not part of the product's API: the
//! feature is off in every shipped build.
//!
//! Each function runs the product's own code, the same that reads the
//! network or the config; what it returns is what the fuzz crate checks
//! beyond "no panic".

use crate::directory::ldap::{self, LdapEntry, LdapError};

/// What [`smpp_stream`] read: the PDUs taken, then why it stopped.
#[derive(Debug)]
pub struct SmppStream {
    /// Each whole PDU: its bytes, and (command id, command status,
    /// sequence number) as the session goes on with them.
    pub pdus: Vec<(Vec<u8>, [u32; 3])>,
    /// The bytes were out of step (a length outside 16..=64 KiB): the
    /// session's error. `None` when they ran out mid-PDU or at a boundary.
    pub error: Option<String>,
}

/// Reads `bytes` as what an SMSC sent on a bound session: the SMPP framing
/// (length field bounds) and rusmpp's decoder, with our fallback to the
/// bare header for a body it refuses.
pub fn smpp_stream(bytes: &[u8]) -> SmppStream {
    crate::sms::smpp::read_stream(bytes)
}

/// Validates `rule` (the value of `success_body` as the config writes it,
/// such as `{ regex = "^OK" }`) as the config does and, when it is valid, tells whether
/// a gateway answer `body` passes it, with the rule as the log describes
/// it. `Err` is the config error for the rule.
pub fn success_body(rule: &str, body: &str) -> Result<(bool, String), String> {
    crate::sms::http::config::success_body(rule, body)
}

/// What [`ldap_stream`] read.
#[derive(Debug)]
pub struct LdapStream {
    /// Whole messages decoded.
    pub messages: usize,
    /// The search result entries among them, as a search takes them.
    pub entries: Vec<LdapEntry>,
    /// The result codes of the results among them.
    pub result_codes: Vec<u32>,
    /// Messages whose BER encoding did not decode back to the same message.
    pub roundtrip_mismatches: usize,
    /// Why reading stopped (the bytes ran out, or the error a login logs).
    pub error: String,
}

/// Reads `bytes` as what an LDAP server sent, message after message, as
/// the client does (framing, BER length bounds, rasn's decoder), and turns
/// each search entry and result as a search does.
pub fn ldap_stream(bytes: &[u8]) -> LdapStream {
    use rasn_ldap::ProtocolOp;
    let url = "ldap://fuzz.invalid";
    let mut rest = bytes;
    let mut read_exact = |buf: &mut [u8]| -> Result<(), LdapError> {
        if rest.len() < buf.len() {
            return Err(LdapError::Io {
                url: url.to_owned(),
                step: "fuzzing",
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        let (now, later) = rest.split_at(buf.len());
        buf.copy_from_slice(now);
        rest = later;
        Ok(())
    };
    let mut out = LdapStream {
        messages: 0,
        entries: Vec::new(),
        result_codes: Vec::new(),
        roundtrip_mismatches: 0,
        error: String::new(),
    };
    loop {
        let m = match ldap::read_message(&mut read_exact, url) {
            Ok(m) => m,
            Err(e) => {
                out.error = e.to_string();
                return out;
            }
        };
        out.messages += 1;
        let same = rasn::ber::encode(&m)
            .ok()
            .and_then(|b| rasn::ber::decode::<rasn_ldap::LdapMessage>(&b).ok())
            .is_some_and(|again| again == m);
        if !same {
            out.roundtrip_mismatches += 1;
        }
        // What a login makes of each: the error text for an unexpected
        // operation, the entry, the result's code.
        let _ = ldap::unexpected(url, m.message_id, &m.protocol_op).to_string();
        match m.protocol_op {
            ProtocolOp::SearchResEntry(e) => out.entries.push(LdapEntry::from_wire(e)),
            ProtocolOp::SearchResDone(d) => out.result_codes.push(ldap::code_of(d.0.result_code)),
            ProtocolOp::BindResponse(r) => out.result_codes.push(ldap::code_of(r.result_code)),
            ProtocolOp::ModifyResponse(r) => out.result_codes.push(ldap::code_of(r.0.result_code)),
            ProtocolOp::ExtendedResp(r) => out.result_codes.push(ldap::code_of(r.result_code)),
            _ => {}
        }
    }
}
