//! The vendor presets (Twilio, Vonage/Nexmo, Clickatell, Plivo, Bulksms):
//! each vendor's documented request and how to read its answer.

use super::*;

/// Who a Twilio message is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwilioSender {
    /// `from`: a Twilio number or an alphanumeric sender id.
    From(String),
    /// `messaging_service_sid`: Twilio picks the sender.
    MessagingService(String),
}

/// Who a Plivo message is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlivoSender {
    /// `from`: a Plivo number or sender id.
    Src(String),
    /// `powerpack_uuid`: Plivo picks the sender from the Powerpack.
    Powerpack(String),
}

/// A vendor's documented SMS API, configured by its own keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preset {
    /// Twilio Programmable Messaging, "Create a Message":
    /// `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`, HTTP
    /// Basic with the Account SID and Auth Token, a form with `To` (E.164),
    /// `From` or `MessagingServiceSid`, and `Body`. Success: `201 Created`.
    /// Errors carry `{"code", "message"}`; 21212/21606/21659/21660 are about
    /// the sender (misconfigured), other 400s refuse the message.
    Twilio {
        /// `AC…`, also the Basic user name.
        account_sid: String,
        /// Holds the Auth Token; read at each send.
        auth_token_file: PathBuf,
        /// Who the message is from.
        sender: TwilioSender,
    },
    /// Vonage (Nexmo) SMS API: `POST {base}/sms/json`, a form with
    /// `api_key`, `api_secret`, `from`, `to` (E.164 without `+`), `text` and
    /// `type=unicode` when the text is not GSM-7. It answers `200` with a
    /// status per message part: `"0"` is success; 1 (throttled), 5
    /// (internal error), 9 (out of credit) and 10 (too many binds) are
    /// temporary; 2, 4, 8, 11, 14, 15, 23, 32 mean our account or config is
    /// wrong; the rest (3, 6, 7, 12, 22, 29, 33: invalid or barred number,
    /// message too long, …) refuse the message.
    Vonage {
        /// The account's API key (not secret).
        api_key: String,
        /// Holds the API secret; read at each send.
        api_secret_file: PathBuf,
        /// The sender: a number or an alphanumeric id (required by Vonage).
        from: String,
    },
    /// Clickatell Platform (SMS API, REST integration):
    /// `POST {base}/messages`, header `Authorization: <API key>`, JSON
    /// `{"content", "to": ["<E.164 without +>"], "from"?}`. Success: `202`
    /// with `messages[*].accepted == true`; a message not accepted carries
    /// `errorCode`/`errorDescription`. `402` (out of credit) is temporary.
    Clickatell {
        /// Holds the API key (it is the whole credential); read at each send.
        api_key_file: PathBuf,
        /// The sender; `None`: the account's default.
        from: Option<String>,
    },
    /// Plivo Message API: `POST {base}/v1/Account/{auth_id}/Message/`, HTTP
    /// Basic with Auth ID and Auth Token, JSON `{"src" | "powerpack_uuid",
    /// "dst": "<E.164 without +>", "text"}`. Success: `202` ("message(s)
    /// queued"); errors carry `{"error"}`.
    Plivo {
        /// `MA…`, also the Basic user name.
        auth_id: String,
        /// Holds the Auth Token; read at each send.
        auth_token_file: PathBuf,
        /// Who the message is from.
        sender: PlivoSender,
    },
    /// BulkSMS JSON REST API v1: `POST {base}/v1/messages?auto-unicode=true`,
    /// HTTP Basic with username and password (or API token id and secret),
    /// JSON `{"to": "<E.164>", "body", "from"?}`. Success: `201 Created`;
    /// errors are problem documents `{"title", "detail"}`.
    Bulksms {
        /// The account name or an API token id.
        username: String,
        /// Holds the password or token secret; read at each send.
        password_file: PathBuf,
        /// The sender; `None`: the account's default.
        from: Option<String>,
    },
}

