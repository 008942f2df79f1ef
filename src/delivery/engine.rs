//! The delivery engine: per lane one dispatcher (due messages → passes →
//! jobs at their destinations), the lane workers (`workers`) that run jobs
//! which can start now, and the sweeper of idle connections and ended
//! suspensions. [`Engine`] is what a reload changes in it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use relayq_spool::QueueId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::destination::{DestinationKey, NextHop, Rejected, RouteHop};
use super::job::{self, DeliveryContext, Job};
use super::pass::Pass;
use super::settings::DeliverySettings;
use super::workers::Workers;
use crate::config::Config;
use crate::events::{Event, EventKind};
use crate::queue::Lane;
use crate::queue::handle::{LoadError, QueueHandle};
use crate::queue::transition;

/// Due messages loaded together by a dispatcher (one blocking-pool trip).
const LOAD_BATCH: usize = 32;
/// Passes in flight per lane: bounds the memory a huge due backlog takes.
const MAX_PASSES_IN_FLIGHT: usize = 10_000;
/// Jobs waiting at one destination before new passes for it are postponed,
/// so a slow destination cannot take all of a lane's passes in flight.
const MAX_QUEUED_PER_DESTINATION: usize = 1_000;
/// How long a postponed message waits before it is looked at again.
const POSTPONE: Duration = Duration::from_secs(1);
/// The destination of a recipient domain going to `hop`: the first
/// `[[destination]]` rule that matches the domain or, for `mx:` patterns,
/// its most preferred MX host (looked up only when some rule has such a
/// pattern; the resolver's cache keeps the answer within its TTL), else
/// the next hop itself.
///
/// Also the pool its connections are kept in: the next hop, or for
/// domains grouped by their MX host, that host, so one connection to a
/// provider's MX carries mail for all the provider's domains.
pub async fn destination_of(
    context: &DeliveryContext,
    settings: &DeliverySettings,
    domain: &str,
    hop: &NextHop,
) -> (DestinationKey, NextHop) {
    if let Some(key) = context.destinations.key_without_mx(domain, hop) {
        return (key, hop.clone());
    }
    let mx_host = settings.resolver.preferred_exchange(domain).await;
    match context
        .destinations
        .key_for(domain, hop, mx_host.as_deref())
    {
        (key, true) => {
            let host = mx_host.unwrap_or_default();
            (key, NextHop::Mx(format!("mx:{host}")))
        }
        (key, false) => (key, hop.clone()),
    }
}

/// The next hop for a recipient domain: the first route naming it, else
/// a `*` route, else its MX hosts.
pub fn next_hop(settings: &DeliverySettings, domain: &str) -> NextHop {
    let routes = &settings.routes;
    let exact = routes
        .iter()
        .find(|route| route.domains.iter().any(|d| d == domain));
    let wildcard = || {
        routes
            .iter()
            .find(|route| route.domains.iter().any(|d| d == "*"))
    };
    match exact.or_else(wildcard) {
        Some(route) => NextHop::Route(RouteHop(route.clone())),
        None => NextHop::Mx(domain.to_owned()),
    }
}

/// How long deliveries in flight may go on after shutdown begins. Then they
/// are dropped: their recipients keep their state in the spool and are tried
/// again after the restart (at worst a duplicate: ARCHITECTURE.md,
/// "at-least-once").
pub const DELIVERY_GRACE: Duration = Duration::from_secs(5);

/// Starts the dispatchers, the lane workers and the idle-connection sweeper.
/// On `shutdown` they stop taking work; deliveries in flight get
/// `DELIVERY_GRACE` to finish.
pub fn spawn(
    context: Arc<DeliveryContext>,
    config: &Config,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Engine {
    let abort = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        let abort = abort.clone();
        // Not tracked: shutdown must not wait for this timer itself.
        tokio::spawn(async move {
            shutdown.cancelled().await;
            tokio::time::sleep(DELIVERY_GRACE).await;
            abort.cancel();
        });
    }
    let engine = Engine {
        workers: Workers::new(context.clone(), shutdown.clone(), abort),
    };
    for lane in Lane::ALL {
        let in_flight = Arc::new(Semaphore::new(MAX_PASSES_IN_FLIGHT));
        tracker.spawn(dispatch(context.clone(), lane, in_flight, shutdown.clone()));
        engine.set_width(lane, config.lanes.get(lane).concurrency);
    }
    tracker.spawn(sweep(context, shutdown));
    engine
}

