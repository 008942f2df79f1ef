//! From the file as written to a [`Config`]: the built-in defaults, value
//! parsing, and the checks that make every [`Config`] usable as it is.
//!
//! Pure apart from [`SystemDefaults::detect`]: the host name and state
//! directory are passed in, so tests do not depend on the machine.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::raw::{RawConfig, RawDuration, RawLane, RawListener, RawRetry, RawRoute};
use super::values::{
    check_domain_name, check_host, check_log_filter, check_mailbox, nameserver, network,
    socket_address,
};
use super::{
    Config, ControlSettings, DeliverySettings, DnsSettings, Invalid, IpVersion, LaneSettings,
    LanesSettings, ListenerAuth, ListenerSettings, ListenerTls, LogFormat, LogSettings,
    MetricsSettings, RetrySettings, Route, RouteTls, SmtpSettings, SpoolSettings, TlsFiles,
    TlsPolicy,
};
use crate::dns::TrustAnchorSource;
use crate::queue::Lane;

const DEFAULT_LISTENER: &str = "127.0.0.1:2525";
const DEFAULT_RELAY_NETWORKS: [&str; 2] = ["127.0.0.0/8", "::1/128"];
const DEFAULT_MAX_MESSAGE_SIZE: u64 = 25 * 1024 * 1024;
/// RFC 5321 §4.5.3.1.7: a server must accept messages of at least 64K octets.
const MIN_MAX_MESSAGE_SIZE: u64 = 64 * 1024;
const DEFAULT_MIN_FREE_SPACE: u64 = 256 * 1024 * 1024;
const DEFAULT_MAX_CONNECTIONS: usize = 1000;
const DEFAULT_MAX_RECIPIENTS: usize = 1000;
const DEFAULT_IDLE_TIMEOUT: Duration = minutes(5);
/// Postfix's `smtpd_timeout` in stress mode.
const DEFAULT_STRESS_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Postfix's `smtpd_min_data_rate`: 500 octets/s (4 kbit/s).
const DEFAULT_MIN_DATA_RATE: u64 = 500;
const DEFAULT_MAX_ERRORS: u32 = 20;
const DEFAULT_IDEMPOTENCY_WINDOW: Duration = minutes(24 * 60);
const DEFAULT_HIGH_CONCURRENCY: usize = 64;
const DEFAULT_LOW_CONCURRENCY: usize = 8;
const DEFAULT_DELIVERY_PORT: u16 = 25;
const DEFAULT_DESTINATION_CONCURRENCY: usize = 20;
// RFC 5321 §4.5.3.2 minimum timeouts, except connect, which it leaves open.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_GREETING_TIMEOUT: Duration = minutes(5);
const DEFAULT_COMMAND_TIMEOUT: Duration = minutes(5);
const DEFAULT_DATA_TIMEOUT: Duration = minutes(3);
const DEFAULT_FINAL_TIMEOUT: Duration = minutes(10);
const DEFAULT_RETRY_INITIAL: Duration = minutes(5);
const DEFAULT_RETRY_FACTOR: f64 = 2.0;
const DEFAULT_RETRY_MAX: Duration = minutes(60);
const DEFAULT_RETRY_MAX_AGE: Duration = minutes(5 * 24 * 60);
const DEFAULT_ROUTE_PORT: u16 = 25;

const fn minutes(count: u64) -> Duration {
    Duration::from_secs(count * 60)
}

/// Defaults that come from the machine rather than from constants.
#[derive(Debug, Clone)]
pub(super) struct SystemDefaults {
    /// A name that passes [`check_domain_name`].
    pub hostname: String,
    pub state_dir: PathBuf,
}

impl SystemDefaults {
    pub fn detect() -> Self {
        SystemDefaults {
            hostname: system_hostname(),
            state_dir: Config::default_state_dir(),
        }
    }
}

/// The kernel's host name, else `/etc/hostname`, else `localhost`; a name
/// that is not a plausible domain (such as `(none)`) is skipped.
fn system_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .into_iter()
        .filter_map(|path| fs::read_to_string(path).ok())
        .map(|text| text.trim().to_string())
        .find(|name| check_domain_name(name).is_ok())
        .unwrap_or_else(|| "localhost".to_string())
}

