//! smsotp-radiusd: SMS codes for VPNs and other NASes over RADIUS.
//!
//! ```text
//! smsotp-radiusd [--config /etc/smsotp/smsotp.toml] [--debug] [--check]
//! ```
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
use smsotp_radiusd::server::{self, Runtime, Signals, IDENT};

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
    /// Check the configuration and the client secrets, then exit.
    #[arg(long)]
    check: bool,
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
        println!(
            "{}: configuration OK ({} clients)",
            args.config.display(),
            runtime.clients.len()
        );
        return ExitCode::SUCCESS;
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
    match server::run(args.config, sockets, runtime, Signals { terminate, reload }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{IDENT}: {e}");
            ExitCode::FAILURE
        }
    }
}
