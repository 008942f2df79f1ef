//! MTA-STS text formats (RFC 8461), parsed without I/O: the `_mta-sts` TXT
//! record (§3.1), the policy file (§3.2), and which MX host names a policy
//! allows (§4.1).

use std::time::Duration;

/// RFC 8461 §3.2: `max_age` is at most 31557600 seconds (about a year).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// A policy's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Refuse delivery that does not satisfy the policy.
    Enforce,
    /// Deliver as usual; report what enforcement would have refused.
    Testing,
    /// The domain withdrew its policy.
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// A parsed policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// Lowercase, without a trailing dot; `*.example.com` wildcards kept as
    /// written.
    pub mx: Vec<String>,
    /// How long the policy may be used after it was fetched (capped at
    /// [`MAX_AGE_LIMIT`]).
    pub max_age: Duration,
}

/// Why a TXT record set or a policy file was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("no v=STSv1 TXT record")]
    NoRecord,
    #[error("{0} v=STSv1 TXT records (exactly one is allowed)")]
    SeveralRecords(usize),
    #[error("TXT record: {0}")]
    Record(String),
    #[error("policy: {0}")]
    Policy(String),
}

/// The policy id announced by a domain's `_mta-sts` TXT records (§3.1):
/// records not starting with `v=STSv1` are ignored; exactly one must remain
/// and be valid.
pub fn policy_id<S: AsRef<str>>(records: &[S]) -> Result<String, PolicyError> {
    let candidates: Vec<&str> = records
        .iter()
        .map(AsRef::as_ref)
        .filter(|record| {
            record
                .strip_prefix("v=STSv1")
                .is_some_and(|rest| rest.trim_start_matches([' ', '\t']).starts_with(';'))
        })
        .collect();
    match candidates.as_slice() {
        [] => Err(PolicyError::NoRecord),
        [record] => parse_record(record),
        several => Err(PolicyError::SeveralRecords(several.len())),
    }
}

/// `v=STSv1; id=ID[; ext=value]…[;]`; returns the id.
fn parse_record(record: &str) -> Result<String, PolicyError> {
    let invalid = |reason: String| Err(PolicyError::Record(reason));
    let mut fields = record
        .split(';')
        .map(|field| field.trim_matches([' ', '\t']));
    fields.next(); // v=STSv1, checked by the caller.
    let mut id = None;
    let mut fields = fields.peekable();
    while let Some(field) = fields.next() {
        if field.is_empty() {
            // Only a trailing `;` may leave an empty field.
            if fields.peek().is_none() {
                break;
            }
            return invalid("empty field".into());
        }
        let Some((name, value)) = field.split_once('=') else {
            return invalid(format!("field without '=': {field:?}"));
        };
        if name == "id" {
            let valid = (1..=32).contains(&value.len())
                && value.bytes().all(|byte| byte.is_ascii_alphanumeric());
            if !valid {
                return invalid(format!("invalid id {value:?}"));
            }
            if id.is_none() {
                id = Some(value.to_owned());
            }
        } else if !valid_extension(name, value) {
            return invalid(format!("invalid field {field:?}"));
        }
    }
    match id {
        Some(id) => Ok(id),
        None => invalid("no id".into()),
    }
}

fn valid_extension(name: &str, value: &str) -> bool {
    let mut name_bytes = name.bytes();
    let name_ok = name_bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.len() <= 32
        && name_bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    let value_ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| matches!(b, 0x21..=0x3a | 0x3c | 0x3e..=0x7e));
    name_ok && value_ok
}

/// Parses a policy file (§3.2): `key: value` lines (CRLF or LF); the first
/// of a repeated key counts, except `mx`, which may repeat; unknown keys are
/// ignored.
pub fn parse_policy(text: &str) -> Result<Policy, PolicyError> {
    let invalid = |reason: String| Err(PolicyError::Policy(reason));
    let mut version = None;
    let mut mode = None;
    let mut max_age = None;
    let mut mx = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return invalid(format!("line without ':': {line:?}"));
        };
        let value = value.trim_matches([' ', '\t']);
        match key {
            "version" => {
                version.get_or_insert(value);
            }
            "mode" if mode.is_none() => {
                mode = Some(match value {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    other => return invalid(format!("unknown mode {other:?}")),
                });
            }
            "max_age" if max_age.is_none() => {
                let valid = (1..=10).contains(&value.len())
                    && value.bytes().all(|byte| byte.is_ascii_digit());
                if !valid {
                    return invalid(format!("invalid max_age {value:?}"));
                }
                let seconds: u64 = value.parse().unwrap_or(u64::MAX);
                max_age = Some(Duration::from_secs(seconds.min(MAX_AGE_LIMIT)));
            }
            "mx" => {
                if !valid_mx_pattern(value) {
                    return invalid(format!("invalid mx pattern {value:?}"));
                }
                mx.push(value.trim_end_matches('.').to_ascii_lowercase());
            }
            _ => {}
        }
    }
    match version {
        Some("STSv1") => {}
        Some(other) => return invalid(format!("unsupported version {other:?}")),
        None => return invalid("no version".into()),
    }
    let Some(mode) = mode else {
        return invalid("no mode".into());
    };
    let Some(max_age) = max_age else {
        return invalid("no max_age".into());
    };
    if mx.is_empty() && mode != Mode::None {
        return invalid("no mx".into());
    }
    Ok(Policy { mode, mx, max_age })
}

