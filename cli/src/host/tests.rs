use std::path::Path;

use super::*;
use crate::report::{Finding, Level};

#[test]
fn wildcards() {
    assert!(wildcard("*.conf", "a.conf"));
    assert!(!wildcard("*.conf", "a.conf.bak"));
    assert!(wildcard("a?c", "abc"));
}

#[test]
fn stack_faults_are_found() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("common-auth"),
        "auth sufficient pam_unix.so\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("svc"),
        "@include common-auth\nauth [success=ok default=ignore] pam_smsotp.so\n",
    )
    .unwrap();
    let mut f = Vec::new();
    let lines = read_stack(d.path(), "svc", &mut f);
    assert_eq!(lines.len(), 2);
    check_stack("svc", &lines, Path::new("/etc/smsotp/smsotp.toml"), &mut f);
    let text: Vec<String> = f.iter().map(|x| x.message.clone()).collect();
    assert!(
        text.iter().any(|m| m.contains("default=ignore")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|m| m.contains("skips pam_smsotp")),
        "{text:?}"
    );
}

fn sshd(files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<SshdOption>, Vec<Finding>) {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("sshd_config.d")).unwrap();
    for (name, text) in files {
        std::fs::write(d.path().join(name), text).unwrap();
    }
    let mut f = Vec::new();
    let opts = read_sshd(&d.path().join("sshd_config"), &mut f);
    (d, opts, f)
}

fn block(criteria: &str) -> MatchBlock {
    MatchBlock {
        at: "x:1".into(),
        criteria: criteria.into(),
    }
}

#[test]
fn match_user_lists_are_evaluated() {
    use Applies::*;
    assert_eq!(block("User root").applies_to("root"), Yes);
    assert_eq!(block("User root").applies_to("alice"), No);
    assert_eq!(block("user alice,root").applies_to("root"), Yes);
    assert_eq!(block("User=root").applies_to("root"), Yes);
    assert_eq!(block("User \"ad*\"").applies_to("admin"), Yes);
    assert_eq!(block("User r??t").applies_to("root"), Yes);
    assert_eq!(block("User r??t").applies_to("rooot"), No);
    // A matching negation wins over any positive pattern.
    assert_eq!(block("User *,!root").applies_to("root"), No);
    assert_eq!(block("User *,!root").applies_to("alice"), Yes);
    assert_eq!(block("User !root").applies_to("alice"), No);
    assert_eq!(block("All").applies_to("alice"), Yes);
    // Other criteria: undecided, unless the user list rules it out.
    assert_eq!(block("Address 10.0.0.0/8").applies_to("root"), Unknown);
    assert_eq!(
        block("User root Address 10.0.0.0/8").applies_to("root"),
        Unknown
    );
    assert_eq!(
        block("Address 10.0.0.0/8 User alice").applies_to("root"),
        No
    );
    assert_eq!(block("Group wheel").applies_to("root"), Unknown);
    assert!(block("User root,admin").users_only());
    assert!(!block("User root Host x").users_only());
}

#[test]
fn permit_root_login_refuses_pam_methods() {
    for (v, pam, key) in [
        ("yes", true, true),
        ("prohibit-password", false, true),
        ("without-password", false, true),
        ("forced-commands-only", false, true),
        ("no", false, false),
    ] {
        let p = PermitRoot::parse(v).unwrap();
        assert_eq!(p.allows("keyboard-interactive"), pam, "{v}");
        assert_eq!(p.allows("password"), pam, "{v}");
        assert_eq!(p.allows("publickey"), key, "{v}");
    }
    assert_eq!(PermitRoot::parse("maybe"), None);
}

const DROP_IN: &str = "KbdInteractiveAuthentication yes\nPasswordAuthentication no\n\
    AuthenticationMethods publickey,keyboard-interactive keyboard-interactive\n";

