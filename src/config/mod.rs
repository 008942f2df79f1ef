//! The configuration file: the validated settings the daemon runs with (docs/configuration.md).
//!
//! Loading is two steps. [`raw`] deserializes the TOML into structs in which
//! every key is optional and unknown keys are refused; [`validate`] applies the
//! defaults, parses addresses, networks and durations, and checks the values.
//! Every failure becomes a [`ConfigError`] naming the file, the key path
//! (`delivery.connect_timeout`, `route[0].tls`) and the reason.
//!
//! Invariant: a [`Config`] that exists is valid; code using it does not
//! re-check ranges or combinations. The only I/O here is reading the file,
//! the `delivery.tls_ca_file` certificates, the webhooks' secret and CA
//! files, the `bounce.rules_file` rules, and detecting the built-in defaults
//! (host name, state directory); a route's
//! password file is read by the delivery code through [`Route::read_password`].

mod bounce;
mod dkim;
mod keywords;
mod raw;
mod shaping;
mod suppression;
mod tls_rpt;
mod validate;
mod values;
mod webhook;

#[cfg(test)]
mod documented;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use ipnet::IpNet;

use crate::queue::Lane;

pub use self::bounce::BounceSettings;
pub use self::dkim::DkimSettings;
pub use self::keywords::{IpVersion, ListenerAuth, ListenerTls, LogFormat, RouteTls, TlsPolicy};
use self::raw::RawConfig;
pub use self::shaping::{ClusterSettings, DestinationRule, MatchPattern, Rate};
pub use self::suppression::SuppressionSettings;
pub use self::tls_rpt::TlsRptSettings;
use self::validate::SystemDefaults;
pub use self::webhook::{Secret, WebhookSettings};

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The name used in EHLO/HELO, `Received:` and `Reporting-MTA:`.
    pub hostname: String,
    pub spool: SpoolSettings,
    /// At least one; no two bound to the same address.
    pub listeners: Vec<ListenerSettings>,
    pub smtp: SmtpSettings,
    pub lanes: LanesSettings,
    pub delivery: DeliverySettings,
    pub retry: RetrySettings,
    pub dns: DnsSettings,
    /// Smarthost routes, in file order. No domain appears in two routes.
    pub routes: Vec<Route>,
    /// `[[destination]]` rules in file order (the first that matches wins);
    /// names are unique.
    pub destinations: Vec<DestinationRule>,
    /// `[[dkim]]` blocks in file order; no two with the same domain and selector.
    pub dkim: Vec<DkimSettings>,
    /// `[[webhook]]` blocks in file order; names are unique.
    pub webhooks: Vec<WebhookSettings>,
    pub bounce: BounceSettings,
    /// `[tls_rpt]`: TLS reporting (RFC 8460).
    pub tls_rpt: TlsRptSettings,
    pub cluster: ClusterSettings,
    pub suppression: SuppressionSettings,
    pub control: ControlSettings,
    pub metrics: MetricsSettings,
    pub log: LogSettings,
    /// The file this configuration came from; `None` for the built-in defaults.
    pub source: Option<PathBuf>,
}

/// `[spool]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolSettings {
    pub path: PathBuf,
    /// Largest message accepted, in bytes; at least 64 KiB (RFC 5321 §4.5.3.1.7).
    pub max_message_size: u64,
    /// Free bytes the spool's file system must keep: below this, new mail is
    /// refused with 452 at MAIL and new connections with 421.
    pub min_free_space: u64,
}

/// One `[[listener]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSettings {
    pub address: SocketAddr,
    /// The lane for mail accepted on this listener.
    pub lane: Lane,
    pub tls: ListenerTls,
    /// The certificate and key files; set exactly when `tls` is not `None`.
    /// Read by `smtp::credentials`, not here, so that a reload re-reads them.
    pub tls_files: Option<TlsFiles>,
    /// Not `None` only when `tls` is not `None` either: AUTH is offered only
    /// under TLS (RFC 4954 §4).
    pub auth: ListenerAuth,
}

/// A listener's `certificate` and `private_key` (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

/// `[smtp]`: the receiving side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    /// Clients allowed to relay; bare addresses are stored as /32 or /128.
    pub relay_networks: Vec<IpNet>,
    pub max_connections: usize,
    pub max_recipients: usize,
    /// Domain appended to bare local names (`root` → `root@origin`).
    pub origin: String,
    /// Where mail to root, postmaster and the like is redirected.
    pub admin_address: Option<String>,
    /// The time a client has for each complete command line (from the
    /// previous reply to its CRLF), and the longest silence during a DATA or
    /// BDAT transfer.
    pub idle_timeout: Duration,
    /// `idle_timeout` while the sessions in use are near `max_connections`
    /// (stress mode); never longer than `idle_timeout`.
    pub stress_idle_timeout: Duration,
    /// Octets per second a DATA/BDAT transfer must average: its deadline is
    /// the (stress) idle timeout plus one second per `min_data_rate` octets
    /// received. At least 1.
    pub min_data_rate: u64,
    /// Protocol errors in one session before `421` and close.
    pub max_errors: u32,
    /// `user:HASH` lines for SMTP AUTH; set whenever a listener has `auth`
    /// other than `none`. Read by `smtp::credentials`.
    pub users_file: Option<PathBuf>,
    /// How long an `Idempotency-Key` (docs/idempotency.md) is remembered
    /// after the message that carried it was accepted; greater than zero.
    pub idempotency_window: Duration,
    /// The `Message-ID` field is the idempotency key of a message that
    /// carries no `Idempotency-Key`.
    pub dedupe_message_id: bool,
}

