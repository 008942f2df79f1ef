//! DANE in MX delivery (RFC 7672; ARCHITECTURE.md, "DANE never
//! downgrades"): for each MX host a job tries, what its TLSA records
//! require before connecting, the session opened under it, and what became
//! of it (`relayq_dane_results_total`, a log line, the `4.7.5` deferral
//! reply). Routes never come here.

use std::sync::Arc;

use mail_auth::report::tlsrpt::{FailureDetails, PolicyDetails, PolicyType, ResultType};

use crate::dane::{self, DaneVerifier, HostPolicy, SessionDane, Verdict};
use crate::delivery::client::{
    ClientSettings, ConnectError, ConnectErrorKind, Connection, RemoteReply, Target, TlsMode,
};
use crate::delivery::settings::DeliverySettings;
use crate::dns::TargetDnssec;
use crate::outcome::DaneResult;
use crate::tls::TlsConfigs;
use crate::tls_rpt::{SessionResult, TlsRpt};

/// What DANE asks of one MX host.
pub(super) enum HostPlan {
    /// DANE does not apply: the usual TLS mode, and MTA-STS if the domain
    /// has a policy.
    Usual,
    /// STARTTLS, judged by this verifier.
    Authenticate(Arc<DaneVerifier>),
    /// STARTTLS without a certificate check: secure TLSA records, none
    /// usable (RFC 7672 §2.2).
    EncryptOnly,
    /// The TLSA lookup failed: the host is not used (never without DANE).
    Skip(RemoteReply),
}

impl HostPlan {
    /// Whether the host is under DANE (MTA-STS does not apply to it).
    pub fn is_dane(&self) -> bool {
        !matches!(self, HostPlan::Usual)
    }
}

/// The plan for `target`, an MX host of `domain`: its TLSA records are
/// looked up only when its address records were DNSSEC-secure.
pub(super) async fn plan(
    settings: &DeliverySettings,
    domain: &str,
    target: &Target,
    dnssec: Option<&TargetDnssec>,
) -> HostPlan {
    let policy = dane::host_policy(
        &settings.resolver,
        domain,
        &target.host,
        dnssec,
        target.address.port(),
    )
    .await;
    match policy {
        HostPolicy::NotApplicable => HostPlan::Usual,
        HostPolicy::Authenticate(expectation) => {
            HostPlan::Authenticate(DaneVerifier::new(expectation))
        }
        HostPolicy::EncryptOnly { .. } => HostPlan::EncryptOnly,
        HostPolicy::LookupFailed(reason) => HostPlan::Skip(RemoteReply::local(
            "4.7.5",
            format!("DANE: {target}: TLSA lookup failed, host not used: {reason}"),
        )),
    }
}

/// Opens the session `plan` asks for (`usual` is the mode without DANE).
/// A `Skip` plan is the caller's to handle; it never connects.
pub(super) async fn open(
    plan: &HostPlan,
    target: &Target,
    settings: &ClientSettings,
    usual: TlsMode,
    tls_configs: &TlsConfigs,
) -> Result<Connection, ConnectError> {
    match plan {
        HostPlan::Authenticate(verifier) => {
            Connection::open_dane(target, settings, verifier, tls_configs).await
        }
        HostPlan::EncryptOnly => {
            // `delivery.tls = "required"` still asks for a certificate
            // verified for the host name.
            let verify = usual == TlsMode::Required;
            let mode = TlsMode::StartTls { verify };
            Connection::open(target, settings, mode, None, tls_configs).await
        }
        HostPlan::Usual | HostPlan::Skip(_) => {
            Connection::open(target, settings, usual, None, tls_configs).await
        }
    }
}

