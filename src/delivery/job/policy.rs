//! What the recipient domain's transport security policy (MTA-STS, RFC
//! 8461) asks of a job: the policy that applies (looked up with the pass's
//! resolver; while a new one is being fetched the mail waits), for each
//! session about to carry mail, whether the policy lets it, and how each
//! new session under a policy counts in the domain's TLS report (RFC 8460).
//! DANE (`dane`) is decided per MX host when connecting, and wins: a
//! session DANE authenticated is never refused here (RFC 8461 §2), and
//! sessions under DANE are counted there.

use std::time::SystemTime;

use mail_auth::report::tlsrpt::{FailureDetails, ResultType};

use super::Job;
use super::context::DeliveryContext;
use crate::dane::SessionDane;
use crate::delivery::client::{ConnectError, ConnectErrorKind, Connection, RemoteReply};
use crate::delivery::destination::NextHop;
use crate::mta_sts::{ActivePolicy, Lookup};
use crate::outcome::{PolicyKind, Protection, Target, TlsProtection};
use crate::queue::transition::{Outcome, RecipientResult};
use crate::tls_rpt::SessionResult;

/// The policy that applies to the job's mail (MX delivery only), or, while
/// the domain's new policy is being fetched, the results that make its
/// recipients wait for it without an attempt.
pub(super) async fn lookup(
    context: &DeliveryContext,
    job: &Job,
) -> Result<Option<ActivePolicy>, Vec<RecipientResult>> {
    let (NextHop::Mx(domain), Some(mta_sts)) = (&job.hop, &context.mta_sts) else {
        return Ok(None);
    };
    if job.pass.tls_report {
        // RFC 8460 §5.3: a report goes to a domain whose TLS may be what
        // it reports as broken; it is delivered without MTA-STS.
        return Ok(None);
    }
    match mta_sts
        .policy_for(&job.pass.settings.resolver, domain)
        .await
    {
        Lookup::Ready(policy) => Ok(policy),
        Lookup::Fetching { domain } => {
            // No attempt until the policy is known: the fetch ends (one way
            // or the other) within its timeout.
            let reply = RemoteReply::local(
                "4.7.0",
                format!("MTA-STS policy of {domain} is being fetched"),
            );
            let until = SystemTime::now() + crate::mta_sts::FETCH_TIMEOUT;
            Err(job.all(Outcome::Waiting { until }, reply))
        }
    }
}

/// Whether `policy` lets `connection` carry the job's mail: `Err` with the
/// deferral of its recipients when an enforced policy refuses it. What a
/// policy in testing mode would refuse is logged, and the session goes.
pub(super) fn allows(
    job: &Job,
    policy: Option<&ActivePolicy>,
    connection: &Connection,
) -> Result<(), RemoteReply> {
    let Some(active) = policy else {
        return Ok(());
    };
    let Some(reason) = active.refusal(connection.target(), tls_protection(connection)) else {
        return Ok(());
    };
    if active.enforced() {
        return Err(refused_by_policy(active, &reason));
    }
    tracing::warn!(
        queue_id = %job.pass.id,
        policy = %"mta-sts-testing",
        "{}: relay={}, policy=mta-sts-testing: MTA-STS policy of {} would refuse: {reason}",
        job.pass.id,
        connection.target(),
        active.domain,
    );
    Ok(())
}

/// Whether a session is encrypted, and with a certificate verified (by
/// DANE, or for the host name).
pub(super) fn tls_protection(connection: &Connection) -> TlsProtection {
    if let Some(SessionDane::Authenticated { .. }) = connection.dane() {
        return TlsProtection::Dane;
    }
    match connection.tls() {
        None => TlsProtection::None,
        Some(info) if info.verified => TlsProtection::Verified,
        Some(_) => TlsProtection::Unverified,
    }
}

