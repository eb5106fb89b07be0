//! How many SMS a text takes, counted once for `smsotp check-config`, the
//! SMPP encoder and the audit record of a send (3GPP TS 23.038 and
//! 23.040).
//!
//! A text goes as GSM-7 when every character is in the GSM 03.38 default
//! alphabet or its extension table (an extension character is an escape
//! and a septet: two septets), else as UCS-2, counted in UTF-16 code
//! units (a character outside the Basic Multilingual Plane, like most
//! emoji, is a surrogate pair: two units). One SMS holds 140 octets: 160
//! septets or 70 units. A longer text is sent in parts that each carry a
//! 6-octet concatenation header (8-bit reference, TS 23.040 9.2.3.24.1),
//! leaving 153 septets or 67 units per part. A part never ends between an
//! escape and its septet, nor between the two halves of a surrogate pair
//! (the receiving phone decodes each part on its own; TS 23.038 6.2.1.1
//! lets a phone show a lone escape as a space), so such a unit starts the
//! next part and a part may hold 152 septets or 66 units.
//!
//! The national language shift tables of TS 23.038 (Turkish, Spanish,
//! Portuguese, Indian scripts) are not used: few gateways send them, and
//! smsotp's SMPP encoder does not.

use std::fmt;

use crate::sms::gsm::gsm7_septets;

/// Septets in one GSM-7 SMS.
pub const GSM7_SINGLE: usize = 160;
/// Septets in one part of a concatenated GSM-7 SMS.
pub const GSM7_PART: usize = 153;
/// UTF-16 code units in one UCS-2 SMS.
pub const UCS2_SINGLE: usize = 70;
/// UTF-16 code units in one part of a concatenated UCS-2 SMS.
pub const UCS2_PART: usize = 67;

/// The alphabet a text goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The GSM 03.38 default alphabet with its extension table (SMPP
    /// `data_coding` 0).
    Gsm7,
    /// UCS-2 / UTF-16BE (SMPP `data_coding` 8).
    Ucs2,
}

impl Encoding {
    /// `"GSM-7"` or `"UCS-2"`, as gateways and their price lists say.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "GSM-7",
            Encoding::Ucs2 => "UCS-2",
        }
    }

    /// What [`SegmentCount::units`] counts: `"septets"` or `"UTF-16 units"`.
    pub fn unit_name(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "septets",
            Encoding::Ucs2 => "UTF-16 units",
        }
    }

    /// (units in one SMS, units in one part of a concatenated SMS).
    pub fn limits(self) -> (usize, usize) {
        match self {
            Encoding::Gsm7 => (GSM7_SINGLE, GSM7_PART),
            Encoding::Ucs2 => (UCS2_SINGLE, UCS2_PART),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The first character of a text that is not in the GSM 03.38 alphabet,
/// and so makes the whole text UCS-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonGsm {
    /// The character.
    pub character: char,
    /// Its position in the text, in characters, counting from 1.
    pub position: usize,
}

impl NonGsm {
    /// A GSM-7 text that looks the same, for the typographic characters
    /// editors put in by themselves (’ “ ” – — … and the like); `None`
    /// for a letter of another alphabet, an emoji, …
    pub fn replacement(&self) -> Option<&'static str> {
        gsm7_replacement(self.character)
    }
}

/// How a text goes as SMS: [`count`]'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentCount {
    /// GSM-7 when every character allows it, else UCS-2.
    pub encoding: Encoding,
    /// Septets (GSM-7: an extension character counts two) or UTF-16 code
    /// units (UCS-2: a character outside the BMP counts two).
    pub units: usize,
    /// How many SMS the text takes; 1 for an empty text.
    pub segments: usize,
    /// The first character that forces UCS-2, when there is one.
    pub first_non_gsm: Option<NonGsm>,
}

/// Counts the SMS `text` takes, as the module doc says.
pub fn count(text: &str) -> SegmentCount {
    count_with(text, None)
}

