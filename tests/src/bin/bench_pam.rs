//! Times PAM logins through `pamtester` under libpam-wrapper for three stacks
//! in one run, interleaved login by login so drift hits all three alike:
//!
//! - `permit`: pam_permit alone (the cost of pamtester, pam_wrapper and libpam),
//! - `oath`:   pam_oath with an HOTP usersfile, the code computed by oathtool,
//! - `smsotp`: pam_smsotp with the outbox provider, the code read from the outbox.
//!
//! It prints ms per login for each, the overhead of `oath` and `smsotp` over
//! `permit`, their ratios, and the command that reproduces the figures.
//! Usually run through `scripts/bench-pam.sh`, which installs the Debian
//! packages and builds the release module first.
//!
//! Only the pamtester process is timed (spawn to exit, answers included);
//! oathtool runs before the clock starts. Reading the SMS from the outbox is
//! timed, as a user would have to read it too (it is a few microseconds).
//!
//! Then two parts of a login's cost, each timed in fresh processes (sshd
//! pays them once per login): loading the module (`dlopen`, libpam already
//! loaded, as in sshd), and validating a first phone number, which builds
//! the numbering metadata (what the store's number cache spares later
//! logins).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use smsotp_e2e::{extract_code, workspace_root, Scratch};

const PAM_WRAPPER: &str = "/usr/lib/x86_64-linux-gnu/libpam_wrapper.so";
const PAM_OATH: &str = "/lib/x86_64-linux-gnu/security/pam_oath.so";
/// RFC 4226's test secret, hex; anything works for timing.
const OATH_SECRET: &str = "3132333435363738393031323334353637383930";
/// A number the module accepts (libphonenumber's example US number).
const PHONE: &str = "+12015550123";
/// The figure the project promises: pam_smsotp's cost over pam_permit.
const TARGET_MS: f64 = 5.0;
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Set in a child of this program: what it times, once ("dlopen:PATH" or
/// "parse"); it prints microseconds.
const CHILD_ENV: &str = "SMSOTP_BENCH_PAM_CHILD";
/// Fresh processes per one-off figure.
const ONE_OFF_RUNS: usize = 5;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Args {
    logins: usize,
    warmup: usize,
    user: String,
    module: PathBuf,
}

const USAGE: &str = "usage: bench_pam [--logins N] [--warmup N] [--user NAME] [--module PATH]

  --logins N     timed logins per stack (default 200)
  --warmup N     untimed logins per stack first (default 10)
  --user NAME    the PAM user (default root; must exist for pam_smsotp)
  --module PATH  pam_smsotp to time (default target/release/libpam_smsotp.so)";

impl Args {
    fn parse() -> Result<Args> {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"));
        let mut a = Args {
            logins: 200,
            warmup: 10,
            user: "root".into(),
            module: target.join("release/libpam_smsotp.so"),
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
            };
            match flag.as_str() {
                "--logins" => a.logins = value()?.parse()?,
                "--warmup" => a.warmup = value()?.parse()?,
                "--user" => a.user = value()?,
                "--module" => a.module = PathBuf::from(value()?),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
            }
        }
        if a.logins == 0 {
            return Err("--logins must be at least 1".into());
        }
        Ok(a)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stack {
    Permit,
    Oath,
    Smsotp,
}

impl Stack {
    const ALL: [Stack; 3] = [Stack::Permit, Stack::Oath, Stack::Smsotp];

    fn name(self) -> &'static str {
        match self {
            Stack::Permit => "pam_permit",
            Stack::Oath => "pam_oath",
            Stack::Smsotp => "pam_smsotp",
        }
    }

    fn service(self) -> &'static str {
        match self {
            Stack::Permit => "bench-permit",
            Stack::Oath => "bench-oath",
            Stack::Smsotp => "bench-smsotp",
        }
    }
}

/// Everything the three stacks need on disk, in one scratch dir.
struct Bench {
    scratch: Scratch,
    services: PathBuf,
    user: String,
    hotp_counter: u64,
    outbox_offset: u64,
}

impl Bench {
    fn new(args: &Args) -> Result<Bench> {
        let scratch = Scratch::new();
        let services = scratch.path("pam.d");
        std::fs::create_dir(&services)?;
        let usersfile = scratch.write(
            "users.oath",
            &format!("HOTP {} - {OATH_SECRET}\n", args.user),
            0o600,
        );
        scratch.phones(&[(&args.user, PHONE)]);
        // Every login sends an SMS; the default limits would stop a run at 5.
        let config = scratch
            .config("[limits]\nsms_per_user = \"1000000/1h\"\nsms_global = \"1000000/1h\"\n");
        let account = "account required pam_permit.so\n";
        let stacks = [
            (Stack::Permit, "auth required pam_permit.so\n".to_owned()),
            (
                Stack::Oath,
                format!(
                    "auth required {PAM_OATH} usersfile={} window=5\n",
                    usersfile.display()
                ),
            ),
            (
                Stack::Smsotp,
                format!(
                    "auth required {} config={}\n",
                    args.module.display(),
                    config.display()
                ),
            ),
        ];
        for (stack, auth) in stacks {
            std::fs::write(services.join(stack.service()), format!("{auth}{account}"))?;
        }
        // libpam falls back to "other" when it reads a service; without it
        // pam_wrapper logs an error line on every login.
        std::fs::write(
            services.join("other"),
            "auth required pam_deny.so\naccount required pam_deny.so\n",
        )?;
        Ok(Bench {
            scratch,
            services,
            user: args.user.clone(),
            hotp_counter: 0,
            outbox_offset: 0,
        })
    }

