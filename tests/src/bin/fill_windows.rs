//! fill_windows: gives a store the send history of a host that has been
//! sending SMS for a while, so that `scripts/bench-radius.sh` measures a
//! server in its steady state rather than on a store started seconds ago.
//!
//! A send window (`limits.sms_global`, and every keyed window) counts in
//! 60 buckets a window, and keeps two more until they are forgotten. A
//! store that has sent an SMS a minute for an hour holds 62 buckets in
//! its global window; a store filled by a benchmark of a few seconds
//! holds one or two, and counting them costs less than at any real site
//! at 9 a.m. This reserves SMS in the past through the store's own
//! `reserve_sms`, as the product does (`now` is an argument of every
//! store operation), one in each of those 62 buckets, each for a user of
//! its own (`fill00000`…, never one of the benchmark's), then says what
//! it did.
//!
//!   fill_windows smsotp.toml
//!
//! Reads the store and the limits from the config; for a store on a
//! server, that server must be up.

use std::path::PathBuf;

use smsotp_core::clock::{ms, Clock, SystemClock};
use smsotp_core::config::Config;
use smsotp_core::store::{self, limits, SendPermit};

const USAGE: &str = "usage: fill_windows CONFIG (an smsotp.toml)";

fn main() {
    if let Err(e) = run() {
        eprintln!("fill_windows: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(config), None) = (args.next(), args.next()) else {
        return Err(USAGE.into());
    };
    let config = PathBuf::from(config);
    let cfg = Config::load(&config)?;
    let store = store::open(&cfg.store)?;
    let l = &cfg.limits;
    let size = limits::bucket_ms(l.sms_global.window);
    let window = ms(l.sms_global.window);
    let now = SystemClock.now_ms();
    // The 60 buckets counted now and the two before them.
    let buckets = window / size + 1;
    let mut sent = 0u64;
    for b in (0..=buckets).rev() {
        let at = now - b * size;
        let user = format!("fill{sent:05}");
        let permit = store.reserve_sms(&user, at, l.sms_per_user, l.sms_global)?;
        if permit != SendPermit::Granted {
            return Err(format!(
                "the store refused a send at {at} ({permit:?}): the limits must leave room"
            )
            .into());
        }
        sent += 1;
    }
    println!(
        "fill_windows: {sent} sends reserved in {} buckets of {} s ({} s back, store {})",
        buckets + 1,
        size / 1000,
        buckets * size / 1000,
        cfg.store.kind()
    );
    Ok(())
}