pub(super) fn config(
    raw: RawConfig,
    source: Option<&Path>,
    system: &SystemDefaults,
) -> Result<Config, Invalid> {
    let hostname = match raw.hostname {
        Some(name) => {
            check_domain_name(&name).map_err(|reason| Invalid::new("hostname", reason))?;
            name
        }
        None => system.hostname.clone(),
    };

    let spool_path = raw.spool.path.unwrap_or_else(|| system.state_dir.clone());
    non_empty_path(&spool_path, "spool.path")?;
    let max_message_size = raw
        .spool
        .max_message_size
        .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE);
    if max_message_size < MIN_MAX_MESSAGE_SIZE {
        return Err(Invalid::new(
            "spool.max_message_size",
            format!(
                "must be at least {MIN_MAX_MESSAGE_SIZE} bytes: RFC 5321 §4.5.3.1.7 requires accepting messages of 64K octets"
            ),
        ));
    }
    let spool = SpoolSettings {
        max_message_size,
        min_free_space: raw.spool.min_free_space.unwrap_or(DEFAULT_MIN_FREE_SPACE),
        path: spool_path,
    };

    let listeners = listeners(raw.listener)?;

    let idle_timeout = timeout(
        raw.smtp.idle_timeout,
        DEFAULT_IDLE_TIMEOUT,
        "smtp.idle_timeout",
    )?;
    let stress_idle_timeout = match raw.smtp.stress_idle_timeout {
        Some(RawDuration(duration)) if duration > idle_timeout => {
            return Err(Invalid::new(
                "smtp.stress_idle_timeout",
                "must not be longer than smtp.idle_timeout",
            ));
        }
        raw_stress => timeout(
            raw_stress,
            DEFAULT_STRESS_IDLE_TIMEOUT.min(idle_timeout),
            "smtp.stress_idle_timeout",
        )?,
    };
    let smtp = SmtpSettings {
        relay_networks: relay_networks(raw.smtp.relay_networks)?,
        max_connections: at_least_one(
            raw.smtp.max_connections,
            DEFAULT_MAX_CONNECTIONS,
            "smtp.max_connections",
        )?,
        max_recipients: at_least_one(
            raw.smtp.max_recipients,
            DEFAULT_MAX_RECIPIENTS,
            "smtp.max_recipients",
        )?,
        origin: match raw.smtp.origin {
            Some(origin) => {
                check_domain_name(&origin).map_err(|reason| Invalid::new("smtp.origin", reason))?;
                origin
            }
            None => hostname.clone(),
        },
        admin_address: match raw.smtp.admin_address {
            Some(address) => {
                check_mailbox(&address)
                    .map_err(|reason| Invalid::new("smtp.admin_address", reason))?;
                Some(address)
            }
            None => None,
        },
        idle_timeout,
        stress_idle_timeout,
        min_data_rate: match raw.smtp.min_data_rate.unwrap_or(DEFAULT_MIN_DATA_RATE) {
            0 => return Err(Invalid::new("smtp.min_data_rate", "must be at least 1")),
            rate => rate,
        },
        max_errors: match raw.smtp.max_errors.unwrap_or(DEFAULT_MAX_ERRORS) {
            0 => return Err(Invalid::new("smtp.max_errors", "must be at least 1")),
            count => count,
        },
        users_file: users_file(raw.smtp.users_file, &listeners)?,
        idempotency_window: timeout(
            raw.smtp.idempotency_window,
            DEFAULT_IDEMPOTENCY_WINDOW,
            "smtp.idempotency_window",
        )?,
        dedupe_message_id: raw.smtp.dedupe_message_id.unwrap_or(false),
    };

    let lanes = LanesSettings {
        high: lane(raw.lanes.high, DEFAULT_HIGH_CONCURRENCY, "lanes.high")?,
        low: lane(raw.lanes.low, DEFAULT_LOW_CONCURRENCY, "lanes.low")?,
    };

    let delivery = DeliverySettings {
        port: non_zero_port(raw.delivery.port, DEFAULT_DELIVERY_PORT, "delivery.port")?,
        destination_concurrency: at_least_one(
            raw.delivery.destination_concurrency,
            DEFAULT_DESTINATION_CONCURRENCY,
            "delivery.destination_concurrency",
        )?,
        tls: raw.delivery.tls.unwrap_or(TlsPolicy::Opportunistic),
        ip_version: raw.delivery.ip_version.unwrap_or(IpVersion::Any),
        connect_timeout: timeout(
            raw.delivery.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
            "delivery.connect_timeout",
        )?,
        greeting_timeout: timeout(
            raw.delivery.greeting_timeout,
            DEFAULT_GREETING_TIMEOUT,
            "delivery.greeting_timeout",
        )?,
        command_timeout: timeout(
            raw.delivery.command_timeout,
            DEFAULT_COMMAND_TIMEOUT,
            "delivery.command_timeout",
        )?,
        data_timeout: timeout(
            raw.delivery.data_timeout,
            DEFAULT_DATA_TIMEOUT,
            "delivery.data_timeout",
        )?,
        final_timeout: timeout(
            raw.delivery.final_timeout,
            DEFAULT_FINAL_TIMEOUT,
            "delivery.final_timeout",
        )?,
        mta_sts: raw.delivery.mta_sts.unwrap_or(true),
        dane: raw.delivery.dane.unwrap_or(false),
        extra_trust_anchors: match &raw.delivery.tls_ca_file {
            Some(path) => {
                non_empty_path(path, "delivery.tls_ca_file")?;
                crate::tls::read_trust_anchors(path)
                    .map_err(|reason| Invalid::new("delivery.tls_ca_file", reason))?
            }
            None => Vec::new(),
        },
    };

    if delivery.dane && delivery.tls == TlsPolicy::Disabled {
        return Err(Invalid::new(
            "delivery.dane",
            "DANE needs TLS: set delivery.tls to \"opportunistic\" or \"required\"",
        ));
    }

    let retry = retry(raw.retry)?;

    let dns = DnsSettings {
        nameservers: raw
            .dns
            .nameservers
            .iter()
            .enumerate()
            .map(|(index, text)| {
                nameserver(text)
                    .map_err(|reason| Invalid::new(format!("dns.nameservers[{index}]"), reason))
            })
            .collect::<Result<_, _>>()?,
        trust_anchors: match &raw.dns.trust_anchor {
            Some(path) => {
                non_empty_path(path, "dns.trust_anchor")?;
                TrustAnchorSource::read(path)
                    .map_err(|reason| Invalid::new("dns.trust_anchor", reason))?
            }
            None => TrustAnchorSource::Root,
        },
        dnssec: delivery.dane,
    };

    let mut routes: Vec<Route> = Vec::with_capacity(raw.route.len());
    for (index, raw_route) in raw.route.into_iter().enumerate() {
        let route = route(index, raw_route, &routes)?;
        routes.push(route);
    }

    let destinations =
        super::shaping::destinations(raw.destination, delivery.destination_concurrency)?;
    let cluster = super::shaping::cluster(raw.cluster)?;
    let dkim = super::dkim::dkim(raw.dkim)?;
    let webhooks = super::webhook::webhooks(raw.webhook)?;
    let bounce = super::bounce::bounce(raw.bounce)?;
    let suppression = super::suppression::suppression(raw.suppression)?;
    let tls_rpt = super::tls_rpt::tls_rpt(raw.tls_rpt, &hostname)?;

    let control = ControlSettings {
        socket: raw
            .control
            .socket
            .unwrap_or_else(|| spool.path.join("control.sock")),
        maildrop: raw
            .control
            .maildrop
            .unwrap_or_else(|| spool.path.join("maildrop")),
        bulk_chunk: at_least_one(raw.control.bulk_chunk, 2000, "control.bulk_chunk")?,
    };
    non_empty_path(&control.socket, "control.socket")?;
    non_empty_path(&control.maildrop, "control.maildrop")?;

    let metrics = MetricsSettings {
        listen: match raw.metrics.listen {
            Some(text) => Some(
                socket_address(&text).map_err(|reason| Invalid::new("metrics.listen", reason))?,
            ),
            None => None,
        },
    };

    let log = LogSettings {
        format: raw.log.format.unwrap_or(LogFormat::Text),
        level: match raw.log.level {
            Some(level) => {
                check_log_filter(&level).map_err(|reason| Invalid::new("log.level", reason))?;
                Some(level)
            }
            None => None,
        },
    };

    Ok(Config {
        hostname,
        spool,
        listeners,
        smtp,
        lanes,
        delivery,
        retry,
        dns,
        routes,
        destinations,
        dkim,
        webhooks,
        bounce,
        tls_rpt,
        cluster,
        suppression,
        control,
        metrics,
        log,
        source: source.map(Path::to_path_buf),
    })
}

