//! Backup codes (WSO2's BackupCode): a handful of single-use codes an admin
//! hands out for the day the phone is lost, dead or out of signal.
//!
//! A code is 10 characters from the no-look-alike alphabet of [`crate::otp`]
//! (about 49.5 bits), shown as `xxxxx-xxxxx`. The store keeps only an
//! argon2id hash of each (m = 19 MiB, t = 2, p = 1: OWASP's minimum, about
//! 20-40 ms per hash here, paid once per login that types a backup code)
//! and an 8-byte lookup tag, an HMAC under the code key of user and code,
//! so a login verifies argon2 for the one matching row instead of all ten.
//! The tag says nothing about the code without the key.
//!
//! Redeeming deletes the row in one transaction: of two concurrent logins
//! with one code, exactly one succeeds.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use crate::clock::Millis;
use crate::otp::OtpKey;
use crate::random::{RandomError, RandomSource};
use crate::store::{BackupHash, Store, StoreError};

/// Characters of a backup code: as the alphanumeric SMS codes (no 0/O, 1/I/L).
const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Characters in a code (without the dash).
pub const CODE_LEN: usize = 10;
/// How many codes `generate` makes unless told otherwise.
pub const DEFAULT_COUNT: usize = 10;
/// At most this many codes per user.
pub const MAX_COUNT: usize = 50;

/// argon2id cost: 19 MiB, 2 passes, 1 lane (OWASP's recommended minimum).
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

/// Why backup codes could not be made or checked. Never a wrong code:
/// that is [`Redeemed::NoMatch`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The OS could not give randomness for new codes.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// argon2 refused to hash or parse a hash (a damaged stored hash, or
    /// no memory for its cost).
    #[error("cannot hash a backup code: {0}")]
    Hash(String),
}

fn argon2() -> Result<Argon2<'static>, BackupError> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None)
        .map_err(|e| BackupError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// What the user typed, if it has the shape of a backup code: 10 characters
/// of the alphabet once spaces and dashes are dropped (any case). Upper-case.
pub fn parse(input: &str) -> Option<Zeroizing<String>> {
    let mut s = Zeroizing::new(String::with_capacity(CODE_LEN));
    for ch in input.chars() {
        if ch.is_whitespace() || ch == '-' {
            continue;
        }
        let up = ch.to_ascii_uppercase();
        if !up.is_ascii() || !ALPHABET.contains(&(up as u8)) || s.len() >= CODE_LEN {
            return None;
        }
        s.push(up);
    }
    (s.len() == CODE_LEN).then_some(s)
}

/// How many bytes at the end of `field` (a password with a code typed
/// after it, as RADIUS append mode takes it) are a backup code: 11 with its
/// dash (`xxxxx-xxxxx`), since ten characters of a password and an SMS code
/// could look like one; 10 without the dash only when a backup code is all
/// the challenge takes (`only_backup`). `None`: no backup code there.
pub fn appended_len(field: &[u8], only_backup: bool) -> Option<usize> {
    let tail = |n: usize| {
        field
            .len()
            .checked_sub(n)
            .and_then(|start| field.get(start..))
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(parse)
            .is_some()
    };
    let dash_at = field.len().checked_sub(6).and_then(|i| field.get(i));
    if tail(11) && dash_at == Some(&b'-') {
        Some(11)
    } else if only_backup && tail(10) {
        Some(10)
    } else {
        None
    }
}

/// The lookup tag of `code` (normalised) for `user`.
fn tag(key: &OtpKey, user: &str, code: &str) -> [u8; 8] {
    let mac = key.mac_labelled("smsotp-backup-tag-v1", &[user.as_bytes(), code.as_bytes()]);
    let mut t = [0u8; 8];
    t.copy_from_slice(&mac[..8]);
    t
}

/// A code as shown to people: lower case, `xxxxx-xxxxx`.
fn display(code: &str) -> String {
    let lower = code.to_ascii_lowercase();
    format!("{}-{}", &lower[..5], &lower[5..])
}

/// Makes `count` new codes for `user`, replacing any old ones, and returns
/// them for printing (once: only hashes are kept).
pub fn generate(
    store: &dyn Store,
    key: &OtpKey,
    rng: &dyn RandomSource,
    user: &str,
    count: usize,
    now: Millis,
) -> Result<Vec<Zeroizing<String>>, BackupError> {
    let a2 = argon2()?;
    let mut shown = Vec::with_capacity(count);
    let mut hashes = Vec::with_capacity(count);
    let mut tags = std::collections::HashSet::new();
    while shown.len() < count.min(MAX_COUNT) {
        let code = draw(rng)?;
        let t = tag(key, user, &code);
        // Distinct tags keep each lookup to one row.
        if !tags.insert(t) {
            continue;
        }
        let mut salt = [0u8; 16];
        rng.fill(&mut salt)?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| BackupError::Hash(e.to_string()))?;
        let hash = a2
            .hash_password(code.as_bytes(), &salt)
            .map_err(|e| BackupError::Hash(e.to_string()))?
            .to_string();
        hashes.push(BackupHash { tag: t, hash });
        shown.push(Zeroizing::new(display(&code)));
    }
    store.replace_backup_codes(user, &hashes, now)?;
    Ok(shown)
}

