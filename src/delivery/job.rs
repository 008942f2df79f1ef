//! One job: a message's recipients at one destination, delivered over one
//! connection (DNS, connect with fallback across hosts, transactions of at
//! most 100 recipients, connection reuse).

use std::sync::Arc;

use super::client::{
    Attempt, ConnectErrorKind, Connection, Credentials, Disposition, OutboundMessage,
    OutboundRecipient, RecipientOutcome, RemoteReply, Target, TlsMode,
};
use super::destination::NextHop;
use super::engine::DeliveryContext;
use super::pass::Pass;
use crate::config::{RouteTls, TlsPolicy};
use crate::dns::DnsError;
use crate::queue::Lane;
use crate::queue::transition::{Outcome, RecipientResult};

/// RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients.
pub const MAX_RECIPIENTS_PER_TRANSACTION: usize = 100;

pub struct Job {
    pub pass: Arc<Pass>,
    pub hop: NextHop,
    /// Indices into the pass's envelope recipients.
    pub recipients: Vec<usize>,
}

impl Job {
    pub fn lane(&self) -> Lane {
        self.pass.lane
    }

    /// Every recipient of the job gets the same result (dead destination,
    /// no host reachable).
    pub fn all(&self, outcome: Outcome, reply: RemoteReply) -> Vec<RecipientResult> {
        self.all_of(&self.recipients, outcome, reply)
    }

    /// The same result for each of `indices`, with no relay that answered.
    fn all_of(
        &self,
        indices: &[usize],
        outcome: Outcome,
        reply: RemoteReply,
    ) -> Vec<RecipientResult> {
        indices
            .iter()
            .map(|&index| RecipientResult {
                index,
                outcome,
                reply: reply.clone(),
                relay: None,
                next_hop_offers_dsn: false,
            })
            .collect()
    }
}

/// What the queue records of a client disposition: a recipient to send in a
/// further transaction that never got one is deferred.
fn outcome_of(disposition: Disposition) -> Outcome {
    match disposition {
        Disposition::Delivered => Outcome::Delivered,
        Disposition::Bounced => Outcome::Bounced,
        Disposition::Deferred | Disposition::RetryNow => Outcome::Deferred,
    }
}

/// Runs the job to its end and reports to the pass.
pub async fn run(context: &DeliveryContext, job: Job) {
    let results = deliver(context, &job).await;
    job.pass.record(&context.handle, results).await;
}

async fn deliver(context: &DeliveryContext, job: &Job) -> Vec<RecipientResult> {
    if let Some(reason) = context.destinations.is_dead(&job.hop) {
        return job.all(Outcome::Deferred, reason);
    }
    let mut pending: Vec<usize> = job.recipients.clone();
    let mut results = Vec::new();
    // A pooled connection needs no DNS: the next hop is looked up only when
    // a new connection is opened.
    let mut reused = context.destinations.take_idle(&job.hop);
    let mut fresh_connection_tried = false;
    while !pending.is_empty() {
        let mut connection = match reused.take() {
            Some(connection) => connection,
            None if fresh_connection_tried => break,
            None => {
                fresh_connection_tried = true;
                match open(context, job).await {
                    Ok(connection) => connection,
                    Err((outcome, reply)) => {
                        results.extend(job.all_of(&pending, outcome, reply));
                        return results;
                    }
                }
            }
        };
        let relay = Some(connection.target().clone());
        let batch: Vec<usize> = pending
            .iter()
            .copied()
            .take(MAX_RECIPIENTS_PER_TRANSACTION)
            .collect();
        let attempt = transaction(context, job, &mut connection, &batch).await;
        if attempt.nothing_sent && !attempt.connection_usable && !fresh_connection_tried {
            // A reused connection the server had closed: try a fresh one.
            continue;
        }
        let mut retry_now = Vec::new();
        for (&index, outcome) in batch.iter().zip(attempt.outcomes) {
            if outcome.disposition == Disposition::RetryNow {
                retry_now.push(index);
            } else {
                results.push(RecipientResult {
                    index,
                    outcome: outcome_of(outcome.disposition),
                    reply: outcome.reply,
                    relay: relay.clone(),
                    next_hop_offers_dsn: connection.offers_dsn(),
                });
            }
        }
        let progressed = retry_now.len() < batch.len();
        pending.retain(|index| !batch.contains(index) || retry_now.contains(index));
        if attempt.connection_usable && connection.reset().await.is_ok() {
            if pending.is_empty() || !progressed {
                context.destinations.put_idle(&job.hop, connection);
            } else {
                reused = Some(connection);
            }
        }
        if !progressed {
            break;
        }
    }
    let leftover = RemoteReply::local(
        "4.5.3",
        "too many recipients; retrying in a later transaction",
    );
    results.extend(job.all_of(&pending, Outcome::Deferred, leftover));
    results
}