fn listeners(raw: Option<Vec<RawListener>>) -> Result<Vec<ListenerSettings>, Invalid> {
    let Some(raw) = raw else {
        return Ok(vec![ListenerSettings {
            address: DEFAULT_LISTENER.parse().expect("valid socket address"),
            lane: Lane::High,
            tls: ListenerTls::None,
            tls_files: None,
            auth: ListenerAuth::None,
        }]);
    };
    if raw.is_empty() {
        return Err(Invalid::new(
            "listener",
            "at least one [[listener]] is needed; leave the key out for the default 127.0.0.1:2525",
        ));
    }
    let mut listeners: Vec<ListenerSettings> = Vec::with_capacity(raw.len());
    for (index, listener) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("listener[{index}].{field}");
        let text = listener
            .address
            .ok_or_else(|| Invalid::new(key("address"), "required"))?;
        let address =
            socket_address(&text).map_err(|reason| Invalid::new(key("address"), reason))?;
        // Port 0 asks the kernel for a free port, so two such listeners differ.
        let duplicate = listeners
            .iter()
            .position(|earlier| address.port() != 0 && earlier.address == address);
        if let Some(earlier) = duplicate {
            return Err(Invalid::new(
                key("address"),
                format!("{address} is already the address of listener[{earlier}]"),
            ));
        }
        let lane = match listener.lane {
            Some(text) => text
                .parse::<Lane>()
                .map_err(|reason| Invalid::new(key("lane"), reason))?,
            None => Lane::High,
        };
        let tls = listener.tls.unwrap_or(ListenerTls::None);
        let tls_files = match (tls, listener.certificate, listener.private_key) {
            (ListenerTls::None, None, None) => None,
            (ListenerTls::None, _, _) => {
                return Err(Invalid::new(
                    key("tls"),
                    "certificate and private_key are used only with tls = \"starttls\" or \"implicit\"",
                ));
            }
            (_, None, _) => {
                return Err(Invalid::new(key("certificate"), "required when tls is set"));
            }
            (_, _, None) => {
                return Err(Invalid::new(key("private_key"), "required when tls is set"));
            }
            (_, Some(certificate), Some(private_key)) => {
                non_empty_path(&certificate, &key("certificate"))?;
                non_empty_path(&private_key, &key("private_key"))?;
                Some(TlsFiles {
                    certificate,
                    private_key,
                })
            }
        };
        let auth = listener.auth.unwrap_or(ListenerAuth::None);
        if auth != ListenerAuth::None && tls == ListenerTls::None {
            // RFC 4954 §4: passwords are never taken over a plain connection.
            return Err(Invalid::new(
                key("auth"),
                "needs tls = \"starttls\" or \"implicit\": AUTH is offered only under TLS",
            ));
        }
        listeners.push(ListenerSettings {
            address,
            lane,
            tls,
            tls_files,
            auth,
        });
    }
    Ok(listeners)
}

