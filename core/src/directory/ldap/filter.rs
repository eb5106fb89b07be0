//! Search filters (RFC 4515) and DNs (RFC 4514) with a user name in them.
//!
//! The config's `filter` is a template: `{user}` is replaced by the user
//! name escaped per RFC 4515 (so `*`, `(`, `)`, `\` and NUL are values,
//! never filter syntax), and the result is parsed into rasn-ldap's
//! [`Filter`]. The template is parsed once at config load with a dummy
//! user, so a broken filter is a config error, not a failed login.

use rasn_ldap::{AttributeValueAssertion, Filter, SubstringChoice, SubstringFilter};

/// Why a filter string is not a filter: what is wrong and the byte offset
/// where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at character {}", offset + 1)]
pub struct FilterError {
    /// What is wrong.
    pub message: String,
    /// Where in the string (0-based byte offset).
    pub offset: usize,
}

/// Whether `user` is a name a login can have: not empty, at most 256
/// bytes, no whitespace, control character or ':' (the rule the config
/// applies to `exempt_users`). Checked before any network traffic.
pub fn is_login_name(user: &str) -> bool {
    !user.is_empty() && user.len() <= 256 && crate::config::plausible_name(user)
}

/// `value` escaped for a filter (RFC 4515 section 3): `*`, `(`, `)`, `\`
/// and NUL as `\2a`, `\28`, `\29`, `\5c`, `\00`.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for ch in value.chars() {
        match ch {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// `value` escaped for an attribute value in a DN (RFC 4514 section 2.4):
/// `"`, `+`, `,`, `;`, `<`, `>`, `\`, `=` escaped, a leading space or `#`
/// and a trailing space escaped, NUL as `\00`.
pub fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, ch) in value.chars().enumerate() {
        match ch {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(ch);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// `template` with every `{user}` replaced by `user`, escaped with `escape`.
pub fn substitute(template: &str, user: &str, escape: fn(&str) -> String) -> String {
    template.replace("{user}", &escape(user))
}

/// The filter for `user`: the template with the escaped name, parsed.
pub fn user_filter(template: &str, user: &str) -> Result<Filter, FilterError> {
    parse(&substitute(template, user, escape_filter_value))
}

/// Parses an RFC 4515 filter string: `(&…)`, `(|…)`, `(!…)`, `(a=v)`,
/// `(a=*)`, `(a=x*y*z)`, `(a>=v)`, `(a<=v)`, `(a~=v)`, with `\XX`
/// escapes in values. A filter without its outer parentheses (`uid=x`) is
/// accepted, as OpenLDAP's tools accept it. Extensible matches (`:=`) are
/// not supported.
pub fn parse(text: &str) -> Result<Filter, FilterError> {
    let mut p = Parser {
        s: text.as_bytes(),
        pos: 0,
    };
    let f = if p.s.first() == Some(&b'(') {
        p.filter()?
    } else {
        p.item(p.s.len())?
    };
    if p.pos != p.s.len() {
        return Err(p.err("text after the end of the filter"));
    }
    Ok(f)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, message: &str) -> FilterError {
        FilterError {
            message: message.to_owned(),
            offset: self.pos,
        }
    }

    fn eat(&mut self, b: u8) -> Result<(), FilterError> {
        if self.s.get(self.pos) == Some(&b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected '{}'", b as char)))
        }
    }

    /// `( filtercomp )`
    fn filter(&mut self) -> Result<Filter, FilterError> {
        self.eat(b'(')?;
        let f = match self.s.get(self.pos) {
            Some(b'&') => {
                self.pos += 1;
                Filter::And(self.list()?.into())
            }
            Some(b'|') => {
                self.pos += 1;
                Filter::Or(self.list()?.into())
            }
            Some(b'!') => {
                self.pos += 1;
                Filter::Not(Box::new(self.filter()?))
            }
            _ => {
                let end = self.s[self.pos..]
                    .iter()
                    .position(|&b| b == b')')
                    .map(|n| self.pos + n)
                    .ok_or_else(|| FilterError {
                        message: "missing ')'".into(),
                        offset: self.s.len(),
                    })?;
                self.item(end)?
            }
        };
        self.eat(b')')?;
        Ok(f)
    }

    /// One or more filters, for `&` and `|`.
    fn list(&mut self) -> Result<Vec<Filter>, FilterError> {
        let mut v = Vec::new();
        while self.s.get(self.pos) == Some(&b'(') {
            v.push(self.filter()?);
        }
        if v.is_empty() {
            return Err(self.err("'&' and '|' need at least one filter in parentheses"));
        }
        Ok(v)
    }

    /// `attr op value`, from `self.pos` up to `end`.
    fn item(&mut self, end: usize) -> Result<Filter, FilterError> {
        let start = self.pos;
        let body = &self.s[start..end];
        let Some(eq) = body.iter().position(|&b| b == b'=') else {
            return Err(self.err("expected an attribute, an operator (=, >=, <=, ~=) and a value"));
        };
        let (attr_end, op) = match eq.checked_sub(1).map(|i| body[i]) {
            Some(b'>') => (eq - 1, b'>'),
            Some(b'<') => (eq - 1, b'<'),
            Some(b'~') => (eq - 1, b'~'),
            Some(b':') => {
                return Err(self.err("extensible matches (':=') are not supported"));
            }
            _ => (eq, b'='),
        };
        let attr = &body[..attr_end];
        if attr.is_empty()
            || !attr
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b';')
        {
            return Err(self.err("expected an attribute name (letters, digits, '-', '.', ';')"));
        }
        let attr = String::from_utf8_lossy(attr).into_owned();
        let value_at = start + eq + 1;
        let raw = &body[eq + 1..];
        self.pos = end;
        let ava = |v: Vec<u8>| AttributeValueAssertion::new(attr.clone().into(), v.into());
        if op != b'=' {
            let v = unescape(raw, value_at)?;
            return Ok(match op {
                b'>' => Filter::GreaterOrEqual(ava(v)),
                b'<' => Filter::LessOrEqual(ava(v)),
                _ => Filter::ApproxMatch(ava(v)),
            });
        }
        if raw == b"*" {
            return Ok(Filter::Present(attr.into()));
        }
        if !raw.contains(&b'*') {
            return Ok(Filter::EqualityMatch(ava(unescape(raw, value_at)?)));
        }
        // Substrings: initial*any*…*final, each part possibly empty.
        let parts: Vec<&[u8]> = raw.split(|&b| b == b'*').collect();
        let last = parts.len() - 1;
        let mut choices = Vec::new();
        let mut at = value_at;
        for (i, part) in parts.iter().enumerate() {
            if !part.is_empty() {
                let v = unescape(part, at)?.into();
                choices.push(match i {
                    0 => SubstringChoice::Initial(v),
                    i if i == last => SubstringChoice::Final(v),
                    _ => SubstringChoice::Any(v),
                });
            } else if i != 0 && i != last {
                return Err(FilterError {
                    message: "'**' in a value; escape a literal '*' as \\2a".into(),
                    offset: at,
                });
            }
            at += part.len() + 1;
        }
        Ok(Filter::Substrings(SubstringFilter::new(
            attr.into(),
            choices,
        )))
    }
}

