//! RFC 5321 §4.1.2 path syntax: reverse-path and forward-path parsing, pure.
//!
//! smtp-proto parses the command verb and the ESMTP parameters, but it
//! accepts `<a@>`, unquotes quoted local parts and returns `<>` and
//! `<postmaster>` alike. Paths are therefore cut out of the command line and
//! checked here, keeping a quoted local part exactly as the client wrote it.

use std::fmt;

/// RFC 5321 §4.5.3.1.1 and §4.5.3.1.2.
const MAX_LOCAL_PART: usize = 64;
const MAX_DOMAIN: usize = 255;
/// RFC 5321 §4.5.3.1.3 (the path including the angle brackets).
const MAX_PATH: usize = 256;

/// A mailbox as written by the client: `local@domain`, or a bare local name
/// (`root`) that the caller qualifies with `smtp.origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// Dot-string or quoted-string, exactly as received (quotes kept).
    pub local_part: String,
    /// Domain or address literal; `None` for a bare local name.
    pub domain: Option<String>,
}

impl Mailbox {
    /// True when local part or domain contains non-ASCII (needs SMTPUTF8).
    pub fn is_internationalized(&self) -> bool {
        !self.local_part.is_ascii() || self.domain.as_deref().is_some_and(|d| !d.is_ascii())
    }

    /// The address with `origin` appended when it is a bare local name.
    pub fn qualified(&self, origin: &str) -> String {
        match &self.domain {
            Some(domain) => format!("{}@{}", self.local_part, domain),
            None => format!("{}@{}", self.local_part, origin),
        }
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.domain {
            Some(domain) => write!(f, "{}@{}", self.local_part, domain),
            None => f.write_str(&self.local_part),
        }
    }
}

/// Why a path was refused; the text goes into the SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressError {
    Syntax(&'static str),
    /// Non-ASCII in an address of a transaction without SMTPUTF8 (553 5.6.7).
    NeedsSmtpUtf8,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::Syntax(reason) => f.write_str(reason),
            AddressError::NeedsSmtpUtf8 => f.write_str("non-ASCII address requires SMTPUTF8"),
        }
    }
}

/// Finds the `<...>` path after `FROM:`/`TO:` in a command line. Returns the
/// text between the brackets and the byte range of the whole `<...>` in
/// `line`. A `>` inside a quoted string does not end the path.
pub fn locate_path(line: &str) -> Option<(&str, std::ops::Range<usize>)> {
    let colon = line.find(':')?;
    let rest = &line[colon + 1..];
    let open = colon + 1 + rest.len() - rest.trim_start_matches([' ', '\t']).len();
    if line.as_bytes().get(open) != Some(&b'<') {
        return None;
    }
    let mut in_quote = false;
    let mut escaped = false;
    for (offset, byte) in line.as_bytes()[open + 1..].iter().enumerate() {
        let index = open + 1 + offset;
        match byte {
            _ if escaped => escaped = false,
            b'\\' if in_quote => escaped = true,
            b'"' => in_quote = !in_quote,
            b'>' if !in_quote => return Some((&line[open + 1..index], open..index + 1)),
            _ => {}
        }
    }
    None
}

/// Parses the text between the angle brackets of a reverse-path.
/// `Ok(None)` is the null path `<>`.
pub fn parse_reverse_path(inner: &str, smtputf8: bool) -> Result<Option<Mailbox>, AddressError> {
    if inner.is_empty() {
        return Ok(None);
    }
    parse_mailbox(inner, smtputf8).map(Some)
}

/// Parses the text between the angle brackets of a forward-path.
pub fn parse_forward_path(inner: &str, smtputf8: bool) -> Result<Mailbox, AddressError> {
    if inner.is_empty() {
        return Err(AddressError::Syntax("empty recipient address"));
    }
    parse_mailbox(inner, smtputf8)
}

