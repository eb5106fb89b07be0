//! A private OpenLDAP `slapd` for the LDAP directory tests (issue #18), with
//! its own test CA, on loopback ports, in its own temp directory.
//!
//! [`Slapd::start`] does, in about 0.2 s:
//!
//! 1. two CAs with `openssl` (EC P-256): the test CA, which signs the
//!    server certificate for `localhost`, 127.0.0.1 and ::1, and an unrelated
//!    one for "the wrong CA fails closed" tests;
//! 2. a `cn=config` directory with `slapadd -n0` from a generated LDIF:
//!    back_mdb; the schemas core, cosine, inetorgperson and nis from /etc/ldap/schema,
//!    and [`TEST_SCHEMA`] (Gluu's `phoneNumberVerified`, AD's `user`);
//! 3. the seed entries ([`SEED`]) with `slapadd -n1`;
//! 4. `slapd -d stats` in the foreground with an `ldap://` (StartTLS) and an
//!    `ldaps://` listener on free 127.0.0.1 ports, waiting (bounded by
//!    [`START_TIMEOUT`]) until both accept connections.
//!
//! The server is killed when the guard is dropped, by a watchdog after
//! [`LIFETIME`] in any case, and by the kernel if the thread that started it
//! ends first (`PR_SET_PDEATHSIG`), so no slapd outlives a test. It never
//! touches a system slapd (port 389, /etc/ldap/slapd.d): no fixed port, no
//! system config, no pid file outside the temp dir.
//!
//! Directory contents (all numbers fictional; see [`USERS`]): `ou=people`
//! with alice (`mobile`), bob (`phoneNumberVerified` only, Gluu style), carol
//! (no phone), dave (AD style: objectClass `user`, `objectCategory:
//! person`, `sAMAccountName`, `userAccountControl: 512`, `mobile`) and erin
//! (AD style, disabled: `userAccountControl: 514`); `ou=services` with the
//! service account `cn=smsotp`.
//!
//! Access control on `dc=example,dc=org` (besides the rootdn, which may do
//! anything): anonymous may only bind (auth); each user may bind and read
//! their own entry; the service account may read every entry except
//! password hashes, and write `mobile` (enrollment write-back); nobody else
//! reads anything.

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::radiusd::run_bounded;

/// How long slapd may take to listen.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `openssl`, `slapadd` or `ldap*` run may take.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(10);
/// A server is killed after this long whatever the test does.
pub const LIFETIME: Duration = Duration::from_secs(300);
/// How long SIGTERM may take to end slapd before it gets SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// What the Debian packages the LDAP tests need are called.
pub const PACKAGES: &str = "slapd ldap-utils";

/// The suffix of the one database.
pub const BASE: &str = "dc=example,dc=org";
/// The rootdn (may do anything; used to seed and to check write-backs).
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
/// The rootdn's password (olcRootPW, cleartext: test only).
pub const ROOT_PASSWORD: &str = "e2e-root-Pw-1";
/// The service account the product binds as.
pub const SERVICE_DN: &str = "cn=smsotp,ou=services,dc=example,dc=org";
/// The service account's password.
pub const SERVICE_PASSWORD: &str = "e2e-service-Pw-2";
/// Where the users live.
pub const PEOPLE: &str = "ou=people,dc=example,dc=org";

/// One seeded user: the login name, the RDN of the entry under
/// [`PEOPLE`], and the password.
#[derive(Debug, Clone, Copy)]
pub struct User {
    pub uid: &'static str,
    pub rdn: &'static str,
    pub password: &'static str,
}

/// The seeded users. AD-style users (dave, erin) are named by `cn`, as in
/// Active Directory, and found by `sAMAccountName`.
pub const USERS: &[User] = &[
    User {
        uid: "alice",
        rdn: "uid=alice",
        password: "alice-Pw-11",
    },
    User {
        uid: "bob",
        rdn: "uid=bob",
        password: "bob-Pw-22",
    },
    User {
        uid: "carol",
        rdn: "uid=carol",
        password: "carol-Pw-33",
    },
    User {
        uid: "dave",
        rdn: "cn=Dave Example",
        password: "dave-Pw-44",
    },
    User {
        uid: "erin",
        rdn: "cn=Erin Example",
        password: "erin-Pw-55",
    },
];

/// alice's `mobile`.
pub const ALICE_MOBILE: &str = "+4915112345678";
/// bob's `phoneNumberVerified`.
pub const BOB_VERIFIED: &str = "+4915187654321";
/// dave's `mobile`.
pub const DAVE_MOBILE: &str = "+4915122223333";
/// erin's `mobile` (erin is disabled).
pub const ERIN_MOBILE: &str = "+4915144445555";