/// `smtp.users_file`: required as soon as one listener takes AUTH.
fn users_file(
    raw: Option<PathBuf>,
    listeners: &[ListenerSettings],
) -> Result<Option<PathBuf>, Invalid> {
    let authenticating = listeners
        .iter()
        .position(|listener| listener.auth != ListenerAuth::None);
    match (raw, authenticating) {
        (None, Some(index)) => Err(Invalid::new(
            "smtp.users_file",
            format!(
                "required: listener[{index}] has auth = \"{}\"",
                listeners[index].auth
            ),
        )),
        (Some(path), _) => {
            non_empty_path(&path, "smtp.users_file")?;
            Ok(Some(path))
        }
        (None, None) => Ok(None),
    }
}

fn relay_networks(raw: Option<Vec<String>>) -> Result<Vec<IpNet>, Invalid> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_RELAY_NETWORKS
            .iter()
            .map(|text| text.parse().expect("valid network"))
            .collect());
    };
    raw.iter()
        .enumerate()
        .map(|(index, text)| {
            network(text)
                .map_err(|reason| Invalid::new(format!("smtp.relay_networks[{index}]"), reason))
        })
        .collect()
}

fn retry(raw: RawRetry) -> Result<RetrySettings, Invalid> {
    let initial = timeout(raw.initial, DEFAULT_RETRY_INITIAL, "retry.initial")?;
    let factor = raw.factor.unwrap_or(DEFAULT_RETRY_FACTOR);
    if !(factor.is_finite() && factor >= 1.0) {
        return Err(Invalid::new(
            "retry.factor",
            format!("must be at least 1.0, got {factor}"),
        ));
    }
    let max = timeout(raw.max, DEFAULT_RETRY_MAX, "retry.max")?;
    if max < initial {
        return Err(Invalid::new(
            "retry.max",
            format!(
                "must be at least retry.initial ({})",
                humantime::format_duration(initial)
            ),
        ));
    }
    let max_age = timeout(raw.max_age, DEFAULT_RETRY_MAX_AGE, "retry.max_age")?;
    let delay_warning = match raw.delay_warning {
        Some(RawDuration(warning)) if warning.is_zero() => {
            return Err(Invalid::new(
                "retry.delay_warning",
                "must be greater than zero; leave it out to send no delay warnings",
            ));
        }
        Some(RawDuration(warning)) if warning >= max_age => {
            return Err(Invalid::new(
                "retry.delay_warning",
                format!(
                    "must be shorter than retry.max_age ({}), or the warning would never be sent",
                    humantime::format_duration(max_age)
                ),
            ));
        }
        Some(RawDuration(warning)) => Some(warning),
        None => None,
    };
    Ok(RetrySettings {
        initial,
        factor,
        max,
        max_age,
        delay_warning,
    })
}