/// What became of a connection attempt under `plan`: the result to count
/// (none for a DANE host that failed before TLS: unreachable, a refused
/// greeting), and for a DANE failure the reply that replaces the
/// connection error's (`4.7.5`, naming DANE). A successful connection is
/// told how DANE applied, for its reuse.
pub(super) fn judge(
    plan: &HostPlan,
    target: &Target,
    result: &mut Result<Connection, ConnectError>,
) -> (Option<DaneResult>, Option<RemoteReply>) {
    let failed = |what: &str| {
        Some(RemoteReply::local(
            "4.7.5",
            format!("DANE: {target}: {what}"),
        ))
    };
    match (plan, result) {
        (HostPlan::Usual, Ok(connection)) => {
            connection.set_dane(SessionDane::NotApplicable);
            (Some(DaneResult::Insecure), None)
        }
        (HostPlan::Usual, Err(_)) => (Some(DaneResult::Insecure), None),
        (HostPlan::Skip(reply), _) => (Some(DaneResult::TlsaLookupFailed), Some(reply.clone())),
        (HostPlan::EncryptOnly, Ok(connection)) => {
            connection.set_dane(SessionDane::EncryptOnly);
            (Some(DaneResult::NoUsableTlsa), None)
        }
        (HostPlan::Authenticate(verifier), Ok(connection)) => match verifier.verdict() {
            Some(Verdict::Matched {
                usage,
                record,
                name,
            }) => {
                tracing::info!(
                    relay = %target,
                    "DANE: {} matched {} record {record}{}",
                    target,
                    usage.as_str(),
                    name.as_deref()
                        .map(|name| format!(" for {name}"))
                        .unwrap_or_default()
                );
                connection.set_dane(SessionDane::Authenticated { usage, name });
                (Some(DaneResult::Matched), None)
            }
            // A handshake that succeeded was judged; this cannot be.
            _ => (
                Some(DaneResult::HandshakeFailed),
                failed("certificate not judged"),
            ),
        },
        (plan, Err(error)) => {
            if matches!(error.kind, ConnectErrorKind::TlsRequired)
                || (error.kind == ConnectErrorKind::Tls && error.remote.is_some())
            {
                let what = match &error.remote {
                    Some(reply) => format!("STARTTLS refused ({reply}); DANE requires TLS"),
                    None => "no STARTTLS offered; DANE requires TLS".to_owned(),
                };
                return (Some(DaneResult::NoStarttls), failed(&what));
            }
            let verdict = match plan {
                HostPlan::Authenticate(verifier) => verifier.verdict(),
                _ => None,
            };
            match (verdict, error.kind) {
                (Some(Verdict::Failed { failure, detail }), _) => {
                    (Some(DaneResult::Mismatch(failure)), failed(&detail))
                }
                (_, ConnectErrorKind::Tls) => (
                    Some(DaneResult::HandshakeFailed),
                    failed(&format!("TLS handshake failed: {}", error.detail)),
                ),
                // Not reached, or refused before TLS: an ordinary failure.
                _ => (None, None),
            }
        }
    }
}

/// Records what DANE made of one attempted host of `domain`: the
/// `relayq_dane_results_total` count (and the one place a per-session
/// report such as TLS-RPT, RFC 8460, takes the result from).
pub(super) fn record(
    metrics: &crate::metrics::Metrics,
    domain: &str,
    target: &Target,
    result: DaneResult,
) {
    metrics.dane_result(result);
    tracing::debug!(
        relay = %target,
        "DANE result for {domain} at {target}: {}",
        result.as_str()
    );
}

/// Counts one attempted host's DANE result for `domain`'s TLS report
/// (RFC 8460): a match is a successful session under the host's TLSA
/// records (`policy-type` `tlsa`), a failure counts with its result type
/// and `reply`'s words; a host DANE does not apply to is not counted here
/// (MTA-STS counts it, if the domain has a policy).
pub(super) fn count(
    tls_rpt: &TlsRpt,
    domain: &str,
    target: &Target,
    plan: &HostPlan,
    result: DaneResult,
    reply: Option<&RemoteReply>,
) {
    let session = match result {
        DaneResult::Insecure => return,
        DaneResult::Matched => SessionResult::Success,
        failed => {
            let Some(name) = failed.tls_rpt_result_type() else {
                return;
            };
            let result_type = serde_json::from_value(serde_json::Value::from(name))
                .unwrap_or(ResultType::ValidationFailure);
            SessionResult::Failure(FailureDetails {
                receiving_ip: Some(target.address.ip()),
                additional_information: reply.map(|reply| reply.text.clone()),
                ..FailureDetails::new(result_type).with_receiving_mx_hostname(&target.host)
            })
        }
    };
    let details = PolicyDetails {
        policy_type: PolicyType::Tlsa,
        policy_string: match plan {
            HostPlan::Authenticate(verifier) => verifier
                .expectation()
                .records
                .iter()
                .map(|(_, record)| presentation(record))
                .collect(),
            _ => Vec::new(),
        },
        policy_domain: domain.trim_end_matches('.').to_ascii_lowercase(),
        mx_host: vec![target.host.clone()],
    };
    tls_rpt.record(&details, &session);
}

/// A TLSA record in presentation form, its data in full hex (RFC 8460
/// §4.4: the policy-string of a `tlsa` policy is its records).
fn presentation(record: &crate::dane::Tlsa) -> String {
    let mut text = format!("{} {} {} ", record.usage, record.selector, record.matching);
    for byte in &record.data {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// Whether a pooled connection may carry mail for `domain` with DANE on:
/// it was opened with DANE asked, and a DANE-TA match that rested on
/// another next-hop domain's name does not carry over.
pub(super) fn reusable(connection: &Connection, domain: &str) -> bool {
    match connection.dane() {
        None => false,
        Some(SessionDane::Authenticated {
            name: Some(name), ..
        }) => name == &connection.target().host || name.eq_ignore_ascii_case(domain),
        Some(_) => true,
    }
}
