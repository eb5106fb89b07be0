//! `user` and `backup-codes`: look at and change one user's state through
//! the store, each change recorded in the audit trail as done by the
//! admin (`SUDO_USER`).

use std::path::Path;

use serde_json::json;
use smsotp_core::audit::Level as AuditLevel;
use smsotp_core::flow::Engine;
use smsotp_core::phone::Phone;
use smsotp_core::store::PhoneRecord;

use crate::args::{BackupCommand, UserCommand};
use crate::report::{exit, Failure};
use crate::{open_engine, store_err, Output};

/// Who did it, for the store and the audit trail.
fn admin() -> String {
    let who = std::env::var("SUDO_USER").unwrap_or_else(|_| "root".into());
    format!("admin:{who}")
}

fn audit(engine: &Engine, user: &str, event: &'static str, detail: String) {
    let ctx = smsotp_core::LoginContext {
        user: user.into(),
        service: "smsotp-admin".into(),
        rhost: None,
    };
    let mut e = engine.event_for(&ctx, event);
    e.outcome = Some("success");
    e.detail = Some(format!("{detail} (by {})", admin()));
    engine.record(AuditLevel::Info, &e);
}

fn note_unknown_user(user: &str, notes: &mut Vec<String>) {
    if matches!(nix::unistd::User::from_name(user), Ok(None)) {
        notes.push(format!(
            "note: {user} is not a system account here (fine for RADIUS-only users)"
        ));
    }
}

