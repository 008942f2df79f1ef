//! `[tls_rpt]`: SMTP TLS reporting (RFC 8460; docs/tls-rpt.md): whether
//! relayq counts the TLS sessions of the policy domains it delivers to, and
//! what its aggregate reports say about who sends them.

use std::time::Duration;

use super::Invalid;
use super::raw::RawTlsRpt;
use super::values::check_mailbox;

/// The shortest `interval`: reports every 10 seconds are for tests.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// RFC 8460 §4.4: a report should cover a full day, 0000-2400 UTC.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// `[tls_rpt]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsRptSettings {
    /// Count sessions and send reports. Counts already stored are reported
    /// only while this is on.
    pub enabled: bool,
    /// `organization-name` of the reports. Default: the host name.
    pub organization: String,
    /// `contact-info` of the reports: an address. Default:
    /// `postmaster@HOSTNAME`.
    pub contact: String,
    /// The `From:` and reverse-path of mailed reports; its domain is the
    /// submitter (`TLS-Report-Submitter`, the report file names). Default:
    /// `tlsrpt-noreply@HOSTNAME`.
    pub from: String,
    /// The period one report covers, in whole seconds, at least
    /// [`MIN_INTERVAL`]; periods are aligned to multiples of it since the
    /// Unix epoch (a day: 0000-2400 UTC).
    pub interval: Duration,
}

impl TlsRptSettings {
    /// The domain of `from`, lowercase: the report submitter.
    pub fn submitter(&self) -> String {
        self.from
            .rsplit_once('@')
            .map(|(_, domain)| domain.to_ascii_lowercase())
            .unwrap_or_default()
    }
}

pub(super) fn tls_rpt(raw: RawTlsRpt, hostname: &str) -> Result<TlsRptSettings, Invalid> {
    let organization = match raw.organization {
        Some(name) if name.trim().is_empty() => {
            return Err(Invalid::new(
                "tls_rpt.organization",
                "must not be empty; leave it out for the host name",
            ));
        }
        Some(name) if name.chars().any(char::is_control) => {
            return Err(Invalid::new(
                "tls_rpt.organization",
                "must not contain control characters",
            ));
        }
        Some(name) => name,
        None => hostname.to_owned(),
    };
    let contact = raw
        .contact
        .unwrap_or_else(|| format!("postmaster@{hostname}"));
    check_mailbox(&contact).map_err(|reason| Invalid::new("tls_rpt.contact", reason))?;
    let from = raw
        .from
        .unwrap_or_else(|| format!("tlsrpt-noreply@{hostname}"));
    check_mailbox(&from).map_err(|reason| Invalid::new("tls_rpt.from", reason))?;
    if !from.is_ascii() {
        return Err(Invalid::new(
            "tls_rpt.from",
            format!("{from:?}: must be ASCII (it is the reverse-path of every report)"),
        ));
    }
    let interval = raw.interval.map_or(DEFAULT_INTERVAL, |raw| raw.0);
    if interval < MIN_INTERVAL {
        return Err(Invalid::new(
            "tls_rpt.interval",
            format!(
                "must be at least {} (the default, \"24h\", is what RFC 8460 asks for)",
                humantime::format_duration(MIN_INTERVAL)
            ),
        ));
    }
    if interval.subsec_nanos() != 0 {
        return Err(Invalid::new(
            "tls_rpt.interval",
            "must be a whole number of seconds",
        ));
    }
    Ok(TlsRptSettings {
        enabled: raw.enabled.unwrap_or(false),
        organization,
        contact,
        from,
        interval,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, ConfigError, parse_with_fixed_defaults};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_with_fixed_defaults(
            text,
            Path::new("relayq.toml"),
            "relay.example.com",
            Path::new("/state"),
        )
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("accepted {text:?} as {:?}", config.tls_rpt),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn defaults_come_from_the_host_name() {
        let settings = parse("").unwrap().tls_rpt;
        assert_eq!(
            settings,
            TlsRptSettings {
                enabled: false,
                organization: "relay.example.com".into(),
                contact: "postmaster@relay.example.com".into(),
                from: "tlsrpt-noreply@relay.example.com".into(),
                interval: Duration::from_secs(86_400),
            }
        );
        assert_eq!(settings.submitter(), "relay.example.com");
    }

    #[test]
    fn every_key_is_read() {
        let settings = parse(
            "[tls_rpt]\nenabled = true\norganization = \"Example Inc\"\n\
             contact = \"tlsrpt@example.com\"\nfrom = \"reports@Mail.Example.com\"\n\
             interval = \"10s\"\n",
        )
        .unwrap()
        .tls_rpt;
        assert!(settings.enabled);
        assert_eq!(settings.organization, "Example Inc");
        assert_eq!(settings.contact, "tlsrpt@example.com");
        assert_eq!(settings.from, "reports@Mail.Example.com");
        assert_eq!(settings.submitter(), "mail.example.com");
        assert_eq!(settings.interval, Duration::from_secs(10));
    }

    #[test]
    fn bad_values_name_the_file_and_key() {
        assert_eq!(
            error("[tls_rpt]\ninterval = \"9s\"\n"),
            "relayq.toml: tls_rpt.interval: must be at least 10s (the default, \"24h\", is what RFC 8460 asks for)"
        );
        assert_eq!(
            error("[tls_rpt]\ninterval = \"10s 500ms\"\n"),
            "relayq.toml: tls_rpt.interval: must be a whole number of seconds"
        );
        assert!(
            error("[tls_rpt]\ncontact = \"nobody\"\n")
                .starts_with("relayq.toml: tls_rpt.contact: invalid address \"nobody\"")
        );
        assert!(
            error("[tls_rpt]\nfrom = \"a b@example.com\"\n")
                .starts_with("relayq.toml: tls_rpt.from: invalid address")
        );
        assert!(error("[tls_rpt]\nfrom = \"rapport@exämple.com\"\n").contains("tls_rpt.from"));
        assert!(error("[tls_rpt]\norganization = \" \"\n").contains("tls_rpt.organization"));
        assert!(error("[tls_rpt]\nenable = true\n").contains("enable"));
    }
}