/// The running engine: what a reload changes in it.
pub struct Engine {
    workers: Arc<Workers>,
}

impl Engine {
    /// Sets a lane's width (`lanes.*.concurrency`): new workers start at
    /// once; workers above a lower width leave when their job is done.
    pub fn set_width(&self, lane: Lane, width: usize) {
        self.workers.set_width(lane, width);
    }
}

/// Starts passes for a lane's due messages, at most `in_flight`'s permits
/// at a time.
async fn dispatch(
    context: Arc<DeliveryContext>,
    lane: Lane,
    in_flight: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    loop {
        let permit = tokio::select! {
            permit = in_flight.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = shutdown.cancelled() => return,
        };
        // As many due messages as there are passes to start (at most
        // LOAD_BATCH): their envelopes and small bodies are read in one trip
        // to the blocking pool.
        let mut permits = vec![permit];
        while permits.len() < LOAD_BATCH {
            match in_flight.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        let ids = tokio::select! {
            ids = context.handle.queue.next_due_batch(lane, permits.len()) => ids,
            _ = shutdown.cancelled() => return,
        };
        let loaded = load(&context.handle, &ids).await;
        for ((id, loaded), permit) in ids.into_iter().zip(loaded).zip(permits) {
            start_pass(&context, lane, id, loaded, permit).await;
        }
    }
}

async fn sweep(context: Arc<DeliveryContext>, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let swept = context.destinations.sweep();
        for connection in swept.connections {
            context.tracker().spawn(connection.quit());
        }
        for name in swept.resumed {
            tracing::info!("destination {name} resumed");
            context.handle.events.publish(Event::destination(
                EventKind::Resumed,
                &name,
                None,
                None,
            ));
        }
    }
}

/// A due message's envelope and, when small enough, its body.
type Loaded = (crate::queue::Envelope, Option<bytes::Bytes>);

/// The envelopes of due messages and their bodies when small: from memory
/// for messages on their first pass since acceptance (`queue::fresh`), the
/// others from the spool in one trip to the blocking pool for all of them.
/// A body that cannot be read now is left to the job, which opens it itself
/// and reports what fails.
async fn load(handle: &QueueHandle, ids: &[QueueId]) -> Vec<Result<Option<Loaded>, LoadError>> {
    let mut loaded: Vec<Option<Result<Option<Loaded>, LoadError>>> = ids
        .iter()
        .map(|&id| {
            handle
                .queue
                .take_fresh(id)
                .map(|(envelope, body)| Ok(Some((envelope, Some(body)))))
        })
        .collect();
    let wanted: Vec<QueueId> = ids
        .iter()
        .zip(&loaded)
        .filter(|(_, fresh)| fresh.is_none())
        .map(|(&id, _)| id)
        .collect();
    if !wanted.is_empty() {
        let mut read = read_stored(handle, wanted).await.into_iter();
        for slot in loaded.iter_mut().filter(|slot| slot.is_none()) {
            *slot = read.next();
        }
    }
    loaded
        .into_iter()
        .map(|slot| slot.unwrap_or_else(|| Err(LoadError::Unreadable("not read".into()))))
        .collect()
}

/// Reads envelopes and small bodies from the spool, in one trip to the
/// blocking pool.
async fn read_stored(
    handle: &QueueHandle,
    ids: Vec<QueueId>,
) -> Vec<Result<Option<Loaded>, LoadError>> {
    let spool = handle.spool.clone();
    let count = ids.len();
    let read = tokio::task::spawn_blocking(move || {
        ids.into_iter()
            .map(|id| {
                let envelope = spool.envelope(id)?;
                let body = match envelope {
                    Some(_) => super::body::read_small(&spool, id).ok().flatten(),
                    None => None,
                };
                Ok::<_, relayq_spool::SpoolError>((envelope, body))
            })
            .collect::<Vec<_>>()
    })
    .await;
    match read {
        Ok(results) => results
            .into_iter()
            .map(|result| match result {
                Ok((Some(bytes), body)) => {
                    Ok(Some((crate::queue::Envelope::decode(&bytes)?, body)))
                }
                Ok((None, _)) => Ok(None),
                Err(error) => Err(LoadError::Unreadable(error.to_string())),
            })
            .collect(),
        Err(error) => (0..count)
            .map(|_| Err(LoadError::Unreadable(error.to_string())))
            .collect(),
    }
}

