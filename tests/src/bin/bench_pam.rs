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
//! The pam_smsotp config is the product's defaults but for the paths
//! (store, phone list, outbox in the scratch dir) and raised SMS limits:
//! `[audit]` is left out, so audit lines go to syslog as on any host
//! (`scripts/bench-pam.sh` makes sure a syslog daemon reads /dev/log).
//!
//! Then a breakdown of a login's cost: each part timed on its own in fresh
//! processes (sshd's PAM child pays each once per login, cold), median of
//! [`PART_RUNS`]: loading the module (`dlopen`, libpam already loaded, as in
//! sshd), parsing the config, opening the store (an existing state db, as
//! every login after the first), opening the rest of the engine (code key,
//! directories, providers, sinks), the store transactions of a login
//! (lockout and phone read, the SMS counted and the challenge stored, the
//! code consumed), two audit lines to syslog (a login's `sent` and
//! `accept`), the phone lookup and validation with the number cache warm,
//! and one SMS written to the outbox. Their sum is printed beside the
//! measured overhead; the difference is what these parts do not explain.
//! One more figure, not part of a login after the first: validating a first
//! phone number, which builds the numbering metadata (what the store's
//! number cache spares later logins).
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
/// The goal of issue #17 (point 5): pam_smsotp's cost over pam_permit
/// (pam_oath adds 0.8 ms).
const TARGET_MS: f64 = 1.5;
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Set in a child of this program: what it times, once ("dlopen:PATH",
/// "parse" or "part:NAME"); it prints microseconds.
const CHILD_ENV: &str = "SMSOTP_BENCH_PAM_CHILD";
/// The config and user a "part:NAME" child works with.
const CHILD_CONFIG_ENV: &str = "SMSOTP_BENCH_PAM_CONFIG";
const CHILD_USER_ENV: &str = "SMSOTP_BENCH_PAM_USER";
/// Fresh processes per figure of the breakdown.
const PART_RUNS: usize = 15;
/// The PAM service of the smsotp stack, also used by the parts.
const SMSOTP_SERVICE: &str = "bench-smsotp";

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
            Stack::Smsotp => SMSOTP_SERVICE,
        }
    }
}

/// Everything the three stacks need on disk, in one scratch dir.
struct Bench {
    scratch: Scratch,
    config: PathBuf,
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
        let config = smsotp_config(&scratch);
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
            config,
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

/// smsotp.toml as a user would run it: the defaults (audit lines to syslog,
/// no `[audit]` table) but for the paths into the scratch dir and the
/// limits (every login sends an SMS; the defaults would stop a run at 5).
fn smsotp_config(scratch: &Scratch) -> PathBuf {
    let [store, phones, outbox] =
        ["state.db", "phones.toml", "outbox.jsonl"].map(|f| scratch.path(f).display().to_string());
    scratch.write(
        "smsotp.toml",
        &format!(
            "[limits]\nsms_per_user = \"1000000/1h\"\nsms_global = \"1000000/1h\"\n\n\
             [store]\nkind = \"sqlite\"\npath = \"{store}\"\n\n\
             [[directory]]\nkind = \"file\"\npath = \"{phones}\"\n\n\
             [[provider]]\nkind = \"outbox\"\npath = \"{outbox}\"\n"
        ),
        0o600,
    )
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
    } else if let Some(name) = what.strip_prefix("part:") {
        part(name)?
    } else {
        return Err(format!("unknown {CHILD_ENV}={what}").into());
    };
    println!("{}", micros.as_micros());
    Ok(())
}

/// The parts of a login [`part`] times: name, what it covers, and how many
/// times a login pays it.
const PARTS: [(&str, &str); 8] = [
    ("config", "config parse (Config::load)"),
    ("store", "store open (existing state db)"),
    (
        "engine",
        "rest of engine open (key, directories, providers)",
    ),
    (
        "transactions",
        "store transactions (login_state, start_challenge, consume_code)",
    ),
    ("audit", "2 audit lines to syslog (sent, accept)"),
    ("phone", "phone lookup + validation, number cache warm"),
    ("send", "one SMS to the outbox"),
    (
        "flow",
        "cross-check: Engine::start + answer in process (not summed)",
    ),
];