fn parse_mailbox(inner: &str, smtputf8: bool) -> Result<Mailbox, AddressError> {
    if inner.len() + 2 > MAX_PATH {
        return Err(AddressError::Syntax("address longer than 256 octets"));
    }
    let mailbox_text = strip_source_route(inner)?;
    let (local_part, domain) = split_local_and_domain(mailbox_text)?;
    check_local_part(local_part)?;
    if let Some(domain) = domain {
        check_domain(domain)?;
    }
    let mailbox = Mailbox {
        local_part: local_part.to_owned(),
        domain: domain.map(str::to_owned),
    };
    if !smtputf8 && mailbox.is_internationalized() {
        return Err(AddressError::NeedsSmtpUtf8);
    }
    Ok(mailbox)
}

/// RFC 5321 §4.1.2: an A-d-l source route (`@a,@b:user@c`) must be accepted
/// and its route ignored (Appendix C).
fn strip_source_route(inner: &str) -> Result<&str, AddressError> {
    if !inner.starts_with('@') {
        return Ok(inner);
    }
    match inner.find(':') {
        Some(colon) if colon + 1 < inner.len() => Ok(&inner[colon + 1..]),
        _ => Err(AddressError::Syntax("malformed source route")),
    }
}

fn split_local_and_domain(text: &str) -> Result<(&str, Option<&str>), AddressError> {
    let local_end = if text.starts_with('"') {
        quoted_string_end(text).ok_or(AddressError::Syntax("unterminated quoted local part"))?
    } else {
        text.find('@').unwrap_or(text.len())
    };
    let (local_part, rest) = text.split_at(local_end);
    match rest.strip_prefix('@') {
        Some("") => Err(AddressError::Syntax("domain missing after @")),
        Some(domain) => Ok((local_part, Some(domain))),
        None if rest.is_empty() => Ok((local_part, None)),
        None => Err(AddressError::Syntax(
            "unexpected text after quoted local part",
        )),
    }
}

/// Index just past the closing quote of a quoted string starting at 0.
fn quoted_string_end(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (index, byte) in text.bytes().enumerate().skip(1) {
        match byte {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return Some(index + 1),
            _ => {}
        }
    }
    None
}

fn check_local_part(local_part: &str) -> Result<(), AddressError> {
    if local_part.is_empty() {
        return Err(AddressError::Syntax("empty local part"));
    }
    if local_part.len() > MAX_LOCAL_PART {
        return Err(AddressError::Syntax("local part longer than 64 octets"));
    }
    if local_part.starts_with('"') {
        return check_quoted_string(local_part);
    }
    for atom in local_part.split('.') {
        if atom.is_empty() {
            return Err(AddressError::Syntax(
                "empty atom in local part (misplaced dot)",
            ));
        }
        if !atom.chars().all(is_atext) {
            return Err(AddressError::Syntax("invalid character in local part"));
        }
    }
    Ok(())
}

/// RFC 5321 qtextSMTP / quoted-pairSMTP (RFC 6531 adds UTF-8).
fn check_quoted_string(quoted: &str) -> Result<(), AddressError> {
    let inner = &quoted[1..quoted.len() - 1];
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(' '..='~') => {}
                _ => return Err(AddressError::Syntax("invalid quoted pair in local part")),
            },
            ' ' | '!' | '#'..='[' | ']'..='~' => {}
            c if !c.is_ascii() => {}
            _ => {
                return Err(AddressError::Syntax(
                    "invalid character in quoted local part",
                ));
            }
        }
    }
    Ok(())
}

