//! What the remote end's replies tell the job's destination: an overload
//! signal lowers its connection limit and may put the job back in its
//! queue; a `suspend_on` reply suspends it (announced, its queued jobs
//! deferred, its idle connections closed).

use std::sync::Arc;

use tokio::time::Instant;

use super::context::DeliveryContext;
use super::{Job, MAX_REQUEUES};
use crate::delivery::destination::{Refusal, Wait};
use crate::events::{Event, EventKind};
use crate::metrics::Throttle;
use crate::outcome::RemoteReply;

/// An overload signal at the job's destination from a connection or
/// transaction begun at `begun`: lowers its limit (logged), counts the
/// throttle. Returns whether the job may go back to its destination's queue
/// (it has requeues left and its next hop is not dead).
pub(super) fn overloaded(
    context: &DeliveryContext,
    job: &Job,
    begun: Instant,
    reply: &RemoteReply,
) -> bool {
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
pub(super) fn suspension(
    context: &Arc<DeliveryContext>,
    job: &Job,
    reply: &RemoteReply,
) -> Option<Wait> {
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
            super::defer(context, other, Refusal::Wait(wait.clone()));
        }
        for connection in suspended.connections {
            context.tracker().spawn(connection.quit());
        }
    }
    context.throttled(&job.destination, Throttle::Suspended);
    Some(wait)
}
