//! One job: a message's recipients at one destination, delivered over one
//! connection (DNS, connect with fallback across hosts, transactions of at
//! most 100 recipients, connection reuse).
//!
//! Code map: `context` (what a job runs with), `policy` (the recipient
//! domain's transport security policy: which applies, and whether it lets
//! a session carry mail), `dane` (DANE per MX host: what its TLSA records
//! ask, the session opened under them, what became of it), `connect`
//! (next hop lookup and connecting),
//! `transaction` (one transaction of a batch of recipients), `gate` (the
//! start gate before MAIL: suspension, local and fleet rates), `feedback`
//! (overload signals and suspensions from the remote end's replies).

mod connect;
mod context;
mod dane;
mod feedback;
mod gate;
mod policy;
mod transaction;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use relayq_spool::QueueId;
use tokio::time::Instant;

pub use self::context::DeliveryContext;
use self::feedback::{overloaded, suspension};
use super::client::{Disposition, RemoteReply};
use super::destination::{DestinationKey, NextHop, Queued, Refusal, Wait};
use super::pass::Pass;
use crate::mta_sts::ActivePolicy;
use crate::outcome::{PolicyKind, Protection};
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
    let sts = match policy::lookup(context, job).await {
        Ok(sts) => sts,
        Err(waiting) => return Ended::Results(waiting),
    };
    let mut ended = deliver_under(context, job, sts.as_ref()).await;
    if let (Ended::Results(results), Some(active)) = (&mut ended, &sts) {
        for result in results {
            // DANE wins over MTA-STS (RFC 8461 §2).
            if result.protection.policy != PolicyKind::Dane {
                result.protection.policy = active.kind();
            }
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
                match connect::open(context, job, sts).await {
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
                        let mut failed = job.all_of(&pending, failure.outcome, failure.reply);
                        if failure.dane {
                            for result in &mut failed {
                                result.protection.policy = PolicyKind::Dane;
                            }
                        }
                        results.extend(failed);
                        return Ended::Results(results);
                    }
                }
            }
        };
        if let (true, NextHop::Mx(domain), false) = (job.pass.settings.dane, &job.hop, fresh)
            && !dane::reusable(&connection, domain)
        {
            // Opened before DANE was on, or authenticated by another
            // domain's name: a fresh connection is judged for this one.
            context.tracker().spawn(connection.quit());
            continue;
        }
        if fresh {
            policy::count_session(context, sts, &connection);
        }
        if let Err(refused) = policy::allows(job, sts, &connection) {
            // Nothing is sent over a session the policy refuses: a pooled
            // one is closed and a fresh one opened instead.
            context.tracker().spawn(connection.quit());
            if fresh {
                results.extend(job.all_of(&pending, Outcome::Deferred, refused));
                return Ended::Results(results);
            }
            continue;
        }
        let protection = policy::protection(&connection, sts);
        let relay = Some(connection.target().clone());
        let batch: Vec<usize> = pending
            .iter()
            .copied()
            .take(MAX_RECIPIENTS_PER_TRANSACTION)
            .collect();
        let started = Instant::now();
        let attempt = match transaction::transaction(context, job, &mut connection, &batch).await {
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

/// Ends a job that cannot start: a dead next hop is an ordinary deferral; a
/// wait (rate, suspension) defers without an attempt.
pub fn defer(context: &Arc<DeliveryContext>, job: Job, refusal: Refusal) {
    let results = match refusal {
        Refusal::Dead(reason) => job.all(Outcome::Deferred, reason),
        Refusal::Wait(wait) => job.all(Outcome::Waiting { until: wait.until }, wait.reply),
    };
    let context = context.clone();
    context
        .tracker()
        .clone()
        .spawn(async move { job.pass.record(&context.handle, results).await });
}
