//! Message catalogues end to end: a user whose language is set with
//! `smsotp user set-language` reads the prompts, messages and SMS in it,
//! through the real PAM module under pamtester and through
//! smsotp-radiusd under radclient; an admin's override file changes one
//! text, and check-config names a bad one. Needs what `pam.rs` and
//! `radius.rs` need (pamtester, pam_wrapper, nss_wrapper, radclient) and
//! a built workspace.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::time::Duration;

use smsotp_e2e::pamenv::PamEnv;
use smsotp_e2e::radiusd::{hex, ClientSpec, Radiusd, ServerSpec};
use smsotp_e2e::{run_tool, Scratch};

const LIMIT: Duration = Duration::from_secs(60);

/// `[messages]` pointing into the scratch dir, so no file of the host is
/// read.
fn messages_table(scratch: &Scratch) -> String {
    std::fs::create_dir_all(scratch.path("messages")).expect("mkdir messages");
    format!(
        "[messages]\ndir = \"{}\"\n",
        scratch.path("messages").display()
    )
}

fn set_language(scratch: &Scratch, user: &str, lang: &str) {
    let r = run_tool(scratch, &["user", "set-language", user, lang], LIMIT);
    assert_eq!(r.code, 0, "{r}");
    let r = run_tool(scratch, &["--json", "user", "show", user], LIMIT);
    assert_eq!(r.code, 0, "{r}");
    assert_eq!(r.json()["language"], lang, "{r}");
    assert_eq!(r.json()["reads_language"], lang, "{r}");
}

#[test]
fn pam_a_german_user_gets_the_german_prompt_and_sms() {
    let mut env = PamEnv::new();
    env.scratch
        .phones(&[("alice", "+12015550123"), ("bob", "+12015551123")]);
    env.scratch.config(&messages_table(&env.scratch));
    let svc = env.smsotp_service("e2e-msg-de", "");
    set_language(&env.scratch, "alice", "de");
    let outbox = env.scratch.outbox();

    let mut login = env.login(&svc, "alice");
    login
        .password()
        .expect_text("Code an ******0123 gesendet.")
        .expect_prompt("SMS-Code: ");
    let sms = login.answer_code_from_outbox(&outbox, 0);
    login.finish().assert_success().assert_not_saw("Code sent");
    let code = sms.code();
    assert_eq!(
        sms.message,
        format!(
            "{code} ist Ihr Anmeldecode für {}. Er verfällt in 5 Minuten.",
            host()
        ),
    );

    // Bob has no setting: English, as before; a wrong code is told in it.
    let mut login = env.login(&svc, "bob");
    login
        .password()
        .expect_text("Code sent to ******1123.")
        .expect_prompt("SMS code: ");
    let sms = outbox.wait_beyond(1, Duration::from_secs(5));
    assert!(
        sms.message.contains("is your login code"),
        "{}",
        sms.message
    );
    login
        .answer(&smsotp_e2e::wrong_code(&sms.code()))
        .expect_text("Wrong code, 2 tries left.");
    login.abort();

    // An override of one key takes effect at the next login.
    env.scratch.write(
        "messages/de.toml",
        "prompt.code = \"Einmalcode: \"\n",
        0o644,
    );
    let mut login = env.login(&svc, "alice");
    login
        .password()
        .expect_text("Code an ******0123 gesendet.")
        .expect_prompt("Einmalcode: ");
    login.answer_code_from_outbox(&outbox, 2);
    login.finish().assert_success();
}

/// This host's name as the SMS has it.
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "this host".into())
}

