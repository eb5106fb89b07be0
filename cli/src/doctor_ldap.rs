//! `smsotp doctor`'s check of each `[[directory]] kind = "ldap"`, one
//! finding per step, as a login goes: for every URL, the host name
//! resolved, the TCP connection, TLS (ldaps:// or StartTLS); then on the
//! first server that answered, the service bind; and with `--user NAME`
//! the search for the entry, the Active Directory account state, the
//! phone attribute and whether its value is a number logins accept.
//!
//! A step that fails ends that server's (or that user's) check with one
//! finding naming the step, the URL and the cause, and a fix. A server
//! that fails while another in `urls` answers is a warning (logins work
//! through failover, each waiting for the one that is down first); no
//! server answering is an error. Numbers are shown masked.

use std::net::ToSocketAddrs;

use smsotp_core::config::{Config, DirectorySpec, NoPhone};
use smsotp_core::directory::ldap::{
    ConnectSettings, Connection, LdapError, LdapSpec, OnUnavailable, Scope,
};
use smsotp_core::phone::{mask_raw, Phone};

use crate::report::{Finding, Level};

const AREA: &str = "ldap";

/// Checks every LDAP directory of `cfg`; `user` also tests a lookup.
pub(crate) fn check(cfg: &Config, user: Option<&str>, no_network: bool, f: &mut Vec<Finding>) {
    for spec in cfg.directories.iter().filter_map(|d| match d {
        DirectorySpec::Ldap(s) => Some(s.as_ref()),
        _ => None,
    }) {
        let who = label(spec);
        if no_network {
            f.push(Finding::new(
                Level::Info,
                AREA,
                format!("{who}: not checked (--no-network)"),
            ));
            continue;
        }
        let Some(mut conn) = connect(spec, &who, f) else {
            continue;
        };
        if bind(spec, &who, &mut conn, f) {
            match user {
                Some(u) => lookup(cfg, spec, &who, &mut conn, u, f),
                None => f.push(Finding::new(
                    Level::Info,
                    AREA,
                    format!(
                        "{who}: connect and bind work; `smsotp doctor --user NAME` also looks \
                         NAME up (entry, phone attribute, number)"
                    ),
                )),
            }
        }
        conn.unbind();
    }
}

/// "ldap" when the directory's name is its first URL (every message names
/// the URL), else `ldap "NAME"`.
fn label(spec: &LdapSpec) -> String {
    match spec.urls.first() {
        Some(u) if u.text == spec.name => "ldap".to_owned(),
        _ => format!("ldap \"{}\"", spec.name),
    }
}

/// One server's failure: the step, what went wrong, the fix.
struct Failed {
    step: &'static str,
    message: String,
    fix: String,
}

