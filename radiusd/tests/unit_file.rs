//! The systemd unit shipped in packaging/: it starts the binary the way
//! main.rs expects and keeps its hardening.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::collections::HashMap;

fn unit() -> HashMap<String, Vec<String>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/smsotp-radiusd.service"
    );
    let text = std::fs::read_to_string(path).expect("packaging/smsotp-radiusd.service exists");
    let mut keys: HashMap<String, Vec<String>> = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') || line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line}"));
        keys.entry(k.to_owned()).or_default().push(v.to_owned());
    }
    keys
}

#[test]
fn unit_is_hardened() {
    let u = unit();
    let one = |k: &str| -> &str {
        let v = u.get(k).unwrap_or_else(|| panic!("{k} missing"));
        &v[v.len() - 1]
    };
    for (k, want) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ReadWritePaths", "/var/lib/smsotp"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectHome", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("UMask", "0077"),
        ("Type", "simple"),
    ] {
        assert_eq!(one(k), want, "{k}");
    }
    assert!(one("CapabilityBoundingSet").contains("CAP_NET_BIND_SERVICE"));
    assert!(!one("CapabilityBoundingSet").contains("CAP_SYS_ADMIN"));
    assert!(one("RestrictAddressFamilies").contains("AF_INET6"));
}

#[test]
fn unit_runs_the_binary_with_flags_it_knows() {
    let u = unit();
    let start = &u["ExecStart"][0];
    assert!(
        start.starts_with("/usr/sbin/smsotp-radiusd --config /etc/smsotp/smsotp.toml"),
        "{start}"
    );
    let pre = &u["ExecStartPre"][0];
    assert!(pre.contains(" --check"), "{pre}");
    // One user's bad phone-list entry must not keep the server from
    // starting for everyone else.
    assert!(pre.ends_with(" --allow-bad-numbers"), "{pre}");
    assert_eq!(u["ExecReload"][0], "/bin/kill -HUP $MAINPID");
    // The flags in the unit are the ones the binary accepts.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smsotp-radiusd"))
        .arg("--help")
        .output()
        .expect("run smsotp-radiusd --help");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--check", "--allow-bad-numbers", "--debug"] {
        assert!(help.contains(flag), "{flag} not in --help:\n{help}");
    }
}
