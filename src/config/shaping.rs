//! Output control settings: `[[destination]]` rules (which mail they group,
//! connection limit, rate, messages per connection, suspension) and
//! `[cluster]`; their validation, and the pure matching of a recipient
//! domain or MX host against a rule's patterns (docs/delivery.md).

use std::time::Duration;

use super::Invalid;
use super::raw::{RawCluster, RawDestination, RawDuration};
use super::values::check_domain_name;

const DEFAULT_MESSAGES_PER_CONNECTION: u32 = 100;
const DEFAULT_SUSPEND_FOR: Duration = Duration::from_secs(5 * 60);

/// One `[[destination]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationRule {
    /// Unique among the rules: the label in metrics, stats, logs and the
    /// Redis keys of a shared rate.
    pub name: String,
    /// At least one.
    pub patterns: Vec<MatchPattern>,
    /// Connections at once; at least 1 (default `delivery.destination_concurrency`).
    pub concurrency: usize,
    pub rate: Option<Rate>,
    /// At least 1.
    pub messages_per_connection: u32,
    /// Lowercased, non-empty substrings of a reply that suspend the destination.
    pub suspend_on: Vec<String>,
    /// Non-zero.
    pub suspend_for: Duration,
}

impl DestinationRule {
    /// Whether a recipient domain, or the most preferred MX host of it,
    /// falls under this rule. Both are lowercase and without a trailing dot.
    pub fn matches(&self, domain: &str, mx_host: Option<&str>) -> bool {
        self.patterns.iter().any(|pattern| match pattern {
            MatchPattern::Domain(name) => domain_matches(name, domain),
            MatchPattern::Mx(name) => mx_host.is_some_and(|host| domain_matches(name, host)),
        })
    }

    /// Whether some pattern needs the domain's MX host to decide.
    pub fn needs_mx(&self) -> bool {
        self.patterns
            .iter()
            .any(|pattern| matches!(pattern, MatchPattern::Mx(_)))
    }

    /// The `suspend_on` substring `reply` contains, compared case-insensitively.
    pub fn suspends_on(&self, reply: &str) -> bool {
        if self.suspend_on.is_empty() {
            return false;
        }
        let reply = reply.to_ascii_lowercase();
        self.suspend_on
            .iter()
            .any(|needle| reply.contains(needle.as_str()))
    }
}

/// A `match` entry: lowercase, without a trailing dot; a leading `*.` is
/// kept and matches one or more labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchPattern {
    /// `example.org` or `*.example.org`, compared with the recipient domain.
    Domain(String),
    /// `mx:PATTERN`, compared with the domain's most preferred MX host.
    Mx(String),
}

/// `name` (`example.org` or `*.example.org`) against a lowercase name.
fn domain_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => name
            .strip_suffix(parent)
            .is_some_and(|front| front.len() > 1 && front.ends_with('.')),
        None => pattern == name,
    }
}

/// Messages per period: `"N/s"`, `"N/m"` or `"N/h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// At least 1.
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// The time between two starts.
    pub fn interval(&self) -> Duration {
        self.per / self.count
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterSettings {
    /// `redis://host:port/db`; `None`: every relay keeps its rates alone.
    pub redis_url: Option<String>,
}

pub(super) fn cluster(raw: RawCluster) -> Result<ClusterSettings, Invalid> {
    let Some(url) = raw.redis_url else {
        return Ok(ClusterSettings::default());
    };
    let rest = url.strip_prefix("redis://").ok_or_else(|| {
        Invalid::new(
            "cluster.redis_url",
            format!("{url:?} is not a redis:// URL such as \"redis://127.0.0.1:6379/0\""),
        )
    })?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host.is_empty() {
        return Err(Invalid::new(
            "cluster.redis_url",
            format!("{url:?} names no host"),
        ));
    }
    Ok(ClusterSettings {
        redis_url: Some(url),
    })
}

/// Validates the rules in file order; `default_concurrency` is
/// `delivery.destination_concurrency`.
pub(super) fn destinations(
    raw: Vec<RawDestination>,
    default_concurrency: usize,
) -> Result<Vec<DestinationRule>, Invalid> {
    let mut rules: Vec<DestinationRule> = Vec::with_capacity(raw.len());
    for (index, raw) in raw.into_iter().enumerate() {
        let rule = destination(index, raw, default_concurrency, &rules)?;
        rules.push(rule);
    }
    Ok(rules)
}

fn destination(
    index: usize,
    raw: RawDestination,
    default_concurrency: usize,
    earlier: &[DestinationRule],
) -> Result<DestinationRule, Invalid> {
    let key = |field: &str| format!("destination[{index}].{field}");

    let name = raw
        .name
        .ok_or_else(|| Invalid::new(key("name"), "required"))?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Invalid::new(
            key("name"),
            format!("{name:?}: use ASCII letters, digits, '-', '_' and '.'"),
        ));
    }
    if let Some(other) = earlier.iter().position(|rule| rule.name == name) {
        return Err(Invalid::new(
            key("name"),
            format!("{name:?} is already the name of destination[{other}]"),
        ));
    }

    let raw_patterns = raw
        .patterns
        .ok_or_else(|| Invalid::new(key("match"), "required"))?;
    if raw_patterns.is_empty() {
        return Err(Invalid::new(
            key("match"),
            "must list at least one domain or mx: pattern",
        ));
    }
    let mut patterns = Vec::with_capacity(raw_patterns.len());
    for (position, text) in raw_patterns.iter().enumerate() {
        let pattern = match_pattern(text).map_err(|reason| {
            Invalid::new(format!("destination[{index}].match[{position}]"), reason)
        })?;
        patterns.push(pattern);
    }

    let concurrency = match raw.concurrency.unwrap_or(default_concurrency) {
        0 => return Err(Invalid::new(key("concurrency"), "must be at least 1")),
        count => count,
    };
    let rate = match raw.rate {
        Some(text) => Some(rate(&text).map_err(|reason| Invalid::new(key("rate"), reason))?),
        None => None,
    };
    let messages_per_connection = match raw
        .messages_per_connection
        .unwrap_or(DEFAULT_MESSAGES_PER_CONNECTION)
    {
        0 => {
            return Err(Invalid::new(
                key("messages_per_connection"),
                "must be at least 1",
            ));
        }
        count => count,
    };
    let mut suspend_on = Vec::with_capacity(raw.suspend_on.len());
    for (position, text) in raw.suspend_on.iter().enumerate() {
        if text.trim().is_empty() {
            return Err(Invalid::new(
                format!("destination[{index}].suspend_on[{position}]"),
                "must not be empty: it would match every reply",
            ));
        }
        suspend_on.push(text.to_ascii_lowercase());
    }
    let suspend_for = match raw.suspend_for {
        Some(RawDuration(duration)) if duration.is_zero() => {
            return Err(Invalid::new(
                key("suspend_for"),
                "must be greater than zero",
            ));
        }
        Some(RawDuration(duration)) => duration,
        None => DEFAULT_SUSPEND_FOR,
    };
    Ok(DestinationRule {
        name,
        patterns,
        concurrency,
        rate,
        messages_per_connection,
        suspend_on,
        suspend_for,
    })
}

