//! The start gate a transaction passes right before its MAIL command: the
//! destination's suspension and local rate, then the fleet's rate in
//! Redis. Short waits are slept through; longer ones defer the recipients
//! without an attempt.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Job;
use super::context::DeliveryContext;
use crate::delivery::cluster::Cluster;
use crate::delivery::destination::{SHORT_WAIT, Wait};
use crate::metrics::Throttle;

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
pub(super) async fn gate(context: &DeliveryContext, job: &Job) -> Result<(), Wait> {
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
