//! One job: a message's recipients at one destination, delivered over one
//! connection (DNS, connect with fallback across hosts, transactions of at
//! most 100 recipients, connection reuse).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use relayq_spool::QueueId;
use tokio::time::Instant;

use super::client::{
    Attempt, ConnectErrorKind, Connection, Credentials, Disposition, OutboundMessage,
    OutboundRecipient, RecipientOutcome, RemoteReply, Target, TlsInfo, TlsMode,
};
use super::cluster::Cluster;
use super::destination::{DestinationKey, NextHop, Queued, Refusal, SHORT_WAIT, Wait};
use super::engine::DeliveryContext;
use super::pass::Pass;
use crate::config::{RouteTls, TlsPolicy};
use crate::dns::DnsError;
use crate::events::{Event, EventKind};
use crate::live::Live;
use crate::metrics::Throttle;
use crate::mta_sts::{ActivePolicy, Lookup};
use crate::outcome::{Protection, TlsProtection};
use crate::queue::Lane;
use crate::queue::transition::{Outcome, RecipientResult};

/// RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients.
pub const MAX_RECIPIENTS_PER_TRANSACTION: usize = 100;

pub struct Job {
    pub pass: Arc<Pass>,
    pub hop: NextHop,
    /// Where its idle connections are kept: `hop`, or `mx:HOST` for
    /// domains grouped by their shared MX host.
    pub pool: NextHop,
    /// Whose limits, rate and suspension the job is under.
    pub destination: DestinationKey,
    /// Indices into the pass's envelope recipients.
    pub recipients: Vec<usize>,
    /// Times the job was put back at its destination after an overload
    /// signal.
    pub requeues: u32,
}

/// Times a job is put back at its destination after overload signals
/// before its recipients are deferred like any other temporary failure, so
/// a server that always answers 421 still gets the exponential backoff.
const MAX_REQUEUES: u32 = 3;
/// When mail that met an overload signal after some of the job was done
/// is tried again (no attempt counted).
const OVERLOAD_RETRY: Duration = Duration::from_secs(2);

impl Queued for Job {
    fn destination(&self) -> &DestinationKey {
        &self.destination
    }

    fn hop(&self) -> &NextHop {
        &self.hop
    }

    fn lane(&self) -> Lane {
        self.pass.lane
    }

    fn message(&self) -> QueueId {
        self.pass.id
    }
}

