//! smsotp-radiusd: SMS codes for VPNs and other NASes over RADIUS.
//!
//! ```text
//! smsotp-radiusd [--config /etc/smsotp/smsotp.toml] [--debug] [--check]
//! ```
//!
//! `--check` exits 0 when all is well, 78 (EX_CONFIG) when the config, a
//! client secret or the store cannot be used, and 1 when the config is
//! usable but phone-list entries are not (each named with file:line, the
//! user, what is wrong and how to fix it): those users could not log in.
//! `--allow-bad-numbers` prints those entries but exits 0 for them, so a
//! unit's `ExecStartPre` does not keep everyone out for one bad entry.
//!
//! Stays in the foreground (systemd runs it as Type=simple) and logs to
//! stderr as well as syslog. SIGHUP reloads the configuration (an invalid
//! one keeps the old running); SIGTERM finishes the requests in flight and
//! exits.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use smsotp_core::audit::Level;
use smsotp_core::config::DEFAULT_CONFIG_PATH;
use smsotp_core::directory;
use smsotp_radiusd::runtime::Runtime;
use smsotp_radiusd::server::{self, Signals, IDENT};

#[derive(Parser)]
#[command(
    name = "smsotp-radiusd",
    version,
    about = "RADIUS server that asks for a code sent by SMS"
)]
struct Args {
    /// The configuration file (needs a [radius] table).
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Also log debug events.
    #[arg(long)]
    debug: bool,
    /// Check the configuration, the client secrets, the store and every
    /// number in the phone lists, then exit (0 good, 1 bad phone-list
    /// entries, 78 invalid configuration).
    #[arg(long)]
    check: bool,
    /// With --check: print bad phone-list entries but do not fail for them
    /// (the unit's ExecStartPre: one user's bad number must not keep the
    /// server from starting for everyone else).
    #[arg(long, requires = "check")]
    allow_bad_numbers: bool,
}

fn main() -> ExitCode {
    // Worker threads would each get a malloc arena of their own; two are
    // plenty for a server whose threads mostly wait on one store.
    // SAFETY: mallopt only adjusts allocator parameters, before any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let args = Args::parse();
    let (runtime, warnings) = match Runtime::load(&args.config, 1, args.debug) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{IDENT}: {e}");
            return ExitCode::from(78); // EX_CONFIG
        }
    };
    for w in &warnings {
        eprintln!("{IDENT}: warning: {w}");
    }
    if args.check {
        return check(&args.config, &runtime, args.allow_bad_numbers);
    }
    let terminate = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for (sig, flag) in [
        (signal_hook::consts::SIGTERM, &terminate),
        (signal_hook::consts::SIGINT, &terminate),
        (signal_hook::consts::SIGHUP, &reload),
    ] {
        if let Err(e) = signal_hook::flag::register(sig, flag.clone()) {
            eprintln!("{IDENT}: cannot handle signal {sig}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut sockets = Vec::new();
    for addr in &runtime.radius.listen {
        match server::bind(*addr) {
            Ok(s) => {
                eprintln!("{IDENT}: listening on {addr}");
                sockets.push(s);
            }
            Err(e) => {
                eprintln!("{IDENT}: cannot listen on {addr}: {e}; is another RADIUS server running there?");
                return ExitCode::FAILURE;
            }
        }
    }
    let callbacks = match runtime.config.receipts.listen {
        None => None,
        Some(addr) => match smsotp_radiusd::callback::bind(addr) {
            Ok(l) => {
                eprintln!("{IDENT}: status callbacks on http://{addr}");
                Some(l)
            }
            Err(e) => {
                eprintln!(
                    "{IDENT}: cannot listen on {addr} (receipts.listen): {e}; \
                     is another program using that port? change receipts.listen"
                );
                return ExitCode::FAILURE;
            }
        },
    };
    let metrics = match runtime.radius.metrics {
        None => None,
        Some(addr) => match smsotp_radiusd::metrics::bind(addr) {
            Ok(l) => {
                eprintln!("{IDENT}: serving /metrics on http://{addr}/metrics");
                Some(l)
            }
            Err(e) => {
                eprintln!("{IDENT}: cannot serve radius.metrics on {addr}: {e}; is another program using that port? Pick another, or remove radius.metrics");
                return ExitCode::FAILURE;
            }
        },
    };
    runtime.log(
        Level::Info,
        &smsotp_core::audit::Event {
            event: "started",
            detail: Some(format!(
                "{} clients, {} workers, config {}",
                runtime.clients.len(),
                runtime.radius.workers,
                args.config.display()
            )),
            ..Default::default()
        },
    );
    eprintln!("{IDENT}: ready");
    match server::run(
        args.config,
        sockets,
        callbacks,
        metrics,
        runtime,
        Signals { terminate, reload },
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{IDENT}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--check`, once the configuration loaded: the phone lists, checked the
/// way the running server checks them in the background.
fn check(config: &std::path::Path, runtime: &Runtime, allow_bad_numbers: bool) -> ExitCode {
    let checked = directory::check_phone_lists(&runtime.config);
    for bad in &checked.bad {
        eprintln!("{IDENT}: {bad}");
    }
    let clients = smsotp_core::counted(runtime.clients.len(), "client", "clients");
    if checked.bad.is_empty() {
        println!(
            "{}: configuration OK ({clients}, {} valid)",
            config.display(),
            smsotp_core::counted(checked.valid, "phone-list number", "phone-list numbers")
        );
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "{IDENT}: {}: the configuration loads ({clients}), but {} not usable ({} valid): \
             those users cannot log in until they are fixed",
            config.display(),
            smsotp_core::counted(
                checked.bad.len(),
                "phone-list entry is",
                "phone-list entries are"
            ),
            checked.valid
        );
        if allow_bad_numbers {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}