/// The test-only schema.
///
/// - `phoneNumberVerified` (DirectoryString), as in Gluu's schema, in the
///   auxiliary class `gluuPersonTest`. Its OIDs sit under 1.3.6.1.4.1.99999,
///   an arc used here as an example and for tests only.
/// - Active Directory's `user` class with `sAMAccountName`,
///   `userAccountControl` and `userPrincipalName`, under their AD OIDs (so
///   AD's filters work unchanged, e.g. the bitwise rule
///   1.2.840.113556.1.4.803 on `userAccountControl`, which OpenLDAP
///   implements as integerBitAndMatch). Debian's msuser.ldif loads, but
///   defines these attributes without EQUALITY rules, so
///   `(sAMAccountName=dave)` never matches there; and its `user` class
///   requires `nTSecurityDescriptor` and friends yet does not allow
///   `sAMAccountName`.
/// - AD's `objectCategory`, as a plain string holding `person`: AD stores
///   the DN of the class's category and accepts the short name in
///   filters, so the preset's `(objectCategory=person)` matches the same
///   entries here as there.
///
/// Never load this into a real directory.
pub const TEST_SCHEMA: &str = "\
dn: cn=smsotptest,cn=schema,cn=config
objectClass: olcSchemaConfig
cn: smsotptest
olcAttributeTypes: ( 1.3.6.1.4.1.99999.1.1 NAME 'phoneNumberVerified'
  DESC 'test only: a verified phone number, as in Gluu'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
olcAttributeTypes: ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
  DESC 'test only: as in Active Directory'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
olcAttributeTypes: ( 1.2.840.113556.1.4.8 NAME 'userAccountControl'
  DESC 'test only: as in Active Directory (2 = disabled)'
  EQUALITY integerMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
olcAttributeTypes: ( 1.2.840.113556.1.4.782 NAME 'objectCategory'
  DESC 'test only: as in Active Directory, reduced to the short name'
  EQUALITY caseIgnoreMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
olcAttributeTypes: ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName'
  DESC 'test only: as in Active Directory'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
olcObjectClasses: ( 1.3.6.1.4.1.99999.2.1 NAME 'gluuPersonTest'
  DESC 'test only: carries phoneNumberVerified, as gluuPerson does'
  SUP top AUXILIARY MAY ( phoneNumberVerified ) )
olcObjectClasses: ( 1.2.840.113556.1.5.9 NAME 'user'
  DESC 'test only: an Active Directory user, reduced'
  SUP organizationalPerson STRUCTURAL
  MAY ( sAMAccountName $ userAccountControl $ userPrincipalName $ mobile $
  objectCategory $
  mail $ displayName $ givenName ) )
";

/// The seed entries (passwords from [`USERS`] are appended as
/// `userPassword`).
pub const SEED: &str = "\
dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
dc: example
o: smsotp e2e

dn: ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: people

dn: ou=services,dc=example,dc=org
objectClass: organizationalUnit
ou: services

dn: cn=smsotp,ou=services,dc=example,dc=org
objectClass: applicationProcess
objectClass: simpleSecurityObject
cn: smsotp
description: the smsotp service account (e2e tests)
userPassword: e2e-service-Pw-2

dn: uid=alice,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: alice
cn: Alice Example
sn: Example
mobile: +4915112345678
userPassword: alice-Pw-11

dn: uid=bob,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
objectClass: gluuPersonTest
uid: bob
cn: Bob Example
sn: Example
phoneNumberVerified: +4915187654321
userPassword: bob-Pw-22

dn: uid=carol,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: carol
cn: Carol Example
sn: Example
userPassword: carol-Pw-33

dn: cn=Dave Example,ou=people,dc=example,dc=org
objectClass: user
cn: Dave Example
sn: Example
sAMAccountName: dave
objectCategory: person
userPrincipalName: dave@example.org
userAccountControl: 512
mobile: +4915122223333
userPassword: dave-Pw-44

dn: cn=Erin Example,ou=people,dc=example,dc=org
objectClass: user
cn: Erin Example
sn: Example
sAMAccountName: erin
objectCategory: person
userPrincipalName: erin@example.org
userAccountControl: 514
mobile: +4915144445555
userPassword: erin-Pw-55
";

/// A running slapd and everything it was made from.
pub struct Slapd {
    /// The `ldap://` (StartTLS-capable) listener on 127.0.0.1.
    pub plain_port: u16,
    /// The `ldaps://` listener on 127.0.0.1.
    pub ldaps_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    stop_watchdog: Option<mpsc::Sender<()>>,
    watchdog: Option<JoinHandle<()>>,
}

impl Slapd {
    /// Makes the CAs, the config and the seed, starts slapd on free ports
    /// and waits until it listens. Panics (with the slapd log) if it does not
    /// within [`START_TIMEOUT`]; retries on other ports if the ones picked were
    /// taken in the meantime.
    ///
    /// slapd dies with the thread that started it (`PR_SET_PDEATHSIG`): keep
    /// the guard in the test's thread, do not start it in a helper thread
    /// that ends first.
    pub fn start() -> Slapd {
        for tool in [
            "/usr/sbin/slapd",
            "/usr/sbin/slapadd",
            "/usr/bin/ldapsearch",
        ] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing; install the Debian packages {PACKAGES} (scripts/deps.sh test)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("smsotp-e2e-slapd-")
            .tempdir()
            .expect("create slapd temp dir");
        let d = dir.path();
        make_certs(d);
        std::fs::create_dir(d.join("slapd.d")).expect("mkdir slapd.d");
        std::fs::create_dir(d.join("db")).expect("mkdir db");
        std::fs::write(d.join("config.ldif"), config_ldif(d)).expect("write config.ldif");
        std::fs::write(d.join("seed.ldif"), SEED).expect("write seed.ldif");
        let cfg = d.join("slapd.d");
        tool_ok(
            Command::new("/usr/sbin/slapadd")
                .args(["-n0", "-F"])
                .arg(&cfg)
                .arg("-l")
                .arg(d.join("config.ldif")),
            "slapadd -n0 (cn=config)",
        );
        tool_ok(
            Command::new("/usr/sbin/slapadd")
                .args(["-n1", "-F"])
                .arg(&cfg)
                .arg("-l")
                .arg(d.join("seed.ldif")),
            "slapadd -n1 (seed entries)",
        );
        let password_file = d.join("service.password");
        std::fs::write(&password_file, format!("{SERVICE_PASSWORD}\n"))
            .expect("write service password file");
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod service password file");

        let mut s = Slapd {
            plain_port: 0,
            ldaps_port: 0,
            dir,
            child: None,
            stop_watchdog: None,
            watchdog: None,
        };
        s.run_on_free_ports();
        s
    }

    fn run_on_free_ports(&mut self) {
        let mut last = String::new();
        for _ in 0..5 {
            let (plain, ldaps) = two_free_ports();
            self.plain_port = plain;
            self.ldaps_port = ldaps;
            match self.run() {
                Ok(()) => return,
                Err(log) if log.contains("Address already in use") => last = log,
                Err(log) => {
                    panic!("slapd did not start: {log}")
                }
            }
        }
        panic!("slapd: no free ports after 5 tries; last log:\n{last}");
    }

    /// Starts slapd on `self`'s ports and waits until both accept
    /// connections; on failure returns the log (slapd is then stopped).
    fn run(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open slapd.log");
        let mut cmd = Command::new("/usr/sbin/slapd");
        // -d keeps slapd in the foreground (our child, killable); "stats"
        // logs connections and operations, never passwords.
        cmd.args(["-d", "stats", "-F"])
            .arg(self.dir.path().join("slapd.d"))
            .arg("-h")
            .arg(format!("{} {}", self.url_plain(), self.url_ldaps()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start /usr/sbin/slapd: {e}"));
        let pid = child.id() as libc::pid_t;
        self.child = Some(child);
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        self.stop_watchdog = Some(stop_tx);
        self.watchdog = Some(std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(LIFETIME) {
                // SAFETY: plain kill(2); the guard stops this thread before
                // it reaps the child, so the pid is still slapd's.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }));

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                self.end_watchdog();
                return Err(format!(
                    "it exited ({status})\n--- slapd log ---\n{}",
                    self.log()
                ));
            }
            let up = |port: u16| {
                TcpStream::connect_timeout(
                    &([127, 0, 0, 1], port).into(),
                    Duration::from_millis(200),
                )
                .is_ok()
            };
            // slapd binds and listens on every URL of -h before it accepts
            // on any, so the plain port answering means ldaps is up too (a
            // probe of the ldaps port would log a TLS handshake failure).
            if up(self.plain_port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "it was not listening after {START_TIMEOUT:?}\n--- slapd log ---\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops slapd (SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]); its
    /// ports then refuse connections. The data stays for [`Slapd::restart`].
    pub fn stop(&mut self) {
        self.end_watchdog();
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: plain kill(2) on our own, not yet reaped child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts slapd again after [`Slapd::stop`], on the same ports if they
    /// are still free (panics otherwise: a test that restarts wants the URLs
    /// it configured to work again).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.run() {
            panic!(
                "slapd did not restart on ports {} and {}\n--- log ---\n{log}",
                self.plain_port, self.ldaps_port
            );
        }
    }

    /// Whether slapd is running (not stopped, not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn end_watchdog(&mut self) {
        self.stop_watchdog.take();
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
    }

    /// `ldap://127.0.0.1:PORT` (use StartTLS on it).
    pub fn url_plain(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.plain_port)
    }

    /// `ldaps://127.0.0.1:PORT`.
    pub fn url_ldaps(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    /// The CA that signed the server certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA unrelated to the server certificate (PEM).
    pub fn wrong_ca_file(&self) -> PathBuf {
        self.dir.path().join("wrong-ca.pem")
    }

    /// The server certificate (PEM; CN localhost, SAN localhost, 127.0.0.1, ::1).
    pub fn server_cert_file(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The suffix, `dc=example,dc=org`.
    pub fn base(&self) -> &'static str {
        BASE
    }

    /// `ou=people,dc=example,dc=org`.
    pub fn people(&self) -> &'static str {
        PEOPLE
    }

    /// The service account's DN.
    pub fn service_dn(&self) -> &'static str {
        SERVICE_DN
    }

    /// The service account's password.
    pub fn service_password(&self) -> &'static str {
        SERVICE_PASSWORD
    }

    /// A file (mode 0600, owned by whoever runs the tests: root) holding
    /// the service account's password and a newline.
    pub fn service_password_file(&self) -> PathBuf {
        self.dir.path().join("service.password")
    }

    /// The DN of a seeded user; panics for an unknown one.
    pub fn user_dn(&self, uid: &str) -> String {
        format!("{},{PEOPLE}", user(uid).rdn)
    }

    /// The password of a seeded user; panics for an unknown one.
    pub fn user_password(&self, uid: &str) -> &'static str {
        user(uid).password
    }

    /// slapd's log so far (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("slapd.log")
    }

    /// An `ldap*` tool (`ldapsearch`, `ldapmodify`, `ldapwhoami`, …) that
    /// trusts `ca` (and nothing else: `LDAPTLS_CACERT` overrides
    /// /etc/ldap/ldap.conf) and demands a valid certificate; the caller adds
    /// `-x -H URL`, the bind and the operation, and runs it with
    /// [`run_tool`].
    pub fn ldap_tool(&self, tool: &str, ca: &Path) -> Command {
        let mut cmd = Command::new(format!("/usr/bin/{tool}"));
        cmd.env("LDAPTLS_CACERT", ca)
            .env("LDAPTLS_REQCERT", "demand")
            // ~/.ldaprc and ./ldaprc of whoever runs the tests stay out.
            .env("LDAPRC", self.dir.path().join("no-ldaprc"))
            .env("HOME", self.dir.path())
            .current_dir(self.dir.path());
        cmd
    }

    /// An `ldap*` tool bound as the rootdn over StartTLS (`-ZZ`) with the
    /// test CA.
    fn as_root(&self, tool: &str) -> Command {
        let mut cmd = self.ldap_tool(tool, &self.ca_file());
        cmd.args(["-x", "-ZZ", "-o", "nettimeout=5", "-H"])
            .arg(self.url_plain())
            .args(["-D", ROOT_DN, "-w", ROOT_PASSWORD]);
        cmd
    }

    /// Adds entries (LDIF text) as the rootdn; panics with ldapadd's output
    /// if that fails.
    pub fn add(&self, ldif: &str) {
        let out = run_tool_input(self.as_root("ldapadd"), ldif.as_bytes());
        assert!(
            out.ok(),
            "ldapadd failed:\n{ldif}\n--- output ---\n{}",
            out.text
        );
    }

    /// Applies changes (LDIF with `changetype:`) as the rootdn; panics with
    /// ldapmodify's output if that fails.
    pub fn modify(&self, ldif: &str) {
        let out = run_tool_input(self.as_root("ldapmodify"), ldif.as_bytes());
        assert!(
            out.ok(),
            "ldapmodify failed:\n{ldif}\n--- output ---\n{}",
            out.text
        );
    }

    /// Searches the whole tree as the rootdn (`ldapsearch -LLL`, lines not
    /// wrapped) and returns the LDIF; panics if ldapsearch fails (no match
    /// is not a failure: the text is then empty).
    pub fn search(&self, filter: &str, attrs: &[&str]) -> String {
        let mut cmd = self.as_root("ldapsearch");
        cmd.args(["-LLL", "-o", "ldif-wrap=no", "-b", BASE, filter])
            .args(attrs);
        let out = run_tool(cmd);
        assert!(out.ok(), "ldapsearch {filter} failed:\n{}", out.text);
        out.text
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn user(uid: &str) -> User {
    *USERS.iter().find(|u| u.uid == uid).unwrap_or_else(|| {
        panic!("no seeded LDAP user {uid:?}; the seeded ones are in slapd::USERS")
    })
}

/// What a bounded tool run gave.
#[derive(Debug)]
pub struct ToolRun {
    pub status: ExitStatus,
    /// stdout, then stderr.
    pub text: String,
    pub timed_out: bool,
}

impl ToolRun {
    /// Exit 0 within the time limit.
    pub fn ok(&self) -> bool {
        self.status.success() && !self.timed_out
    }
}

/// Runs `cmd` (stdout and stderr captured), killed after [`TOOL_TIMEOUT`].
pub fn run_tool(cmd: Command) -> ToolRun {
    run_tool_input(cmd, b"")
}

/// As [`run_tool`], with `input` on stdin.
pub fn run_tool_input(mut cmd: Command, input: &[u8]) -> ToolRun {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (status, text, timed_out) = run_bounded(cmd, input, TOOL_TIMEOUT);
    ToolRun {
        status,
        text,
        timed_out,
    }
}

fn tool_ok(cmd: &mut Command, what: &str) -> String {
    // run_bounded owns its Command; the builder chains hand out `&mut`.
    let cmd = std::mem::replace(cmd, Command::new("false"));
    let out = run_tool(cmd);
    assert!(
        out.ok(),
        "{what} failed ({}{}):\n{}",
        out.status,
        if out.timed_out { ", timed out" } else { "" },
        out.text
    );
    out.text
}

/// Two distinct TCP ports free on 127.0.0.1 right now.
fn two_free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = |l: &TcpListener| l.local_addr().expect("local addr").port();
    (port(&a), port(&b))
}

/// The test CA, the server key and certificate it signs, and the wrong CA,
/// all EC P-256, valid for two days.
fn make_certs(d: &Path) {
    let ca = |name: &str, cn: &str| {
        tool_ok(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec"])
                .args([
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-days",
                    "2",
                ])
                .arg("-keyout")
                .arg(d.join(format!("{name}.key")))
                .arg("-out")
                .arg(d.join(format!("{name}.pem")))
                .args(["-subj", &format!("/CN={cn}")])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
            &format!("openssl: make {name}"),
        );
    };
    ca("ca", "smsotp e2e test CA");
    ca("wrong-ca", "smsotp e2e unrelated CA");
    tool_ok(
        Command::new("openssl")
            .args(["req", "-x509", "-CA"])
            .arg(d.join("ca.pem"))
            .arg("-CAkey")
            .arg(d.join("ca.key"))
            .args([
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ])
            .args(["-days", "2", "-keyout"])
            .arg(d.join("server.key"))
            .arg("-out")
            .arg(d.join("server.pem"))
            .args(["-subj", "/CN=localhost"])
            .args([
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
            ])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args([
                "-addext",
                "keyUsage=critical,digitalSignature,keyEncipherment",
            ])
            .args(["-addext", "extendedKeyUsage=serverAuth"]),
        "openssl: make the server certificate",
    );
    // The CA keys are not needed any more; the server key must stay
    // readable by slapd (root here).
    for k in ["ca.key", "wrong-ca.key"] {
        let _ = std::fs::remove_file(d.join(k));
    }
}

/// The cn=config LDIF for `slapadd -n0`.
fn config_ldif(d: &Path) -> String {
    let d = d.display();
    format!(
        "\
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {d}/slapd.pid
olcArgsFile: {d}/slapd.args
olcTLSCACertificateFile: {d}/ca.pem
olcTLSCertificateFile: {d}/server.pem
olcTLSCertificateKeyFile: {d}/server.key

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif

include: file:///etc/ldap/schema/cosine.ldif

include: file:///etc/ldap/schema/inetorgperson.ldif

include: file:///etc/ldap/schema/nis.ldif

{TEST_SCHEMA}
dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {BASE}
olcRootDN: {ROOT_DN}
olcRootPW: {ROOT_PASSWORD}
olcDbDirectory: {d}/db
olcDbMaxSize: 16777216
olcAccess: {{0}}to attrs=userPassword by anonymous auth by self auth by * none
olcAccess: {{1}}to attrs=mobile by dn.exact=\"{SERVICE_DN}\" write by self read by * none
olcAccess: {{2}}to * by dn.exact=\"{SERVICE_DN}\" read by self read by * none
"
    )
}