/// RFC 5322 atext; RFC 6531 extends it with UTF-8 characters.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn check_domain(domain: &str) -> Result<(), AddressError> {
    if domain.len() > MAX_DOMAIN {
        return Err(AddressError::Syntax("domain longer than 255 octets"));
    }
    if let Some(literal) = domain.strip_prefix('[') {
        return check_address_literal(literal);
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err(AddressError::Syntax("empty label in domain"));
        }
        if label.len() > 63 {
            return Err(AddressError::Syntax("domain label longer than 63 octets"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(AddressError::Syntax(
                "domain label starts or ends with a hyphen",
            ));
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
        {
            return Err(AddressError::Syntax("invalid character in domain"));
        }
    }
    Ok(())
}

fn check_address_literal(literal: &str) -> Result<(), AddressError> {
    let Some(body) = literal.strip_suffix(']') else {
        return Err(AddressError::Syntax("unterminated address literal"));
    };
    let valid = match body.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
            body[5..].parse::<std::net::Ipv6Addr>().is_ok()
        }
        _ => body.parse::<std::net::Ipv4Addr>().is_ok(),
    };
    if valid {
        Ok(())
    } else {
        Err(AddressError::Syntax("invalid address literal"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(inner: &str) -> Result<Mailbox, AddressError> {
        parse_forward_path(inner, false)
    }

    #[test]
    fn plain_addresses() {
        let mailbox = forward("user.name+tag@example.com").unwrap();
        assert_eq!(mailbox.local_part, "user.name+tag");
        assert_eq!(mailbox.domain.as_deref(), Some("example.com"));
        assert!(forward("a@[127.0.0.1]").is_ok());
        assert!(forward("a@[IPv6:::1]").is_ok());
    }

    #[test]
    fn quoted_local_part_is_kept_quoted() {
        let mailbox = forward("\"john doe\"@example.com").unwrap();
        assert_eq!(mailbox.local_part, "\"john doe\"");
        assert_eq!(mailbox.to_string(), "\"john doe\"@example.com");
        let escaped = forward(r#""a\"b"@example.com"#).unwrap();
        assert_eq!(escaped.local_part, r#""a\"b""#);
    }

    #[test]
    fn null_and_postmaster_differ() {
        assert_eq!(parse_reverse_path("", false), Ok(None));
        let postmaster = parse_reverse_path("postmaster", false).unwrap().unwrap();
        assert_eq!(postmaster.local_part, "postmaster");
        assert_eq!(postmaster.domain, None);
    }

    #[test]
    fn bad_syntax_says_why() {
        assert_eq!(
            forward("a@"),
            Err(AddressError::Syntax("domain missing after @"))
        );
        assert_eq!(
            forward("@example.com"),
            Err(AddressError::Syntax("malformed source route"))
        );
        assert_eq!(
            forward("a..b@example.com"),
            Err(AddressError::Syntax(
                "empty atom in local part (misplaced dot)"
            ))
        );
        assert_eq!(
            forward("a@exa mple.com"),
            Err(AddressError::Syntax("invalid character in domain"))
        );
        assert_eq!(
            forward("a@-x.com"),
            Err(AddressError::Syntax(
                "domain label starts or ends with a hyphen"
            ))
        );
        assert_eq!(
            forward("a@x..com"),
            Err(AddressError::Syntax("empty label in domain"))
        );
        assert_eq!(
            forward("a@[1.2.3]"),
            Err(AddressError::Syntax("invalid address literal"))
        );
        assert!(forward(&format!("{}@example.com", "a".repeat(65))).is_err());
        assert_eq!(
            forward(""),
            Err(AddressError::Syntax("empty recipient address"))
        );
    }

    #[test]
    fn source_route_is_ignored() {
        let mailbox = forward("@relay.example,@other.example:user@example.com").unwrap();
        assert_eq!(mailbox.to_string(), "user@example.com");
    }

    #[test]
    fn non_ascii_needs_smtputf8() {
        assert_eq!(
            forward("jörg@example.com"),
            Err(AddressError::NeedsSmtpUtf8)
        );
        assert_eq!(
            forward("user@bücher.example"),
            Err(AddressError::NeedsSmtpUtf8)
        );
        assert!(parse_forward_path("jörg@bücher.example", true).is_ok());
    }

    #[test]
    fn bare_local_names_are_qualified_by_the_caller() {
        let root = forward("root").unwrap();
        assert_eq!(root.domain, None);
        assert_eq!(root.qualified("host.example"), "root@host.example");
    }

    #[test]
    fn locate_path_handles_quotes_and_spaces() {
        let line = "MAIL FROM: <\"a>b\"@example.com> SIZE=10";
        let (inner, range) = locate_path(line).unwrap();
        assert_eq!(inner, "\"a>b\"@example.com");
        assert_eq!(&line[range.end..], " SIZE=10");
        assert_eq!(locate_path("RCPT TO:<>").unwrap().0, "");
        assert_eq!(locate_path("RCPT TO:user@example.com"), None);
        assert_eq!(locate_path("RCPT TO:<user@example.com"), None);
    }
}