/// Every URL in order, each step a finding; the first connection that
/// worked is kept for the bind and the lookup.
fn connect(spec: &LdapSpec, who: &str, f: &mut Vec<Finding>) -> Option<Connection> {
    let tls = match spec.tls_config() {
        Ok(t) => t,
        Err(e) => {
            f.push(
                Finding::new(Level::Error, AREA, format!("{who}: TLS setup: {e}")).fix(
                    "ca_file must be a readable PEM file of CA certificates \
                     (or leave it out to trust the system's CA bundle)",
                ),
            );
            return None;
        }
    };
    let mut kept: Option<Connection> = None;
    let mut down: Vec<(usize, Finding)> = Vec::new();
    for url in &spec.urls {
        let text = &url.text;
        let tls_step = if url.ldaps {
            "TLS"
        } else if spec.starttls {
            "StartTLS"
        } else {
            ""
        };
        // The name first, on its own, so a DNS failure is named as such.
        let addrs: Vec<String> = match (url.host.as_str(), url.port).to_socket_addrs() {
            Ok(a) => a.map(|a| a.to_string()).collect(),
            Err(e) => {
                down.push((
                    f.len(),
                    failed(
                        who,
                        text,
                        Failed {
                            step: "DNS",
                            message: format!(
                                "the host name \"{}\" does not resolve: {e}",
                                url.host
                            ),
                            fix: "check the host name in urls and the resolver (/etc/resolv.conf, \
                                  `getent hosts NAME`), or write the server's address"
                                .into(),
                        },
                    ),
                ));
                continue;
            }
        };
        f.push(Finding::new(
            Level::Ok,
            AREA,
            format!("{who} {text}: DNS: {} is {}", url.host, addrs.join(", ")),
        ));
        let settings = ConnectSettings {
            url: url.clone(),
            starttls: spec.starttls && !url.ldaps,
            tls: tls.clone(),
            connect_timeout: spec.connect_timeout,
            timeout: spec.timeout,
        };
        match Connection::open(&settings) {
            Ok(c) => {
                f.push(Finding::new(
                    Level::Ok,
                    AREA,
                    format!("{who} {text}: TCP: connected"),
                ));
                f.push(if tls_step.is_empty() {
                    Finding::new(
                        Level::Warning,
                        AREA,
                        format!(
                            "{who} {text}: no TLS (allow_plaintext = true): the bind password \
                             and the numbers cross the network unencrypted"
                        ),
                    )
                    .fix("use ldaps://, or set starttls = true")
                } else {
                    Finding::new(
                        Level::Ok,
                        AREA,
                        format!(
                            "{who} {text}: {tls_step}: the certificate is trusted and names {}",
                            url.host
                        ),
                    )
                });
                if kept.is_none() {
                    kept = Some(c);
                } else {
                    c.unbind();
                }
            }
            Err(e) => {
                let x = classify(spec, tls_step, e);
                if matches!(x.step, "TLS" | "StartTLS") {
                    // Connection::open got as far as TLS: TCP worked.
                    f.push(Finding::new(
                        Level::Ok,
                        AREA,
                        format!("{who} {text}: TCP: connected"),
                    ));
                }
                down.push((f.len(), failed(who, text, x)));
            }
        }
    }
    // A server down is an error when none answered, else a warning.
    let level = if kept.is_some() {
        Level::Warning
    } else {
        Level::Error
    };
    for (i, (at, mut x)) in down.into_iter().enumerate() {
        x.level = level;
        f.insert(at + i, x);
    }
    match &kept {
        Some(c) if spec.urls.first().is_some_and(|u| u.text != c.url()) => f.push(
            Finding::new(
                Level::Warning,
                AREA,
                format!(
                    "{who}: the first URL is down; {} answered: logins work through failover, \
                     each first waiting for the server that is down",
                    c.url()
                ),
            )
            .fix("bring the first server back, or put a server that answers first in urls"),
        ),
        Some(_) => {}
        None => f.push(
            Finding::new(
                Level::Error,
                AREA,
                format!(
                    "{who}: no server in urls answered: logins that need this directory fail{}",
                    if spec.on_unavailable == OnUnavailable::Next {
                        " (on_unavailable = \"next\": the next [[directory]] is asked instead)"
                    } else {
                        " (on_unavailable = \"fail\")"
                    }
                ),
            )
            .fix("fix the step that failed for each URL above"),
        ),
    }
    kept
}

fn failed(who: &str, url: &str, x: Failed) -> Finding {
    Finding::new(
        Level::Error,
        AREA,
        format!("{who} {url}: {}: {}", x.step, x.message),
    )
    .fix(x.fix)
}

/// The step a connection failed at, in words, with the fix.
fn classify(spec: &LdapSpec, tls_step: &'static str, e: LdapError) -> Failed {
    let tls_step = if tls_step.is_empty() { "TLS" } else { tls_step };
    let secs = |d: std::time::Duration| smsotp_core::config::human_duration(d);
    match &e {
        LdapError::Dns { .. } => Failed {
            step: "DNS",
            message: e.to_string(),
            fix: "check the host name in urls and the resolver".into(),
        },
        LdapError::Tcp {
            address, source, ..
        } => Failed {
            step: "TCP",
            message: format!("cannot connect to {address}: {source}"),
            fix: "is the server running and listening on that port? check the port in urls \
                  (636 for ldaps://, 389 for ldap://) and any firewall between"
                .into(),
        },
        LdapError::Timeout {
            step: "connecting", ..
        } => Failed {
            step: "TCP",
            message: format!(
                "no connection within connect_timeout ({})",
                secs(spec.connect_timeout)
            ),
            fix: "a firewall dropping packets, or a wrong address; check that the host \
                  answers on that port from here"
                .into(),
        },
        LdapError::Timeout { step, .. } if step.contains("TLS") || *step == "StartTLS" => Failed {
            step: tls_step,
            message: format!(
                "the server accepted the connection but did not complete {step} within \
                 timeout ({})",
                secs(spec.timeout)
            ),
            fix: "is it an LDAP server, and does it speak TLS on that port? ldaps:// needs the \
                  TLS port (636), ldap:// with starttls the plain one (389)"
                .into(),
        },
        LdapError::Tls { detail, .. } => {
            let (what, fix) = tls_words(detail);
            Failed {
                step: tls_step,
                message: format!("{what} ({detail})"),
                fix: fix.into(),
            }
        }
        LdapError::Refused { .. } => Failed {
            step: tls_step,
            message: e.to_string(),
            fix: "the server has no TLS set up for StartTLS: configure its certificate, or use \
                  its ldaps:// URL"
                .into(),
        },
        LdapError::Protocol { .. } => Failed {
            step: tls_step,
            message: e.to_string(),
            fix: "ldaps:// on a plain LDAP port, or ldap:// on a TLS port? check the scheme \
                  and the port in urls"
                .into(),
        },
        LdapError::Timeout { step, .. } | LdapError::Io { step, .. } => Failed {
            step,
            message: e.to_string(),
            fix: "check that the server is an LDAP server in good health".into(),
        },
        _ => Failed {
            step: "connect",
            message: e.to_string(),
            fix: "see the message".into(),
        },
    }
}