#[test]
fn radius_a_french_user_gets_french_reply_messages() {
    let scratch = Scratch::new();
    scratch.phones(&[("alice", "+12015550123")]);
    let spec = ServerSpec::new(vec![ClientSpec::new(
        "vpn",
        "127.0.0.1",
        "e2e-msg-secret-77",
    )])
    .extra(&messages_table(&scratch));
    let srv = Radiusd::start(&scratch, spec);
    set_language(&scratch, "alice", "fr");
    let outbox = scratch.outbox();
    let attrs = |pw: &str, state: Option<&[u8]>| {
        let mut t = format!("User-Name = \"alice\"\nUser-Password = \"{pw}\"\n");
        t.push_str("Message-Authenticator = 0x00\n");
        if let Some(s) = state {
            t.push_str(&format!("State = 0x{}\n", hex(s)));
        }
        t
    };

    let first = srv.radclient("vpn", "auth", &attrs("nas-pw", None));
    assert_eq!(
        first.received.as_deref(),
        Some("Access-Challenge"),
        "{}",
        first.output
    );
    assert_eq!(
        first.attr("Reply-Message"),
        Some("Code envoyé au ******0123. Il reste 3 essais."),
        "{}",
        first.output
    );
    let sms = outbox.wait_beyond(0, Duration::from_secs(5));
    let code = sms.code();
    assert!(
        sms.message
            .starts_with(&format!("{code} est votre code de connexion pour ")),
        "{}",
        sms.message
    );
    assert!(
        sms.message.ends_with("Il expire dans 5 minutes."),
        "{}",
        sms.message
    );
    let state = first.state();

    let wrong = smsotp_e2e::wrong_code(&code);
    let r = srv.radclient("vpn", "auth", &attrs(&wrong, Some(&state)));
    assert_eq!(
        r.received.as_deref(),
        Some("Access-Challenge"),
        "{}",
        r.output
    );
    assert_eq!(
        r.attr("Reply-Message"),
        Some("Code incorrect, il reste 2 essais."),
        "{}",
        r.output
    );
    let r = srv.radclient("vpn", "auth", &attrs(&code, Some(&state)));
    assert_eq!(r.received.as_deref(), Some("Access-Accept"), "{}", r.output);
    // A State no longer valid: rejected, in French.
    let r = srv.radclient("vpn", "auth", &attrs(&code, Some(&state)));
    assert_eq!(r.received.as_deref(), Some("Access-Reject"), "{}", r.output);
    assert_eq!(
        r.attr("Reply-Message"),
        Some("Cette tentative de connexion n'est plus valide. Recommencez."),
        "{}",
        r.output
    );
}

