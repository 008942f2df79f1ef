//! The configuration file as written: TOML deserialized into structs where
//! every key is optional and an unknown key is an error.
//!
//! Nothing here applies defaults or checks values beyond their TOML type;
//! that is [`super::validate`]'s job, so each default lives in one place.
//! Addresses, networks and lanes stay strings here so that their parse errors
//! can say what a valid value looks like.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::{Invalid, IpVersion, ListenerAuth, ListenerTls, LogFormat, RouteTls, TlsPolicy};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub hostname: Option<String>,
    pub spool: RawSpool,
    /// `None` when the file has no `[[listener]]`; `Some(vec![])` is an error.
    pub listener: Option<Vec<RawListener>>,
    pub smtp: RawSmtp,
    pub lanes: RawLanes,
    pub delivery: RawDelivery,
    pub retry: RawRetry,
    pub dns: RawDns,
    pub route: Vec<RawRoute>,
    pub destination: Vec<RawDestination>,
    pub dkim: Vec<RawDkim>,
    pub webhook: Vec<RawWebhook>,
    pub bounce: RawBounce,
    pub tls_rpt: RawTlsRpt,
    pub cluster: RawCluster,
    pub suppression: RawSuppression,
    pub control: RawControl,
    pub metrics: RawMetrics,
    pub log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSpool {
    pub path: Option<PathBuf>,
    pub max_message_size: Option<u64>,
    pub min_free_space: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawListener {
    pub address: Option<String>,
    pub lane: Option<String>,
    pub tls: Option<ListenerTls>,
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    pub auth: Option<ListenerAuth>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSmtp {
    pub relay_networks: Option<Vec<String>>,
    pub max_connections: Option<usize>,
    pub max_recipients: Option<usize>,
    pub origin: Option<String>,
    pub admin_address: Option<String>,
    pub idle_timeout: Option<RawDuration>,
    pub stress_idle_timeout: Option<RawDuration>,
    pub min_data_rate: Option<u64>,
    pub max_errors: Option<u32>,
    pub users_file: Option<PathBuf>,
    pub idempotency_window: Option<RawDuration>,
    pub dedupe_message_id: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLanes {
    pub high: RawLane,
    pub low: RawLane,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLane {
    pub concurrency: Option<usize>,
    /// Signed, so that a negative value gets the same reason as zero.
    pub max_queued: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDelivery {
    pub port: Option<u16>,
    pub destination_concurrency: Option<usize>,
    pub tls: Option<TlsPolicy>,
    pub ip_version: Option<IpVersion>,
    pub connect_timeout: Option<RawDuration>,
    pub greeting_timeout: Option<RawDuration>,
    pub command_timeout: Option<RawDuration>,
    pub data_timeout: Option<RawDuration>,
    pub final_timeout: Option<RawDuration>,
    pub mta_sts: Option<bool>,
    pub dane: Option<bool>,
    pub tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRetry {
    pub initial: Option<RawDuration>,
    pub factor: Option<f64>,
    pub max: Option<RawDuration>,
    pub max_age: Option<RawDuration>,
    pub delay_warning: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDns {
    pub nameservers: Vec<String>,
    pub trust_anchor: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRoute {
    pub domains: Option<Vec<String>>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub tls: Option<RouteTls>,
    pub verify_certificate: Option<bool>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDestination {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub patterns: Option<Vec<String>>,
    pub concurrency: Option<usize>,
    pub rate: Option<String>,
    pub messages_per_connection: Option<u32>,
    pub suspend_on: Vec<String>,
    pub suspend_for: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawWebhook {
    pub name: Option<String>,
    pub url: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub events: Option<Vec<String>>,
    pub batch_max: Option<usize>,
    pub batch_wait: Option<RawDuration>,
    pub timeout: Option<RawDuration>,
    pub retry_for: Option<RawDuration>,
    pub max_backlog: Option<u64>,
    pub tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDkim {
    pub domain: Option<String>,
    pub selector: Option<String>,
    pub private_key: Option<PathBuf>,
    pub headers: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBounce {
    pub rules_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTlsRpt {
    pub enabled: Option<bool>,
    pub organization: Option<String>,
    pub contact: Option<String>,
    pub from: Option<String>,
    pub interval: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCluster {
    pub redis_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSuppression {
    pub enabled: Option<bool>,
    pub classes: Option<Vec<String>>,
    pub expire_after: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawControl {
    pub socket: Option<PathBuf>,
    pub maildrop: Option<PathBuf>,
    pub bulk_chunk: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMetrics {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    pub format: Option<LogFormat>,
    pub level: Option<String>,
}

/// A duration written as a string such as `"30s"`, `"5m"` or `"1h30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RawDuration(pub Duration);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(DurationVisitor)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = RawDuration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration string such as \"30s\", \"5m\" or \"1h30m\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<RawDuration, E> {
        humantime::parse_duration(text)
            .map(RawDuration)
            .map_err(|error| E::custom(format!("invalid duration {text:?}: {error}")))
    }
}

/// Deserializes configuration text. TOML syntax errors carry no key but the
/// line and column; type errors and unknown keys carry the key path.
pub(super) fn parse(text: &str) -> Result<RawConfig, Invalid> {
    let deserializer = toml::Deserializer::parse(text).map_err(|error| {
        let position = match error.span() {
            Some(span) => {
                let (line, column) = line_and_column(text, span.start);
                format!(" at line {line}, column {column}")
            }
            None => String::new(),
        };
        Invalid::new(
            "",
            format!("TOML syntax error{position}: {}", error.message()),
        )
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let key = match error.path().to_string() {
            // serde_path_to_error writes the empty (top-level) path as ".".
            root if root == "." => String::new(),
            key => key,
        };
        Invalid::new(key, describe_type_error(error.inner().message()))
    })
}

/// Rewords serde's message for an unknown field in the file's vocabulary.
fn describe_type_error(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        return match rest.split_once(", expected ") {
            Some((_, expected)) => format!("unknown key (expected {expected})"),
            None => "unknown key".to_string(),
        };
    }
    message.to_string()
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