impl Job {
    /// Every recipient of the job gets the same result (dead destination,
    /// no host reachable, a wait).
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
                protection: Protection::default(),
            })
            .collect()
    }

    fn waiting(&self, indices: &[usize], wait: Wait) -> Vec<RecipientResult> {
        self.all_of(indices, Outcome::Waiting { until: wait.until }, wait.reply)
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

/// How a job ended.
enum Ended {
    Results(Vec<RecipientResult>),
    /// Nothing was done yet and the destination signalled overload: the
    /// job goes back to its destination's queue.
    Requeue,
}

/// Runs the job to its end and reports to the pass; returns the job when
/// it is to be queued again at its destination (after the caller has
/// freed its place there).
pub async fn run(context: &Arc<DeliveryContext>, job: Job) -> Option<Job> {
    match deliver(context, &job).await {
        Ended::Results(results) => {
            job.pass.record(&context.handle, results).await;
            None
        }
        Ended::Requeue => Some(Job {
            requeues: job.requeues + 1,
            ..job
        }),
    }
}

/// Delivers under the MTA-STS policy of the recipient domain, if it has
/// one (MX delivery only); every result says which policy it was under.
async fn deliver(context: &Arc<DeliveryContext>, job: &Job) -> Ended {
    if let Some(reason) = context.destinations.is_dead(&job.hop) {
        return Ended::Results(job.all(Outcome::Deferred, reason));
    }
    let sts = match (&job.hop, &context.mta_sts) {
        (NextHop::Mx(domain), Some(mta_sts)) => {
            match mta_sts
                .policy_for(&job.pass.settings.resolver, domain)
                .await
            {
                Lookup::Ready(policy) => policy,
                Lookup::Fetching { domain } => {
                    // No attempt until the policy is known: the fetch ends
                    // (one way or the other) within its timeout.
                    let reply = RemoteReply::local(
                        "4.7.0",
                        format!("MTA-STS policy of {domain} is being fetched"),
                    );
                    let until = SystemTime::now() + crate::mta_sts::FETCH_TIMEOUT;
                    return Ended::Results(job.all(Outcome::Waiting { until }, reply));
                }
            }
        }
        _ => None,
    };
    let mut ended = deliver_under(context, job, sts.as_ref()).await;
    if let (Ended::Results(results), Some(active)) = (&mut ended, &sts) {
        for result in results {
            result.protection.policy = active.kind();
        }
    }
    ended
}

async fn deliver_under(
    context: &Arc<DeliveryContext>,
    job: &Job,
    sts: Option<&ActivePolicy>,
) -> Ended {
    let destinations = &context.destinations;
    let key = &job.destination;
    let mut pending: Vec<usize> = job.recipients.clone();
    let mut results = Vec::new();
    // A pooled connection needs no DNS: the next hop is looked up only when
    // a new connection is opened.
    let mut reused = destinations.take_idle(key, &job.pool);
    let mut fresh_connection_tried = false;
    while !pending.is_empty() {
        let (mut connection, fresh) = match reused.take() {
            Some(connection) => (connection, false),
            None if fresh_connection_tried => break,
            None => {
                fresh_connection_tried = true;
                for idle in destinations.make_room(key) {
                    context.tracker().spawn(idle.quit());
                }
                let begun = Instant::now();
                match open(context, job, sts).await {
                    Ok(connection) => (connection, true),
                    Err(failure) => {
                        if let Some(wait) = suspension(context, job, &failure.reply) {
                            results.extend(job.waiting(&pending, wait));
                            return Ended::Results(results);
                        }
                        if failure.overload
                            && overloaded(context, job, begun, &failure.reply)
                            && results.is_empty()
                        {
                            return Ended::Requeue;
                        }
                        results.extend(job.all_of(&pending, failure.outcome, failure.reply));
                        return Ended::Results(results);
                    }
                }
            }
        };
        let tls = tls_protection(connection.tls());
        if let Some(active) = sts
            && let Some(reason) = active.refusal(connection.target(), tls)
        {
            if active.enforced() {
                // Nothing is sent over a session the policy refuses: a
                // pooled one is closed and a fresh one opened instead.
                context.tracker().spawn(connection.quit());
                if fresh {
                    results.extend(job.all_of(
                        &pending,
                        Outcome::Deferred,
                        refused_by_policy(active, &reason),
                    ));
                    return Ended::Results(results);
                }
                continue;
            }
            tracing::warn!(
                queue_id = %job.pass.id,
                policy = %"mta-sts-testing",
                "{}: relay={}, policy=mta-sts-testing: MTA-STS policy of {} would refuse: {reason}",
                job.pass.id,
                connection.target(),
                active.domain,
            );
        }
        let protection = crate::mta_sts::protection(tls, sts);
        let relay = Some(connection.target().clone());
        let batch: Vec<usize> = pending
            .iter()
            .copied()
            .take(MAX_RECIPIENTS_PER_TRANSACTION)
            .collect();
        let started = Instant::now();
        let attempt = match transaction(context, job, &mut connection, &batch).await {
            Ok(attempt) => attempt,
            Err(wait) => {
                // Kept for the next job unless the destination is suspended.
                if let Some(closing) = destinations.put_idle(key, &job.pool, connection) {
                    context.tracker().spawn(closing.quit());
                }
                results.extend(job.waiting(&pending, wait));
                return Ended::Results(results);
            }
        };
        if attempt.nothing_sent && !attempt.connection_usable {
            // The MAIL command never reached the server: no start.
            destinations.unstart(key, job.pass.id);
        }
        if attempt.nothing_sent && !attempt.connection_usable && !fresh_connection_tried {
            // A pooled connection the server had closed: try a fresh one.
            tracing::info!(
                queue_id = %job.pass.id,
                "{}: pooled connection to {} was closed by the server ({}); opening a new one",
                job.pass.id,
                connection.target(),
                attempt
                    .outcomes
                    .first()
                    .map_or_else(|| "no reply".to_owned(), |outcome| outcome.reply.to_string()),
            );
            continue;
        }
        let overload = attempt
            .outcomes
            .iter()
            .find(|outcome| outcome.reply.code == 421)
            .map(|outcome| outcome.reply.clone());
        let suspended = attempt
            .outcomes
            .iter()
            .find_map(|outcome| suspension(context, job, &outcome.reply));
        let delivered_any = attempt
            .outcomes
            .iter()
            .any(|outcome| outcome.disposition == Disposition::Delivered);
        // Whether this overload signal may still put the mail back at its
        // destination: past MAX_REQUEUES it is an ordinary deferral, with
        // an attempt counted and the message's backoff.
        let overload_retry = match &overload {
            Some(reply) => overloaded(context, job, started, reply),
            None => false,
        };
        if overload_retry
            && suspended.is_none()
            && results.is_empty()
            && !delivered_any
            && attempt
                .outcomes
                .iter()
                .all(|outcome| outcome.disposition != Disposition::Bounced)
        {
            return Ended::Requeue;
        }
        let mut retry_now = Vec::new();
        for (&index, outcome) in batch.iter().zip(attempt.outcomes) {
            if outcome.disposition == Disposition::RetryNow {
                retry_now.push(index);
                continue;
            }
            let held_back = match (&suspended, outcome.disposition) {
                (Some(wait), Disposition::Deferred) => Some((wait.until, wait.reply.clone())),
                (None, Disposition::Deferred) if outcome.reply.code == 421 && overload_retry => {
                    Some((SystemTime::now() + OVERLOAD_RETRY, outcome.reply.clone()))
                }
                _ => None,
            };
            let (outcome_kind, reply) = match held_back {
                Some((until, reply)) => (Outcome::Waiting { until }, reply),
                None => (outcome_of(outcome.disposition), outcome.reply),
            };
            results.push(RecipientResult {
                index,
                outcome: outcome_kind,
                reply,
                relay: relay.clone(),
                next_hop_offers_dsn: connection.offers_dsn(),
                protection,
            });
        }
        if fresh && delivered_any {
            destinations.connection_succeeded(key);
        }
        let progressed = retry_now.len() < batch.len();
        pending.retain(|index| !batch.contains(index) || retry_now.contains(index));
        if let Some(wait) = suspended {
            results.extend(job.waiting(&pending, wait));
            return Ended::Results(results);
        }
        if attempt.connection_usable && connection.reset().await.is_ok() {
            if pending.is_empty() || !progressed {
                if let Some(closing) = destinations.put_idle(key, &job.pool, connection) {
                    context.tracker().spawn(closing.quit());
                }
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
    Ended::Results(results)
}

/// How often a worker sleeps through a short rate wait before it gives the
/// job back (other jobs may take the slots it waited for).
const SHORT_WAITS: usize = 3;
/// A local start older than this when Redis answered is taken anew: Redis
/// usually answers in a millisecond.
const STALE_START: Duration = Duration::from_millis(20);

/// Waits for the destination to allow a transaction to start now: a short
/// wait for the rate is slept through (a few times at most); a longer one,
/// or a suspension, is returned for the recipients to be deferred without
/// an attempt. A fleet rate is asked of Redis right after the local one
/// allowed the start, so the fleet's MAIL commands are spaced as Redis
/// saw them; `Cluster::try_start` never waits for a Redis that has not
/// answered (see `delivery::cluster`).
async fn gate(context: &DeliveryContext, job: &Job) -> Result<(), Wait> {
    let destinations = &context.destinations;
    let mut naps = 0;
    // Redis granted a start whose local start went stale while it answered.
    let mut granted = false;
    let mut regated = false;
    loop {
        match destinations.start_transaction(&job.destination, job.pass.id) {
            Ok(()) if granted => return Ok(()),
            Ok(()) => {
                let Some((cluster, name, interval)) = fleet_rate(context, job) else {
                    return Ok(());
                };
                let asked = Instant::now();
                let answer = cluster.try_start(&name, interval).await;
                match answer {
                    // Redis was slow to answer, or to fail: the local start
                    // taken before asking is given back and taken anew, so
                    // local starts stay spaced where MAIL commands go.
                    None | Some(Duration::ZERO) if !regated && asked.elapsed() >= STALE_START => {
                        destinations.unstart(&job.destination, job.pass.id);
                        granted = answer.is_some();
                        regated = true;
                    }
                    None => return Ok(()),
                    Some(wait) if wait.is_zero() => return Ok(()),
                    Some(wait) if wait <= SHORT_WAIT && naps < SHORT_WAITS => {
                        destinations.unstart(&job.destination, job.pass.id);
                        naps += 1;
                        tokio::time::sleep(wait).await;
                    }
                    Some(wait) => {
                        context.throttled(&job.destination, Throttle::Rate);
                        return Err(destinations.fleet_refused(
                            &job.destination,
                            job.pass.id,
                            wait,
                        ));
                    }
                }
            }
            Err((left, _, Throttle::Rate)) if left <= SHORT_WAIT && naps < SHORT_WAITS => {
                naps += 1;
                tokio::time::sleep(left).await;
            }
            Err((_, wait, throttle)) => {
                context.throttled(&job.destination, throttle);
                return Err(wait);
            }
        }
    }
}

/// The fleet rate the job's destination shares through Redis, if any.
fn fleet_rate(context: &DeliveryContext, job: &Job) -> Option<(Arc<Cluster>, Arc<str>, Duration)> {
    let cluster = job.pass.settings.cluster.clone()?;
    let (name, interval) = context.destinations.rate_of(&job.destination)?;
    Some((cluster, name, interval))
}

/// An overload signal at the job's destination from a connection or
/// transaction begun at `begun`: lowers its limit (logged), counts the
/// throttle. Returns whether the job may go back to its destination's queue
/// (it has requeues left and its next hop is not dead).
fn overloaded(context: &DeliveryContext, job: &Job, begun: Instant, reply: &RemoteReply) -> bool {
    let destinations = &context.destinations;
    let label = job.destination.label();
    if let Some(limit) = destinations.overload(&job.destination, begun) {
        tracing::info!(
            "destination {label}: overloaded ({reply}); connection limit lowered to {limit}"
        );
    }
    context.throttled(&job.destination, Throttle::Feedback);
    job.requeues < MAX_REQUEUES && destinations.is_dead(&job.hop).is_none()
}

/// When `reply` contains one of its destination's `suspend_on` strings: the
/// wait of its mail. A destination suspended by this reply is announced
/// (log line, event) and its queued jobs are deferred to the end of the
/// suspension, its idle connections closed.
fn suspension(context: &Arc<DeliveryContext>, job: &Job, reply: &RemoteReply) -> Option<Wait> {
    let (wait, suspended) = context.destinations.suspend_on(&job.destination, reply)?;
    if let Some(suspended) = suspended {
        let until = crate::timefmt::rfc3339(suspended.until);
        tracing::warn!(
            "destination {} suspended until {until}: {}",
            suspended.name,
            suspended.reply
        );
        context.handle.events.publish(Event::destination(
            EventKind::Suspended,
            &suspended.name,
            Some(suspended.until),
            Some(suspended.reply.to_string()),
        ));
        for other in suspended.jobs {
            context.throttled(&other.destination, Throttle::Suspended);
            super::engine::defer(context, other, Refusal::Wait(wait.clone()));
        }
        for connection in suspended.connections {
            context.tracker().spawn(connection.quit());
        }
    }
    context.throttled(&job.destination, Throttle::Suspended);
    Some(wait)
}

/// Why no connection could be opened.
struct OpenFailure {
    outcome: Outcome,
    reply: RemoteReply,
    /// A host refused the connection, timed out before its greeting or
    /// greeted with 421: an overload signal.
    overload: bool,
}

/// Whether a session is encrypted, and with a verified certificate.
fn tls_protection(tls: Option<&TlsInfo>) -> TlsProtection {
    match tls {
        None => TlsProtection::None,
        Some(info) if info.verified => TlsProtection::Verified,
        Some(_) => TlsProtection::Unverified,
    }
}

/// The deferral of mail that an enforced MTA-STS policy does not let go:
/// 4.7.5, "cryptographic failure" (RFC 3463), and a reason naming MTA-STS.
fn refused_by_policy(active: &ActivePolicy, reason: &str) -> RemoteReply {
    RemoteReply::local(
        "4.7.5",
        format!("MTA-STS policy of {}: {reason}", active.domain),
    )
}

/// Looks the next hop up and connects to the first host that answers. An
/// enforced MTA-STS policy leaves only the MX hosts it names, each over
/// STARTTLS with a certificate verified for its name.
async fn open(
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

async fn resolve(live: &Live, hop: &NextHop) -> Result<Vec<Target>, DnsError> {
    match hop {
        NextHop::Mx(domain) => {
            let targets = live.resolver.mail_targets(domain).await?;
            Ok(targets
                .into_iter()
                .map(|target| Target {
                    host: target.host,
                    address: std::net::SocketAddr::new(target.address, live.config.delivery.port),
                })
                .collect())
        }
        NextHop::Route(route) => {
            // A route host that does not resolve is a configuration problem,
            // not the recipient's: defer, never bounce.
            let addresses = live
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
    live: &Live,
    hop: &NextHop,
) -> Result<(TlsMode, Option<Credentials>), RemoteReply> {
    match hop {
        NextHop::Mx(_) => {
            let tls = match live.config.delivery.tls {
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
            &job.pass.settings.client_settings,
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

/// One transaction for `batch` over `connection`, once the destination
/// lets it start (checked right before MAIL, after the body is opened, so a
/// rate spaces the starts the remote end sees); `Err` when it must wait.
async fn transaction(
    context: &DeliveryContext,
    job: &Job,
    connection: &mut Connection,
    batch: &[usize],
) -> Result<Attempt, Wait> {
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
    let opened = match job.pass.body() {
        Some(bytes) => Ok(super::body::from_bytes(bytes)),
        None => super::body::open(&context.handle.spool, job.pass.id).await,
    };
    let body = match opened {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(queue_id = %job.pass.id, "{}: cannot read body: {error}", job.pass.id);
            let reply = RemoteReply::local("4.3.0", "queue file read error");
            return Ok(Attempt {
                outcomes: batch
                    .iter()
                    .map(|_| RecipientOutcome {
                        disposition: Disposition::Deferred,
                        reply: reply.clone(),
                    })
                    .collect(),
                connection_usable: true,
                nothing_sent: true,
            });
        }
    };
    gate(context, job).await?;
    Ok(connection.deliver(&message, body).await)
}