    /// One login; returns its wall time.
    fn login(&mut self, stack: Stack) -> Result<Duration> {
        let oath_code = match stack {
            Stack::Oath => {
                let c = oath_code(self.hotp_counter)?;
                self.hotp_counter += 1;
                Some(c)
            }
            _ => None,
        };
        let prompt = match stack {
            Stack::Permit => None,
            Stack::Oath => Some(format!("One-time password (OATH) for `{}': ", self.user)),
            Stack::Smsotp => Some("SMS code: ".to_owned()),
        };

        let start = Instant::now();
        let mut child = Command::new("pamtester")
            .args(["-v", stack.service(), &self.user, "authenticate"])
            .env("LD_PRELOAD", PAM_WRAPPER)
            .env("PAM_WRAPPER", "1")
            .env("PAM_WRAPPER_SERVICE_DIR", &self.services)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start pamtester: {e}"))?;
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        for r in [
            child
                .stdout
                .take()
                .map(|r| Box::new(r) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|r| Box::new(r) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || pump(r, tx));
        }
        drop(tx);
        let mut stdin = child.stdin.take();
        let deadline = start + LOGIN_TIMEOUT;
        let mut transcript = Vec::new();
        let mut answered = prompt.is_none();
        if answered {
            stdin = None; // EOF: any unexpected prompt fails at once
        }
        // Until both pipes close: answer the prompt once it appeared
        // (misc_conv reads each answer with a single read()).
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(chunk) => transcript.extend_from_slice(&chunk),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "{}: login timed out after {LOGIN_TIMEOUT:?}; transcript:\n{}",
                        stack.name(),
                        String::from_utf8_lossy(&transcript)
                    )
                    .into());
                }
            }
            if !answered {
                let p = prompt.as_deref().unwrap_or_default();
                if String::from_utf8_lossy(&transcript).contains(p) {
                    let answer = match stack {
                        Stack::Smsotp => self.next_sms_code()?,
                        _ => oath_code.clone().unwrap_or_default(),
                    };
                    if let Some(mut w) = stdin.take() {
                        w.write_all(format!("{answer}\n").as_bytes())?;
                    } // dropping it closes stdin
                    answered = true;
                }
            }
        }
        let status = child.wait()?;
        let elapsed = start.elapsed();
        if !answered {
            return Err(format!(
                "{}: pamtester ended ({status}) without asking {:?}; transcript:\n{}",
                stack.name(),
                prompt.unwrap_or_default(),
                String::from_utf8_lossy(&transcript)
            )
            .into());
        }
        if !status.success() {
            return Err(format!(
                "{}: login failed ({status}); transcript:\n{}",
                stack.name(),
                String::from_utf8_lossy(&transcript)
            )
            .into());
        }
        Ok(elapsed)
    }

    /// The code of the first SMS written since the last one we read.
    fn next_sms_code(&mut self) -> Result<String> {
        let path = self.scratch.outbox().path;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(mut f) = std::fs::File::open(&path) {
                f.seek(SeekFrom::Start(self.outbox_offset))?;
                let mut new = String::new();
                f.read_to_string(&mut new)?;
                if let Some(end) = new.find('\n') {
                    let line = &new[..end];
                    self.outbox_offset += end as u64 + 1;
                    let v: serde_json::Value = serde_json::from_str(line)?;
                    let message = v["message"].as_str().unwrap_or_default();
                    return extract_code(message)
                        .ok_or_else(|| format!("no code in SMS {message:?}").into());
                }
            }
            if Instant::now() > deadline {
                return Err(
                    format!("no new SMS in {} after the code prompt", path.display()).into(),
                );
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

fn pump(mut r: Box<dyn Read + Send>, tx: mpsc::Sender<Vec<u8>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
            break;
        }
    }
}