#[test]
fn check_config_names_a_bad_message_file_and_set_language_refuses_an_unknown_one() {
    let s = Scratch::new();
    s.phones(&[("alice", "+12015550123")]);
    s.config(&messages_table(&s));
    let r = run_tool(&s, &["check-config"], LIMIT);
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout
            .contains("messages: de, en, es, fr, it, nl, pt (default en)"),
        "{r}"
    );

    s.write(
        "messages/it.toml",
        "prompt.code = \"Codice {phone}: \"\nreject.nope = \"x\"\n",
        0o644,
    );
    let r = run_tool(&s, &["check-config"], LIMIT);
    assert_eq!(r.code, 1, "{r}");
    for needle in [
        "it.toml: prompt.code: has {phone}, but this text takes no placeholders; remove it",
        "it.toml: reject.nope: is not a message key",
        "2 problem(s) in the message files",
    ] {
        assert!(r.stdout.contains(needle), "missing {needle:?}: {r}");
    }
    // doctor says the same, as warnings of its "messages" area.
    let pam_dir = s.path("no-pam.d");
    let r = run_tool(
        &s,
        &[
            "--json",
            "doctor",
            "--no-network",
            "--pam-dir",
            pam_dir.to_str().unwrap(),
        ],
        LIMIT,
    );
    let findings = r.json()["findings"].as_array().cloned().unwrap_or_default();
    let of_messages: Vec<(String, String)> = findings
        .iter()
        .filter(|f| f["area"] == "messages")
        .map(|f| {
            (
                f["level"].as_str().unwrap_or_default().to_owned(),
                f["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(of_messages.len(), 3, "{r}");
    assert_eq!(
        of_messages[0],
        (
            "ok".to_owned(),
            "messages in de, en, es, fr, it, nl, pt (default en)".to_owned()
        ),
        "{r}"
    );
    assert!(
        of_messages[1..].iter().all(|(l, _)| l == "warning")
            && of_messages[2]
                .1
                .contains("it.toml: reject.nope: is not a message key"),
        "{r}"
    );

    let r = run_tool(&s, &["user", "set-language", "alice", "sv"], LIMIT);
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr
            .contains("\"sv\" is not a language this host has messages for"),
        "{r}"
    );
    assert!(r.stderr.contains("add sv.toml to"), "{r}");
    let r = run_tool(&s, &["user", "set-language", "alice", "--clear"], LIMIT);
    assert_eq!(r.code, 0, "{r}");
    let r = run_tool(&s, &["--json", "user", "show", "alice"], LIMIT);
    assert_eq!(r.json()["language"], serde_json::Value::Null, "{r}");
    assert_eq!(r.json()["reads_language"], "en", "{r}");
}

/// Every shipped language, through pamtester and through radclient: the
/// texts a user reads there and the SMS are that language's (written
/// out here, not read from the catalogues).
#[test]
fn every_shipped_language_through_pamtester_and_radclient() {
    // (language, PAM info, PAM prompt, RADIUS Reply-Message, SMS start)
    let cases = [
        (
            "en",
            "Code sent to ******0123.",
            "SMS code: ",
            "Code sent to ******0123. 3 tries left.",
            "is your login code for",
        ),
        (
            "de",
            "Code an ******0123 gesendet.",
            "SMS-Code: ",
            "Code an ******0123 gesendet. Noch 3 Versuche.",
            "ist Ihr Anmeldecode für",
        ),
        (
            "fr",
            "Code envoyé au ******0123.",
            "Code SMS : ",
            "Code envoyé au ******0123. Il reste 3 essais.",
            "est votre code de connexion pour",
        ),
        (
            "es",
            "Código enviado al ******0123.",
            "Código SMS: ",
            "Código enviado al ******0123. Quedan 3 intentos.",
            "es su clave de acceso para",
        ),
        (
            "pt",
            "Código enviado para ******0123.",
            "Código SMS: ",
            "Código enviado para ******0123. Restam 3 tentativas.",
            "para entrar em",
        ),
        (
            "it",
            "Codice inviato al ******0123.",
            "Codice SMS: ",
            "Codice inviato al ******0123. Restano 3 tentativi.",
            "è il suo codice di accesso per",
        ),
        (
            "nl",
            "Code verzonden naar ******0123.",
            "Sms-code: ",
            "Code verzonden naar ******0123. Nog 3 pogingen.",
            "is uw inlogcode voor",
        ),
    ];

    let mut env = PamEnv::new();
    env.scratch.phones(&[("alice", "+12015550123")]);
    // Seven logins of one user within the hour.
    let limits = "[limits]\nsms_per_user = \"20/1h\"\n";
    env.scratch
        .config(&format!("{limits}{}", messages_table(&env.scratch)));
    let svc = env.smsotp_service("e2e-msg-all", "");
    let outbox = env.scratch.outbox();
    for (i, (lang, info, prompt, _, sms_text)) in cases.iter().enumerate() {
        set_language(&env.scratch, "alice", lang);
        let mut login = env.login(&svc, "alice");
        login.password().expect_text(info).expect_prompt(prompt);
        let sms = login.answer_code_from_outbox(&outbox, i);
        login.finish().assert_success();
        assert!(sms.message.contains(sms_text), "{lang}: {}", sms.message);
    }

    let scratch = Scratch::new();
    scratch.phones(&[("alice", "+12015550123")]);
    let spec = ServerSpec::new(vec![ClientSpec::new(
        "vpn",
        "127.0.0.1",
        "e2e-msg-secret-78",
    )])
    .extra(&format!("{limits}{}", messages_table(&scratch)));
    let srv = Radiusd::start(&scratch, spec);
    let outbox = scratch.outbox();
    for (i, (lang, _, _, reply, sms_text)) in cases.iter().enumerate() {
        set_language(&scratch, "alice", lang);
        let attrs =
            "User-Name = \"alice\"\nUser-Password = \"nas-pw\"\nMessage-Authenticator = 0x00\n";
        let first = srv.radclient("vpn", "auth", attrs);
        assert_eq!(
            first.received.as_deref(),
            Some("Access-Challenge"),
            "{lang}: {}",
            first.output
        );
        assert_eq!(
            first.attr("Reply-Message"),
            Some(*reply),
            "{lang}: {}",
            first.output
        );
        let sms = outbox.wait_beyond(i, Duration::from_secs(5));
        assert!(sms.message.contains(sms_text), "{lang}: {}", sms.message);
        let attrs = format!(
            "User-Name = \"alice\"\nUser-Password = \"{}\"\nMessage-Authenticator = 0x00\nState = 0x{}\n",
            sms.code(),
            hex(&first.state())
        );
        let r = srv.radclient("vpn", "auth", &attrs);
        assert_eq!(
            r.received.as_deref(),
            Some("Access-Accept"),
            "{lang}: {}",
            r.output
        );
    }
}

/// `follow_locale = true`: a locale in the PAM environment picks the
/// language; without one, a local session (no PAM_RHOST, as sudo and su)
/// follows the environment it runs with; a remote one (sshd sets
/// PAM_RHOST) does not, since that environment is the server's. Off, no
/// locale counts.
#[test]
fn pam_follows_the_session_locale_when_asked() {
    let mut env = PamEnv::new();
    env.scratch.phones(&[("alice", "+12015550123")]);
    env.scratch.config(&format!(
        "{}follow_locale = true\n",
        messages_table(&env.scratch)
    ));
    let svc = env.smsotp_service("e2e-msg-locale", "");
    let outbox = env.scratch.outbox();
    let prompt_of = |env: &PamEnv, args: &[&str], seen: usize| -> String {
        let mut all = vec!["-v"];
        all.extend_from_slice(args);
        all.extend([svc.as_str(), "alice", "authenticate"]);
        let mut login =
            env.login_with_program("pamtester", &all, &svc, "alice", Duration::from_secs(30));
        login.password();
        login.answer_code_from_outbox(&outbox, seen);
        let outcome = login.finish();
        outcome.assert_success();
        outcome.transcript.clone()
    };

    // In the PAM environment (pamtester -E puts it there).
    let t = prompt_of(&env, &["-E", "LANG=de_DE.UTF-8"], 0);
    assert!(t.contains("SMS-Code: "), "{t}");
    assert!(outbox
        .wait_beyond(0, Duration::from_secs(5))
        .message
        .contains("ist Ihr Anmeldecode"));

    // Not in the PAM environment: a local session's own LANG.
    env.set_env("LANG", "fr_FR.UTF-8");
    let t = prompt_of(&env, &[], 1);
    assert!(t.contains("Code envoyé au ******0123."), "{t}");
    assert!(outbox
        .wait_beyond(1, Duration::from_secs(5))
        .message
        .contains("est votre code"));

    // A remote session: the process's LANG is not the user's.
    let t = prompt_of(&env, &["-I", "rhost=192.0.2.7"], 2);
    assert!(t.contains("Code sent to ******0123."), "{t}");
    // ... but a locale in its PAM environment still counts.
    let t = prompt_of(
        &env,
        &["-I", "rhost=192.0.2.7", "-E", "LC_MESSAGES=it_IT.UTF-8"],
        3,
    );
    assert!(t.contains("Codice inviato al ******0123."), "{t}");

    // Off: none of it.
    env.scratch.config(&messages_table(&env.scratch));
    let t = prompt_of(&env, &["-E", "LANG=de_DE.UTF-8"], 4);
    assert!(t.contains("SMS code: "), "{t}");
}