/// [`count`] when the sender forces `encoding` (SMPP `data_coding =
/// "ucs2"`): UCS-2 counts any text; GSM-7 answers `None` for a text with
/// a character outside the GSM alphabet.
pub fn count_in(text: &str, encoding: Encoding) -> Option<SegmentCount> {
    let c = count_with(text, Some(encoding));
    (c.encoding == encoding).then_some(c)
}

fn count_with(text: &str, forced: Option<Encoding>) -> SegmentCount {
    let first_non_gsm = text
        .chars()
        .enumerate()
        .find(|&(_, c)| gsm7_septets(c).is_none())
        .map(|(i, character)| NonGsm {
            character,
            position: i + 1,
        });
    // Each character's width in units: a part never splits one.
    let encoding = match (first_non_gsm, forced) {
        (Some(_), _) => Encoding::Ucs2,
        (None, Some(e)) => e,
        (None, None) => Encoding::Gsm7,
    };
    let widths: Vec<usize> = match encoding {
        Encoding::Gsm7 => text.chars().map(|c| gsm7_septets(c).unwrap_or(1)).collect(),
        Encoding::Ucs2 => text.chars().map(char::len_utf16).collect(),
    };
    let units = widths.iter().sum();
    SegmentCount {
        encoding,
        units,
        segments: segments_of(&widths, encoding.limits()),
        first_non_gsm,
    }
}

/// Parts for characters of `widths` units: one when all fit `single`,
/// else packed greedily into parts of `part` units, never splitting a
/// character.
fn segments_of(widths: &[usize], (single, part): (usize, usize)) -> usize {
    if widths.iter().sum::<usize>() <= single {
        return 1;
    }
    let (mut parts, mut used) = (1, 0);
    for &w in widths {
        if used + w > part {
            parts += 1;
            used = 0;
        }
        used += w;
    }
    parts
}