pub(crate) fn user_command(path: &Path, cmd: &UserCommand) -> Result<Output, Failure> {
    let engine = open_engine(path)?;
    let store = engine.store();
    let now = engine.now();
    let mut notes = Vec::new();
    let (text, json) = match cmd {
        UserCommand::Show { user } => {
            let found = engine.find_phone(user);
            let failures = store.failures(user, now).map_err(store_err)?;
            let per_user = engine.cfg.limits.sms_per_user;
            let window = store.sms_window(user, now, per_user).map_err(store_err)?;
            let left = store.backup_codes_left(user).map_err(store_err)?;
            let opt = store.opt_out(user).map_err(store_err)?;
            let stored = store.phone(user).map_err(store_err)?;
            let language = store.language(user).map_err(store_err)?;
            let reads = engine.catalogue_for(user).lang().to_owned();
            let policy = &engine.cfg.policy;
            let exempt = policy.exempt_users.contains(user);
            let (phone, source, error) = match &found {
                Ok(Some(f)) => (Some(f.phone.masked()), Some(f.source.clone()), None),
                Ok(None) => (None, None, None),
                Err(e) => (None, None, Some(e.to_string())),
            };
            let locked_for = failures
                .locked_until
                .map(|u| std::time::Duration::from_millis((u - now).max(0) as u64));
            let mut t = format!("user:          {user}\n");
            t.push_str(&format!(
                "phone:         {}\n",
                match (&phone, &error) {
                    (Some(p), _) => format!("{p} (from {})", source.clone().unwrap_or_default()),
                    (None, Some(e)) => format!("ERROR: {e}"),
                    (None, None) => "none registered".into(),
                }
            ));
            t.push_str(&format!(
                "lockout:       {}\n",
                match locked_for {
                    Some(d) => format!(
                        "LOCKED for {} more ({} consecutive failures); `smsotp user unlock {user}` lifts it",
                        smsotp_core::config::human_duration(std::time::Duration::from_secs(d.as_secs().max(1))),
                        failures.count
                    ),
                    None => format!("not locked ({} consecutive failures)", failures.count),
                }
            ));
            t.push_str(&format!(
                "SMS sent:      {} of {} in the last {} (limits.sms_per_user){}\n",
                window.sent,
                per_user.count,
                smsotp_core::config::human_duration(per_user.window),
                match window.next_allowed_at {
                    Some(at) => format!(
                        "; LIMIT REACHED: next SMS allowed in {} ({}); `smsotp user unlock {user}` clears it",
                        // Whole minutes, rounded up: the exact time follows.
                        smsotp_core::config::human_duration(std::time::Duration::from_secs(
                            ((at - now).max(0) as u64).div_ceil(60_000).max(1) * 60
                        )),
                        smsotp_core::clock::rfc3339(at)
                    ),
                    None => String::new(),
                }
            ));
            t.push_str(&format!("backup codes:  {left} left\n"));
            t.push_str(&format!(
                "opt-out:       {}\n",
                match &opt {
                    None => "no".to_owned(),
                    Some(_) if policy.opt_out_honoured() => "yes (honoured)".into(),
                    Some(_) =>
                        "yes, but IGNORED (needs policy.user_opt_out = true and mandatory = false)"
                            .into(),
                }
            ));
            t.push_str(&format!(
                "language:      {reads} ({})\n",
                match &language {
                    Some(l) if *l == reads => "set for this user".to_owned(),
                    Some(l) => format!("set to {l}, which has no catalogue here"),
                    None => "not set; chosen by [messages]".into(),
                }
            ));
            if exempt {
                t.push_str("exempt:        yes (policy.exempt_users)\n");
            }
            let j = json!({
                "user": user, "phone": phone, "source": source, "phone_error": error,
                "stored_phone": stored.as_ref().map(|s| json!({"set_at": smsotp_core::clock::rfc3339(s.set_at), "set_by": s.set_by})),
                "failures": failures.count,
                "locked": failures.locked_until.is_some(),
                "locked_until": failures.locked_until.map(smsotp_core::clock::rfc3339),
                "sms_window": {
                    "sent": window.sent,
                    "limit": per_user.count.get(),
                    "window_secs": per_user.window.as_secs(),
                    "limit_reached": window.next_allowed_at.is_some(),
                    "next_sms_at": window.next_allowed_at.map(smsotp_core::clock::rfc3339),
                },
                "backup_codes_left": left,
                "opted_out": opt.is_some(),
                "opt_out_honoured": opt.is_some() && policy.opt_out_honoured(),
                "exempt_user": exempt,
                "language": language,
                "reads_language": reads,
            });
            (t, j)
        }
        UserCommand::SetPhone { user, number } => {
            note_unknown_user(user, &mut notes);
            let phone = Phone::parse(number, engine.cfg.phone.default_region)
                .map_err(|e| Failure::new(exit::DATAERR, e.to_string()))?;
            if !phone.allowed(&engine.cfg.phone) {
                return Err(Failure::new(
                    exit::DATAERR,
                    format!("{} is in a country not in phone.allowed_countries", phone.masked()),
                )
                .fix("use a number of an allowed country, or add its country to phone.allowed_countries"));
            }
            let rec = PhoneRecord {
                e164: phone.e164().to_owned(),
                set_at: now,
                set_by: admin(),
            };
            store.set_phone(user, &rec).map_err(store_err)?;
            audit(
                &engine,
                user,
                "admin_set_phone",
                format!("number set to {}", phone.masked()),
            );
            (
                format!(
                    "{user}: number set to {} (in the store; it takes precedence over the configured phone sources)\n",
                    phone.masked()
                ),
                json!({"ok": true, "user": user, "phone": phone.masked()}),
            )
        }
        UserCommand::ClearPhone { user } => {
            let removed = store.clear_phone(user).map_err(store_err)?;
            let still = engine.find_phone_in_directories(user).map_err(store_err)?;
            if removed {
                audit(
                    &engine,
                    user,
                    "admin_clear_phone",
                    "stored number removed".into(),
                );
            }
            let mut t = if removed {
                format!("{user}: the number registered in the store was removed\n")
            } else {
                format!("{user}: no number was registered in the store\n")
            };
            if let Some(f) = &still {
                t.push_str(&format!(
                    "{user} still has {} from {} (the tool never edits that source)\n",
                    f.phone.masked(),
                    f.source
                ));
            }
            (
                t,
                json!({"ok": true, "user": user, "removed": removed,
                       "still_from": still.as_ref().map(|f| json!({"phone": f.phone.masked(), "source": f.source}))}),
            )
        }
        UserCommand::Unlock { user } => {
            let before = store.failures(user, now).map_err(store_err)?;
            store.unlock(user).map_err(store_err)?;
            let per_user = engine.cfg.limits.sms_per_user;
            let cleared = store
                .clear_sms_window(user, now, per_user.window)
                .map_err(store_err)?;
            let was_locked = before.locked_until.is_some();
            let mut done = Vec::new();
            if was_locked {
                done.push(format!(
                    "lifted the lockout ({} consecutive failures)",
                    before.count
                ));
            } else if before.count > 0 {
                done.push(format!(
                    "reset the failure count (was {}; not locked)",
                    before.count
                ));
            }
            if cleared > 0 {
                done.push(format!(
                    "cleared {cleared} SMS from the per-user window (limits.sms_per_user = {per_user})"
                ));
            }
            let said = if done.is_empty() {
                "nothing to clear (not locked, no failures, no SMS in the per-user window)"
                    .to_owned()
            } else {
                done.join("; ")
            };
            audit(&engine, user, "admin_unlock", said.clone());
            (
                format!("{user}: {said}\n"),
                json!({"ok": true, "user": user, "was_locked": was_locked,
                       "failures_before": before.count, "sms_cleared": cleared}),
            )
        }
        UserCommand::SetLanguage { user, lang, clear } => {
            note_unknown_user(user, &mut notes);
            let lang = match (lang, clear) {
                (_, true) | (None, _) => None,
                (Some(l), false) => {
                    let tag = smsotp_core::messages::normalize_tag(l)
                        .filter(|t| engine.messages().get(t).is_some());
                    let known: Vec<&str> = engine.messages().languages().collect();
                    match tag {
                        Some(t) => Some(t),
                        None => {
                            return Err(Failure::new(
                                exit::USAGE,
                                format!("\"{l}\" is not a language this host has messages for"),
                            )
                            .fix(format!(
                                "use one of {}, or add {}.toml to {} (see [messages] in smsotp.toml(5))",
                                known.join(", "),
                                smsotp_core::messages::normalize_tag(l)
                                    .unwrap_or_else(|| "LANG".into()),
                                engine.cfg.messages.dir.display()
                            )))
                        }
                    }
                }
            };
            store
                .set_language(user, lang.as_deref())
                .map_err(store_err)?;
            audit(
                &engine,
                user,
                "admin_set_language",
                match &lang {
                    Some(l) => format!("language set to {l}"),
                    None => "language setting removed".into(),
                },
            );
            (
                format!(
                    "{user}: {}\n",
                    match &lang {
                        Some(l) => format!("reads messages in {l}"),
                        None => format!(
                            "language setting removed (now reads {})",
                            engine.catalogue_for(user).lang()
                        ),
                    }
                ),
                json!({"ok": true, "user": user, "language": lang}),
            )
        }
        UserCommand::OptOut { user } | UserCommand::OptIn { user } => {
            let out = matches!(cmd, UserCommand::OptOut { .. });
            let policy = &engine.cfg.policy;
            if out && !policy.user_opt_out {
                return Err(Failure::new(
                    exit::CONFIG,
                    "opt-outs are not allowed by the config (policy.user_opt_out is false)",
                )
                .fix(format!(
                    "set `user_opt_out = true` in [policy] of {}",
                    path.display()
                )));
            }
            note_unknown_user(user, &mut notes);
            store
                .set_opt_out(
                    user,
                    out.then(|| (admin(), now))
                        .as_ref()
                        .map(|(b, t)| (b.as_str(), *t)),
                )
                .map_err(store_err)?;
            audit(
                &engine,
                user,
                if out { "admin_opt_out" } else { "admin_opt_in" },
                if out {
                    "marked opted out"
                } else {
                    "opt-out removed"
                }
                .into(),
            );
            if out && policy.mandatory {
                notes.push(
                    "warning: policy.mandatory = true, so this opt-out is ignored until it is false"
                        .into(),
                );
            }
            (
                format!(
                    "{user}: {}\n",
                    if out {
                        "opted out of the SMS code"
                    } else {
                        "must use the SMS code again"
                    }
                ),
                json!({"ok": true, "user": user, "opted_out": out, "honoured": out && policy.opt_out_honoured()}),
            )
        }
    };
    let mut text = text;
    for n in &notes {
        text.push_str(n);
        text.push('\n');
    }
    let mut json = json;
    if !notes.is_empty() {
        json["notes"] = json!(notes);
    }
    Ok(Output {
        text,
        json,
        code: exit::OK,
    })
}