/// The certificate problem in words, with the fix. `detail` is the
/// client's description (core words the common cases: "unknown issuer",
/// "name mismatch", "expired"), else rustls's own text.
fn tls_words(detail: &str) -> (&'static str, &'static str) {
    if detail.contains("UnknownIssuer") || detail.contains("unknown issuer") {
        (
            "the server's certificate is signed by a CA not trusted here (unknown issuer)",
            "set ca_file to the PEM certificate of the CA that signed the server's certificate \
             (for AD: the enterprise root CA)",
        )
    } else if detail.contains("not valid for name")
        || detail.contains("NotValidForName")
        || detail.contains("name mismatch")
    {
        (
            "the server's certificate does not name the host in the URL (name mismatch)",
            "write the host in urls as the certificate names it, or have the certificate \
             reissued with that name (subjectAltName)",
        )
    } else if detail.contains("expired") || detail.contains("Expired") {
        (
            "the server's certificate has expired",
            "renew the server's certificate (and check this host's clock)",
        )
    } else if detail.contains("not valid yet") || detail.contains("NotValidYet") {
        (
            "the server's certificate is not valid yet",
            "check this host's clock and the certificate's validity dates",
        )
    } else if detail.contains("Revoked") {
        (
            "the server's certificate is revoked",
            "install a new certificate on the server",
        )
    } else {
        (
            "the TLS handshake failed",
            "check the server's certificate and TLS settings (it must offer TLS 1.2 or 1.3)",
        )
    }
}

/// The service bind; whether it worked.
fn bind(spec: &LdapSpec, who: &str, conn: &mut Connection, f: &mut Vec<Finding>) -> bool {
    let url = conn.url().to_owned();
    match spec.bind_service(conn) {
        Ok(()) => {
            f.push(match &spec.bind {
                Some((dn, _)) => Finding::new(
                    Level::Ok,
                    AREA,
                    format!("{who} {url}: bind: bound as \"{dn}\""),
                ),
                None => Finding::new(
                    Level::Info,
                    AREA,
                    format!(
                        "{who} {url}: bind: anonymous (no bind_dn): anonymous must be allowed \
                         to search and read the phone attributes"
                    ),
                ),
            });
            true
        }
        Err(e) => {
            let fix = match &e {
                LdapError::Bind { code: 49, .. } => {
                    "check bind_dn (the full DN of the service account) and the password in \
                     bind_password_file (one line; a trailing newline is dropped, spaces are not)"
                }
                LdapError::Bind { code: 53, .. } | LdapError::Bind { code: 13, .. } => {
                    "the server refuses this bind on this connection: use ldaps:// or \
                     starttls = true, and check the account is not locked"
                }
                LdapError::Setup { .. } => {
                    "bind_password_file must exist, be owned by root with mode 0600, and hold \
                     the password on one line"
                }
                _ => "check the server's log for this bind",
            };
            f.push(
                Finding::new(
                    Level::Error,
                    AREA,
                    format!("{who} {url}: bind: {}", strip_url(&e, &url)),
                )
                .fix(fix),
            );
            false
        }
    }
}