/// How a session was protected, in the words of log lines and events:
/// `policy=dane` for a host under DANE, else the MTA-STS policy's.
pub(super) fn protection(connection: &Connection, sts: Option<&ActivePolicy>) -> Protection {
    let tls = tls_protection(connection);
    match connection.dane() {
        Some(SessionDane::Authenticated { .. } | SessionDane::EncryptOnly) => Protection {
            tls,
            policy: PolicyKind::Dane,
        },
        _ => crate::mta_sts::protection(tls, sts),
    }
}

/// The deferral of mail that an enforced MTA-STS policy does not let go:
/// 4.7.5, "cryptographic failure" (RFC 3463), and a reason naming MTA-STS.
pub(super) fn refused_by_policy(active: &ActivePolicy, reason: &str) -> RemoteReply {
    RemoteReply::local(
        "4.7.5",
        format!("MTA-STS policy of {}: {reason}", active.domain),
    )
}

/// Counts a new session with an MX host of a domain under `policy` for the
/// domain's TLS report: successful when it was what the policy asks,
/// failed (with why) otherwise, as in testing mode, where the session goes
/// on anyway. A session under DANE is counted by `dane`, not here.
pub(super) fn count_session(
    context: &DeliveryContext,
    policy: Option<&ActivePolicy>,
    connection: &Connection,
) {
    let Some(active) = policy else {
        return;
    };
    if matches!(
        connection.dane(),
        Some(SessionDane::Authenticated { .. } | SessionDane::EncryptOnly)
    ) {
        return;
    }
    let target = connection.target();
    let tls = connection.tls();
    let result = match active.refusal(target, tls_protection(connection)) {
        None => SessionResult::Success,
        Some(reason) => {
            let result_type = if !active.policy.allows(&target.host) {
                ResultType::ValidationFailure
            } else {
                match tls {
                    None => ResultType::StartTlsNotSupported,
                    Some(info) => info
                        .certificate_failure
                        .unwrap_or(ResultType::CertificateNotTrusted),
                }
            };
            SessionResult::Failure(failure(result_type, Some(target), &target.host, reason))
        }
    };
    context.tls_rpt.record(&active.report_details(), &result);
}

/// Counts a session that an enforced policy ended before it could carry
/// mail: its TLS could not be established as the policy asks (no
/// STARTTLS, a certificate that did not verify). Other failures (no
/// answer, a refused greeting) are not about TLS and are not counted.
pub(super) fn count_failed_session(
    context: &DeliveryContext,
    policy: &ActivePolicy,
    target: &Target,
    error: &ConnectError,
) {
    let result_type = match error.kind {
        ConnectErrorKind::TlsRequired => ResultType::StartTlsNotSupported,
        // A refused STARTTLS is a server that does not support it.
        ConnectErrorKind::Tls if error.remote.is_some() => ResultType::StartTlsNotSupported,
        ConnectErrorKind::Tls => error
            .certificate_failure
            .unwrap_or(ResultType::ValidationFailure),
        _ => return,
    };
    let result = SessionResult::Failure(failure(
        result_type,
        Some(target),
        &target.host,
        error.detail.clone(),
    ));
    context.tls_rpt.record(&policy.report_details(), &result);
}

/// Counts an MX host that an enforced policy does not name, when no host
/// it names was left to try: the domain learns why its mail waits.
pub(super) fn count_unnamed_host(context: &DeliveryContext, policy: &ActivePolicy, host: &str) {
    let reason = format!(
        "MX host {host} does not match the policy's mx ({})",
        policy.policy.mx.join(", ")
    );
    let result = SessionResult::Failure(failure(ResultType::ValidationFailure, None, host, reason));
    context.tls_rpt.record(&policy.report_details(), &result);
}

/// The failure details of a session with `host` (at `target`, when one was
/// reached).
pub(super) fn failure(
    result_type: ResultType,
    target: Option<&Target>,
    host: &str,
    information: String,
) -> FailureDetails {
    FailureDetails {
        receiving_ip: target.map(|target| target.address.ip()),
        additional_information: Some(information),
        ..FailureDetails::new(result_type).with_receiving_mx_hostname(host)
    }
}
