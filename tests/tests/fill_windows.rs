//! fill_windows (the bench's hour of history) fills every bucket of the
//! global window through the store, so that a store it filled is full
//! for exactly as many SMS as it reserved.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use smsotp_core::clock::{Clock, SystemClock};
use smsotp_core::config::Config;
use smsotp_core::store::{self, SendPermit};

#[test]
fn the_global_window_is_full_after_its_hour_of_history() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("smsotp.toml");
    // 61 SMS an hour. The fill puts one in each of the 62 buckets a
    // window keeps: the 60 it counts and two past it, not yet forgotten.
    // Room for one more.
    std::fs::write(
        &config,
        format!(
            "[store]\nkind = \"sqlite\"\npath = \"{}\"\n\n[limits]\nsms_per_user = \"10/1h\"\nsms_global = \"61/1h\"\n",
            dir.path().join("state.db").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fill_windows"))
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("62 sends reserved in 62 buckets of 60 s"),
        "{text}"
    );
    let cfg = Config::load(&config).unwrap();
    let s = store::open(&cfg.store).unwrap();
    let l = &cfg.limits;
    let now = SystemClock.now_ms();
    assert_eq!(
        s.reserve_sms("alice", now, l.sms_per_user, l.sms_global)
            .unwrap(),
        SendPermit::Granted
    );
    assert_eq!(
        s.reserve_sms("bob", now, l.sms_per_user, l.sms_global)
            .unwrap(),
        SendPermit::GlobalLimit
    );
}