#[test]
fn a_match_block_ends_with_its_included_file() {
    let main = "Include sshd_config.d/*.conf\nKbdInteractiveAuthentication no\nUsePAM yes\n\
                PermitRootLogin no\n";
    let drop_in = format!("{DROP_IN}Match User root\n\tAuthenticationMethods publickey\n");
    let (_d, opts, f) = sshd(&[
        ("sshd_config", main),
        ("sshd_config.d/smsotp.conf", &drop_in),
    ]);
    assert!(f.is_empty(), "{f:?}");
    let use_pam = opts.iter().find(|o| o.key == "usepam").unwrap();
    assert!(
        !use_pam.in_match(),
        "the Match block leaked out of its file"
    );
    // The first value wins: the drop-in's yes, not the main file's no.
    let kbd = effective(&opts, KBD_KEYS, "alice").opt.unwrap();
    assert_eq!(kbd.value, "yes");
    let root = ssh_login(&opts, "root");
    assert_eq!(root.path, SshPath::RootNotPermitted);
    assert_eq!(root.methods.opt.unwrap().value, "publickey");
    assert_eq!(ssh_login(&opts, "alice").path, SshPath::NeedsPam);
}

#[test]
fn root_paths_over_ssh() {
    let path = |main: &str, drop_in: &str| {
        let (_d, opts, _) = sshd(&[
            ("sshd_config", main),
            ("sshd_config.d/smsotp.conf", drop_in),
        ]);
        ssh_login(&opts, "root").path
    };
    let main = "Include sshd_config.d/*.conf\nUsePAM yes\n";
    // Debian's default prohibit-password refuses keyboard-interactive.
    assert_eq!(path(main, DROP_IN), SshPath::RootRefused);
    for v in ["without-password", "forced-commands-only"] {
        let d = format!("{DROP_IN}PermitRootLogin {v}\n");
        assert_eq!(path(main, &d), SshPath::RootRefused, "{v}");
    }
    let d = format!("{DROP_IN}PermitRootLogin no\n");
    assert_eq!(path(main, &d), SshPath::RootNotPermitted);
    let d = format!("{DROP_IN}PermitRootLogin yes\n");
    assert_eq!(path(main, &d), SshPath::NeedsPam);
    let d = format!("{DROP_IN}Match User root\n  AuthenticationMethods publickey\n");
    assert_eq!(path(main, &d), SshPath::KeyAlone("publickey".into()));
    // A block for other users does not touch root.
    let d = format!("{DROP_IN}Match User alice,bob\n  AuthenticationMethods publickey\n");
    assert_eq!(path(main, &d), SshPath::RootRefused);
    // No AuthenticationMethods: a key alone logs root in.
    assert_eq!(path(main, ""), SshPath::KeyAlone("publickey".into()));
    // Refused for everyone: not root's own problem.
    let d = "KbdInteractiveAuthentication no\nAuthenticationMethods keyboard-interactive\n";
    assert_eq!(path(main, d), SshPath::Refused);
}

#[test]
fn root_lock_out_is_an_error_with_the_match_block_as_fix() {
    let (_d, opts, _) = sshd(&[
        ("sshd_config", "Include sshd_config.d/*.conf\nUsePAM yes\n"),
        ("sshd_config.d/smsotp.conf", DROP_IN),
    ]);
    let mut f = Vec::new();
    check_root(&opts, &mut f);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].level, Level::Error);
    assert!(
        f[0].message.starts_with("root cannot log in over SSH"),
        "{f:?}"
    );
    let fix = f[0].fix.as_deref().unwrap();
    assert!(
        fix.contains("Match User root") && fix.contains("smsotp.conf"),
        "{fix}"
    );
}

#[test]
fn password_authentication_matters_only_when_listed() {
    let judge = |text: &str| {
        let (_d, opts, _) = sshd(&[("sshd_config", text)]);
        let mut f = Vec::new();
        check_sshd(&opts, &mut f);
        f.into_iter()
            .find(|x| x.message.starts_with("PasswordAuthentication"))
            .map(|x| x.level)
    };
    let base = "UsePAM yes\nPasswordAuthentication yes\n";
    assert_eq!(
        judge(&format!(
            "{base}AuthenticationMethods publickey,keyboard-interactive\n"
        )),
        Some(Level::Info)
    );
    assert_eq!(
        judge(&format!(
            "{base}AuthenticationMethods password,keyboard-interactive\n"
        )),
        Some(Level::Warning)
    );
    assert_eq!(judge(base), Some(Level::Warning));
    assert_eq!(
        judge("UsePAM yes\nPasswordAuthentication no\nAuthenticationMethods password\n"),
        None
    );
}