fn oath_code(counter: u64) -> Result<String> {
    let out = Command::new("oathtool")
        .args(["--hotp", "-c", &counter.to_string(), OATH_SECRET])
        .output()
        .map_err(|e| format!("run oathtool: {e}"))?;
    if !out.status.success() {
        return Err(format!("oathtool: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

struct Stats {
    mean: f64,
    median: f64,
    p95: f64,
    min: f64,
}

fn stats(ms: &mut [f64]) -> Stats {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Stats {
        mean: ms.iter().sum::<f64>() / ms.len() as f64,
        median: at(0.5),
        p95: at(0.95),
        min: ms[0],
    }
}

fn check_prerequisites(args: &Args) -> Result<()> {
    let mut missing = Vec::new();
    for (path, package) in [
        (PAM_WRAPPER, "libpam-wrapper"),
        (PAM_OATH, "libpam-oath"),
        ("/usr/bin/pamtester", "pamtester"),
        ("/usr/bin/oathtool", "oathtool"),
    ] {
        if !Path::new(path).exists() {
            missing.push(format!("{path} (apt-get install {package})"));
        }
    }
    if !args.module.exists() {
        missing.push(format!(
            "{} (cargo build --release -p pam_smsotp)",
            args.module.display()
        ));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "missing: {}; scripts/bench-pam.sh installs and builds all of it",
            missing.join(", ")
        )
        .into())
    }
}

/// In a child: times `what` once and prints the microseconds.
fn child(what: &str) -> Result<()> {
    let micros = if let Some(path) = what.strip_prefix("dlopen:") {
        let libpam = std::ffi::CString::new("libpam.so.0")?;
        let module = std::ffi::CString::new(path)?;
        // SAFETY: dlopen with valid C strings; the handles are kept (the
        // process ends right after).
        unsafe {
            if libc::dlopen(libpam.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL).is_null() {
                return Err("cannot load libpam.so.0".into());
            }
            let t0 = Instant::now();
            if libc::dlopen(module.as_ptr(), libc::RTLD_NOW).is_null() {
                return Err(format!("cannot load {path}").into());
            }
            t0.elapsed()
        }
    } else if what == "parse" {
        let t0 = Instant::now();
        smsotp_core::phone::Phone::parse(PHONE, None)
            .map_err(|e| format!("{PHONE} did not validate: {e}"))?;
        t0.elapsed()
    } else {
        return Err(format!("unknown {CHILD_ENV}={what}").into());
    };
    println!("{}", micros.as_micros());
    Ok(())
}

/// Times `what` once in each of [`ONE_OFF_RUNS`] fresh processes; ms.
fn one_off(what: &str) -> Result<Vec<f64>> {
    let me = std::env::current_exe()?;
    (0..ONE_OFF_RUNS)
        .map(|_| -> Result<f64> {
            let out = Command::new(&me).env(CHILD_ENV, what).output()?;
            if !out.status.success() {
                return Err(format!(
                    "timing {what} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )
                .into());
            }
            let micros: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
            Ok(micros / 1e3)
        })
        .collect()
}

fn main() -> Result<()> {
    if let Ok(what) = std::env::var(CHILD_ENV) {
        return child(&what);
    }
    let args = Args::parse()?;
    check_prerequisites(&args)?;
    let mut bench = Bench::new(&args)?;

    for _ in 0..args.warmup {
        for s in Stack::ALL {
            bench.login(s)?;
        }
    }
    let mut times: [Vec<f64>; 3] = Default::default();
    for _ in 0..args.logins {
        for (i, s) in Stack::ALL.into_iter().enumerate() {
            times[i].push(bench.login(s)?.as_secs_f64() * 1e3);
        }
    }
    let [permit, oath, smsotp] = times.map(|mut t| stats(&mut t));

    println!(
        "pamtester logins under pam_wrapper, {} timed per stack (+{} warm-up), interleaved",
        args.logins, args.warmup
    );
    println!("module: {}", args.module.display());
    println!();
    println!(
        "{:<12} {:>10} {:>10} {:>10} {:>10} {:>14} {:>8}",
        "stack", "mean ms", "median", "p95", "min", "over permit", "ratio"
    );
    for (s, st) in [
        (Stack::Permit, &permit),
        (Stack::Oath, &oath),
        (Stack::Smsotp, &smsotp),
    ] {
        println!(
            "{:<12} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>+14.3} {:>8.2}",
            s.name(),
            st.mean,
            st.median,
            st.p95,
            st.min,
            st.mean - permit.mean,
            st.mean / permit.mean
        );
    }
    println!();
    let over = smsotp.mean - permit.mean;
    let over_median = smsotp.median - permit.median;
    println!(
        "pam_smsotp over pam_permit: {over:+.3} ms mean, {over_median:+.3} ms median per login \
         (target: under {TARGET_MS} ms) -> {}",
        if over < TARGET_MS { "met" } else { "NOT met" }
    );
    println!(
        "pam_smsotp over pam_oath:   {:+.3} ms mean per login",
        smsotp.mean - oath.mean
    );
    println!();
    let module = args.module.to_str().ok_or("module path is not UTF-8")?;
    for (what, label) in [
        (
            format!("dlopen:{module}"),
            "loading pam_smsotp (dlopen RTLD_NOW, libpam loaded)",
        ),
        (
            "parse".to_string(),
            "validating a first phone number (builds the metadata)",
        ),
    ] {
        let mut ms = one_off(&what)?;
        let st = stats(&mut ms);
        println!(
            "{label}: median {:.3} ms, min {:.3}, max {:.3} ({ONE_OFF_RUNS} fresh processes)",
            st.median,
            st.min,
            ms[ms.len() - 1]
        );
    }
    println!();
    println!(
        "reproduce: scripts/bench-pam.sh --logins {}   (or: cargo build --release -p pam_smsotp && \
         cargo run --release -p smsotp-e2e --bin bench_pam -- --logins {} --warmup {} --user {})",
        args.logins, args.logins, args.warmup, args.user
    );
    Ok(())
}