impl Preset {
    /// The vendor's API address (`base_url` replaces it, e.g. for tests).
    pub fn default_base_url(&self) -> &'static str {
        match self {
            Preset::Twilio { .. } => "https://api.twilio.com",
            Preset::Vonage { .. } => "https://rest.nexmo.com",
            Preset::Clickatell { .. } => "https://platform.clickatell.com",
            Preset::Plivo { .. } => "https://api.plivo.com",
            Preset::Bulksms { .. } => "https://api.bulksms.com",
        }
    }

    pub(super) fn vendor(&self) -> &'static str {
        match self {
            Preset::Twilio { .. } => "Twilio",
            Preset::Vonage { .. } => "Vonage",
            Preset::Clickatell { .. } => "Clickatell",
            Preset::Plivo { .. } => "Plivo",
            Preset::Bulksms { .. } => "BulkSMS",
        }
    }

    /// The keys to check when the gateway says the credentials are wrong.
    pub(super) fn credentials(&self) -> &'static str {
        match self {
            Preset::Twilio { .. } => "account_sid and auth_token_file",
            Preset::Vonage { .. } => "api_key and api_secret_file",
            Preset::Clickatell { .. } => "api_key_file",
            Preset::Plivo { .. } => "auth_id and auth_token_file",
            Preset::Bulksms { .. } => "username and password_file",
        }
    }

    pub(super) fn secret_files(&self) -> Vec<(String, PathBuf)> {
        let f = match self {
            Preset::Twilio {
                auth_token_file, ..
            }
            | Preset::Plivo {
                auth_token_file, ..
            } => auth_token_file,
            Preset::Vonage {
                api_secret_file, ..
            } => api_secret_file,
            Preset::Clickatell { api_key_file, .. } => api_key_file,
            Preset::Bulksms { password_file, .. } => password_file,
        };
        vec![(String::new(), f.clone())]
    }
}

impl Preset {
    pub(super) fn build(
        &self,
        base: &str,
        sms: &Sms<'_>,
        to: &str,
        s: &BTreeMap<String, Secret>,
        status_callback: Option<&str>,
    ) -> Outgoing {
        let secret = s.get("").map_or("", Secret::expose);
        let text = sms.text;
        let mut out = Outgoing {
            method: Method::Post,
            url: Zeroizing::new(String::new()),
            headers: Vec::new(),
            body: None,
        };
        match self {
            Preset::Twilio {
                account_sid,
                sender,
                ..
            } => {
                out.url = Zeroizing::new(format!(
                    "{base}/2010-04-01/Accounts/{}/Messages.json",
                    percent_encode(account_sid)
                ));
                out.headers
                    .push(("Authorization".into(), basic(account_sid, secret)));
                out.header("Content-Type", ContentType::Form.header());
                let (key, from) = match sender {
                    TwilioSender::From(f) => ("From", f),
                    TwilioSender::MessagingService(m) => ("MessagingServiceSid", m),
                };
                let mut pairs = vec![("To", to), (key, from.as_str()), ("Body", text)];
                if let Some(url) = status_callback {
                    pairs.push(("StatusCallback", url));
                }
                out.body = Some(form(&pairs));
            }
            Preset::Vonage { api_key, from, .. } => {
                out.url = Zeroizing::new(format!("{base}/sms/json"));
                out.header("Content-Type", ContentType::Form.header());
                let from = from.strip_prefix('+').unwrap_or(from);
                let mut pairs = vec![
                    ("api_key", api_key.as_str()),
                    ("api_secret", secret),
                    ("from", from),
                    ("to", to),
                    ("text", text),
                ];
                // The shared count's encoding: what check-config predicted.
                if segments::count(text).encoding == Encoding::Ucs2 {
                    pairs.push(("type", "unicode"));
                }
                out.body = Some(form(&pairs));
            }
            Preset::Clickatell { from, .. } => {
                out.url = Zeroizing::new(format!("{base}/messages"));
                out.header("Authorization", secret);
                out.header("Content-Type", ContentType::Json.header());
                out.header("Accept", "application/json");
                let mut j = serde_json::json!({ "content": text, "to": [to] });
                if let Some(f) = from {
                    j["from"] = f.as_str().into();
                }
                out.body = Some(json_body(&j));
            }
            Preset::Plivo {
                auth_id, sender, ..
            } => {
                out.url = Zeroizing::new(format!(
                    "{base}/v1/Account/{}/Message/",
                    percent_encode(auth_id)
                ));
                out.headers
                    .push(("Authorization".into(), basic(auth_id, secret)));
                out.header("Content-Type", ContentType::Json.header());
                let mut j = serde_json::json!({ "dst": to, "text": text });
                match sender {
                    PlivoSender::Src(src) => j["src"] = src.as_str().into(),
                    PlivoSender::Powerpack(p) => j["powerpack_uuid"] = p.as_str().into(),
                }
                out.body = Some(json_body(&j));
            }
            Preset::Bulksms { username, from, .. } => {
                out.url = Zeroizing::new(format!("{base}/v1/messages?auto-unicode=true"));
                out.headers
                    .push(("Authorization".into(), basic(username, secret)));
                out.header("Content-Type", ContentType::Json.header());
                let mut j = serde_json::json!({ "to": to, "body": text });
                if let Some(f) = from {
                    j["from"] = f.as_str().into();
                }
                out.body = Some(json_body(&j));
            }
        }
        out
    }

