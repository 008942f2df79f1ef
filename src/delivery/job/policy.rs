//! What the recipient domain's transport security policy (MTA-STS, RFC
//! 8461) asks of a job: the policy that applies (looked up with the pass's
//! resolver; while a new one is being fetched the mail waits), and, for
//! each session about to carry mail, whether the policy lets it. DANE
//! (`dane`) is decided per MX host when connecting, and wins: a session
//! DANE authenticated is never refused here (RFC 8461 §2).

use std::time::SystemTime;

use super::Job;
use super::context::DeliveryContext;
use crate::dane::SessionDane;
use crate::delivery::client::{Connection, RemoteReply};
use crate::delivery::destination::NextHop;
use crate::mta_sts::{ActivePolicy, Lookup};
use crate::outcome::{PolicyKind, Protection, TlsProtection};
use crate::queue::transition::{Outcome, RecipientResult};

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
