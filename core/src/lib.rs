//! smsotp-core: everything the PAM module and the RADIUS server share.
//!
//! A login is a conversation driven by [`flow`]: [`flow::Engine::start`]
//! decides whether the user needs a code (policy, lockout, phone lookup in
//! [`directory`]: the ordered lookup in `directory/mod.rs`, the phone list
//! file and its cache in `directory/file.rs`, system accounts and GECOS in
//! `directory/accounts.rs`, LDAP and Active Directory with their own
//! synchronous client in `directory/ldap/`, the check of every listed
//! number in `directory/check.rs`), takes one SMS from the rate-limit windows in [`store`]
//! (every window at once: the user's, the back-off, global, per number,
//! country and source, and the spend budget whose breaker trips once
//! and alerts, each enforced or only monitored, as `store/limits.rs`
//! lists and decides them),
//! makes a code ([`otp`]: OS CSPRNG, stored only as an HMAC bound to user,
//! service and challenge) and sends it through the provider chain in
//! [`sms`]; [`flow::Engine::answer`] checks the reply in constant time,
//! counts failures towards lockout, and handles resends and expiry. Every
//! decision becomes one [`audit`] line.
//!
//! The flow is arranged by concern: `flow/mod.rs` builds the
//! [`Engine`] and names the errors ([`flow::FlowError`], classified for
//! front ends as [`flow::Failure`]); `flow/machine.rs` is the state machine
//! (start, answer, resend, backup code, enrollment; the number step of
//! enrollment is `flow/enroll.rs`) and states the
//! code-acceptance rule once (`code_opens`; the store's `consume_code` is
//! its one-transaction implementation, tested to agree); `flow/outcome.rs`
//! holds what a step answers ([`Verdict`] and its reasons,
//! [`flow::ChallengeInfo`], [`flow::Retry`]); [`flow::texts`] holds every
//! text a user reads, for both front ends (prompts, "Code sent to …", the
//! tries left, RADIUS's one-line and append-mode variants, the unavailable
//! texts); `flow/events.rs` builds the audit events that end a login;
//! `flow/conversation.rs` is the interactive loop ([`flow::run`]) PAM
//! drives; `flow/receipt.rs` sends the same code once more after a failed
//! delivery receipt (smsotp-radiusd only; `sms/smpp/receipt.rs` reads
//! the SMPP receipts, `sms/http/callback.rs` the HTTP status callbacks); `flow/counting.rs` counts what became of each SMS
//! (sent, failed, refused by which limit, resent) in the store's
//! counters (`store/counters.rs`: per UTC day, provider and country, 8
//! days kept; a failed count never fails a login) and times each send
//! for a server's metrics ([`flow::SendObserver`]). Front ends decide nothing: they map outcomes, errors and
//! panics to their answer in one exhaustive match each. [`audit`] keeps the
//! record and its line and JSON forms apart from where lines go (the
//! syslog, stderr, file and server sinks in `audit/sinks.rs`).
//!
//! The words of every text a user reads come from [`messages`]: one
//! catalogue per language (`core/messages/<lang>.toml`, built in), the
//! admin's override files, and the SMS template of each language
//! ([`messages::Messages::sms_templates`]); `flow/language.rs` picks a
//! login's language (the user's setting in the store, the session's
//! locale, the number's country, the default), and each text in
//! [`flow::texts`] has an `_in` form taking that catalogue.
//!
//! The core is synchronous and starts no threads: it runs inside sshd's
//! forked PAM child. Time ([`clock`]) and randomness ([`random`]) are
//! injected, so expiry, windows and lockouts are tested without sleeping.
//! [`config`] turns the TOML file into validated types once: `config/mod.rs`
//! only assembles [`Config`]; each section owns its raw table, validation
//! and types (`config/otp.rs`, `policy.rs`, `store.rs`, `radius.rs`), and
//! `config/errors.rs` turns toml's errors into ours. [`files`] opens every
//! file without blocking and refuses what is not a regular file, what is
//! over its kind's size cap, unsafe symlinks, and files that others could
//! read or change. Every secret held in memory
//! (provider tokens, the SMPP password, the code key, RADIUS shared
//! secrets) is a [`secret::Secret`]: zeroized on drop, never printed.
//!
//! Sending lives in [`sms`]: the `SmsProvider` trait and the failover chain
//! in `sms/mod.rs`, one module per provider kind ([`sms::outbox`],
//! [`sms::command`], [`sms::http`] with its presets, [`sms::smpp`]), one
//! GSM 03.38 table ([`sms::gsm`]), one count of the SMS a text takes
//! ([`sms::segments`]: encoding and parts, for check-config, the SMPP
//! encoder and the audit) and one CA-bundle reader ([`sms::tls`])
//! shared by HTTP and SMPP. Each provider kind owns its raw table
//! (`deny_unknown_fields`), its key list, its validation and its validated
//! spec (`sms/outbox.rs`, `sms/command.rs`, `sms/http/config.rs` with the
//! presets, `sms/smpp/config.rs`); the file is parsed once, `sms/raw.rs`
//! reads each table's `kind` and `name` and then the table with its kind's
//! struct from that parse, so every error keeps its line and column, and
//! `sms/mod.rs` dispatches, one arm per kind.
//!
//! State lives behind the [`store::Store`] trait, in domain words
//! (challenges, send windows, failures and lockouts, backup codes,
//! enrolled phones, opt-outs; the reads a login needs together are one
//! method each) with a backend-neutral [`store::StoreError`]. Expiry is
//! each backend's business; the host's cache of validated numbers is an
//! optional extra of a backend ([`store::Store::number_cache`]), not
//! shared state. [`store::open`] opens the configured backend
//! ([`store::open_on_first_use`] for one PAM login: a Redis server is
//! reached only once the login needs state, after exemption), and
//! [`store::open_shared`] opens it for a server's threads as a
//! [`store::SharedBackend`] (`store/shared.rs`: a reply waits until its
//! writes are durable). `store/sqlite` is the embedded default
//! (`SqliteStore`; `sqlite/sweep.rs` deletes expired rows now and then;
//! `sqlite/shared.rs` and `sqlite/commit.rs` are the group commit
//! smsotp-radiusd uses); `store/redis` is the state several hosts share
//! on a Redis or Valkey server (`RedisStore`: the sync client, no thread;
//! each read-then-write a Lua script in `redis/scripts.rs`, TTLs as the
//! safety net; the code key's fingerprint checked as each connection
//! opens, [`store::Store::check_key_fingerprint`]; `redis/info.rs` what
//! doctor asks the server); `store/memory` is the in-memory reference backend.
//! `store/migrate.rs` moves what is durable (numbers, backup codes,
//! opt-outs, lockouts) from one store to another (`smsotp store
//! migrate`), by one rule per kind that each backend applies in one
//! atomic step. One conformance suite (`store/conformance.rs`) runs against
//! every backend: a new backend is done when it passes it.
//!
//! Imports run one way: `config` (the schema and the loader) calls into
//! `sms` to check each `[[provider]]`; `sms` uses only [`config::check`]
//! (locations, `ConfigError`, the value checkers), which imports nothing of
//! ours but the key table.
//!
//! `fuzzing.rs`, built only with the `fuzzing` feature (no shipped build
//! has it), hands the fuzz targets in `fuzz/` the decoders private to
//! their modules: SMPP framing, the LDAP message reader, the HTTP
//! success-body rule (docs/fuzzing.md).

// The other lints are set once for every crate in [workspace.lints]; this one
// only here, where other crates read the API (Cargo cannot add a lint to a
// crate that takes the workspace's).
#![deny(missing_docs)]

pub mod audit;
pub mod backup;
pub mod clock;
pub mod config;
pub mod directory;
pub mod files;
pub mod flow;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod messages;
pub mod otp;
pub mod phone;
pub mod random;
pub mod secret;
pub mod sms;
pub mod store;

pub use config::Config;
pub use flow::{Engine, LoginContext, Verdict};

/// `n` and the noun that goes with it, for messages people read: "1
/// client", "2 clients".
pub fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
