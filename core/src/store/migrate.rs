//! Moving what admins and users decided from one store to another
//! (`smsotp store migrate`): registered numbers, backup-code hashes,
//! opt-outs, users' languages and lockouts that still run. Pending challenges, send windows
//! and failure counts below the lockout are short-lived and stay behind:
//! a login in flight starts again, a window refills within its length.
//!
//! A backend reads everything out with [`Store::export`] and takes one
//! record at a time with [`Store::import_record`], which reads the
//! target's record for that user and writes the incoming one in one
//! atomic step, as the rule of its kind ([`Record::outcome`]) says. The
//! rules are stated here once, so a dry run ([`plan`]) and every backend
//! agree; they make an import idempotent (a second run finds everything
//! [`Outcome::Present`]) and never let an older record replace a newer
//! one:
//!
//! - a number: copied if the target has none; already there if the
//!   target has the same number; else the later `set_at` wins (a tie
//!   keeps the target's);
//! - backup codes: a user's set is copied only if the target has none for
//!   them; the same set (the same hashes) is already there; a different
//!   set in the target (codes made there since) stays;
//! - an opt-out: copied if the target has none; already there if it has
//!   one (whoever set it);
//! - a language: copied if the target has none for the user; already
//!   there if it has the same; a different one in the target stays;
//! - a lockout: the later end wins; the same end is already there.

use std::collections::{BTreeMap, BTreeSet};

use super::{BackupHash, PhoneRecord, Store, StoreError};
use crate::clock::Millis;

/// Everything durable a store holds, as [`Store::export`] reads it at
/// `now`, users in order within each kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Registered numbers, one per user.
    pub phones: Vec<UserPhone>,
    /// Backup-code hashes, one set per user (users without codes are
    /// left out).
    pub backup_codes: Vec<BackupSet>,
    /// Users marked opted out.
    pub opt_outs: Vec<OptOut>,
    /// Users' languages (`smsotp user set-language`).
    pub languages: Vec<UserLanguage>,
    /// Lockouts that have not ended at the `now` of the export.
    pub lockouts: Vec<Lockout>,
    /// What the store holds that is not exported, counted.
    pub left_behind: LeftBehind,
}

/// A registered number and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPhone {
    /// The user.
    pub user: String,
    /// The number, and who set it when.
    pub phone: PhoneRecord,
}

/// All of a user's backup codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSet {
    /// The user.
    pub user: String,
    /// The codes' tags and hashes (tags are keyed with `otp.key_file`:
    /// they only work with the same key).
    pub codes: Vec<BackupHash>,
    /// When they were made, if the backend keeps it (SQLite does).
    pub set_at: Option<Millis>,
}

/// A user marked opted out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOut {
    /// The user.
    pub user: String,
    /// Who marked them ("admin:root").
    pub set_by: String,
    /// When (ms since the epoch).
    pub set_at: Millis,
}

/// The language a user reads messages in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserLanguage {
    /// The user.
    pub user: String,
    /// The language tag ("de").
    pub language: String,
}

/// A lockout that still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockout {
    /// The user.
    pub user: String,
    /// Consecutive failures that led to it.
    pub count: u32,
    /// When it ends (ms since the epoch).
    pub locked_until: Millis,
}

/// What an export leaves behind on purpose, counted so an admin knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeftBehind {
    /// Challenges (logins waiting for a code) that had not expired.
    pub challenges: u64,
    /// Users with SMS counted in a send window.
    pub send_windows: u64,
    /// Users with failures counted but not locked out (or whose lockout
    /// has ended).
    pub failure_counts: u64,
}