fn match_pattern(text: &str) -> Result<MatchPattern, String> {
    let lower = text.to_ascii_lowercase();
    let (mx, name) = match lower.strip_prefix("mx:") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let bare = name.strip_prefix("*.").unwrap_or(name);
    check_domain_name(bare).map_err(|reason| {
        if bare.contains('*') {
            format!(
                "{text:?}: the only wildcard is a leading \"*.\", as in \"*.example.org\" or \"mx:*.example.net\""
            )
        } else {
            format!("{text:?}: {reason}")
        }
    })?;
    Ok(if mx {
        MatchPattern::Mx(name.to_owned())
    } else {
        MatchPattern::Domain(name.to_owned())
    })
}

/// `"N/s"`, `"N/m"` or `"N/h"` with N ≥ 1.
fn rate(text: &str) -> Result<Rate, String> {
    let wrong = || {
        format!(
            "invalid rate {text:?}: expected messages per second, minute or hour, such as \"10/s\", \"600/m\" or \"5000/h\""
        )
    };
    let (count, unit) = text.trim().split_once('/').ok_or_else(wrong)?;
    let count: u32 = count.trim().parse().map_err(|_| wrong())?;
    if count == 0 {
        return Err(format!("invalid rate {text:?}: must be at least 1 message"));
    }
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(wrong()),
    };
    Ok(Rate { count, per })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(patterns: &[&str]) -> DestinationRule {
        DestinationRule {
            name: "test".into(),
            patterns: patterns.iter().map(|p| match_pattern(p).unwrap()).collect(),
            concurrency: 1,
            rate: None,
            messages_per_connection: 1,
            suspend_on: vec!["4.7.28".into(), "tss04".into()],
            suspend_for: DEFAULT_SUSPEND_FOR,
        }
    }

    #[test]
    fn domain_and_wildcard_patterns() {
        let rule = rule(&["example.org", "*.Example.NET."]);
        assert!(rule.matches("example.org", None));
        assert!(!rule.matches("sub.example.org", None));
        assert!(rule.matches("a.example.net", None));
        assert!(rule.matches("a.b.example.net", None));
        assert!(!rule.matches("example.net", None));
        assert!(!rule.matches("badexample.net", None));
        assert!(!rule.needs_mx());
    }

    #[test]
    fn mx_patterns_match_the_mx_host_only() {
        let rule = rule(&["mx:*.google.com"]);
        assert!(rule.needs_mx());
        assert!(rule.matches("anything.test", Some("aspmx.l.google.com")));
        assert!(!rule.matches("mail.google.com", None));
        assert!(!rule.matches("x.test", Some("google.com")));
    }

    #[test]
    fn rates() {
        assert_eq!(
            rate("600/m").unwrap(),
            Rate {
                count: 600,
                per: Duration::from_secs(60)
            }
        );
        assert_eq!(rate("10/s").unwrap().interval(), Duration::from_millis(100));
        assert_eq!(rate("3600/h").unwrap().to_string(), "3600/h");
        for bad in ["0/s", "10", "10/d", "x/s", "-1/m", ""] {
            assert!(rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_patterns() {
        assert!(match_pattern("ex*ample.org").is_err());
        assert!(match_pattern("mx:").is_err());
        assert!(match_pattern("*").is_err());
        assert!(match_pattern("a..b").is_err());
    }

    #[test]
    fn suspension_substrings_ignore_case() {
        let rule = rule(&["example.org"]);
        assert!(rule.suspends_on("421 4.7.28 Our system has detected an unusual rate"));
        assert!(rule.suspends_on("421 4.7.0 [TSS04] Messages temporarily deferred"));
        assert!(!rule.suspends_on("421 4.7.0 Too many connections"));
    }
}