/// Looks the next hop up and connects to the first host that answers.
async fn open(context: &DeliveryContext, job: &Job) -> Result<Connection, (Outcome, RemoteReply)> {
    let targets = resolve(context, &job.hop).await.map_err(|error| {
        let outcome = if error.is_permanent() {
            Outcome::Bounced
        } else {
            Outcome::Deferred
        };
        (
            outcome,
            RemoteReply::local(error.enhanced_status(), error.to_string()),
        )
    })?;
    let (tls, credentials) =
        connection_policy(context, &job.hop).map_err(|reply| (Outcome::Deferred, reply))?;
    connect(context, job, &targets, tls, credentials.as_ref())
        .await
        .map_err(|reply| (Outcome::Deferred, reply))
}

async fn resolve(context: &DeliveryContext, hop: &NextHop) -> Result<Vec<Target>, DnsError> {
    match hop {
        NextHop::Mx(domain) => {
            let targets = context.resolver.mail_targets(domain).await?;
            Ok(targets
                .into_iter()
                .map(|target| Target {
                    host: target.host,
                    address: std::net::SocketAddr::new(target.address, context.delivery_port),
                })
                .collect())
        }
        NextHop::Route(index) => {
            let route = &context.routes[*index];
            // A route host that does not resolve is a configuration problem,
            // not the recipient's: defer, never bounce.
            let addresses =
                context
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
    context: &DeliveryContext,
    hop: &NextHop,
) -> Result<(TlsMode, Option<Credentials>), RemoteReply> {
    match hop {
        NextHop::Mx(_) => {
            let tls = match context.tls_policy {
                TlsPolicy::Opportunistic => TlsMode::Opportunistic,
                TlsPolicy::Required => TlsMode::Required,
                TlsPolicy::Disabled => TlsMode::Disabled,
            };
            Ok((tls, None))
        }
        NextHop::Route(index) => {
            let route = &context.routes[*index];
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
) -> Result<Connection, RemoteReply> {
    let mut last = RemoteReply::local("4.4.4", "no mail exchanger to try");
    let mut all_unreachable = true;
    for target in targets {
        match Connection::open(
            target,
            &context.client_settings,
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
                last = error.reply();
            }
        }
    }
    if all_unreachable && !targets.is_empty() {
        context.destinations.mark_dead(&job.hop, last.clone());
    }
    Err(last)
}

/// One transaction for `batch` over `connection`.
async fn transaction(
    context: &DeliveryContext,
    job: &Job,
    connection: &mut Connection,
    batch: &[usize],
) -> Attempt {
    let envelope = job.pass.snapshot();
    let recipients: Vec<OutboundRecipient> = batch
        .iter()
        .map(|&index| {
            let recipient = &envelope.recipients[index];
            OutboundRecipient {
                address: recipient.address.clone(),
                notify: recipient.notify,
                orcpt: recipient.orcpt.clone(),
            }
        })
        .collect();
    let message = OutboundMessage {
        reverse_path: &envelope.reverse_path,
        recipients: &recipients,
        size: envelope.size,
        eight_bit_mime: envelope.eight_bit_mime,
        smtputf8: envelope.smtputf8,
        ret: envelope.ret,
        envid: envelope.envid.as_deref(),
        mt_priority: envelope.mt_priority,
    };
    let body = match super::body::open(&context.handle.spool, job.pass.id).await {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(queue_id = %job.pass.id, "{}: cannot read body: {error}", job.pass.id);
            let reply = RemoteReply::local("4.3.0", "queue file read error");
            return Attempt {
                outcomes: batch
                    .iter()
                    .map(|_| RecipientOutcome {
                        disposition: Disposition::Deferred,
                        reply: reply.clone(),
                    })
                    .collect(),
                connection_usable: true,
                nothing_sent: true,
            };
        }
    };
    connection.deliver(&message, body).await
}