/// Ten characters drawn uniformly (rejection sampling, as SMS codes).
fn draw(rng: &dyn RandomSource) -> Result<Zeroizing<String>, RandomError> {
    let n = ALPHABET.len();
    let limit = 256 - (256 % n);
    let mut out = Zeroizing::new(String::with_capacity(CODE_LEN));
    let mut buf = Zeroizing::new([0u8; 32]);
    while out.len() < CODE_LEN {
        rng.fill(&mut buf[..])?;
        for &b in buf.iter() {
            if (b as usize) < limit && out.len() < CODE_LEN {
                out.push(ALPHABET[b as usize % n] as char);
            }
        }
    }
    Ok(out)
}

/// The outcome of typing a backup code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redeemed {
    /// Accepted and used up; this many are left.
    Accepted {
        /// Codes the user still has.
        left: u32,
    },
    /// Not one of the user's codes (or already used).
    NoMatch,
}

/// Checks `input` against `user`'s codes and, if it is one, uses it up
/// (deleting `challenge` in the same transaction).
pub fn redeem(
    store: &dyn Store,
    key: &OtpKey,
    user: &str,
    input: &str,
    challenge: Option<&crate::otp::ChallengeId>,
) -> Result<Redeemed, BackupError> {
    let Some(code) = parse(input) else {
        return Ok(Redeemed::NoMatch);
    };
    let t = tag(key, user, &code);
    let a2 = argon2()?;
    for hash in store.backup_candidates(user, &t)? {
        let Ok(parsed) = PasswordHash::new(&hash) else {
            continue;
        };
        if a2.verify_password(code.as_bytes(), &parsed).is_ok() {
            return Ok(match store.consume_backup_code(user, &hash, challenge)? {
                Some(left) => Redeemed::Accepted { left },
                // A concurrent login used it first.
                None => Redeemed::NoMatch,
            });
        }
    }
    Ok(Redeemed::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::OsRandom;
    use crate::store::sqlite::SqliteStore;
    use std::time::{Duration, Instant};

    fn key() -> OtpKey {
        OtpKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn a_backup_code_after_a_password_is_found_by_its_shape() {
        // With its dash: always, whatever the challenge waits for.
        assert_eq!(appended_len(b"hunter2abcde-fghjk", false), Some(11));
        assert_eq!(appended_len(b"abcde-fghjk", false), Some(11));
        // Without: only where a backup code is all that is asked, since a
        // password's tail and an SMS code could look like one.
        assert_eq!(appended_len(b"hunter2abcdefghjk", false), None);
        assert_eq!(appended_len(b"hunter2abcdefghjk", true), Some(10));
        // The dash must be where a backup code has it.
        assert_eq!(appended_len(b"hunter2abcdef-ghjk", false), None);
        // An SMS code, or too short for anything.
        assert_eq!(appended_len(b"hunter2123456", true), None);
        assert_eq!(appended_len(b"", true), None);
        assert_eq!(appended_len(b"\xffabcde-fghjk", false), Some(11));
    }

    #[test]
    fn shape() {
        assert!(parse("abcde-fghjk").is_some());
        assert_eq!(parse(" ABCDE fghjk ").unwrap().as_str(), "ABCDEFGHJK");
        assert!(parse("abcde-fghj").is_none(), "too short");
        assert!(parse("abcde-fghjkm").is_none(), "too long");
        assert!(parse("abcde-fghj0").is_none(), "0 is not in the alphabet");
        assert!(parse("123456").is_none());
        assert!(parse("+12025550143").is_none());
    }

    #[test]
    fn generate_redeem_once_and_count_down() {
        let s = SqliteStore::open_in_memory().unwrap();
        let codes = generate(&s, &key(), &OsRandom, "alice", 3, 0).unwrap();
        assert_eq!(codes.len(), 3);
        for c in &codes {
            assert_eq!(c.len(), 11);
            assert_eq!(&c[5..6], "-");
        }
        assert_eq!(s.backup_codes_left("alice").unwrap(), 3);
        // Other users' codes, wrong codes and other shapes do not match.
        assert_eq!(
            redeem(&s, &key(), "bob", &codes[0], None).unwrap(),
            Redeemed::NoMatch
        );
        assert_eq!(
            redeem(&s, &key(), "alice", "zzzzz-zzzzz", None).unwrap(),
            Redeemed::NoMatch
        );
        assert_eq!(
            redeem(&s, &key(), "alice", &codes[1].to_uppercase(), None).unwrap(),
            Redeemed::Accepted { left: 2 }
        );
        assert_eq!(
            redeem(&s, &key(), "alice", &codes[1], None).unwrap(),
            Redeemed::NoMatch,
            "second use"
        );
        // A new set replaces the old one.
        let fresh = generate(&s, &key(), &OsRandom, "alice", 2, 0).unwrap();
        assert_eq!(
            redeem(&s, &key(), "alice", &codes[0], None).unwrap(),
            Redeemed::NoMatch
        );
        assert_eq!(
            redeem(&s, &key(), "alice", &fresh[0], None).unwrap(),
            Redeemed::Accepted { left: 1 }
        );
        assert_eq!(s.revoke_backup_codes("alice").unwrap(), 1);
        assert_eq!(s.backup_codes_left("alice").unwrap(), 0);
    }

    #[test]
    fn only_hashes_are_stored() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.db");
        let s = SqliteStore::open(&p, Duration::from_secs(5)).unwrap();
        let codes = generate(&s, &key(), &OsRandom, "alice", 2, 0).unwrap();
        drop(s);
        let raw = std::fs::read(&p).unwrap();
        let wal = std::fs::read(d.path().join("state.db-wal")).unwrap_or_default();
        for c in &codes {
            let plain = c.replace('-', "");
            for bytes in [&raw, &wal] {
                for form in [plain.as_str(), &plain.to_uppercase(), c.as_str()] {
                    assert!(
                        !bytes.windows(form.len()).any(|w| w == form.as_bytes()),
                        "a backup code is stored in clear"
                    );
                }
            }
        }
    }

    /// Two connections (two sshd processes) race to use one code: exactly
    /// one wins, whatever the interleaving.
    #[test]
    fn concurrent_use_of_one_code_succeeds_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.db");
        let s = SqliteStore::open(&p, Duration::from_secs(10)).unwrap();
        let codes = generate(&s, &key(), &OsRandom, "alice", 4, 0).unwrap();
        for (round, code) in codes.iter().enumerate() {
            let code = code.to_string();
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let (p, code, barrier) = (p.clone(), code.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        let s = SqliteStore::open(&p, Duration::from_secs(10)).unwrap();
                        barrier.wait();
                        redeem(&s, &key(), "alice", &code, None).unwrap()
                    })
                })
                .collect();
            let results: Vec<Redeemed> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let wins = results
                .iter()
                .filter(|r| matches!(r, Redeemed::Accepted { .. }))
                .count();
            assert_eq!(wins, 1, "round {round}: {results:?}");
        }
        assert_eq!(s.backup_codes_left("alice").unwrap(), 0);
    }

    /// The cost stays fit for a login prompt (printed with --nocapture).
    #[test]
    fn argon2_cost_is_moderate() {
        let s = SqliteStore::open_in_memory().unwrap();
        let codes = generate(&s, &key(), &OsRandom, "alice", 1, 0).unwrap();
        let t = Instant::now();
        assert!(matches!(
            redeem(&s, &key(), "alice", &codes[0], None).unwrap(),
            Redeemed::Accepted { .. }
        ));
        let took = t.elapsed();
        eprintln!("argon2id verify (m=19 MiB, t=2, p=1): {took:?}");
        // Generous: debug builds are ~10x slower than release.
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
}
