//! One-time codes: generation without modulo bias, storage as a keyed hash
//! bound to user, service and challenge, and constant-time comparison.
//!
//! The code itself never leaves this module except inside the SMS text; the
//! store only ever sees the MAC.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::config::Alphabet;
use crate::files::{self, FileRule};
use crate::random::{RandomError, RandomSource};
use crate::secret::SecretBytes;

const DIGITS: &[u8] = b"0123456789";
/// No 0/O, 1/I/L: codes are read off a phone screen and typed.
const ALPHANUMERIC: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";

impl Alphabet {
    fn chars(self) -> &'static [u8] {
        match self {
            Alphabet::Digits => DIGITS,
            Alphabet::Alphanumeric => ALPHANUMERIC,
        }
    }
}

/// A code as sent to the user. Zeroized on drop, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq, Zeroize)]
#[zeroize(drop)]
pub struct Code(String);

impl Code {
    /// The code's characters, for the SMS text and the MAC only.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Code([redacted])")
    }
}

/// Draws a code of `length` characters uniformly from `alphabet`, rejecting
/// random bytes that would bias the result.
pub fn generate(
    rng: &dyn RandomSource,
    length: usize,
    alphabet: Alphabet,
) -> Result<Code, RandomError> {
    let chars = alphabet.chars();
    let n = chars.len();
    // Largest multiple of n that fits in a byte: bytes at or above it are
    // thrown away so every character is equally likely.
    let limit = 256 - (256 % n);
    let mut out = String::with_capacity(length);
    let mut buf = Zeroizing::new([0u8; 32]);
    while out.len() < length {
        rng.fill(&mut buf[..])?;
        for &b in buf.iter() {
            if (b as usize) < limit && out.len() < length {
                out.push(chars[b as usize % n] as char);
            }
        }
    }
    Ok(Code(out))
}

/// What the user typed, normalised: spaces and dashes dropped, upper-cased
/// for the alphanumeric alphabet. `None` if it cannot be a code at all.
pub fn normalise(input: &str, alphabet: Alphabet) -> Option<Zeroizing<String>> {
    let mut s = Zeroizing::new(String::with_capacity(input.len()));
    for ch in input.chars() {
        if ch.is_whitespace() || ch == '-' {
            continue;
        }
        let ch = match alphabet {
            Alphabet::Digits => ch,
            Alphabet::Alphanumeric => ch.to_ascii_uppercase(),
        };
        if !ch.is_ascii_alphanumeric() {
            return None;
        }
        s.push(ch);
    }
    if s.is_empty() || s.len() > 64 {
        None
    } else {
        Some(s)
    }
}

/// A 128-bit random challenge identifier (also the RADIUS State).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChallengeId(pub [u8; 16]);

/// `bytes` as two lowercase hex digits each, written into one string (a
/// `format!` per byte costs a string per byte, on every login's key).
pub(crate) fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

impl ChallengeId {
    /// A fresh identifier from `rng` (the OS CSPRNG outside tests).
    pub fn random(rng: &dyn RandomSource) -> Result<Self, RandomError> {
        let mut b = [0u8; 16];
        rng.fill(&mut b)?;
        Ok(ChallengeId(b))
    }

    /// 32 lowercase hex digits: the store's key for the challenge.
    pub fn to_hex(&self) -> String {
        lower_hex(&self.0)
    }

    /// The identifier [`ChallengeId::to_hex`] wrote; `None` for anything
    /// but 32 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.is_ascii() {
            return None;
        }
        let mut b = [0u8; 16];
        for (i, out) in b.iter_mut().enumerate() {
            *out = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(ChallengeId(b))
    }
}

impl fmt::Debug for ChallengeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Enough to correlate log lines, not enough to replay a State.
        write!(f, "ChallengeId({}…)", &self.to_hex()[..8])
    }
}

/// The secret key that turns codes into MACs. Zeroized on drop.
pub struct OtpKey(SecretBytes);

impl fmt::Debug for OtpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpKey([redacted])")
    }
}