fn route(index: usize, raw: RawRoute, earlier: &[Route]) -> Result<Route, Invalid> {
    let key = |field: &str| format!("route[{index}].{field}");

    let raw_domains = raw
        .domains
        .ok_or_else(|| Invalid::new(key("domains"), "required"))?;
    if raw_domains.is_empty() {
        return Err(Invalid::new(
            key("domains"),
            "must list at least one domain, or \"*\" for all",
        ));
    }
    let mut domains: Vec<String> = Vec::with_capacity(raw_domains.len());
    for (position, domain) in raw_domains.iter().enumerate() {
        let domain_key = format!("route[{index}].domains[{position}]");
        let domain = domain.to_ascii_lowercase();
        if domain != "*" {
            check_domain_name(&domain).map_err(|reason| {
                let reason = if domain.contains('*') {
                    "the only wildcard is \"*\" on its own, meaning every domain".to_string()
                } else {
                    reason
                };
                Invalid::new(domain_key.clone(), reason)
            })?;
        }
        if domains.contains(&domain) {
            return Err(Invalid::new(
                domain_key,
                format!("{domain:?} is listed twice"),
            ));
        }
        if let Some(other) = earlier
            .iter()
            .position(|route| route.domains.contains(&domain))
        {
            return Err(Invalid::new(
                domain_key,
                format!("{domain:?} is already routed by route[{other}]"),
            ));
        }
        domains.push(domain);
    }

    let host = raw
        .host
        .ok_or_else(|| Invalid::new(key("host"), "required"))?;
    check_host(&host).map_err(|reason| Invalid::new(key("host"), reason))?;

    let port = non_zero_port(raw.port, DEFAULT_ROUTE_PORT, &key("port"))?;

    match (&raw.username, &raw.password_file) {
        (Some(_), None) => {
            return Err(Invalid::new(
                key("password_file"),
                "required when username is set",
            ));
        }
        (None, Some(_)) => {
            return Err(Invalid::new(
                key("username"),
                "required when password_file is set",
            ));
        }
        (Some(username), Some(password_file)) => {
            if username.is_empty() {
                return Err(Invalid::new(key("username"), "must not be empty"));
            }
            non_empty_path(password_file, &key("password_file"))?;
        }
        (None, None) => {}
    }

    Ok(Route {
        domains,
        host,
        port,
        tls: raw.tls.unwrap_or(RouteTls::Starttls),
        // Credentials must not go to a server whose identity is unchecked.
        verify_certificate: raw.verify_certificate.unwrap_or(raw.username.is_some()),
        username: raw.username,
        password_file: raw.password_file,
    })
}

fn lane(raw: RawLane, default_concurrency: usize, key: &str) -> Result<LaneSettings, Invalid> {
    let concurrency = at_least_one(
        raw.concurrency,
        default_concurrency,
        &format!("{key}.concurrency"),
    )?;
    let max_queued = match raw.max_queued {
        None => None,
        Some(count) if count >= 1 => Some(usize::try_from(count).unwrap_or(usize::MAX)),
        Some(count) => {
            return Err(Invalid::new(
                format!("{key}.max_queued"),
                format!("must be a positive integer (a number of messages), got {count}"),
            ));
        }
    };
    Ok(LaneSettings {
        concurrency,
        max_queued,
    })
}

fn at_least_one(raw: Option<usize>, default: usize, key: &str) -> Result<usize, Invalid> {
    match raw.unwrap_or(default) {
        0 => Err(Invalid::new(key, "must be at least 1")),
        count => Ok(count),
    }
}

fn non_zero_port(raw: Option<u16>, default: u16, key: &str) -> Result<u16, Invalid> {
    match raw.unwrap_or(default) {
        0 => Err(Invalid::new(key, "must be a port number from 1 to 65535")),
        port => Ok(port),
    }
}

fn timeout(raw: Option<RawDuration>, default: Duration, key: &str) -> Result<Duration, Invalid> {
    match raw {
        Some(RawDuration(duration)) if duration.is_zero() => {
            Err(Invalid::new(key, "must be greater than zero"))
        }
        Some(RawDuration(duration)) => Ok(duration),
        None => Ok(default),
    }
}

fn non_empty_path(path: &Path, key: &str) -> Result<(), Invalid> {
    if path.as_os_str().is_empty() {
        Err(Invalid::new(key, "must not be empty"))
    } else {
        Ok(())
    }
}