/// `[lanes.high]` and `[lanes.low]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanesSettings {
    pub high: LaneSettings,
    pub low: LaneSettings,
}

impl LanesSettings {
    pub fn get(&self, lane: Lane) -> &LaneSettings {
        match lane {
            Lane::High => &self.high,
            Lane::Low => &self.low,
        }
    }
}

/// The settings of one lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneSettings {
    /// Delivery slots of this lane; never lent to the other lane. At least 1.
    pub concurrency: usize,
    /// Most messages queued in this lane, in every state; new mail for a
    /// full lane is refused with `452 4.3.1`. `None`: no cap. At least 1.
    pub max_queued: Option<usize>,
}

/// `[delivery]`: the sending side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    /// Remote port for MX delivery; never 0.
    pub port: u16,
    /// Simultaneous connections to one destination; at least 1.
    pub destination_concurrency: usize,
    pub tls: TlsPolicy,
    pub ip_version: IpVersion,
    /// All timeouts are non-zero; RFC 5321 §4.5.3.2 gives the defaults.
    pub connect_timeout: Duration,
    pub greeting_timeout: Duration,
    /// EHLO, MAIL, RCPT, RSET.
    pub command_timeout: Duration,
    /// DATA initiation and each data block.
    pub data_timeout: Duration,
    /// The reply to the final dot.
    pub final_timeout: Duration,
    /// Honour MTA-STS (RFC 8461) policies of recipient domains delivered
    /// to by MX.
    pub mta_sts: bool,
    /// DANE for SMTP (RFC 7672) for MX delivery: DNSSEC-validated MX
    /// lookups (`dns.dnssec` is set with it) and TLSA-authenticated TLS.
    /// Never with `tls = "disabled"`.
    pub dane: bool,
    /// `tls_ca_file`: extra trust anchors for the certificates of MX hosts,
    /// MTA-STS policy hosts and routes, read and parsed at load time (so a missing or broken
    /// file is a configuration error). Empty when the key is not set.
    pub extra_trust_anchors: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// `[retry]`: when deferred mail is tried again, and when it is given up.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySettings {
    /// The first delay; non-zero.
    pub initial: Duration,
    /// Each delay is the previous one times this; at least 1.0 and finite.
    pub factor: f64,
    /// The delay never grows beyond this; at least `initial`.
    pub max: Duration,
    /// Age at which undelivered mail is bounced as expired; non-zero.
    pub max_age: Duration,
    /// Age at which one "delayed" DSN goes to NOTIFY=DELAY recipients;
    /// shorter than `max_age` when set.
    pub delay_warning: Option<Duration>,
}

/// `[dns]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// Resolvers to ask; empty means those of `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
    /// `trust_anchor` (read and checked at load), else the built-in root
    /// anchor: what DNSSEC is validated from.
    pub trust_anchors: crate::dns::TrustAnchorSource,
    /// `delivery.dane`: MX delivery validates DNSSEC (the resolver is
    /// built with validation; DANE itself is applied by delivery).
    pub dnssec: bool,
}

/// One `[[route]]`: mail for these domains goes to a fixed host instead of MX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Lowercased, non-empty; `"*"` matches every domain.
    pub domains: Vec<String>,
    /// A domain name or an IP address.
    pub host: String,
    pub port: u16,
    pub tls: RouteTls,
    pub verify_certificate: bool,
    /// Set exactly when `password_file` is set.
    pub username: Option<String>,
    /// Read at delivery time, not at load time, so a rotated password needs no reload.
    pub password_file: Option<PathBuf>,
}

impl Route {
    /// Reads the password from `password_file`, without one trailing newline.
    /// `Ok(None)` when the route has no credentials.
    pub fn read_password(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let mut password = fs::read_to_string(path)
            .with_context(|| format!("cannot read password file {}", path.display()))?;
        if password.ends_with('\n') {
            password.pop();
            if password.ends_with('\r') {
                password.pop();
            }
        }
        Ok(Some(password))
    }
}

/// `[control]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSettings {
    /// The Unix socket the `queue` commands talk to.
    pub socket: PathBuf,
    /// Where `sendmail` leaves mail while the daemon is down.
    pub maildrop: PathBuf,
    /// Messages per spool commit in a bulk operation (`queue delete --all`).
    pub bulk_chunk: usize,
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Address of the Prometheus endpoint; `None` disables it.
    pub listen: Option<SocketAddr>,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter such as `"info"` or `"relayq=debug"`; checked at load.
    pub level: Option<String>,
}