// ------------------------------------------------------------ backup-codes

pub(crate) fn backup_command(path: &Path, cmd: &BackupCommand) -> Result<Output, Failure> {
    let engine = open_engine(path)?;
    match cmd {
        BackupCommand::Generate { user, count } => {
            let mut notes = Vec::new();
            note_unknown_user(user, &mut notes);
            if !engine.cfg.policy.backup_codes {
                notes.push(
                    "warning: policy.backup_codes = false, so these codes are not accepted until it is true"
                        .into(),
                );
            }
            let codes = engine
                .generate_backup_codes(user, usize::from(*count))
                .map_err(store_err)?;
            audit(
                &engine,
                user,
                "admin_backup_codes",
                format!("{} new backup codes", codes.len()),
            );
            let mut text = format!(
                "New backup codes for {user} (shown once; each works once; older codes no longer work):\n\n"
            );
            for c in &codes {
                text.push_str(&format!("    {}\n", c.as_str()));
            }
            text.push('\n');
            for n in &notes {
                text.push_str(n);
                text.push('\n');
            }
            let list: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
            Ok(Output {
                json: json!({"ok": true, "user": user, "codes": list, "notes": notes}),
                text,
                code: exit::OK,
            })
        }
        BackupCommand::Revoke { user } => {
            let n = engine
                .store()
                .revoke_backup_codes(user)
                .map_err(store_err)?;
            audit(
                &engine,
                user,
                "admin_backup_revoke",
                format!("{n} backup codes revoked"),
            );
            Ok(Output {
                text: format!("{user}: {n} backup code(s) revoked\n"),
                json: json!({"ok": true, "user": user, "revoked": n}),
                code: exit::OK,
            })
        }
    }
}