/// In a child: times one part of a login, set up as the login finds it.
fn part(name: &str) -> Result<Duration> {
    use smsotp_core::audit::{AuditSink, Event, Level, SyslogSink};
    use smsotp_core::flow::{Answer, LogOptions, LoginContext, Start, Verdict};
    use smsotp_core::otp::{ChallengeId, OtpKey};
    use smsotp_core::random::OsRandom;
    use smsotp_core::store::{ChallengeRecord, SendPermit, Step};
    use smsotp_core::{Config, Engine};

    let path = PathBuf::from(std::env::var(CHILD_CONFIG_ENV)?);
    let user = std::env::var(CHILD_USER_ENV)?;
    let log = LogOptions {
        ident: "pam_smsotp".into(),
        debug: false,
        stderr: false,
        server: None,
    };
    let ctx = LoginContext {
        user: user.clone(),
        service: SMSOTP_SERVICE.into(),
        rhost: None,
    };
    if name == "config" {
        let t0 = Instant::now();
        Config::load(&path)?;
        return Ok(t0.elapsed());
    }
    let cfg = Config::load(&path)?;
    if name == "store" {
        let t0 = Instant::now();
        smsotp_core::store::open(&cfg.store)?;
        return Ok(t0.elapsed());
    }
    let store = smsotp_core::store::open(&cfg.store)?;
    match name {
        "engine" => {
            let t0 = Instant::now();
            Engine::open_with_store(cfg, &log, store)?;
            Ok(t0.elapsed())
        }
        "transactions" => {
            let key = OtpKey::load_or_create(&cfg.otp.key_file, &OsRandom)?;
            let id = ChallengeId::random(&OsRandom)?;
            let now = smsotp_core::clock::Clock::now_ms(&smsotp_core::clock::SystemClock);
            let mac = key.mac(&id, &user, SMSOTP_SERVICE, "123456");
            let rec = ChallengeRecord {
                id,
                user: user.clone(),
                service: SMSOTP_SERVICE.into(),
                code_mac: mac,
                phone_masked: "+1******0123".into(),
                created_at: now,
                sent_at: now,
                expires_at: now + 300_000,
                attempts_left: cfg.otp.max_attempts.get(),
                resends_used: 0,
                step: Step::Code,
                pending_phone: None,
            };
            let limits = &cfg.limits;
            let t0 = Instant::now();
            if cfg.policy.opt_out_honoured() {
                store.opt_out(&user)?;
            }
            store.login_state(&user, now, None)?;
            let permit = store.start_challenge(&rec, limits.sms_per_user, limits.sms_global)?;
            let consumed = store.consume_code(&id, &user, SMSOTP_SERVICE, &mac, now)?;
            let took = t0.elapsed();
            if !matches!(permit, SendPermit::Granted) || consumed.is_none() {
                return Err(
                    format!("store transactions: {permit:?}, consumed {consumed:?}").into(),
                );
            }
            Ok(took)
        }
        "audit" => {
            let sink = SyslogSink::new("pam_smsotp", false);
            let mut e = Event {
                event: "sent",
                user: user.clone(),
                service: SMSOTP_SERVICE.into(),
                detail: Some("bench_pam: timing audit lines".into()),
                ..Event::default()
            };
            let t0 = Instant::now();
            sink.record(Level::Info, 0, &e);
            e.event = "accept";
            e.outcome = Some("success");
            sink.record(Level::Info, 0, &e);
            Ok(t0.elapsed())
        }
        "phone" => {
            let engine = Engine::open_with_store(cfg, &log, store)?;
            let t0 = Instant::now();
            let found = engine.find_phone(&user)?;
            let took = t0.elapsed();
            found.ok_or_else(|| format!("no phone found for {user}"))?;
            Ok(took)
        }
        "send" => {
            let providers = smsotp_core::sms::from_config(
                &cfg.providers,
                || -> Box<dyn smsotp_core::clock::Clock> {
                    Box::new(smsotp_core::clock::SystemClock)
                },
            );
            let phone = smsotp_core::phone::Phone::parse_cached(PHONE, None, store.number_cache())?;
            let sms = smsotp_core::sms::Sms {
                to: &phone,
                text: "bench_pam: 000000 is not a code",
            };
            let t0 = Instant::now();
            let outcome = smsotp_core::sms::send_with_failover(&providers, &sms);
            let took = t0.elapsed();
            if !matches!(outcome, smsotp_core::sms::ChainOutcome::Sent { .. }) {
                return Err("the outbox refused the SMS".into());
            }
            Ok(took)
        }
        "flow" => {
            let engine = Engine::open_with_store(cfg, &log, store)?;
            let outbox = engine.cfg.providers.first().ok_or("no provider")?.clone();
            let t0 = Instant::now();
            let Start::Challenge(info) = engine.start(&ctx)? else {
                return Err("Engine::start decided without a code".into());
            };
            let started = t0.elapsed();
            let code = last_outbox_code(&outbox)?;
            let t1 = Instant::now();
            let answer = engine.answer(&ctx, &info.id, &code)?;
            let took = started + t1.elapsed();
            if !matches!(answer, Answer::Done(Verdict::Accept(_))) {
                return Err(format!("the code was not accepted: {answer:?}").into());
            }
            Ok(took)
        }
        other => Err(format!("unknown part {other}").into()),
    }
}