/// Loads a due message and submits one job per destination.
async fn start_pass(
    context: &Arc<DeliveryContext>,
    lane: Lane,
    id: QueueId,
    loaded: Result<Option<Loaded>, LoadError>,
    permit: OwnedSemaphorePermit,
) {
    let handle = &context.handle;
    let (envelope, body) = match loaded {
        Ok(Some(loaded)) => loaded,
        Ok(None) => {
            handle.queue.remove(id);
            context.destinations.release(id);
            return;
        }
        Err(LoadError::Undecodable(error)) => {
            tracing::error!(queue_id = %id, "{id}: setting aside unreadable envelope: {error}");
            let spool = handle.spool.clone();
            let reason = error.to_string();
            match tokio::task::spawn_blocking(move || spool.quarantine(id, &reason)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(queue_id = %id, "{id}: cannot quarantine: {error}")
                }
                Err(error) => {
                    tracing::error!(queue_id = %id, "{id}: cannot quarantine: {error}")
                }
            }
            handle.queue.remove(id);
            context.destinations.release(id);
            return;
        }
        Err(error @ LoadError::Unreadable(_)) => {
            tracing::error!(queue_id = %id, "{id}: {error}");
            handle.queue.reschedule(
                id,
                lane,
                tokio::time::Instant::now() + Duration::from_secs(60),
            );
            return;
        }
    };
    if envelope.held {
        handle.queue.insert(id, &envelope);
        return;
    }

    let mut domains: HashMap<String, Vec<usize>> = HashMap::new();
    for (index, recipient) in envelope.recipients.iter().enumerate() {
        if recipient.status.is_final() {
            continue;
        }
        let domain = recipient
            .address
            .rsplit_once('@')
            .map(|(_, domain)| domain.to_ascii_lowercase())
            .unwrap_or_default();
        domains.entry(domain).or_default().push(index);
    }
    // The settings this pass and its jobs run under, whatever a reload
    // changes meanwhile.
    let settings = context.settings.load_full();
    let mut groups: HashMap<(DestinationKey, NextHop, NextHop), Vec<usize>> = HashMap::new();
    for (domain, indices) in domains {
        let hop = next_hop(&settings, &domain);
        let (key, pool) = destination_of(context, &settings, &domain, &hop).await;
        groups.entry((key, hop, pool)).or_default().extend(indices);
    }
    if groups.is_empty() {
        // Every recipient is final (a crash after the last commit of a pass
        // but before the removal): remove it.
        let transition = transition::complete(id, envelope, std::time::SystemTime::now());
        if let Err(error) = handle.apply(&transition).await {
            tracing::error!(queue_id = %id, "{id}: cannot remove: {error}");
        }
        return;
    }
    if groups
        .keys()
        .any(|(key, _, _)| context.destinations.queued(key) >= MAX_QUEUED_PER_DESTINATION)
    {
        handle
            .queue
            .reschedule(id, lane, tokio::time::Instant::now() + POSTPONE);
        return;
    }

    let pass = Arc::new(Pass::new(
        id,
        envelope,
        body,
        groups.len(),
        permit,
        settings,
    ));
    for ((destination, hop, pool), recipients) in groups {
        let job = Job {
            pass: pass.clone(),
            hop,
            pool,
            destination,
            recipients,
            requeues: 0,
        };
        if let Err(rejected) = context.destinations.submit(job) {
            let Rejected {
                job,
                refusal,
                throttle,
            } = *rejected;
            if let Some(throttle) = throttle {
                context.throttled(&job.destination, throttle);
            }
            // Deferred at once, no lane slot used.
            job::defer(context, job, refusal);
        }
    }
}
