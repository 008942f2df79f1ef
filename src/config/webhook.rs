//! `[[webhook]]`: where delivery events are posted (docs/events.md,
//! "Webhooks"). The secret and the extra CA certificates are read here, so that
//! `check-config` names an unreadable file and a reload re-reads them.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::Invalid;
use super::raw::RawWebhook;
use crate::webhook::EventType;

/// One `[[webhook]]` block.
#[derive(Clone, PartialEq)]
pub struct WebhookSettings {
    /// Unique; `[A-Za-z0-9_-]`, 1–64 characters: the label in logs, metrics
    /// and the CLI, and (hashed) the key of its events in the spool.
    pub name: String,
    /// `https://…`, or `http://` to a loopback address.
    pub url: String,
    pub secret_file: PathBuf,
    /// The HMAC-SHA256 key: the file's contents, a trailing newline removed.
    pub secret: Secret,
    /// The event types posted, in no particular order, without repeats.
    pub events: Vec<EventType>,
    /// Events per POST, 1–10,000.
    pub batch_max: usize,
    /// How long a partial batch waits for more events.
    pub batch_wait: Duration,
    /// Per POST, connecting included.
    pub timeout: Duration,
    /// An event not taken by then is dropped (logged, counted).
    pub retry_for: Duration,
    /// Events waiting for this webhook; beyond it the oldest are dropped.
    pub max_backlog: u64,
    /// Extra trust anchors for the receiver's certificate.
    pub extra_trust_anchors: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// A webhook's key, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret_file", &self.secret_file)
            .field("events", &self.events)
            .field("batch_max", &self.batch_max)
            .field("batch_wait", &self.batch_wait)
            .field("timeout", &self.timeout)
            .field("retry_for", &self.retry_for)
            .field("max_backlog", &self.max_backlog)
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_EVENTS: [EventType; 6] = [
    EventType::Delivered,
    EventType::Bounced,
    EventType::Expired,
    EventType::Delayed,
    EventType::Suppressed,
    EventType::Deleted,
];
const DEFAULT_BATCH_MAX: usize = 100;
const MAX_BATCH_MAX: usize = 10_000;
const DEFAULT_BATCH_WAIT: Duration = Duration::from_secs(1);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(3 * 24 * 3600);
const DEFAULT_MAX_BACKLOG: u64 = 1_000_000;

pub(super) fn webhooks(raw: Vec<RawWebhook>) -> Result<Vec<WebhookSettings>, Invalid> {
    let mut settings: Vec<WebhookSettings> = Vec::with_capacity(raw.len());
    for (index, block) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("webhook[{index}].{field}");
        let name = block
            .name
            .ok_or_else(|| Invalid::new(key("name"), "required"))?;
        check_name(&name).map_err(|reason| Invalid::new(key("name"), reason))?;
        if let Some(earlier) = settings.iter().position(|other| other.name == name) {
            return Err(Invalid::new(
                key("name"),
                format!("{name:?} is already the name of webhook[{earlier}]"),
            ));
        }
        let url = block
            .url
            .ok_or_else(|| Invalid::new(key("url"), "required"))?;
        check_url(&url).map_err(|reason| Invalid::new(key("url"), reason))?;
        let secret_file = block
            .secret_file
            .ok_or_else(|| Invalid::new(key("secret_file"), "required"))?;
        let secret =
            read_secret(&secret_file).map_err(|reason| Invalid::new(key("secret_file"), reason))?;
        let events = match block.events {
            None => DEFAULT_EVENTS.to_vec(),
            Some(names) => {
                if names.is_empty() {
                    return Err(Invalid::new(
                        key("events"),
                        "must name at least one event type",
                    ));
                }
                let mut events = Vec::with_capacity(names.len());
                for (position, name) in names.iter().enumerate() {
                    let event = name
                        .parse::<EventType>()
                        .ok()
                        .filter(|event| *event != EventType::Test)
                        .ok_or_else(|| {
                            Invalid::new(
                                format!("webhook[{index}].events[{position}]"),
                                format!(
                                    "{name:?} is not an event type: {}",
                                    EventType::SUBSCRIBABLE
                                        .iter()
                                        .map(|event| event.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            )
                        })?;
                    if !events.contains(&event) {
                        events.push(event);
                    }
                }
                events
            }
        };
        let batch_max = block.batch_max.unwrap_or(DEFAULT_BATCH_MAX);
        if !(1..=MAX_BATCH_MAX).contains(&batch_max) {
            return Err(Invalid::new(
                key("batch_max"),
                format!("must be from 1 to {MAX_BATCH_MAX}"),
            ));
        }
        let positive = |raw: Option<super::raw::RawDuration>, default: Duration, field: &str| {
            let duration = raw.map_or(default, |raw| raw.0);
            if duration.is_zero() {
                Err(Invalid::new(key(field), "must be longer than 0s"))
            } else {
                Ok(duration)
            }
        };
        let batch_wait = block.batch_wait.map_or(DEFAULT_BATCH_WAIT, |raw| raw.0);
        let timeout = positive(block.timeout, DEFAULT_TIMEOUT, "timeout")?;
        let retry_for = positive(block.retry_for, DEFAULT_RETRY_FOR, "retry_for")?;
        let max_backlog = block.max_backlog.unwrap_or(DEFAULT_MAX_BACKLOG);
        if max_backlog == 0 {
            return Err(Invalid::new(key("max_backlog"), "must be at least 1"));
        }
        let extra_trust_anchors = match &block.tls_ca_file {
            Some(path) => crate::tls::read_trust_anchors(path)
                .map_err(|reason| Invalid::new(key("tls_ca_file"), reason))?,
            None => Vec::new(),
        };
        settings.push(WebhookSettings {
            name,
            url,
            secret_file,
            secret,
            events,
            batch_max,
            batch_wait,
            timeout,
            retry_for,
            max_backlog,
            extra_trust_anchors,
        });
    }
    Ok(settings)
}

fn check_name(name: &str) -> Result<(), String> {
    if (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_'))
    {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a webhook name: 1 to 64 letters, digits, '-' and '_'"
        ))
    }
}

/// `https://HOST…`, or `http://` to a loopback address: events carry
/// addresses and must not cross a network in clear text.
fn check_url(text: &str) -> Result<(), String> {
    let url =
        reqwest::Url::parse(text).map_err(|error| format!("{text:?} is not a URL: {error}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password (the secret signs the posts)".into());
    }
    let host = url.host_str().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("{text:?} names no host"));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_ok_and(|address| address.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(format!(
                    "{text:?}: http is allowed only to a loopback address (127.0.0.0/8, ::1, localhost); use https"
                ))
            }
        }
        other => Err(format!("{text:?}: scheme {other:?} is not http or https")),
    }
}

fn read_secret(path: &std::path::Path) -> Result<Secret, String> {
    let mut secret =
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    if secret.last() == Some(&b'\n') {
        secret.pop();
        if secret.last() == Some(&b'\r') {
            secret.pop();
        }
    }
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_or_loopback_http() {
        assert!(check_url("https://hooks.example.com/mail").is_ok());
        assert!(check_url("http://127.0.0.1:8080/events").is_ok());
        assert!(check_url("http://127.9.9.9/").is_ok());
        assert!(check_url("http://[::1]:9000/").is_ok());
        assert!(check_url("http://localhost/").is_ok());
        assert!(check_url("http://hooks.example.com/").is_err());
        assert!(check_url("http://10.0.0.1/").is_err());
        assert!(check_url("ftp://127.0.0.1/").is_err());
        assert!(check_url("https://user:pw@hooks.example.com/").is_err());
        assert!(check_url("hooks.example.com").is_err());
    }

    #[test]
    fn names() {
        assert!(check_name("app").is_ok());
        assert!(check_name("app_2-x").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
    }
}
