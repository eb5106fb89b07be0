//! Delivery receipts: a `deliver_sm` whose `esm_class` says "SMSC delivery
//! receipt", read into the message id it is about and the state it reports.
//!
//! Sans-I/O: [`parse_deliver_sm`] takes the PDU body as bytes (not
//! rusmpp's decoded form, so that an SMSC's quirk in another field still
//! yields the receipt), and [`parse_receipt_text`] the SMPP 3.4 Appendix B
//! text `id:… sub:… dlvrd:… submit date:… done date:… stat:… err:…`. The
//! `receipted_message_id` and `message_state` TLVs, when present, win over
//! the text. Nothing here panics on garbage: it answers an error that says
//! what was wrong, and the session acknowledges the PDU anyway.

use std::fmt;

/// What a receipt says became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ReceiptState {
    /// `DELIVRD`: on the phone.
    Delivered,
    /// `ACCEPTD`: accepted on someone's behalf (final for the SMSC).
    Accepted,
    /// `ENROUTE`: an intermediate report; more may follow.
    Enroute,
    /// `UNDELIV`: could not be delivered.
    Undeliverable,
    /// `REJECTD`: refused by the network or the SMSC.
    Rejected,
    /// `EXPIRED`: the validity period ran out before delivery.
    Expired,
    /// `DELETED`: deleted at the SMSC before delivery.
    Deleted,
    /// `UNKNOWN`: the SMSC does not know.
    Unknown,
}

impl ReceiptState {
    /// The Appendix B spelling (`DELIVRD`, `UNDELIV`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptState::Delivered => "DELIVRD",
            ReceiptState::Accepted => "ACCEPTD",
            ReceiptState::Enroute => "ENROUTE",
            ReceiptState::Undeliverable => "UNDELIV",
            ReceiptState::Rejected => "REJECTD",
            ReceiptState::Expired => "EXPIRED",
            ReceiptState::Deleted => "DELETED",
            ReceiptState::Unknown => "UNKNOWN",
        }
    }

    /// The states that mean the phone will not get the message, and so
    /// justify sending the same code through the next provider.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            ReceiptState::Undeliverable | ReceiptState::Rejected | ReceiptState::Expired
        )
    }

    fn from_text(s: &str) -> Option<ReceiptState> {
        Some(match s.to_ascii_uppercase().as_str() {
            "DELIVRD" | "DELIVERED" => ReceiptState::Delivered,
            "ACCEPTD" | "ACCEPTED" => ReceiptState::Accepted,
            "ENROUTE" => ReceiptState::Enroute,
            "UNDELIV" | "UNDELIVERABLE" => ReceiptState::Undeliverable,
            "REJECTD" | "REJECTED" => ReceiptState::Rejected,
            "EXPIRED" => ReceiptState::Expired,
            "DELETED" => ReceiptState::Deleted,
            "UNKNOWN" => ReceiptState::Unknown,
            _ => return None,
        })
    }

    /// The `message_state` TLV's values (SMPP 3.4 5.2.28).
    fn from_tlv(v: u8) -> Option<ReceiptState> {
        Some(match v {
            1 => ReceiptState::Enroute,
            2 => ReceiptState::Delivered,
            3 => ReceiptState::Expired,
            4 => ReceiptState::Deleted,
            5 => ReceiptState::Undeliverable,
            6 => ReceiptState::Accepted,
            7 => ReceiptState::Unknown,
            8 => ReceiptState::Rejected,
            _ => return None,
        })
    }
}

impl fmt::Display for ReceiptState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One delivery receipt: which message, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The id the SMSC gave the message in `submit_sm_resp`.
    pub message_id: String,
    /// What became of it.
    pub state: ReceiptState,
    /// The `err:` field of the text, when there is one (network specific).
    pub error: Option<String>,
}

