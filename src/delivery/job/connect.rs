//! Opening a connection for a job: the next hop's addresses (MX hosts, or
//! a route's host), its TLS mode and credentials, and the first host that
//! answers. With DANE on, each MX host gets what its TLSA records ask
//! (`dane`) before it is tried; an enforced MTA-STS policy narrows the
//! hosts DANE does not cover and requires verified STARTTLS of them.

use crate::config::{RouteTls, TlsPolicy};
use crate::delivery::client::{
    ConnectError, ConnectErrorKind, Connection, Credentials, Target, TlsMode,
};
use crate::delivery::destination::NextHop;
use crate::delivery::settings::DeliverySettings;
use crate::dns::{DnsError, TargetDnssec};
use crate::mta_sts::ActivePolicy;
use crate::outcome::{DaneResult, RemoteReply};
use crate::queue::transition::Outcome;

use super::Job;
use super::context::DeliveryContext;
use super::dane::{self, HostPlan};
use super::policy::{count_failed_session, count_unnamed_host, refused_by_policy};

/// Why no connection could be opened.
pub(super) struct OpenFailure {
    pub(super) outcome: Outcome,
    pub(super) reply: RemoteReply,
    /// A host refused the connection, timed out before its greeting or
    /// greeted with 421: an overload signal.
    pub(super) overload: bool,
    /// The failure was DANE's: the results say `policy=dane`.
    pub(super) dane: bool,
}

/// Looks the next hop up and connects to the first host that answers. An
/// enforced MTA-STS policy leaves only the MX hosts it names (or, with DANE
/// on, the hosts DANE covers), each over STARTTLS with a certificate
/// verified for its name (or matching its TLSA records).
pub(super) async fn open(
    context: &DeliveryContext,
    job: &Job,
    sts: Option<&ActivePolicy>,
) -> Result<Connection, OpenFailure> {
    let settings = &job.pass.settings;
    // RFC 8460 §5.3: relayq's own TLS reports go without DANE too.
    let dane_on = settings.dane && matches!(job.hop, NextHop::Mx(_)) && !job.pass.tls_report;
    let mut targets = resolve(settings, &job.hop).await.map_err(|error| {
        if dane_on && error.to_string().contains("DNSSEC") {
            context.handle.metrics.dane_result(DaneResult::DnssecFailed);
        }
        OpenFailure {
            outcome: if error.is_permanent() {
                Outcome::Bounced
            } else {
                Outcome::Deferred
            },
            reply: RemoteReply::local(error.enhanced_status(), error.to_string()),
            overload: false,
            dane: false,
        }
    })?;
    let (mut tls, credentials) =
        connection_policy(settings, &job.hop).map_err(|reply| OpenFailure {
            outcome: Outcome::Deferred,
            reply,
            overload: false,
            dane: false,
        })?;
    let enforced = sts.filter(|active| active.enforced());
    if let Some(active) = enforced {
        // With DANE on, the hosts DANE covers stay whatever the policy's mx
        // says (DANE wins, RFC 8461 §2): the policy is applied per host.
        if !dane_on {
            let unnamed: Vec<String> = targets
                .iter()
                .filter(|(target, _)| !active.policy.allows(&target.host))
                .map(|(target, _)| target.host.clone())
                .collect();
            targets.retain(|(target, _)| active.policy.allows(&target.host));
            if targets.is_empty() {
                count_unnamed_hosts(context, active, &unnamed);
            }
        }
        if targets.is_empty() {
            return Err(no_policy_host(active));
        }
        tls = TlsMode::Required;
    }
    let attempt = Attempt {
        tls,
        credentials: credentials.as_ref(),
        enforced,
        dane_on,
    };
    connect(context, job, &targets, attempt).await
}

/// Counts each MX host (once) that an enforced policy does not name, when
/// none it names was left to try.
fn count_unnamed_hosts(context: &DeliveryContext, active: &ActivePolicy, hosts: &[String]) {
    let mut counted: Vec<&String> = Vec::with_capacity(hosts.len());
    for host in hosts {
        if !counted.contains(&host) {
            counted.push(host);
            count_unnamed_host(context, active, host);
        }
    }
}

/// Mail an enforced MTA-STS policy leaves no MX host for.
fn no_policy_host(active: &ActivePolicy) -> OpenFailure {
    let reason = format!(
        "no MX host matches the policy's mx ({})",
        active.policy.mx.join(", ")
    );
    OpenFailure {
        outcome: Outcome::Deferred,
        reply: refused_by_policy(active, &reason),
        overload: false,
        dane: false,
    }
}

/// The hosts to try, each with what DNSSEC proved about it (MX delivery
/// with `delivery.dane`).
async fn resolve(
    settings: &DeliverySettings,
    hop: &NextHop,
) -> Result<Vec<(Target, Option<TargetDnssec>)>, DnsError> {
    match hop {
        NextHop::Mx(domain) => {
            let targets = settings.resolver.mail_targets(domain).await?;
            Ok(targets
                .into_iter()
                .map(|target| {
                    let address = std::net::SocketAddr::new(target.address, settings.port);
                    let host = Target {
                        host: target.host,
                        address,
                    };
                    (host, target.dnssec)
                })
                .collect())
        }
        NextHop::Route(route) => {
            // A route host that does not resolve is a configuration problem,
            // not the recipient's: defer, never bounce.
            let addresses = settings
                .resolver
                .host_addresses(&route.host)
                .await
                .map_err(|error| {
                    DnsError::Temporary(format!("route host {}: {error}", route.host))
                })?;
            Ok(addresses
                .into_iter()
                .take(5)
                .map(|address| {
                    let target = Target {
                        host: route.host.clone(),
                        address: std::net::SocketAddr::new(address, route.port),
                    };
                    (target, None)
                })
                .collect())
        }
    }
}