/// The code in the last SMS of the outbox `spec` names.
fn last_outbox_code(spec: &smsotp_core::sms::ProviderSpec) -> Result<String> {
    let smsotp_core::sms::ProviderSpec::Outbox { path, .. } = spec else {
        return Err("the first provider is not the outbox".into());
    };
    let text = std::fs::read_to_string(path)?;
    let line = text.lines().last().ok_or("the outbox is empty")?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    let message = v["message"].as_str().unwrap_or_default();
    extract_code(message).ok_or_else(|| format!("no code in SMS {message:?}").into())
}

/// Times `what` once in each of `runs` fresh processes; ms.
fn one_off(what: &str, runs: usize, config: &Path, user: &str) -> Result<Vec<f64>> {
    let me = std::env::current_exe()?;
    (0..runs)
        .map(|_| -> Result<f64> {
            let out = Command::new(&me)
                .env(CHILD_ENV, what)
                .env(CHILD_CONFIG_ENV, config)
                .env(CHILD_USER_ENV, user)
                .output()?;
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
    let figure = |what: &str| -> Result<Stats> {
        let mut ms = one_off(what, PART_RUNS, &bench.config, &args.user)?;
        Ok(stats(&mut ms))
    };
    println!(
        "where pam_smsotp's time goes: each part alone, in {PART_RUNS} fresh processes \
         (as sshd's PAM child pays it), ms"
    );
    println!("{:<66} {:>8} {:>8} {:>8}", "part", "median", "min", "p95");
    let row = |label: &str, st: &Stats| {
        println!(
            "{label:<66} {:>8.3} {:>8.3} {:>8.3}",
            st.median, st.min, st.p95
        );
    };
    let load = figure(&format!("dlopen:{module}"))?;
    row("module load (dlopen RTLD_NOW, libpam loaded)", &load);
    let mut sum = load.median;
    let mut sum_min = load.min;
    for (name, label) in PARTS {
        let st = figure(&format!("part:{name}"))?;
        row(label, &st);
        if name != "flow" {
            sum += st.median;
            sum_min += st.min;
        }
    }
    println!(
        "{:<66} {:>8.3} {:>8.3}",
        "sum of the parts (module load to outbox)", sum, sum_min
    );
    println!(
        "{:<66} {:>8.3} {:>8}",
        "measured: pam_smsotp over pam_permit (median of logins)", over_median, ""
    );
    println!(
        "{:<66} {:>+8.3}",
        "unaccounted (measured minus sum of medians)",
        over_median - sum
    );
    println!(
        "(unaccounted: the conversation's extra round trip through pamtester's \
         prompt, unloading the module and process exit, page faults the parts \
         share, the machine's noise)"
    );
    println!();
    let first = figure("parse")?;
    println!(
        "not per login: validating a first phone number (builds the metadata; \
         the number cache spares later logins): median {:.3} ms, min {:.3}",
        first.median, first.min
    );
    println!();
    println!(
        "reproduce: scripts/bench-pam.sh --logins {}   (or: cargo build --release -p pam_smsotp && \
         cargo run --release -p smsotp-e2e --bin bench_pam -- --logins {} --warmup {} --user {})",
        args.logins, args.logins, args.warmup, args.user
    );
    Ok(())
}