/// Why the code key cannot be used. No code can be made or checked
/// without it, so logins fail closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file is unreadable or unsafe (others could read it).
    #[error(transparent)]
    File(#[from] files::FileError),
    /// The key file holds fewer than 32 bytes.
    #[error("{path}: the code key must hold at least 32 bytes; delete it and a new one is made on the next login")]
    TooShort {
        /// The key file.
        path: String,
    },
    /// There was no key and a new one could not be written.
    #[error("{path}: cannot create the code key: {source}; make its directory exist and be writable by root")]
    Create {
        /// The key file.
        path: String,
        /// What the system answered.
        #[source]
        source: std::io::Error,
    },
    /// No randomness for a new key.
    #[error(transparent)]
    Random(#[from] RandomError),
}

impl OtpKey {
    /// A key of these bytes (tests, and tools that hold the key already).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        OtpKey(SecretBytes::new(bytes.to_vec()))
    }

    /// Loads the key at `path`, creating it (32 random bytes, mode 0600) if
    /// it does not exist. Concurrent first logins agree on one key: the new
    /// key is written to a temporary file and linked into place, and whoever
    /// loses the race reads the winner's.
    pub fn load_or_create(path: &Path, rng: &dyn RandomSource) -> Result<Self, KeyError> {
        match files::read_bytes_checked(path, FileRule::Secret) {
            Ok(bytes) => return Self::checked(path, bytes),
            Err(files::FileError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let create_err = |source| KeyError::Create {
            path: path.display().to_string(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("/"));
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(create_err)?;
        }
        let mut key = Zeroizing::new(vec![0u8; 32]);
        rng.fill(&mut key)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".otp.key.")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .map_err(create_err)?;
        tmp.write_all(&key).map_err(create_err)?;
        tmp.as_file().sync_all().map_err(create_err)?;
        match std::fs::hard_link(tmp.path(), path) {
            Ok(()) => Ok(OtpKey(key.into())),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let bytes = files::read_bytes_checked(path, FileRule::Secret)?;
                Self::checked(path, bytes)
            }
            Err(e) => Err(create_err(e)),
        }
    }

    /// Loads the key at `path` without ever creating one (tools that only
    /// look, such as `smsotp doctor`): a missing file is
    /// [`KeyError::File`] with a not-found [`files::FileError::Read`].
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let bytes = files::read_bytes_checked(path, FileRule::Secret)?;
        Self::checked(path, bytes)
    }

    fn checked(path: &Path, bytes: Zeroizing<Vec<u8>>) -> Result<Self, KeyError> {
        if bytes.len() < 32 {
            return Err(KeyError::TooShort {
                path: path.display().to_string(),
            });
        }
        Ok(OtpKey(bytes.into()))
    }

    /// The MAC of a code, bound to the challenge it was issued for, the user
    /// and the service (or NAS), so it is worth nothing anywhere else.
    pub fn mac(&self, challenge: &ChallengeId, user: &str, service: &str, code: &str) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose())
            .unwrap_or_else(|_| unreachable_hmac());
        m.update(b"smsotp-code-v1\0");
        m.update(&challenge.0);
        for part in [user, service, code] {
            m.update(&(part.len() as u32).to_be_bytes());
            m.update(part.as_bytes());
        }
        m.finalize().into_bytes().into()
    }

    /// The one challenge id of `user`'s logins to `service`, for front ends
    /// that cannot carry a State between rounds (RADIUS append mode): the
    /// second round finds the challenge by it, with no search. Secret like
    /// the key, and never sent anywhere.
    pub fn login_id(&self, user: &str, service: &str) -> ChallengeId {
        let mac = self.mac_labelled("smsotp-login-id-v1", &[user.as_bytes(), service.as_bytes()]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&mac[..16]);
        ChallengeId(id)
    }

    /// The challenge id of the first round that request `request_key` (a
    /// RADIUS Request Authenticator, unique per request and the same in
    /// its retransmits) opens for `user` at `service`: a retransmit that
    /// reaches a restarted server (its duplicate cache gone) finds the
    /// challenge its first copy opened, instead of sending a second SMS.
    /// Unpredictable without the key, like a random id.
    pub fn request_id(&self, user: &str, service: &str, request_key: &[u8]) -> ChallengeId {
        let mac = self.mac_labelled(
            "smsotp-request-id-v1",
            &[user.as_bytes(), service.as_bytes(), request_key],
        );
        let mut id = [0u8; 16];
        id.copy_from_slice(&mac[..16]);
        ChallengeId(id)
    }

    /// A public name of the key: 16 hex digits (64 bits of an HMAC under
    /// the key of a fixed label), so hosts that share a store can tell
    /// whether they hold the same key without showing it. It reveals
    /// nothing about the key (a PRF output of a label no code path MACs),
    /// and two different keys share one with odds of 2^-64.
    pub fn fingerprint(&self) -> String {
        lower_hex(&self.mac_labelled("smsotp key fingerprint v1", &[])[..8])
    }

    /// A MAC for things other than codes (e.g. backup codes' lookup keys).
    pub fn mac_labelled(&self, label: &str, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose())
            .unwrap_or_else(|_| unreachable_hmac());
        m.update(label.as_bytes());
        m.update(b"\0");
        for p in parts {
            m.update(&(p.len() as u32).to_be_bytes());
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }
}

/// HMAC accepts keys of any length, so construction cannot fail.
#[cold]
fn unreachable_hmac() -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(&[0u8; 32]).unwrap_or_else(|_| std::process::abort())
}