/// One record on its way into a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// A registered number.
    Phone(&'a UserPhone),
    /// A user's backup codes.
    BackupCodes(&'a BackupSet),
    /// An opt-out.
    OptOut(&'a OptOut),
    /// A user's language.
    Language(&'a UserLanguage),
    /// A lockout.
    Lockout(&'a Lockout),
}

/// What happened to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written into the target.
    Copied,
    /// The target holds the same already; nothing written.
    Present,
    /// The target holds a newer (or its own) record for the user, which
    /// stays; nothing written.
    Kept,
}

/// What the target holds for the user of a record, as the record's rule
/// needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    /// The user's number, if any.
    Phone(Option<PhoneRecord>),
    /// The user's backup codes (empty: none).
    BackupCodes(Vec<BackupHash>),
    /// Whether the user is marked opted out.
    OptOut(bool),
    /// The user's language, if set.
    Language(Option<String>),
    /// When the user's lockout ends, if it runs at the import's `now`.
    Lockout(Option<Millis>),
}

impl Record<'_> {
    /// The user the record is about.
    pub fn user(&self) -> &str {
        match self {
            Record::Phone(p) => &p.user,
            Record::BackupCodes(b) => &b.user,
            Record::OptOut(o) => &o.user,
            Record::Language(l) => &l.user,
            Record::Lockout(l) => &l.user,
        }
    }

    /// The rule of the record's kind (see the module doc): whether it is
    /// to be written over what the target holds. A mismatched `existing`
    /// (of another kind) keeps the target's record.
    pub fn outcome(&self, existing: &Existing) -> Outcome {
        match (self, existing) {
            (Record::Phone(_), Existing::Phone(None)) => Outcome::Copied,
            (Record::Phone(p), Existing::Phone(Some(old))) => {
                if old.e164 == p.phone.e164 {
                    Outcome::Present
                } else if p.phone.set_at > old.set_at {
                    Outcome::Copied
                } else {
                    Outcome::Kept
                }
            }
            (Record::BackupCodes(b), Existing::BackupCodes(old)) => {
                if old.is_empty() {
                    Outcome::Copied
                } else if same_codes(old, &b.codes) {
                    Outcome::Present
                } else {
                    Outcome::Kept
                }
            }
            (Record::OptOut(_), Existing::OptOut(false)) => Outcome::Copied,
            (Record::OptOut(_), Existing::OptOut(true)) => Outcome::Present,
            (Record::Language(_), Existing::Language(None)) => Outcome::Copied,
            (Record::Language(l), Existing::Language(Some(old))) => {
                if *old == l.language {
                    Outcome::Present
                } else {
                    Outcome::Kept
                }
            }
            (Record::Lockout(l), Existing::Lockout(until)) => match until {
                None => Outcome::Copied,
                Some(u) if *u == l.locked_until => Outcome::Present,
                Some(u) if *u > l.locked_until => Outcome::Kept,
                Some(_) => Outcome::Copied,
            },
            _ => Outcome::Kept,
        }
    }
}

/// Whether two sets of backup codes are the same codes, in any order.
fn same_codes(a: &[BackupHash], b: &[BackupHash]) -> bool {
    let set = |c: &[BackupHash]| {
        c.iter()
            .map(|h| (h.tag, h.hash.clone()))
            .collect::<BTreeSet<_>>()
    };
    a.len() == b.len() && set(a) == set(b)
}

/// Records of one kind, by what happened to them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindCounts {
    /// Written into the target.
    pub copied: u64,
    /// Already there.
    pub present: u64,
    /// Not written: the target's record is newer (or its own).
    pub kept: u64,
}

impl KindCounts {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Copied => self.copied += 1,
            Outcome::Present => self.present += 1,
            Outcome::Kept => self.kept += 1,
        }
    }
}

/// What an import did (or a dry run would do), per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    /// Registered numbers.
    pub phones: KindCounts,
    /// Users' sets of backup codes.
    pub backup_codes: KindCounts,
    /// Opt-outs.
    pub opt_outs: KindCounts,
    /// Users' languages.
    pub languages: KindCounts,
    /// Lockouts.
    pub lockouts: KindCounts,
}

impl ImportCounts {
    fn add(&mut self, r: &Record<'_>, o: Outcome) {
        match r {
            Record::Phone(_) => self.phones.add(o),
            Record::BackupCodes(_) => self.backup_codes.add(o),
            Record::OptOut(_) => self.opt_outs.add(o),
            Record::Language(_) => self.languages.add(o),
            Record::Lockout(_) => self.lockouts.add(o),
        }
    }