#[test]
fn debian_stacks_are_judged_right() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("common-auth"),
        "auth [success=1 default=ignore] pam_unix.so nullok\nauth requisite pam_deny.so\n\
         auth required pam_permit.so\nauth required pam_smsotp.so\nauth optional pam_cap.so\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("su"),
        "auth sufficient pam_rootok.so\n@include common-auth\n",
    )
    .unwrap();
    let mut f = Vec::new();
    let lines = read_stack(d.path(), "su", &mut f);
    check_stack("su", &lines, Path::new("/etc/smsotp/smsotp.toml"), &mut f);
    assert!(f.iter().all(|x| x.level <= Level::Info), "{f:?}");
    let rootok = f.iter().find(|x| x.message.contains("pam_rootok")).unwrap();
    assert_eq!(rootok.level, Level::Info);
    assert!(rootok.fix.is_none());
    assert!(f
        .iter()
        .any(|x| x.level == Level::Ok && x.message.contains("pam_smsotp is required")));

    // A jump one line longer skips pam_smsotp: an error whose fix is
    // the right jump, never "requisite" for a jump.
    std::fs::write(
        d.path().join("common-auth"),
        "auth [success=3 default=ignore] pam_unix.so nullok\nauth requisite pam_deny.so\n\
         auth required pam_permit.so\nauth required pam_smsotp.so\n",
    )
    .unwrap();
    let mut f = Vec::new();
    let lines = read_stack(d.path(), "su", &mut f);
    check_stack("su", &lines, Path::new("/etc/smsotp/smsotp.toml"), &mut f);
    let skip = f
        .iter()
        .find(|x| x.message.contains("pam_unix.so"))
        .unwrap();
    assert_eq!(skip.level, Level::Error);
    assert!(
        skip.fix.as_deref().unwrap().contains("success=2 or less"),
        "{skip:?}"
    );

    // An unknown module: check what it does; exemptions go in the policy.
    std::fs::write(
        d.path().join("svc"),
        "auth requisite pam_unix.so\nauth sufficient pam_succeed_if.so user ingroup staff\n\
         auth required pam_smsotp.so\n",
    )
    .unwrap();
    let mut f = Vec::new();
    let lines = read_stack(d.path(), "svc", &mut f);
    check_stack("svc", &lines, Path::new("/etc/smsotp/smsotp.toml"), &mut f);
    let skip = f
        .iter()
        .find(|x| x.message.contains("pam_succeed_if"))
        .unwrap();
    assert_eq!(skip.level, Level::Warning);
    let fix = skip.fix.as_deref().unwrap();
    assert!(
        fix.contains("exempt_groups") && !fix.contains("requisite"),
        "{fix}"
    );
}

#[test]
fn a_substack_is_one_line_to_jumps_and_keeps_its_done() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("system-auth"),
        "auth sufficient pam_unix.so\nauth requisite pam_deny.so\nauth required pam_permit.so\n",
    )
    .unwrap();
    let judge = |svc: &str| {
        std::fs::write(d.path().join("svc"), svc).unwrap();
        let mut f = Vec::new();
        let lines = read_stack(d.path(), "svc", &mut f);
        check_stack("svc", &lines, Path::new("/etc/smsotp/smsotp.toml"), &mut f);
        f.into_iter()
            .filter(|x| x.level == Level::Error)
            .map(|x| x.message)
            .collect::<Vec<_>>()
    };
    // `done` inside the substack ends only the substack.
    let e = judge("auth substack system-auth\nauth required pam_smsotp.so\n");
    assert!(e.is_empty(), "{e:?}");
    // Jumping 2 from the first line skips the substack (one line) and
    // pam_smsotp; the three lines it holds do not count.
    let e = judge(
        "auth [success=2 default=ignore] pam_sss.so\nauth substack system-auth\n\
         auth required pam_smsotp.so\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("pam_sss.so"), "{e:?}");
    let e = judge(
        "auth [success=1 default=ignore] pam_sss.so\nauth substack system-auth\n\
         auth required pam_smsotp.so\n",
    );
    assert!(e.is_empty(), "{e:?}");
    // An include is inlined: the same jump now lands inside it.
    let e = judge(
        "auth [success=2 default=ignore] pam_sss.so\nauth include system-auth\n\
         auth required pam_smsotp.so\n",
    );
    assert!(e.iter().all(|m| !m.contains("pam_sss.so")), "{e:?}");
    assert!(
        e.iter().any(|m| m.contains("sufficient pam_unix.so")),
        "{e:?}"
    );
}