/// Constant-time equality of two MACs.
pub fn macs_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::{FixedRandom, OsRandom};

    #[test]
    fn fingerprint_names_the_key_and_nothing_else() {
        let a = OtpKey::from_bytes(&[7u8; 32]);
        let fp = a.fingerprint();
        assert_eq!(fp.len(), 16);
        assert!(fp
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(fp, OtpKey::from_bytes(&[7u8; 32]).fingerprint());
        assert_ne!(fp, OtpKey::from_bytes(&[8u8; 32]).fingerprint());
        // Not a prefix of the key, nor of a MAC a login stores.
        assert!(!fp.starts_with("0707"));
        let id = ChallengeId([0; 16]);
        let mac: String = a
            .mac(&id, "", "", "")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!mac.starts_with(&fp));
    }

    #[test]
    fn codes_have_the_length_and_alphabet() {
        let rng = OsRandom;
        for len in 6..=10 {
            let c = generate(&rng, len, Alphabet::Digits).unwrap();
            assert_eq!(c.as_str().len(), len);
            assert!(c.as_str().bytes().all(|b| b.is_ascii_digit()));
            let c = generate(&rng, len, Alphabet::Alphanumeric).unwrap();
            assert!(
                c.as_str().bytes().all(|b| ALPHANUMERIC.contains(&b)),
                "{}",
                c.as_str()
            );
        }
    }

    #[test]
    fn digits_are_unbiased() {
        // 60,000 digits; each should appear ~6,000 times. A modulo-biased
        // generator (byte % 10) would give 0-5 about 2.4% more often than
        // 6-9: far outside this tolerance.
        let rng = FixedRandom::new(0x1234_5678);
        let mut counts = [0u32; 10];
        for _ in 0..10_000 {
            for b in generate(&rng, 6, Alphabet::Digits)
                .unwrap()
                .as_str()
                .bytes()
            {
                counts[(b - b'0') as usize] += 1;
            }
        }
        for (d, &c) in counts.iter().enumerate() {
            assert!((5_750..=6_250).contains(&c), "digit {d} appeared {c} times");
        }
        let low: u32 = counts[..6].iter().sum::<u32>() * 4;
        let high: u32 = counts[6..].iter().sum::<u32>() * 6;
        let skew = (low as f64 - high as f64).abs() / high as f64;
        assert!(skew < 0.015, "skew {skew}");
    }

    #[test]
    fn normalise_accepts_spaced_input() {
        assert_eq!(
            normalise(" 123 456\n", Alphabet::Digits).unwrap().as_str(),
            "123456"
        );
        assert_eq!(
            normalise("k7p-x9q", Alphabet::Alphanumeric)
                .unwrap()
                .as_str(),
            "K7PX9Q"
        );
        assert!(normalise("", Alphabet::Digits).is_none());
        assert!(normalise("12;drop", Alphabet::Digits).is_none());
    }

    #[test]
    fn login_ids_are_keyed_and_one_per_user_and_service() {
        let key = OtpKey::from_bytes(&[7u8; 32]);
        let id = key.login_id("alice", "radius:vpn");
        assert_eq!(id, key.login_id("alice", "radius:vpn"));
        assert_ne!(id, key.login_id("alice", "radius:vpn2"));
        assert_ne!(id, key.login_id("bob", "radius:vpn"));
        assert_ne!(key.login_id("ab", "c"), key.login_id("a", "bc"));
        assert_ne!(
            id,
            OtpKey::from_bytes(&[8u8; 32]).login_id("alice", "radius:vpn")
        );
    }

    #[test]
    fn mac_is_bound_to_every_part() {
        let key = OtpKey::from_bytes(&[7u8; 32]);
        let id = ChallengeId([1u8; 16]);
        let base = key.mac(&id, "alice", "sshd", "123456");
        assert!(macs_equal(&base, &key.mac(&id, "alice", "sshd", "123456")));
        assert!(!macs_equal(&base, &key.mac(&id, "alice", "sudo", "123456")));
        assert!(!macs_equal(&base, &key.mac(&id, "bob", "sshd", "123456")));
        assert!(!macs_equal(
            &base,
            &key.mac(&ChallengeId([2u8; 16]), "alice", "sshd", "123456")
        ));
        assert!(!macs_equal(&base, &key.mac(&id, "alice", "sshd", "123457")));
        // Length-prefixing: moving a character between parts changes the MAC.
        assert!(!macs_equal(
            &key.mac(&id, "ab", "c", "1"),
            &key.mac(&id, "a", "bc", "1")
        ));
        let other = OtpKey::from_bytes(&[8u8; 32]);
        assert!(!macs_equal(
            &base,
            &other.mac(&id, "alice", "sshd", "123456")
        ));
    }

    #[test]
    fn key_is_created_once_with_mode_0600() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/otp.key");
        let k1 = OtpKey::load_or_create(&p, &OsRandom).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k2 = OtpKey::load_or_create(&p, &OsRandom).unwrap();
        assert_eq!(k1.0.expose(), k2.0.expose());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = OtpKey::load_or_create(&p, &OsRandom).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }

    #[test]
    fn challenge_ids_round_trip_hex() {
        let id = ChallengeId::random(&OsRandom).unwrap();
        assert_eq!(ChallengeId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ChallengeId::from_hex("zz"), None);
        assert!(!format!("{id:?}").contains(&id.to_hex()));
        let id = ChallengeId([
            0x00, 0x0f, 0xa0, 0xff, 0x5c, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xab,
        ]);
        assert_eq!(id.to_hex(), "000fa0ff5c0102030405060708090aab");
        assert_eq!(lower_hex(&[]), "");
    }
}