/// A value with its `\XX` escapes decoded; `(`, `)` and NUL must be
/// escaped (a `*` here was already taken as a wildcard).
fn unescape(raw: &[u8], at: usize) -> Result<Vec<u8>, FilterError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\\' => {
                let hex = raw
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| FilterError {
                        message: "'\\' must be followed by two hex digits (\\2a for '*')".into(),
                        offset: at + i,
                    })?;
                out.push(hex);
                i += 3;
            }
            b'(' | b')' | 0 => {
                return Err(FilterError {
                    message: "unescaped '(' or ')' in a value; write \\28 or \\29".into(),
                    offset: at + i,
                })
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eq(attr: &str, v: &[u8]) -> Filter {
        Filter::EqualityMatch(AttributeValueAssertion::new(attr.into(), v.to_vec().into()))
    }

    #[test]
    fn injection_attempts_are_one_equality_with_the_literal_name() {
        for user in ["*", "*)(uid=*", "a)(|(objectClass=*", "x\\2a", "nul\0"] {
            let f = user_filter("(uid={user})", user).unwrap();
            assert_eq!(f, eq("uid", user.as_bytes()), "{user:?}");
        }
        let f = user_filter("(&(objectClass=inetOrgPerson)(uid={user}))", "*)(uid=*").unwrap();
        assert_eq!(
            f,
            Filter::And(vec![eq("objectClass", b"inetOrgPerson"), eq("uid", b"*)(uid=*")].into())
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(escape_filter_value("a*(b)\\\0"), "a\\2a\\28b\\29\\5c\\00");
        assert_eq!(escape_dn_value("#a,b+c "), "\\#a\\,b\\+c\\ ");
        assert_eq!(escape_dn_value(" x=y"), "\\ x\\=y");
        assert_eq!(
            substitute("uid={user},ou=people", "a,b", escape_dn_value),
            "uid=a\\,b,ou=people"
        );
    }

    #[test]
    fn rfc4515_cases() {
        assert_eq!(parse("(cn=Babs Jensen)").unwrap(), eq("cn", b"Babs Jensen"));
        assert_eq!(parse("cn=x").unwrap(), eq("cn", b"x"));
        assert_eq!(
            parse("(!(cn=Tim Howes))").unwrap(),
            Filter::Not(Box::new(eq("cn", b"Tim Howes")))
        );
        assert_eq!(parse("(mail=*)").unwrap(), Filter::Present("mail".into()));
        assert_eq!(
            parse("(o=univ*of*mich*)").unwrap(),
            Filter::Substrings(SubstringFilter::new(
                "o".into(),
                vec![
                    SubstringChoice::Initial(b"univ".to_vec().into()),
                    SubstringChoice::Any(b"of".to_vec().into()),
                    SubstringChoice::Any(b"mich".to_vec().into()),
                ]
            ))
        );
        assert_eq!(
            parse("(cn=*end)").unwrap(),
            Filter::Substrings(SubstringFilter::new(
                "cn".into(),
                vec![SubstringChoice::Final(b"end".to_vec().into())]
            ))
        );
        assert_eq!(
            parse("(o=Parens R Us \\28for all your parenthetical needs\\29)").unwrap(),
            eq("o", b"Parens R Us (for all your parenthetical needs)")
        );
        assert_eq!(
            parse("(&(uidNumber>=1000)(uidNumber<=2000)(sn~=smith))").unwrap(),
            Filter::And(
                vec![
                    Filter::GreaterOrEqual(AttributeValueAssertion::new(
                        "uidNumber".into(),
                        b"1000".to_vec().into()
                    )),
                    Filter::LessOrEqual(AttributeValueAssertion::new(
                        "uidNumber".into(),
                        b"2000".to_vec().into()
                    )),
                    Filter::ApproxMatch(AttributeValueAssertion::new(
                        "sn".into(),
                        b"smith".to_vec().into()
                    )),
                ]
                .into()
            )
        );
        assert!(matches!(
            parse("(|(uid=a)(mail=b))").unwrap(),
            Filter::Or(s) if s.len() == 2
        ));
    }

    #[test]
    fn broken_filters_say_where() {
        for (text, offset, words) in [
            ("(uid=x", 6, "')'"),
            ("(uid=x))", 7, "after the end"),
            ("(=x)", 1, "attribute"),
            ("(&)", 2, "at least one"),
            ("(uid=\\zz)", 5, "two hex digits"),
            ("(uid)", 1, "operator"),
            ("(cn:dn:=x)", 1, "extensible"),
            ("(uid=a**b)", 7, "'**'"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.offset, offset, "{text}: {e}");
            assert!(e.message.contains(words), "{text}: {e}");
        }
    }

    #[test]
    fn login_names() {
        assert!(is_login_name("alice"));
        assert!(is_login_name("DOMAIN\\alice") && is_login_name("a.b-c_d$"));
        for bad in ["", "a b", "a:b", "a\nb", "a\tb"] {
            assert!(!is_login_name(bad), "{bad:?}");
        }
        assert!(!is_login_name(&"a".repeat(257)));
    }
}