    /// Records written, of every kind.
    pub fn copied(&self) -> u64 {
        self.phones.copied
            + self.backup_codes.copied
            + self.opt_outs.copied
            + self.languages.copied
            + self.lockouts.copied
    }
}

impl Snapshot {
    /// Every record, kind by kind.
    fn records(&self) -> impl Iterator<Item = Record<'_>> {
        self.phones
            .iter()
            .map(Record::Phone)
            .chain(self.backup_codes.iter().map(Record::BackupCodes))
            .chain(self.opt_outs.iter().map(Record::OptOut))
            .chain(self.languages.iter().map(Record::Language))
            .chain(self.lockouts.iter().map(Record::Lockout))
    }

    /// Whether it holds no record at all.
    pub fn is_empty(&self) -> bool {
        self.phones.is_empty()
            && self.backup_codes.is_empty()
            && self.opt_outs.is_empty()
            && self.languages.is_empty()
            && self.lockouts.is_empty()
    }
}

/// Writes every record of `snapshot` into `target` by its kind's rule,
/// one atomic step each; `now` judges which of the target's lockouts
/// still run. Stops at the first error (what was written stays: running
/// it again finishes the job).
pub fn import(
    target: &dyn Store,
    snapshot: &Snapshot,
    now: Millis,
) -> Result<ImportCounts, StoreError> {
    let mut counts = ImportCounts::default();
    for r in snapshot.records() {
        let o = target.import_record(&r, now)?;
        counts.add(&r, o);
    }
    Ok(counts)
}