/// TLS mode and credentials for a next hop.
fn connection_policy(
    settings: &DeliverySettings,
    hop: &NextHop,
) -> Result<(TlsMode, Option<Credentials>), RemoteReply> {
    match hop {
        NextHop::Mx(_) => {
            let tls = match settings.tls {
                TlsPolicy::Opportunistic => TlsMode::Opportunistic,
                TlsPolicy::Required => TlsMode::Required,
                TlsPolicy::Disabled => TlsMode::Disabled,
            };
            Ok((tls, None))
        }
        NextHop::Route(route) => {
            let verify = route.verify_certificate;
            let tls = match route.tls {
                RouteTls::Starttls => TlsMode::StartTls { verify },
                RouteTls::Implicit => TlsMode::Implicit { verify },
                RouteTls::None => TlsMode::Disabled,
            };
            let password = route.read_password().map_err(|error| {
                tracing::error!("route {}: {error:#}", route.host);
                RemoteReply::local("4.7.0", "smarthost password file unreadable")
            })?;
            let credentials = match (&route.username, password) {
                (Some(username), Some(password)) => Some(Credentials {
                    username: username.clone(),
                    password,
                }),
                _ => None,
            };
            Ok((tls, credentials))
        }
    }
}

/// How the hosts of one next hop are tried.
struct Attempt<'a> {
    /// The TLS mode of hosts DANE does not cover.
    tls: TlsMode,
    credentials: Option<&'a Credentials>,
    enforced: Option<&'a ActivePolicy>,
    /// MX delivery with `delivery.dane`.
    dane_on: bool,
}

/// Tries the targets in order: next host on connect failure, timeout, a
/// 4xx/5xx greeting or a DANE failure. When every host refused or timed
/// out, the destination is remembered as dead.
async fn connect(
    context: &DeliveryContext,
    job: &Job,
    targets: &[(Target, Option<TargetDnssec>)],
    attempt: Attempt<'_>,
) -> Result<Connection, OpenFailure> {
    let settings = &job.pass.settings;
    let mut last = RemoteReply::local("4.4.4", "no mail exchanger to try");
    let mut last_was_dane = false;
    let mut all_unreachable = true;
    let mut overload = false;
    let mut tried = 0;
    // Hosts an enforced policy does not name, skipped.
    let mut unnamed: Vec<String> = Vec::new();
    for (target, dnssec) in targets {
        let plan = match (&job.hop, attempt.dane_on) {
            (NextHop::Mx(domain), true) => {
                dane::plan(settings, domain, target, dnssec.as_ref()).await
            }
            _ => HostPlan::Usual,
        };
        if let Some(active) = attempt.enforced
            && !plan.is_dane()
            && !active.policy.allows(&target.host)
        {
            unnamed.push(target.host.clone());
            continue;
        }
        tried += 1;
        let mut result = match &plan {
            // Never connected: the failure is the plan's.
            HostPlan::Skip(_) => Err(ConnectError::new(
                ConnectErrorKind::Tls,
                "TLSA lookup failed",
            )),
            _ if attempt.dane_on => {
                dane::open(
                    &plan,
                    target,
                    &settings.client,
                    attempt.tls,
                    &context.tls_configs,
                )
                .await
            }
            _ => {
                Connection::open(
                    target,
                    &settings.client,
                    attempt.tls,
                    attempt.credentials,
                    &context.tls_configs,
                )
                .await
            }
        };
        let dane_reply = match (&job.hop, attempt.dane_on) {
            (NextHop::Mx(domain), true) => {
                let (counted, reply) = dane::judge(&plan, target, &mut result);
                if let Some(counted) = counted {
                    dane::record(&context.handle.metrics, domain, target, counted);
                    dane::count(
                        &context.tls_rpt,
                        domain,
                        target,
                        &plan,
                        counted,
                        reply.as_ref(),
                    );
                }
                reply
            }
            _ => None,
        };
        let error = match result {
            Ok(connection) => return Ok(connection),
            Err(error) => error,
        };
        if let Some(active) = attempt.enforced
            && !plan.is_dane()
        {
            count_failed_session(context, active, target, &error);
        }
        let reply = dane_reply.clone().unwrap_or_else(|| error.reply());
        tracing::info!(
            queue_id = %job.pass.id,
            "{}: cannot use {}: {}",
            job.pass.id,
            target,
            reply
        );
        if dane_reply.is_some()
            || !matches!(
                error.kind,
                ConnectErrorKind::Connect | ConnectErrorKind::Timeout
            )
        {
            all_unreachable = false;
        }
        overload |= match error.kind {
            ConnectErrorKind::Connect | ConnectErrorKind::Timeout => true,
            ConnectErrorKind::Greeting => {
                error.remote.as_ref().is_some_and(|reply| reply.code == 421)
            }
            _ => false,
        };
        last_was_dane = dane_reply.is_some();
        last = match (dane_reply, attempt.enforced, error.kind) {
            (Some(reply), _, _) => reply,
            (None, Some(active), ConnectErrorKind::Tls | ConnectErrorKind::TlsRequired) => {
                refused_by_policy(active, &error.detail)
            }
            _ => error.reply(),
        };
    }
    if tried == 0
        && let Some(active) = attempt.enforced
    {
        count_unnamed_hosts(context, active, &unnamed);
        return Err(no_policy_host(active));
    }
    if all_unreachable && tried > 0 {
        context.destinations.mark_dead(&job.hop, last.clone());
    }
    Err(OpenFailure {
        outcome: Outcome::Deferred,
        reply: last,
        overload,
        dane: last_was_dane,
    })
}
