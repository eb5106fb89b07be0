//! The `[[provider]]` checks of `kind = "http"` and the presets, through
//! the whole loader.

use std::time::Duration;

use crate::sms::http::{Gateway, Method};
use crate::sms::number_format::NumberFormat;
use crate::sms::ProviderSpec;
use std::path::Path;

use crate::config::{Config, ConfigError};

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(Path::new("/etc/smsotp/smsotp.toml"), text)
}

fn err_of(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("config should have been refused:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn http(extra: &str) -> String {
    format!("[[provider]]\nkind = \"http\"\nurl = \"https://api.example.net/send?to={{number}}&text={{message}}\"\n{extra}")
}

#[test]
fn http_provider_defaults() {
    let c = parse(&http("")).unwrap();
    let ProviderSpec::Http(h) = &c.providers[0] else {
        panic!("{:?}", c.providers)
    };
    assert_eq!(h.name, "http");
    assert_eq!(h.transport.timeout, Duration::from_secs(10));
    assert_eq!(h.transport.connect_timeout, Duration::from_secs(3));
    assert!(!h.transport.allow_http && h.transport.proxy.is_none());
    let Gateway::Template(t) = &h.gateway else {
        panic!()
    };
    assert_eq!(t.method, Method::Post);
    assert_eq!(t.success_status, [200, 201, 202]);
    // A short total timeout also bounds the default connect timeout.
    let c = parse(&http("timeout = \"1s\"\n")).unwrap();
    let ProviderSpec::Http(h) = &c.providers[0] else {
        panic!()
    };
    assert_eq!(h.transport.connect_timeout, Duration::from_secs(1));
}

#[test]
fn http_provider_errors_name_the_key_and_where_it_is() {
    let e = err_of("[[provider]]\nkind = \"http\"\nurl = \"https://x.example/?to={nubmer}\"\n");
    assert!(
        e.starts_with("/etc/smsotp/smsotp.toml:3:7: provider[0].url: unknown placeholder {nubmer}"),
        "{e}"
    );
    let cases = [
        ("url = \"https://x.example/?to={number}\"", "{message}"),
        ("url = \"https://x.example/?text={message}\"", "{number}"),
        (
            "url = \"http://x.example/?to={number}&m={message}\"",
            "allow_http = true",
        ),
        (
            "url = \"https://{number}.example/?m={message}\"",
            "in the host",
        ),
        ("url = \"ftp://x/{number}{message}\"", "https://"),
    ];
    for (url, says) in cases {
        let e = err_of(&format!("[[provider]]\nkind = \"http\"\n{url}\n"));
        assert!(
            e.contains("provider[0].url") && e.contains(says),
            "{url}: {e}"
        );
    }
    assert!(parse(
        "[[provider]]\nkind = \"http\"\nurl = \"http://10.0.0.1/?to={number}&m={message}\"\nallow_http = true\n"
    )
    .is_ok());
    let cases = [
        (
            "method = \"DELETE\"",
            "provider[0].method",
            "\"GET\", \"POST\", \"PUT\"",
        ),
        (
            "content_type = \"xml\"\nbody = \"x\"",
            "provider[0].content_type",
            "\"form\", \"json\", \"raw\"",
        ),
        (
            "body = \"x={number}\"",
            "provider[0].body",
            "set content_type",
        ),
        (
            "method = \"GET\"\nbody = { a = \"b\" }",
            "provider[0].body",
            "GET",
        ),
        (
            "content_type = \"json\"",
            "provider[0].content_type",
            "no body",
        ),
        (
            "content_type = \"json\"\nbody = '{\"to\": {number}}'",
            "provider[0].body",
            "outside a JSON string",
        ),
        (
            "success_status = [200, 600]",
            "provider[0].success_status",
            "600 is not an HTTP status",
        ),
        (
            "success_body = { regex = \"(\" }",
            "provider[0].success_body",
            "does not compile",
        ),
        (
            "success_body = { json_pointer = \"status\", equals = \"0\" }",
            "provider[0].success_body",
            "start with \"/\"",
        ),
        (
            "success_body = { json_pointer = \"/s\" }",
            "provider[0].success_body",
            "needs equals",
        ),
        (
            "success_body = { contains = \"OK\", regex = \"OK\" }",
            "provider[0].success_body",
            "exactly one",
        ),
        (
            "headers = { Authorization = \"Bearer {secret}\" }",
            "provider[0].headers.Authorization",
            "secret_file",
        ),
        (
            "headers = { X = \"{message}\" }",
            "provider[0].headers.X",
            "{message}",
        ),
        (
            "secret_file = \"/etc/smsotp/secrets/x\"",
            "provider[0].secret_file",
            "never used",
        ),
        (
            "secrets = { tok = \"/s\" }\nheaders = { A = \"{secret:other}\" }",
            "provider[0].headers.A",
            "secrets = { other",
        ),
        (
            "connect_timeout = \"5s\"\ntimeout = \"2s\"",
            "provider[0].connect_timeout",
            "longer than timeout",
        ),
        ("timeout = \"2m\"", "provider[0].timeout", "out of range"),
        (
            "proxy = \"socks5://p:1080\"",
            "provider[0].proxy",
            "http://proxy.example:3128",
        ),
        ("ca_file = \"ca.pem\"", "provider[0].ca_file", "absolute"),
        (
            "account_sid = \"AC1\"",
            "provider[0].account_sid",
            "not a key of kind \"http\"",
        ),
    ];
    for (extra, key, says) in cases {
        let e = err_of(&http(&format!("{extra}\n")));
        assert!(e.contains(key) && e.contains(says), "{extra}: {e}");
    }
    // A Content-Type header stands for content_type, and must agree with it.
    let design = "[[provider]]\nkind = \"http\"\nurl = \"https://api.example.net/send?to={number}\"\n\
        headers = { Authorization = \"Bearer {secret}\", \"Content-Type\" = \"application/json\" }\n\
        body = '{\"to\": \"{number}\", \"text\": \"{message}\"}'\nsecret_file = \"/etc/smsotp/secrets/example\"\n";
    parse(design).unwrap();
    let e = err_of(&format!("{design}content_type = \"form\"\n"));
    assert!(
        e.contains("provider[0].headers.Content-Type") && e.contains("make them agree"),
        "{e}"
    );
    // The position is the offending value's.
    let e = err_of(&http("success_status = [200,\n  700]\n"));
    assert!(e.contains(":5:3: provider[0].success_status"), "{e}");
}

#[test]
fn presets_take_three_lines_and_check_their_keys() {
    let twilio = "[[provider]]\nkind = \"twilio\"\naccount_sid = \"AC1\"\nauth_token_file = \"/etc/smsotp/secrets/twilio\"\nfrom = \"+12015550100\"\n";
    let c = parse(twilio).unwrap();
    let ProviderSpec::Http(h) = &c.providers[0] else {
        panic!()
    };
    assert_eq!(h.name, "twilio");
    assert!(
        matches!(&h.gateway, Gateway::Preset { base_url, .. } if base_url == "https://api.twilio.com")
    );
    for ok in [
        "kind = \"vonage\"\napi_key = \"k\"\napi_secret_file = \"/s\"\nfrom = \"ACME\"",
        "kind = \"nexmo\"\napi_key = \"k\"\napi_secret_file = \"/s\"\nfrom = \"ACME\"",
        "kind = \"clickatell\"\napi_key_file = \"/s\"",
        "kind = \"plivo\"\nauth_id = \"MA1\"\nauth_token_file = \"/s\"\npowerpack_uuid = \"u\"",
        "kind = \"bulksms\"\nusername = \"u\"\npassword_file = \"/s\"\nbase_url = \"https://api.bulksms.example/\"\ntimeout = \"5s\"\nproxy = \"http://proxy.example:3128\"",
    ] {
        parse(&format!("[[provider]]\n{ok}\n")).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let cases = [
        ("kind = \"twilio\"\naccount_sid = \"AC1\"\nauth_token_file = \"/s\"", "provider[0].from", "messaging_service_sid"),
        ("kind = \"twilio\"\naccount_sid = \"AC1\"\nauth_token_file = \"/s\"\nfrom = \"+1\"\nmessaging_service_sid = \"MG1\"", "provider[0].messaging_service_sid", "not both"),
        ("kind = \"vonage\"\napi_key = \"k\"\nfrom = \"A\"", "provider[0].api_secret_file", "is missing"),
        ("kind = \"clickatell\"\napi_key_file = \"key\"", "provider[0].api_key_file", "absolute"),
        ("kind = \"clickatell\"\napi_key_file = \"/k\"\nurl = \"https://x\"", "provider[0].url", "not a key of kind \"clickatell\""),
        ("kind = \"plivo\"\nauth_id = \"MA1\"\nauth_token_file = \"/s\"\nfrom = \"\"", "provider[0].from", "non-empty"),
        ("kind = \"bulksms\"\nusername = \"u\"\npassword_file = \"/s\"\nbase_url = \"http://api.bulksms.com\"", "provider[0].base_url", "https"),
        ("kind = \"sms77\"", "provider[0].kind", "not a provider kind"),
    ];
    for (t, key, says) in cases {
        let e = err_of(&format!("[[provider]]\n{t}\n"));
        assert!(e.contains(key) && e.contains(says), "{t}: {e}");
    }
}

#[test]
fn number_format_is_checked_per_kind() {
    let c = parse(&http("")).unwrap();
    let ProviderSpec::Http(h) = &c.providers[0] else {
        panic!()
    };
    assert_eq!(h.number_format, NumberFormat::E164);
    let e = err_of(&http("number_format = \"E.164\"\n"));
    assert!(
        e.contains("provider[0].number_format: \"E.164\" is not a number format; use \"e164\", \"digits\", \"national\""),
        "{e}"
    );
    // National drops the country code: one allowed country, or refused.
    let e = err_of(&http("number_format = \"national\"\n"));
    assert!(
        e.contains("provider[0].number_format: \"national\" drops the country code")
            && e.contains("phone.allowed_countries = [\"DE\"]"),
        "{e}"
    );
    let ok = format!(
        "[phone]\nallowed_countries = [\"DE\"]\n\n{}",
        http("number_format = \"national\"\n")
    );
    assert!(parse(&ok).is_ok());
    // Each preset's default is what its API documents; others are refused
    // with the reason.
    let twilio = "[[provider]]\nkind = \"twilio\"\naccount_sid = \"AC1\"\nauth_token_file = \"/etc/smsotp/secrets/twilio\"\nfrom = \"+12015550100\"\n";
    let vonage = "[[provider]]\nkind = \"vonage\"\napi_key = \"k\"\napi_secret_file = \"/etc/smsotp/secrets/vonage\"\nfrom = \"ACME\"\n";
    let format_of = |t: &str| match &parse(t).unwrap().providers[0] {
        ProviderSpec::Http(h) => h.number_format,
        other => panic!("{other:?}"),
    };
    assert_eq!(format_of(twilio), NumberFormat::E164);
    assert_eq!(format_of(vonage), NumberFormat::Digits);
    let e = err_of(&format!(
        "[phone]\nallowed_countries = [\"US\"]\n{twilio}number_format = \"national\"\n"
    ));
    assert!(
        e.contains("provider[0].number_format: \"national\" cannot be used here: Twilio's API takes the To number only in E.164")
            && e.contains("use \"e164\" (the default)"),
        "{e}"
    );
    let e = err_of(&format!("{vonage}number_format = \"e164\"\n"));
    assert!(e.contains("without '+' or 00; use \"digits\""), "{e}");
}