/// A GSM-7 stand-in for a typographic character that forces UCS-2.
pub fn gsm7_replacement(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{2018}' | '\u{2019}' | '\u{201a}' | '\u{201b}' | '\u{2032}' | '`' | '\u{b4}' => "'",
        '\u{201c}' | '\u{201d}' | '\u{201e}' | '\u{201f}' | '\u{ab}' | '\u{bb}' | '\u{2033}' => {
            "\""
        }
        '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2014}' | '\u{2015}'
        | '\u{2212}' => "-",
        '\u{2026}' => "...",
        '\u{a0}' | '\u{2007}' | '\u{2009}' | '\u{202f}' | '\u{2002}' | '\u{2003}' => " ",
        '\u{2022}' | '\u{b7}' => "*",
        '\u{2039}' => "<",
        '\u{203a}' => ">",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gsm(n: usize) -> String {
        "a".repeat(n)
    }

    #[test]
    fn gsm7_single_and_concatenated_boundaries() {
        for (len, segs) in [
            (0, 1),
            (1, 1),
            (160, 1),
            (161, 2),
            (306, 2),
            (307, 3),
            (459, 3),
            (460, 4),
        ] {
            let c = count(&gsm(len));
            assert_eq!(
                (c.encoding, c.units, c.segments, c.first_non_gsm),
                (Encoding::Gsm7, len, segs, None),
                "{len}"
            );
        }
    }

    #[test]
    fn extension_characters_count_two_septets() {
        // 159 + '€' (2) = 161 septets: two SMS, though 160 characters.
        let c = count(&format!("{}€", gsm(159)));
        assert_eq!((c.encoding, c.units, c.segments), (Encoding::Gsm7, 161, 2));
        // 158 + '€' = 160: one.
        let c = count(&format!("{}€", gsm(158)));
        assert_eq!((c.units, c.segments), (160, 1));
        for ch in ['{', '}', '[', ']', '~', '^', '|', '\\', '€', '\u{c}'] {
            assert_eq!(count(&ch.to_string()).units, 2, "{ch:?}");
        }
    }

    #[test]
    fn an_escape_is_never_split_across_parts() {
        // 152 septets then '€': the escape would be septet 153 of part 1
        // and its septet the first of part 2; it moves to part 2 whole.
        // 152 + 2 + 151 = 305 septets would fit 2×153 by count alone, but
        // part 1 holds only 152, so part 2 holds 2 + 151 = 153: still two.
        let t = format!("{}€{}", gsm(152), gsm(151));
        let c = count(&t);
        assert_eq!((c.units, c.segments), (305, 2));
        // One more septet: 306 by count (2×153) but three parts, since
        // part 1 closed at 152.
        let t = format!("{}€{}", gsm(152), gsm(152));
        let c = count(&t);
        assert_eq!((c.units, c.segments), (306, 3));
        // Without the escape at the boundary, 306 septets are two parts.
        let t = format!("{}€{}", gsm(151), gsm(153));
        assert_eq!(count(&t).segments, 2);
    }

    #[test]
    fn ucs2_boundaries_and_surrogate_pairs() {
        let u = |n: usize| "ж".repeat(n);
        for (len, segs) in [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3)] {
            let c = count(&u(len));
            assert_eq!(
                (c.encoding, c.units, c.segments),
                (Encoding::Ucs2, len, segs),
                "{len}"
            );
        }
        // An emoji is two UTF-16 units: 68 + 😀 = 70 units, one SMS; 69 +
        // 😀 = 71, two.
        assert_eq!(count(&format!("{}😀", u(68))).units, 70);
        assert_eq!(count(&format!("{}😀", u(68))).segments, 1);
        assert_eq!(count(&format!("{}😀", u(69))).segments, 2);
        // A pair at the part boundary moves to the next part whole: 66 +
        // 😀 + 66 = 134 units, but part 1 closes at 66.
        let c = count(&format!("{}😀{}", u(66), u(66)));
        assert_eq!((c.units, c.segments), (134, 3));
        let c = count(&format!("{}😀{}", u(65), u(67)));
        assert_eq!((c.units, c.segments), (134, 2));
    }

    #[test]
    fn the_first_non_gsm_character_and_its_position() {
        let c = count("Your code: 123456 – valid 5 minutes");
        assert_eq!(c.encoding, Encoding::Ucs2);
        let n = c.first_non_gsm.unwrap();
        assert_eq!((n.character, n.position), ('–', 19));
        assert_eq!(n.replacement(), Some("-"));
        // GSM characters after it count as one unit each in UCS-2, and the
        // extension ones too.
        assert_eq!(count("’€").units, 2);
        let c = count("Kód");
        assert_eq!(c.first_non_gsm.map(|n| n.position), Some(2));
        assert_eq!(c.first_non_gsm.and_then(|n| n.replacement()), None);
        for (ch, r) in [
            ('’', "'"),
            ('“', "\""),
            ('”', "\""),
            ('—', "-"),
            ('…', "..."),
            ('\u{a0}', " "),
        ] {
            assert_eq!(gsm7_replacement(ch), Some(r), "{ch:?}");
            // Every replacement is GSM-7 itself.
            assert_eq!(count(r).encoding, Encoding::Gsm7);
        }
        // Forced UCS-2 counts a GSM text in units; forced GSM-7 refuses
        // what it cannot carry.
        let c = count_in(&gsm(71), Encoding::Ucs2).unwrap();
        assert_eq!((c.encoding, c.units, c.segments), (Encoding::Ucs2, 71, 2));
        assert_eq!(count_in("€", Encoding::Gsm7).map(|c| c.units), Some(2));
        assert_eq!(count_in("’", Encoding::Gsm7), None);
        // Accented letters that are in the GSM alphabet stay GSM-7.
        assert_eq!(count("é è à ü ß Ñ").encoding, Encoding::Gsm7);
    }
}