/// Why a `deliver_sm` could not be read as a receipt. The texts name the
/// field; they never quote the message text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The body ended inside a field.
    #[error("deliver_sm is cut short in {0}")]
    Truncated(&'static str),
    /// Neither the TLV nor the text names the message.
    #[error("delivery receipt without a message id (no receipted_message_id TLV, no \"id:\" in the text)")]
    NoId,
    /// Neither the TLV nor the text gives a state this reader knows.
    #[error("delivery receipt for message {0:?} without a known state (stat: or message_state)")]
    NoState(String),
}

/// Tags of the TLVs read here (SMPP 3.4 5.3.2).
const TAG_RECEIPTED_MESSAGE_ID: u16 = 0x001E;
const TAG_MESSAGE_STATE: u16 = 0x0427;
const TAG_MESSAGE_PAYLOAD: u16 = 0x0424;

/// Longest id accepted (the TLV allows 65 octets with its NUL).
const MAX_ID: usize = 64;

/// `esm_class` bits 2..5: 0x04 is "SMSC delivery receipt", 0x20 an
/// intermediate delivery notification.
pub fn is_receipt_esm_class(esm_class: u8) -> bool {
    matches!(esm_class & 0x3C, 0x04 | 0x20)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self, what: &'static str) -> Result<u8, ReceiptError> {
        let v = *self.b.get(self.at).ok_or(ReceiptError::Truncated(what))?;
        self.at += 1;
        Ok(v)
    }

    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ReceiptError> {
        let end = self
            .at
            .checked_add(n)
            .ok_or(ReceiptError::Truncated(what))?;
        let v = self
            .b
            .get(self.at..end)
            .ok_or(ReceiptError::Truncated(what))?;
        self.at = end;
        Ok(v)
    }

    fn c_string(&mut self, what: &'static str) -> Result<&'a [u8], ReceiptError> {
        let rest = self.b.get(self.at..).unwrap_or_default();
        let n = rest
            .iter()
            .position(|&c| c == 0)
            .ok_or(ReceiptError::Truncated(what))?;
        let v = &rest[..n];
        self.at += n + 1;
        Ok(v)
    }
}

/// Reads a `deliver_sm` body (the PDU after its 16-byte header). `Ok(None)`:
/// a mobile-originated message, not a receipt.
pub fn parse_deliver_sm(body: &[u8]) -> Result<Option<Receipt>, ReceiptError> {
    let mut r = Reader { b: body, at: 0 };
    r.c_string("service_type")?;
    r.bytes(2, "source_addr_ton/npi")?;
    r.c_string("source_addr")?;
    r.bytes(2, "dest_addr_ton/npi")?;
    r.c_string("destination_addr")?;
    let esm_class = r.u8("esm_class")?;
    if !is_receipt_esm_class(esm_class) {
        return Ok(None);
    }
    r.bytes(2, "protocol_id/priority_flag")?;
    r.c_string("schedule_delivery_time")?;
    r.c_string("validity_period")?;
    r.bytes(4, "registered_delivery..sm_default_msg_id")?;
    let sm_length = usize::from(r.u8("sm_length")?);
    let mut text = r.bytes(sm_length, "short_message")?;
    let mut tlv_id = None;
    let mut tlv_state = None;
    while r.at < body.len() {
        let head = r.bytes(4, "a TLV header")?;
        let tag = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let value = r.bytes(len, "a TLV value")?;
        match tag {
            TAG_RECEIPTED_MESSAGE_ID => {
                let v = value.split(|&c| c == 0).next().unwrap_or_default();
                if !v.is_empty() && v.len() <= MAX_ID {
                    tlv_id = Some(String::from_utf8_lossy(v).into_owned());
                }
            }
            TAG_MESSAGE_STATE => tlv_state = value.first().and_then(|&v| ReceiptState::from_tlv(v)),
            TAG_MESSAGE_PAYLOAD if text.is_empty() => text = value,
            _ => {}
        }
    }
    let from_text = parse_receipt_text(text);
    let (text_id, text_state, error) = match &from_text {
        Ok(rc) => (
            Some(rc.message_id.clone()),
            Some(rc.state),
            rc.error.clone(),
        ),
        Err(_) => (None, None, None),
    };
    let message_id = tlv_id.or(text_id).ok_or(ReceiptError::NoId)?;
    let state = tlv_state
        .or(text_state)
        .ok_or_else(|| ReceiptError::NoState(message_id.clone()))?;
    Ok(Some(Receipt {
        message_id,
        state,
        error,
    }))
}

