//! Text into `submit_sm` contents: the `data_coding` bytes and the split
//! into parts (UDH or `message_payload`). GSM-7 or UCS-2, and how many
//! parts, is decided by the shared counting ([`crate::sms::segments`]),
//! so the SMSC gets what `smsotp check-config` predicted.

use super::*;
use crate::sms::segments::{self, Encoding};

// ----------------------------------------------------------------- encoding

pub(super) fn ucs2(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// A text in the bytes of one `data_coding`.
#[derive(Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The SMPP `data_coding` value the bytes are in.
    pub data_coding: u8,
    /// The encoded text; it holds the code, so it is wiped on drop.
    pub bytes: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Encoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Encoded {{ data_coding: {}, {} bytes }}",
            self.data_coding,
            self.bytes.len()
        )
    }
}

impl Encoded {
    pub(super) fn of(text: &str, alphabet: Coding) -> Encoded {
        let (data_coding, bytes) = match alphabet {
            Coding::Gsm7 => match segments::count(text).encoding {
                Encoding::Gsm7 => match gsm7_encode(text) {
                    Some(b) => (0, b),
                    None => (8, ucs2(text)),
                },
                Encoding::Ucs2 => (8, ucs2(text)),
            },
            Coding::Latin1 if text.chars().all(|c| u32::from(c) <= 0xFF) => {
                (3, text.chars().map(|c| c as u8).collect())
            }
            Coding::Ia5 if text.is_ascii() => (1, text.as_bytes().to_vec()),
            Coding::Latin1 | Coding::Ia5 | Coding::Ucs2 => (8, ucs2(text)),
        };
        Encoded {
            data_coding,
            bytes: Zeroizing::new(bytes),
        }
    }

    /// (one SMS, one part of a concatenated SMS), in bytes.
    pub(super) fn limits(&self) -> (usize, usize) {
        if self.data_coding == 0 {
            (160, 153)
        } else {
            (140, 134)
        }
    }

    /// The length of the unit starting at `i`: an escape and its septet, a
    /// surrogate pair, or one character.
    pub(super) fn unit_at(&self, i: usize) -> usize {
        let b = &self.bytes;
        match self.data_coding {
            0 if b[i] == ESC => 2,
            8 if (0xD8..=0xDB).contains(&b[i]) => 4,
            8 => 2,
            _ => 1,
        }
        .min(b.len() - i)
    }

    /// Cuts the text into chunks of at most `max` bytes, between units.
    pub(super) fn chunks(&self, max: usize) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let (mut start, mut i) = (0, 0);
        while i < self.bytes.len() {
            let u = self.unit_at(i);
            if i + u - start > max {
                out.push(&self.bytes[start..i]);
                start = i;
            }
            i += u;
        }
        if start < self.bytes.len() || out.is_empty() {
            out.push(&self.bytes[start..]);
        }
        out
    }
}

/// What goes into one `submit_sm`.
#[derive(Clone, PartialEq, Eq)]
pub struct Part {
    /// 0x40 (UDH indicator) for a part of a concatenated message, else 0.
    pub esm_class: u8,
    /// The SMPP `data_coding` of the text.
    pub data_coding: u8,
    /// The part's bytes, UDH first; empty when the text is in `payload`.
    pub short_message: Zeroizing<Vec<u8>>,
    /// The whole text as the `message_payload` TLV (`long_messages =
    /// "payload"`); `None` otherwise.
    pub payload: Option<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Part")
            .field("esm_class", &self.esm_class)
            .field("data_coding", &self.data_coding)
            .field("short_message_len", &self.short_message.len())
            .field("payload_len", &self.payload.as_ref().map(|p| p.len()))
            .finish()
    }
}

/// The `submit_sm` contents for `text`; `reference` identifies the parts of
/// one concatenated message.
pub fn message_parts(
    text: &str,
    alphabet: Coding,
    long: LongMessages,
    reference: u8,
) -> Result<Vec<Part>, String> {
    let enc = Encoded::of(text, alphabet);
    let (single, each) = enc.limits();
    let dc = enc.data_coding;
    // GSM-7 and UCS-2 by the shared count; Latin-1 and IA5 (one octet a
    // character) by their bytes.
    let shared = match dc {
        0 => segments::count_in(text, Encoding::Gsm7),
        8 => segments::count_in(text, Encoding::Ucs2),
        _ => None,
    };
    let one = match shared {
        Some(c) => c.segments == 1,
        None => enc.bytes.len() <= single,
    };
    if one {
        return Ok(vec![Part {
            esm_class: 0,
            data_coding: dc,
            short_message: enc.bytes.clone(),
            payload: None,
        }]);
    }
    if long == LongMessages::Payload {
        return Ok(vec![Part {
            esm_class: 0,
            data_coding: dc,
            short_message: Zeroizing::new(Vec::new()),
            payload: Some(enc.bytes.clone()),
        }]);
    }
    let chunks = enc.chunks(each);
    let needed = shared.map_or(chunks.len(), |c| c.segments);
    if needed > MAX_PARTS {
        return Err(format!(
            "the message needs {needed} SMS parts (at most {MAX_PARTS}); shorten otp.message"
        ));
    }
    let total = chunks.len() as u8;
    Ok(chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut sm = vec![0x05, 0x00, 0x03, reference, total, i as u8 + 1];
            sm.extend_from_slice(c);
            Part {
                esm_class: 0x40,
                data_coding: dc,
                short_message: Zeroizing::new(sm),
                payload: None,
            }
        })
        .collect())
}
