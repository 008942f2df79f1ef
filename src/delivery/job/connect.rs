//! Opening a connection for a job: the next hop's addresses (MX hosts, or
//! a route's host), its TLS mode and credentials, and the first host that
//! answers. An enforced MTA-STS policy narrows the hosts and requires
//! verified STARTTLS.

use crate::config::{RouteTls, TlsPolicy};
use crate::delivery::client::{ConnectErrorKind, Connection, Credentials, Target, TlsMode};
use crate::delivery::destination::NextHop;
use crate::delivery::settings::DeliverySettings;
use crate::dns::DnsError;
use crate::mta_sts::ActivePolicy;
use crate::outcome::RemoteReply;
use crate::queue::transition::Outcome;

use super::Job;
use super::context::DeliveryContext;
use super::policy::refused_by_policy;

/// Why no connection could be opened.
pub(super) struct OpenFailure {
    pub(super) outcome: Outcome,
    pub(super) reply: RemoteReply,
    /// A host refused the connection, timed out before its greeting or
    /// greeted with 421: an overload signal.
    pub(super) overload: bool,
}

/// Looks the next hop up and connects to the first host that answers. An
/// enforced MTA-STS policy leaves only the MX hosts it names, each over
/// STARTTLS with a certificate verified for its name.
pub(super) async fn open(
    context: &DeliveryContext,
    job: &Job,
    sts: Option<&ActivePolicy>,
) -> Result<Connection, OpenFailure> {
    let mut targets = resolve(&job.pass.settings, &job.hop)
        .await
        .map_err(|error| OpenFailure {
            outcome: if error.is_permanent() {
                Outcome::Bounced
            } else {
                Outcome::Deferred
            },
            reply: RemoteReply::local(error.enhanced_status(), error.to_string()),
            overload: false,
        })?;
    let (mut tls, credentials) =
        connection_policy(&job.pass.settings, &job.hop).map_err(|reply| OpenFailure {
            outcome: Outcome::Deferred,
            reply,
            overload: false,
        })?;
    let enforced = sts.filter(|active| active.enforced());
    if let Some(active) = enforced {
        targets.retain(|target| active.policy.allows(&target.host));
        if targets.is_empty() {
            let reason = format!(
                "no MX host matches the policy's mx ({})",
                active.policy.mx.join(", ")
            );
            return Err(OpenFailure {
                outcome: Outcome::Deferred,
                reply: refused_by_policy(active, &reason),
                overload: false,
            });
        }
        tls = TlsMode::Required;
    }
    connect(context, job, &targets, tls, credentials.as_ref(), enforced).await
}

async fn resolve(settings: &DeliverySettings, hop: &NextHop) -> Result<Vec<Target>, DnsError> {
    match hop {
        NextHop::Mx(domain) => {
            let targets = settings.resolver.mail_targets(domain).await?;
            Ok(targets
                .into_iter()
                .map(|target| Target {
                    host: target.host,
                    address: std::net::SocketAddr::new(target.address, settings.port),
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
                .map(|address| Target {
                    host: route.host.clone(),
                    address: std::net::SocketAddr::new(address, route.port),
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

/// Tries the targets in order: next host on connect failure, timeout, or a
/// 4xx/5xx greeting. When every host refused or timed out, the destination
/// is remembered as dead.
async fn connect(
    context: &DeliveryContext,
    job: &Job,
    targets: &[Target],
    tls: TlsMode,
    credentials: Option<&Credentials>,
    enforced: Option<&ActivePolicy>,
) -> Result<Connection, OpenFailure> {
    let mut last = RemoteReply::local("4.4.4", "no mail exchanger to try");
    let mut all_unreachable = true;
    let mut overload = false;
    for target in targets {
        match Connection::open(
            target,
            &job.pass.settings.client,
            tls,
            credentials,
            &context.tls_configs,
        )
        .await
        {
            Ok(connection) => return Ok(connection),
            Err(error) => {
                tracing::info!(
                    queue_id = %job.pass.id,
                    "{}: cannot use {}: {}",
                    job.pass.id,
                    target,
                    error.reply()
                );
                if !matches!(
                    error.kind,
                    ConnectErrorKind::Connect | ConnectErrorKind::Timeout
                ) {
                    all_unreachable = false;
                }
                overload |= match error.kind {
                    ConnectErrorKind::Connect | ConnectErrorKind::Timeout => true,
                    ConnectErrorKind::Greeting => {
                        error.remote.as_ref().is_some_and(|reply| reply.code == 421)
                    }
                    _ => false,
                };
                last = match (enforced, error.kind) {
                    (Some(active), ConnectErrorKind::Tls | ConnectErrorKind::TlsRequired) => {
                        refused_by_policy(active, &error.detail)
                    }
                    _ => error.reply(),
                };
            }
        }
    }
    if all_unreachable && !targets.is_empty() {
        context.destinations.mark_dead(&job.hop, last.clone());
    }
    Err(OpenFailure {
        outcome: Outcome::Deferred,
        reply: last,
        overload,
    })
}