/// A configuration that cannot be used: which file, which key, and why.
///
/// Displays as `file: key: reason`, or `file: reason` when `key` is empty
/// (the file cannot be read, or is not TOML).
#[derive(Debug, thiserror::Error)]
#[error("{}: {}{reason}", .file.display(), KeyPrefix(.key))]
pub struct ConfigError {
    pub file: PathBuf,
    /// The key path, such as `delivery.connect_timeout` or `listener[1].lane`.
    pub key: String,
    pub reason: String,
}

/// Displays `key: `, or nothing for an empty key.
struct KeyPrefix<'a>(&'a str);

impl fmt::Display for KeyPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, "{}: ", self.0)
        }
    }
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|error| ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            reason: format!("cannot read: {}", describe_io_error(&error)),
        })?;
        Self::parse(text.as_str(), path)
    }

    /// Validates configuration text; `origin` names it in errors and becomes
    /// [`Config::source`]. Keys the text leaves out get the built-in defaults.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        Self::parse_with(text, origin, &SystemDefaults::detect())
    }

    /// The configuration used when there is no file: listens on
    /// 127.0.0.1:2525 and keeps its spool in [`Config::default_state_dir`], so
    /// it runs without privileges.
    pub fn builtin() -> Config {
        validate::config(RawConfig::default(), None, &SystemDefaults::detect())
            .expect("the built-in defaults are valid, and so are the detected host name and state directory")
    }

    /// Where an unprivileged relayq keeps its spool: `$RELAYQ_STATE_DIR`, else
    /// `$XDG_STATE_HOME/relayq`, else `$HOME/.local/state/relayq`, else
    /// `/tmp/relayq-<uid>`. Empty variables count as unset.
    pub fn default_state_dir() -> PathBuf {
        state_dir_from(|name| std::env::var_os(name), current_uid)
    }

    fn parse_with(
        text: &str,
        origin: &Path,
        system: &SystemDefaults,
    ) -> Result<Config, ConfigError> {
        let raw = raw::parse(text).map_err(|invalid| invalid.in_file(origin))?;
        validate::config(raw, Some(origin), system).map_err(|invalid| invalid.in_file(origin))
    }
}

/// Validates configuration text against the given host name and state
/// directory instead of the detected ones, so the outcome depends on the
/// text alone (the fuzz targets use it). `hostname` must pass the domain
/// name check the detected one passes.
pub(crate) fn parse_with_fixed_defaults(
    text: &str,
    origin: &Path,
    hostname: &str,
    state_dir: &Path,
) -> Result<Config, ConfigError> {
    let system = SystemDefaults {
        hostname: hostname.to_owned(),
        state_dir: state_dir.to_path_buf(),
    };
    Config::parse_with(text, origin, &system)
}

/// A `bounce.rules_file`'s text, checked and compiled as loading the
/// configuration does; the error says `key: reason` (the fuzz targets use
/// it).
pub(crate) fn parse_bounce_rules(text: &str) -> Result<crate::bounce::OperatorRules, String> {
    bounce::load(text).map_err(|invalid| format!("{}: {}", invalid.key, invalid.reason))
}

/// A problem found in the text, before it is tied to a file name.
#[derive(Debug, PartialEq, Eq)]
struct Invalid {
    key: String,
    reason: String,
}

impl Invalid {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn in_file(self, file: &Path) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            key: self.key,
            reason: self.reason,
        }
    }
}

/// `io::Error`'s message without the `(os error N)` suffix.
fn describe_io_error(error: &io::Error) -> String {
    let message = error.to_string();
    match message.rfind(" (os error ") {
        Some(cut) if message.ends_with(')') => message[..cut].to_string(),
        _ => message,
    }
}

/// [`Config::default_state_dir`] with the environment and the uid supplied,
/// so tests need not change the process environment.
fn state_dir_from(
    env: impl Fn(&str) -> Option<OsString>,
    uid: impl FnOnce() -> Option<String>,
) -> PathBuf {
    let var = |name: &str| env(name).filter(|value| !value.is_empty());
    if let Some(dir) = var("RELAYQ_STATE_DIR") {
        return PathBuf::from(dir);
    }
    // The XDG base directory specification says to ignore relative values.
    if let Some(dir) = var("XDG_STATE_HOME").filter(|dir| Path::new(dir).is_absolute()) {
        return Path::new(&dir).join("relayq");
    }
    if let Some(home) = var("HOME") {
        return Path::new(&home).join(".local/state/relayq");
    }
    let uid = uid().unwrap_or_else(|| "user".to_string());
    PathBuf::from(format!("/tmp/relayq-{uid}"))
}

/// The real uid, from the `Uid:` line of `/proc/self/status`.
fn current_uid() -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    let uid = line.split_whitespace().next()?;
    uid.bytes()
        .all(|byte| byte.is_ascii_digit())
        .then(|| uid.to_string())
}
