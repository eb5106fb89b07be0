//! The GSM 03.38 default alphabet and its extension table: one table for
//! the SMPP encoder (septets on the wire) and the HTTP presets (whether a
//! text needs UCS-2).

/// GSM 03.38 default alphabet; index = septet. 0x1B (escape) is never a
/// character of its own.
const GSM_BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1b}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// GSM 03.38 extension table: sent as 0x1B and this septet.
const GSM_EXTENSION: [(char, u8); 10] = [
    ('\u{c}', 0x0A),
    ('^', 0x14),
    ('{', 0x28),
    ('}', 0x29),
    ('\\', 0x2F),
    ('[', 0x3C),
    ('~', 0x3D),
    (']', 0x3E),
    ('|', 0x40),
    ('€', 0x65),
];

/// The escape septet before an extension-table character.
pub(crate) const ESC: u8 = 0x1B;

/// For each ASCII character, its septet in the default alphabet plus one
/// (0: not there), so the common case needs no search of the tables.
const ASCII_SEPTET: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        let c = GSM_BASIC[i] as u32;
        if c < 128 && c != 0x1b {
            t[c as usize] = i as u8 + 1;
        }
        i += 1;
    }
    t
};

/// The septet of `c` in the default alphabet, if it is there.
fn basic_septet(c: char) -> Option<u8> {
    match ASCII_SEPTET.get(c as usize) {
        Some(&s) => s.checked_sub(1),
        None => GSM_BASIC.iter().position(|&g| g == c).map(|i| i as u8),
    }
}

/// How many septets `c` takes in GSM-7: 1 in the default alphabet, 2 in
/// the extension table (escape and septet), `None` in neither.
pub fn gsm7_septets(c: char) -> Option<usize> {
    if basic_septet(c).is_some() {
        Some(1)
    } else if GSM_EXTENSION.iter().any(|(g, _)| *g == c) {
        Some(2)
    } else {
        None
    }
}

/// The unpacked GSM 03.38 septets of `text`, or `None` when a character is
/// in neither table.
pub fn gsm7_encode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        if let Some(s) = basic_septet(c) {
            out.push(s);
            continue;
        }
        let &(_, s) = GSM_EXTENSION.iter().find(|(g, _)| *g == c)?;
        out.push(ESC);
        out.push(s);
    }
    Some(out)
}

/// The text of unpacked GSM 03.38 septets (for tests and diagnostics).
pub fn gsm7_decode(septets: &[u8]) -> String {
    let mut out = String::new();
    let mut it = septets.iter();
    while let Some(&b) = it.next() {
        if b == ESC {
            if let Some(&n) = it.next() {
                let c = GSM_EXTENSION
                    .iter()
                    .find(|(_, s)| *s == n)
                    .map_or(' ', |(c, _)| *c);
                out.push(c);
            }
        } else {
            out.push(GSM_BASIC.get(usize::from(b)).copied().unwrap_or(' '));
        }
    }
    out
}

/// Can `text` go as GSM-7 (the default alphabet), or does it need UCS-2?
pub fn is_gsm7(text: &str) -> bool {
    text.chars().all(|c| gsm7_septets(c).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm_alphabet_round_trips_and_escapes_the_extension_table() {
        let all: String = GSM_BASIC.iter().filter(|&&c| c != '\u{1b}').collect();
        let enc = gsm7_encode(&all).unwrap();
        assert_eq!(enc.len(), 127);
        assert_eq!(gsm7_decode(&enc), all);
        assert_eq!(gsm7_encode("@£$").unwrap(), [0x00, 0x01, 0x02]);
        assert_eq!(gsm7_encode("A€[").unwrap(), [0x41, 0x1B, 0x65, 0x1B, 0x3C]);
        assert_eq!(
            gsm7_decode(&gsm7_encode("{}\\~|^\u{c}").unwrap()),
            "{}\\~|^\u{c}"
        );
        // Not GSM: accented letters outside the table, other scripts, emoji, ESC.
        for t in ["Kód", "ç", "登录", "😀", "\u{1b}", "`"] {
            assert!(gsm7_encode(t).is_none(), "{t}");
        }
        // The quick ASCII table agrees with the alphabet, character by
        // character, and every width with the encoder's.
        for c in (0u32..0x3000).filter_map(char::from_u32) {
            let mut b = [0; 4];
            assert_eq!(
                gsm7_septets(c),
                gsm7_encode(c.encode_utf8(&mut b)).map(|s| s.len()),
                "{c:?}"
            );
        }
        // GSM text is what the HTTP presets also call GSM-7.
        assert!(is_gsm7(&all));
    }

    #[test]
    fn gsm7_detection() {
        assert!(is_gsm7(
            "123456 is your code for web-1. Valid 5 min! @£$ {}[]~^|€"
        ));
        assert!(!is_gsm7("Kód: 123456"));
        assert!(!is_gsm7("code 😀"));
    }

    #[test]
    fn is_gsm7_agrees_with_the_encoder() {
        for c in (0..=0x2200u32)
            .filter_map(char::from_u32)
            .chain(['€', '😀'])
        {
            let t = c.to_string();
            assert_eq!(is_gsm7(&t), gsm7_encode(&t).is_some(), "{c:?}");
        }
    }
}