    pub(super) fn judge(&self, status: u16, body: &str, red: &Redactor) -> Result<(), SendError> {
        let vendor = self.vendor();
        let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
        let field = |k: &str| -> Option<String> {
            json.as_ref()
                .and_then(|j| j.pointer(k))
                .filter(|v| !v.is_null())
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        };
        let excerpt = red.excerpt(body);
        match self {
            Preset::Twilio { .. } => match status {
                201 => Ok(()),
                400 | 404 => {
                    let code = field("/code").unwrap_or_default();
                    let why = red.clean(&field("/message").unwrap_or_else(|| excerpt.clone()));
                    let msg =
                        format!("{vendor} refused the message ({status}, error {code}): {why}");
                    // Errors about our sender, not the recipient.
                    if ["21212", "21606", "21659", "21660", "21705"].contains(&code.as_str()) {
                        Err(SendError::Misconfigured(format!(
                            "{msg}; check from / messaging_service_sid"
                        )))
                    } else {
                        Err(SendError::Rejected(msg))
                    }
                }
                _ => Err(classify_status(status, &excerpt, self.credentials())),
            },
            Preset::Vonage { .. } => {
                if status != 200 {
                    return Err(classify_status(status, &excerpt, self.credentials()));
                }
                let parts = json
                    .as_ref()
                    .and_then(|j| j.get("messages"))
                    .and_then(|m| m.as_array())
                    .filter(|m| !m.is_empty());
                let Some(parts) = parts else {
                    return Err(SendError::Transient(format!(
                        "{vendor} answered 200 without a message status{}",
                        colon(&excerpt)
                    )));
                };
                for p in parts {
                    let st = p
                        .get("status")
                        .map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_owned))
                        .unwrap_or_default();
                    if st == "0" {
                        continue;
                    }
                    let text = p.get("error-text").and_then(|t| t.as_str()).unwrap_or("");
                    let msg = format!("{vendor} status {st}: {}", red.clean(text));
                    return Err(match st.as_str() {
                        "1" | "5" | "9" | "10" => SendError::Transient(msg),
                        "4" | "8" | "14" | "32" => SendError::Misconfigured(format!(
                            "{msg}; bad credentials or account: check {}",
                            self.credentials()
                        )),
                        "2" | "11" | "15" | "23" => SendError::Misconfigured(format!(
                            "{msg}; check the provider's keys (from)"
                        )),
                        _ => SendError::Rejected(msg),
                    });
                }
                Ok(())
            }
            Preset::Clickatell { .. } => {
                if status == 402 {
                    return Err(SendError::Transient(format!(
                        "{vendor} answered 402 (out of credit){}",
                        colon(&excerpt)
                    )));
                }
                if !(200..300).contains(&status) {
                    return Err(classify_status(status, &excerpt, self.credentials()));
                }
                let msgs = json
                    .as_ref()
                    .and_then(|j| j.get("messages"))
                    .and_then(|m| m.as_array())
                    .filter(|m| !m.is_empty());
                let Some(msgs) = msgs else {
                    return Err(SendError::Rejected(format!(
                        "{vendor} answered {status} without accepting a message{}",
                        colon(&excerpt)
                    )));
                };
                for m in msgs {
                    if m.get("accepted") != Some(&serde_json::Value::Bool(true)) {
                        let code = m
                            .get("errorCode")
                            .filter(|c| !c.is_null())
                            .map(|c| c.to_string())
                            .unwrap_or_default();
                        let why = ["errorDescription", "error"]
                            .iter()
                            .find_map(|k| m.get(*k).and_then(|v| v.as_str()))
                            .unwrap_or("");
                        return Err(SendError::Rejected(format!(
                            "{vendor} did not accept the message (error {code}): {}",
                            red.clean(why)
                        )));
                    }
                }
                Ok(())
            }
            Preset::Plivo { .. } => match status {
                202 | 200 => Ok(()),
                400 => Err(SendError::Rejected(format!(
                    "{vendor} refused the message (400): {}",
                    red.clean(&field("/error").unwrap_or(excerpt))
                ))),
                _ => Err(classify_status(status, &excerpt, self.credentials())),
            },
            Preset::Bulksms { .. } => match status {
                201 => Ok(()),
                400 | 404 | 422 => Err(SendError::Rejected(format!(
                    "{vendor} refused the message ({status}): {}",
                    red.clean(
                        &field("/detail")
                            .or_else(|| field("/title"))
                            .unwrap_or(excerpt)
                    )
                ))),
                _ => Err(classify_status(status, &excerpt, self.credentials())),
            },
        }
    }
}