/// The error's message without its leading "URL: ", which the finding
/// names already.
fn strip_url(e: &LdapError, url: &str) -> String {
    let m = e.to_string();
    m.strip_prefix(url)
        .and_then(|r| r.strip_prefix(": "))
        .map_or(m.clone(), str::to_owned)
}

/// `--user NAME`: the search, the account state, the phone attribute and
/// the number.
fn lookup(
    cfg: &Config,
    spec: &LdapSpec,
    who: &str,
    conn: &mut Connection,
    user: &str,
    f: &mut Vec<Finding>,
) {
    let url = conn.url().to_owned();
    let at = format!("{who} {url}: {user}");
    let entry = match spec.find_user(conn, user) {
        Ok(Some(e)) => e,
        Ok(None) => {
            f.push(
                Finding::new(
                    Level::Error,
                    AREA,
                    format!(
                        "{at}: search: no entry: nothing matches {} under \"{}\" (scope {})",
                        spec.filter.replace("{user}", user),
                        spec.base,
                        match spec.scope {
                            Scope::Base => "base",
                            Scope::One => "one",
                            Scope::Sub => "sub",
                        }
                    ),
                )
                .fix(
                    "check the user name, base and filter (try the same search with \
                     ldapsearch), and that the service account may read the entry",
                ),
            );
            return;
        }
        Err(e) => {
            let fix = match &e {
                LdapError::SeveralEntries { .. } => {
                    "narrow the filter so it matches one entry per user (add \
                     (objectClass=person), or search a narrower base)"
                }
                LdapError::Search { code: 32, .. } => {
                    "the base does not exist: check base (its exact DN)"
                }
                LdapError::Search { code: 50, .. } => {
                    "the service account may not search there: grant it read access"
                }
                LdapError::BadUser { .. } => "give a login name",
                _ => "check the base, the filter and the server's log",
            };
            f.push(
                Finding::new(
                    Level::Error,
                    AREA,
                    format!("{at}: search: {}", strip_url(&e, &url)),
                )
                .fix(fix),
            );
            return;
        }
    };
    f.push(Finding::new(
        Level::Ok,
        AREA,
        format!("{at}: search: entry \"{}\"", entry.dn),
    ));
    if spec.active_directory {
        if spec.is_disabled(&entry) {
            f.push(
                Finding::new(
                    Level::Warning,
                    AREA,
                    format!(
                        "{at}: the account is disabled (userAccountControl): its logins fail, \
                         no code is sent"
                    ),
                )
                .fix("enable the account in Active Directory if the user should log in"),
            );
            return;
        }
        f.push(Finding::new(
            Level::Ok,
            AREA,
            format!("{at}: the account is enabled (userAccountControl)"),
        ));
    }
    let Some((attr, raw)) = spec.phone_of(&entry) else {
        f.push(
            Finding::new(
                Level::Error,
                AREA,
                format!(
                    "{at}: no phone attribute: none of {} has a value in \"{}\"",
                    spec.phone_attributes.join(", "),
                    entry.dn
                ),
            )
            .fix(format!(
                "set one of them for {user}, or list the attribute that holds the numbers in \
                 phone_attributes; without one, the next [[directory]] is asked, then \
                 policy.no_phone (\"{}\") applies",
                match cfg.policy.no_phone {
                    NoPhone::Deny => "deny",
                    NoPhone::Allow => "allow",
                    NoPhone::Enroll => "enroll",
                }
            )),
        );
        return;
    };
    match Phone::parse(&raw, cfg.phone.default_region) {
        Ok(p) if p.allowed(&cfg.phone) => f.push(Finding::new(
            Level::Ok,
            AREA,
            format!(
                "{at}: {attr} holds {}, a valid number logins accept",
                p.masked()
            ),
        )),
        Ok(p) => {
            let (problem, fix) = smsotp_core::directory::not_allowed(&p, &cfg.phone);
            f.push(Finding::new(Level::Error, AREA, format!("{at}: {attr}: {problem}")).fix(fix));
        }
        Err(e) => f.push(
            Finding::new(
                Level::Error,
                AREA,
                format!(
                    "{at}: {attr} holds {}, which logins refuse: {}",
                    mask_raw(&raw),
                    e.problem()
                ),
            )
            .fix(e.fix()),
        ),
    }
}