/// A host name, optionally with `*.` as its whole first label.
fn valid_mx_pattern(pattern: &str) -> bool {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl Policy {
    /// Whether `host` (an MX host name, any case, trailing dot or not)
    /// matches one of the policy's `mx` patterns: exactly, or a `*.`
    /// pattern by exactly one leftmost label (§4.1).
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(parent) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
                None => *pattern == host,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_records() {
        assert_eq!(
            policy_id(&["v=STSv1; id=20160831085700Z;"]).unwrap(),
            "20160831085700Z"
        );
        assert_eq!(policy_id(&["v=STSv1;id=abc"]).unwrap(), "abc");
        assert_eq!(
            policy_id(&["v=spf1 -all", "v=STSv1; id=a1; ext.x=y_z"]).unwrap(),
            "a1"
        );
        assert_eq!(policy_id::<&str>(&[]), Err(PolicyError::NoRecord));
        assert_eq!(policy_id(&["v=STSv10; id=a"]), Err(PolicyError::NoRecord));
        assert_eq!(
            policy_id(&["v=STSv1; id=a", "v=STSv1; id=b"]),
            Err(PolicyError::SeveralRecords(2))
        );
        for bad in [
            "v=STSv1;",
            "v=STSv1; id=",
            "v=STSv1; id=has-dash",
            "v=STSv1; id=123456789012345678901234567890123",
            "v=STSv1; id=a;; x=y",
            "v=STSv1; id=a; novalue",
            "v=STSv1; id=a; x=a;b",
        ] {
            assert!(
                matches!(policy_id(&[bad]), Err(PolicyError::Record(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn policy_files() {
        let policy = parse_policy(
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.Example.NET.\r\n\
             max_age: 604800\r\nfuture: ignored\r\n",
        )
        .unwrap();
        assert_eq!(policy.mode, Mode::Enforce);
        assert_eq!(policy.mx, ["mail.example.com", "*.example.net"]);
        assert_eq!(policy.max_age, Duration::from_secs(604_800));

        let testing =
            parse_policy("version: STSv1\nmode:testing\nmx:\tmx.test\nmax_age: 1").unwrap();
        assert_eq!(testing.mode, Mode::Testing);
        assert_eq!(testing.max_age, Duration::from_secs(1));

        let none = parse_policy("version: STSv1\nmode: none\nmax_age: 0\n").unwrap();
        assert_eq!(none.mode, Mode::None);
        assert!(none.mx.is_empty());

        let capped = parse_policy("version: STSv1\nmode: none\nmax_age: 9999999999\n").unwrap();
        assert_eq!(capped.max_age, Duration::from_secs(MAX_AGE_LIMIT));

        // The first of a repeated key counts.
        let first =
            parse_policy("version: STSv1\nmode: testing\nmode: enforce\nmx: a.test\nmax_age: 5")
                .unwrap();
        assert_eq!(first.mode, Mode::Testing);

        for bad in [
            "",
            "mode: enforce\nmx: a.test\nmax_age: 5",
            "version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 5",
            "version: STSv1\nmode: strict\nmx: a.test\nmax_age: 5",
            "version: STSv1\nmode: enforce\nmax_age: 5",
            "version: STSv1\nmode: enforce\nmx: a.test",
            "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -5",
            "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 12345678901",
            "version: STSv1\nmode: enforce\nmx: a..test\nmax_age: 5",
            "version: STSv1\nmode: enforce\nmx: mx.*.test\nmax_age: 5",
            "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 5\ngarbage",
        ] {
            assert!(parse_policy(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mx_patterns_match_exactly_or_by_one_leftmost_label() {
        let policy = parse_policy(
            "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmax_age: 5",
        )
        .unwrap();
        assert!(policy.allows("mail.example.com"));
        assert!(policy.allows("MAIL.Example.com."));
        assert!(!policy.allows("other.example.com"));
        assert!(!policy.allows("example.com"));
        assert!(policy.allows("mx1.example.net"));
        assert!(!policy.allows("example.net"));
        assert!(!policy.allows("a.b.example.net"));
        assert!(!policy.allows(".example.net"));
        assert!(!policy.allows("mx1.example.net.evil.test"));
    }
}