/// Reads the Appendix B receipt text: `id:IIIIIIIIII sub:SSS dlvrd:DDD
/// submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD err:E Text:…`.
/// Field names are matched without regard to case; fields may be missing
/// or in another order, as SMSCs vary.
pub fn parse_receipt_text(text: &[u8]) -> Result<Receipt, ReceiptError> {
    let s = String::from_utf8_lossy(text);
    let field = |name: &str| -> Option<String> {
        let lower = s.to_ascii_lowercase();
        let mut from = 0;
        // A field name starts the text or follows a space.
        while let Some(i) = lower[from..].find(name) {
            let at = from + i;
            if at == 0 || lower.as_bytes()[at - 1] == b' ' {
                let rest = &s[at + name.len()..];
                let v: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                return Some(v);
            }
            from = at + name.len();
        }
        None
    };
    let message_id = field("id:")
        .filter(|v| !v.is_empty() && v.len() <= MAX_ID)
        .ok_or(ReceiptError::NoId)?;
    let state = field("stat:")
        .and_then(|v| ReceiptState::from_text(&v))
        .ok_or_else(|| ReceiptError::NoState(message_id.clone()))?;
    let error = field("err:").filter(|v| !v.is_empty() && v.len() <= 8);
    Ok(Receipt {
        message_id,
        state,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deliver_sm body with `esm_class`, `text` and raw TLV bytes.
    fn body(esm_class: u8, text: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.push(0); // service_type
        b.extend_from_slice(&[1, 1]);
        b.extend_from_slice(b"447700900123\0");
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(b"SMSOTP\0");
        b.push(esm_class);
        b.extend_from_slice(&[0, 0]);
        b.push(0);
        b.push(0);
        b.extend_from_slice(&[0, 0, 0, 0]);
        b.push(text.len() as u8);
        b.extend_from_slice(text);
        b.extend_from_slice(tlvs);
        b
    }

    fn tlv(tag: u16, value: &[u8]) -> Vec<u8> {
        let mut v = tag.to_be_bytes().to_vec();
        v.extend_from_slice(&(value.len() as u16).to_be_bytes());
        v.extend_from_slice(value);
        v
    }

    #[test]
    fn appendix_b_texts() {
        let cases: [(&str, &str, ReceiptState); 7] = [
            ("id:0123456789 sub:001 dlvrd:001 submit date:0610191018 done date:0610191018 stat:DELIVRD err:000 text:Your code", "0123456789", ReceiptState::Delivered),
            ("id:1 sub:001 dlvrd:000 submit date:0610191018 done date:0610191019 stat:UNDELIV err:001 text:", "1", ReceiptState::Undeliverable),
            ("id:a1b2c3 sub:001 dlvrd:000 submit date:2401011200 done date:2401011201 stat:REJECTD err:0B1", "a1b2c3", ReceiptState::Rejected),
            ("id:77 sub:001 dlvrd:000 submit date:2401011200 done date:2401021200 stat:EXPIRED err:000", "77", ReceiptState::Expired),
            ("id:78 stat:DELETED", "78", ReceiptState::Deleted),
            ("ID:79 SUB:001 STAT:ACCEPTD", "79", ReceiptState::Accepted),
            ("id:80 stat:UNKNOWN err:999", "80", ReceiptState::Unknown),
        ];
        for (text, id, state) in cases {
            let r = parse_receipt_text(text.as_bytes()).unwrap();
            assert_eq!((r.message_id.as_str(), r.state), (id, state), "{text}");
        }
        let r = parse_receipt_text(cases[1].0.as_bytes()).unwrap();
        assert_eq!(r.error.as_deref(), Some("001"));
        assert!(ReceiptState::Undeliverable.is_failure());
        assert!(ReceiptState::Rejected.is_failure());
        assert!(ReceiptState::Expired.is_failure());
        assert!(!ReceiptState::Delivered.is_failure());
        assert!(!ReceiptState::Accepted.is_failure());
        assert!(!ReceiptState::Enroute.is_failure());
    }

    #[test]
    fn text_fields_only_at_word_starts() {
        // "sub:" contains no "id:", but "submit date:" must not be taken
        // for a field either; "xid:" is not "id:".
        let r = parse_receipt_text(b"xid:9 id:42 stat:DELIVRD").unwrap();
        assert_eq!(r.message_id, "42");
        assert_eq!(parse_receipt_text(b"stat:DELIVRD"), Err(ReceiptError::NoId));
        assert_eq!(
            parse_receipt_text(b"id:5 stat:SMILING"),
            Err(ReceiptError::NoState("5".into()))
        );
    }

    #[test]
    fn deliver_sm_with_text() {
        let b = body(0x04, b"id:99 sub:001 dlvrd:000 stat:UNDELIV err:001", &[]);
        let r = parse_deliver_sm(&b).unwrap().unwrap();
        assert_eq!(r.message_id, "99");
        assert_eq!(r.state, ReceiptState::Undeliverable);
    }

    #[test]
    fn tlvs_win_over_the_text() {
        let mut t = tlv(TAG_RECEIPTED_MESSAGE_ID, b"ABC123\0");
        t.extend(tlv(TAG_MESSAGE_STATE, &[2]));
        t.extend(tlv(0x1401, b"vendor"));
        let b = body(0x04, b"id:99 stat:UNDELIV", &t);
        let r = parse_deliver_sm(&b).unwrap().unwrap();
        assert_eq!(r.message_id, "ABC123");
        assert_eq!(r.state, ReceiptState::Delivered);
        // TLVs alone, no text.
        let mut t = tlv(TAG_RECEIPTED_MESSAGE_ID, b"X\0");
        t.extend(tlv(TAG_MESSAGE_STATE, &[8]));
        let r = parse_deliver_sm(&body(0x04, b"", &t)).unwrap().unwrap();
        assert_eq!(
            (r.message_id.as_str(), r.state),
            ("X", ReceiptState::Rejected)
        );
        // The text in message_payload.
        let t = tlv(TAG_MESSAGE_PAYLOAD, b"id:7 stat:EXPIRED");
        let r = parse_deliver_sm(&body(0x04, b"", &t)).unwrap().unwrap();
        assert_eq!(
            (r.message_id.as_str(), r.state),
            ("7", ReceiptState::Expired)
        );
    }

    #[test]
    fn mobile_originated_is_not_a_receipt() {
        assert_eq!(parse_deliver_sm(&body(0x00, b"hello", &[])), Ok(None));
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        assert!(matches!(
            parse_deliver_sm(&[]),
            Err(ReceiptError::Truncated(_))
        ));
        let good = body(0x04, b"id:1 stat:DELIVRD", &tlv(TAG_MESSAGE_STATE, &[2]));
        for n in 0..good.len() {
            // Every truncation: an error or (cut inside the TLVs' end) a
            // receipt, never a panic.
            let _ = parse_deliver_sm(&good[..n]);
        }
        let mut seed = 0x1234_5678u32;
        for len in 0..300 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = parse_deliver_sm(&junk);
            let _ = parse_receipt_text(&junk);
        }
        assert_eq!(
            parse_deliver_sm(&body(0x04, b"no fields here", &[])),
            Err(ReceiptError::NoId)
        );
        // A TLV whose length runs past the end.
        let mut b = body(0x04, b"id:1 stat:DELIVRD", &[]);
        b.extend_from_slice(&[0x04, 0x27, 0x00, 0x09, 2]);
        assert_eq!(
            parse_deliver_sm(&b),
            Err(ReceiptError::Truncated("a TLV value"))
        );
    }
}