/// What [`import`] would do to a target that holds `target` (its export
/// at the same `now`): the dry run, by the same rules.
pub fn plan(target: &Snapshot, snapshot: &Snapshot) -> ImportCounts {
    let phones: BTreeMap<&str, &PhoneRecord> = target
        .phones
        .iter()
        .map(|p| (p.user.as_str(), &p.phone))
        .collect();
    let codes: BTreeMap<&str, &[BackupHash]> = target
        .backup_codes
        .iter()
        .map(|b| (b.user.as_str(), b.codes.as_slice()))
        .collect();
    let opted: BTreeSet<&str> = target.opt_outs.iter().map(|o| o.user.as_str()).collect();
    let languages: BTreeMap<&str, &str> = target
        .languages
        .iter()
        .map(|l| (l.user.as_str(), l.language.as_str()))
        .collect();
    let locked: BTreeMap<&str, Millis> = target
        .lockouts
        .iter()
        .map(|l| (l.user.as_str(), l.locked_until))
        .collect();
    let mut counts = ImportCounts::default();
    for r in snapshot.records() {
        let user = r.user();
        let existing = match r {
            Record::Phone(_) => Existing::Phone(phones.get(user).map(|p| (*p).clone())),
            Record::BackupCodes(_) => {
                Existing::BackupCodes(codes.get(user).map_or_else(Vec::new, |c| c.to_vec()))
            }
            Record::OptOut(_) => Existing::OptOut(opted.contains(user)),
            Record::Language(_) => Existing::Language(languages.get(user).map(|l| (*l).to_owned())),
            Record::Lockout(_) => Existing::Lockout(locked.get(user).copied()),
        };
        counts.add(&r, r.outcome(&existing));
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(user: &str, e164: &str, set_at: Millis) -> UserPhone {
        UserPhone {
            user: user.into(),
            phone: PhoneRecord {
                e164: e164.into(),
                set_at,
                set_by: "admin:root".into(),
            },
        }
    }

    fn code(n: u8) -> BackupHash {
        BackupHash {
            tag: [n; 8],
            hash: format!("$argon2id$h{n}"),
        }
    }

    #[test]
    fn numbers_the_later_wins_and_a_tie_keeps_the_target() {
        let p = phone("alice", "+12025550143", 10);
        let r = Record::Phone(&p);
        assert_eq!(r.outcome(&Existing::Phone(None)), Outcome::Copied);
        let same = phone("alice", "+12025550143", 99).phone;
        assert_eq!(r.outcome(&Existing::Phone(Some(same))), Outcome::Present);
        let older = phone("alice", "+12025550199", 9).phone;
        assert_eq!(r.outcome(&Existing::Phone(Some(older))), Outcome::Copied);
        let tie = phone("alice", "+12025550199", 10).phone;
        assert_eq!(r.outcome(&Existing::Phone(Some(tie))), Outcome::Kept);
        let newer = phone("alice", "+12025550199", 11).phone;
        assert_eq!(r.outcome(&Existing::Phone(Some(newer))), Outcome::Kept);
    }

    #[test]
    fn backup_codes_only_into_a_user_without_any() {
        let b = BackupSet {
            user: "alice".into(),
            codes: vec![code(1), code(2)],
            set_at: None,
        };
        let r = Record::BackupCodes(&b);
        assert_eq!(r.outcome(&Existing::BackupCodes(vec![])), Outcome::Copied);
        assert_eq!(
            r.outcome(&Existing::BackupCodes(vec![code(2), code(1)])),
            Outcome::Present
        );
        assert_eq!(
            r.outcome(&Existing::BackupCodes(vec![code(1)])),
            Outcome::Kept
        );
        assert_eq!(
            r.outcome(&Existing::BackupCodes(vec![code(3), code(4)])),
            Outcome::Kept
        );
    }

    #[test]
    fn opt_outs_languages_and_lockouts() {
        let o = OptOut {
            user: "bob".into(),
            set_by: "admin:root".into(),
            set_at: 5,
        };
        let r = Record::OptOut(&o);
        assert_eq!(r.outcome(&Existing::OptOut(false)), Outcome::Copied);
        assert_eq!(r.outcome(&Existing::OptOut(true)), Outcome::Present);
        let l = Lockout {
            user: "bob".into(),
            count: 10,
            locked_until: 1_000,
        };
        let r = Record::Lockout(&l);
        assert_eq!(r.outcome(&Existing::Lockout(None)), Outcome::Copied);
        assert_eq!(r.outcome(&Existing::Lockout(Some(999))), Outcome::Copied);
        assert_eq!(r.outcome(&Existing::Lockout(Some(1_000))), Outcome::Present);
        assert_eq!(r.outcome(&Existing::Lockout(Some(1_001))), Outcome::Kept);
        let de = UserLanguage {
            user: "bob".into(),
            language: "de".into(),
        };
        let r = Record::Language(&de);
        assert_eq!(r.outcome(&Existing::Language(None)), Outcome::Copied);
        assert_eq!(
            r.outcome(&Existing::Language(Some("de".into()))),
            Outcome::Present
        );
        assert_eq!(
            r.outcome(&Existing::Language(Some("fr".into()))),
            Outcome::Kept
        );
        let r = Record::Lockout(&l);
        // A record meets what the target holds of its own kind only.
        assert_eq!(r.outcome(&Existing::OptOut(false)), Outcome::Kept);
    }

    #[test]
    fn a_dry_run_counts_as_the_import_would() {
        let snap = Snapshot {
            phones: vec![
                phone("alice", "+12025550143", 10),
                phone("bob", "+12025550144", 10),
            ],
            backup_codes: vec![BackupSet {
                user: "alice".into(),
                codes: vec![code(1)],
                set_at: Some(3),
            }],
            opt_outs: vec![],
            languages: vec![UserLanguage {
                user: "alice".into(),
                language: "nl".into(),
            }],
            lockouts: vec![Lockout {
                user: "carol".into(),
                count: 10,
                locked_until: 500,
            }],
            left_behind: LeftBehind::default(),
        };
        let target = Snapshot {
            phones: vec![phone("bob", "+12025550199", 20)],
            ..Snapshot::default()
        };
        let c = plan(&target, &snap);
        assert_eq!(
            (c.phones.copied, c.phones.present, c.phones.kept),
            (1, 0, 1)
        );
        assert_eq!(c.backup_codes.copied, 1);
        assert_eq!(c.lockouts.copied, 1);
        assert_eq!(c.languages.copied, 1);
        assert_eq!(c.copied(), 4);
        assert_eq!(plan(&snap, &snap).copied(), 0, "a store into itself");
    }
}
