//! Connection pressure: the server's connection permits (one pool for all
//! listeners), the registry of open sessions with how far each has fallen
//! idle, stress mode, and shedding the session doing least when a client
//! waits.
//!
//! A session publishes its *idle mark* while it waits on its client: the
//! instant up to which the client has kept pace (see `session::pace`). A
//! session the server is working for (parsing, storing) publishes nothing
//! and is never shed. When a client arrives and every permit is in use, the
//! session with the oldest mark that is not ahead of its pace is told to
//! close with `421 4.4.2`, and the arriving client takes its permit. When
//! every waiting session is ahead of its pace (a flood of transfers that
//! keep up), the oldest transfer that has had one stress idle timeout is shed
//! instead: a transfer's credit is bounded (`session::pace`) but its length
//! is bounded only by the message size, and a waiting client must not wait
//! for hours.
//!
//! Stress mode (Postfix's name) begins when the sessions in use reach
//! `max_connections - max_connections / 10` (90%) and ends when they fall
//! below `max_connections - max_connections / 4` (75%); the hysteresis
//! keeps sessions from being woken on every connect and disconnect at the
//! threshold. Under stress sessions use `smtp.stress_idle_timeout`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How long a client that arrived at the limit waits for the shed session's
/// permit before another session is shed for it. Longer than the time a shed
/// session may spend saying goodbye, so one arrival rarely sheds two.
const SHED_RETRY: Duration = Duration::from_secs(2);

/// How often "connection limit reached" may be logged.
const FULL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The mark of a session that is not waiting on its client, and the
/// seniority of one that is not in a transfer.
const WORKING: u64 = u64::MAX;

/// The connection permits and sessions of one server (all its listeners).
pub struct Pressure {
    permits: Arc<Semaphore>,
    /// `smtp.max_connections`; a reload changes it.
    max_connections: AtomicUsize,
    /// Permits a lowered `max_connections` took away that were in use: the
    /// sessions holding them give them up when they end.
    owed: AtomicUsize,
    /// Stress begins at this many sessions in use (90%)...
    stress_from: AtomicUsize,
    /// ...and ends below this many (75%).
    stress_until: AtomicUsize,
    registry: Mutex<Registry>,
    stress: watch::Sender<bool>,
    /// Marks are milliseconds since this instant.
    epoch: Instant,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Registry {
    slots: Vec<Option<Arc<Slot>>>,
    free: Vec<usize>,
    in_use: usize,
    last_full_log: Option<Instant>,
}

/// What the registry knows of one session.
struct Slot {
    /// Idle mark in ms since `Pressure::epoch`, or `WORKING`.
    mark: AtomicU64,
    /// For a session waiting in the middle of a DATA/BDAT transfer: from
    /// when (ms since `Pressure::epoch`) the transfer may be shed although
    /// it keeps pace; `WORKING` otherwise.
    seniority: AtomicU64,
    /// Cancelled to tell the session to close (it was shed).
    shed: CancellationToken,
}

impl Pressure {
    pub fn new(max_connections: usize, metrics: Arc<Metrics>) -> Arc<Pressure> {
        let max_connections = max_connections.max(1);
        Arc::new(Pressure {
            permits: Arc::new(Semaphore::new(max_connections)),
            max_connections: AtomicUsize::new(max_connections),
            owed: AtomicUsize::new(0),
            stress_from: AtomicUsize::new(max_connections - max_connections / 10),
            stress_until: AtomicUsize::new(max_connections - max_connections / 4),
            registry: Mutex::new(Registry::default()),
            stress: watch::channel(false).0,
            epoch: Instant::now(),
            metrics,
        })
    }

    /// Applies a reloaded `smtp.max_connections`. Raising it frees permits
    /// at once; lowering it takes the free ones away now and the rest as
    /// sessions end, so no open session is closed for it.
    pub fn set_max_connections(&self, max_connections: usize) {
        let max_connections = max_connections.max(1);
        let before = self.max_connections.swap(max_connections, Ordering::AcqRel);
        self.stress_from
            .store(max_connections - max_connections / 10, Ordering::Relaxed);
        self.stress_until
            .store(max_connections - max_connections / 4, Ordering::Relaxed);
        if max_connections > before {
            let mut more = max_connections - before;
            let _ = self
                .owed
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |owed| {
                    let paid = owed.min(more);
                    more = max_connections - before - paid;
                    Some(owed - paid)
                });
            self.permits.add_permits(more);
        } else if max_connections < before {
            let fewer = before - max_connections;
            let taken = self.permits.forget_permits(fewer);
            self.owed.fetch_add(fewer - taken, Ordering::AcqRel);
        }
    }

    /// Whether an ending session's permit is to be forgotten rather than
    /// returned (a lowered `max_connections` is still owed permits).
    fn pay_owed(&self) -> bool {
        self.owed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |owed| {
                owed.checked_sub(1)
            })
            .is_ok()
    }

    /// Takes a connection permit for a client that was just accepted. When
    /// none is free, the session doing least is shed for it (again every
    /// `SHED_RETRY` while the client still waits). `None` at shutdown.
    ///
    /// Accepting before taking the permit is what shows that a client is
    /// waiting; it costs at most one connection per listener beyond the cap.
    pub async fn admit(self: &Arc<Self>, shutdown: &CancellationToken) -> Option<Lease> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => loop {
                let shed = self.shed_one();
                self.log_full(shed);
                tokio::select! {
                    permit = self.permits.clone().acquire_owned() => break permit.ok()?,
                    _ = tokio::time::sleep(SHED_RETRY) => {}
                    _ = shutdown.cancelled() => return None,
                }
            },
        };
        Some(self.register(permit))
    }

    fn register(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Lease {
        let slot = Arc::new(Slot {
            mark: AtomicU64::new(WORKING),
            seniority: AtomicU64::new(WORKING),
            shed: CancellationToken::new(),
        });
        let index = {
            let mut registry = self.lock();
            registry.in_use += 1;
            let index = match registry.free.pop() {
                Some(index) => {
                    registry.slots[index] = Some(slot.clone());
                    index
                }
                None => {
                    registry.slots.push(Some(slot.clone()));
                    registry.slots.len() - 1
                }
            };
            self.update_stress(registry.in_use);
            index
        };
        Lease {
            registered: Some(Registered {
                stress: self.stress.subscribe(),
                pressure: self.clone(),
                index,
                slot,
                permit: Some(permit),
            }),
        }
    }

    fn deregister(&self, index: usize) {
        let mut registry = self.lock();
        registry.slots[index] = None;
        registry.free.push(index);
        registry.in_use -= 1;
        self.update_stress(registry.in_use);
    }

    /// Enters or leaves stress mode; called with the registry locked, so
    /// transitions are ordered.
    fn update_stress(&self, in_use: usize) {
        let changed = self.stress.send_if_modified(|stressed| {
            let next = if *stressed {
                in_use >= self.stress_until.load(Ordering::Relaxed)
            } else {
                in_use >= self.stress_from.load(Ordering::Relaxed)
            };
            std::mem::replace(stressed, next) != next
        });
        if changed {
            let stressed = *self.stress.borrow();
            self.metrics.set_smtp_stress(stressed);
            if stressed {
                tracing::warn!(
                    "connection pressure: {in_use} SMTP sessions in use; stress mode on (smtp.stress_idle_timeout)"
                );
            } else {
                tracing::info!("connection pressure over: {in_use} SMTP sessions in use");
            }
        }
    }

    /// Tells one session waiting on its client to close: the one with the
    /// oldest idle mark among those not ahead of their pace or, when every
    /// one is ahead, the most senior transfer among those past their
    /// seniority. Returns which kind was shed, if any.
    fn shed_one(&self) -> Option<Shed> {
        let now = self.millis(Instant::now());
        let registry = self.lock();
        let waiting = || {
            registry
                .slots
                .iter()
                .flatten()
                .filter(|slot| !slot.shed.is_cancelled())
        };
        let longest_idle = waiting()
            .map(|slot| (slot.mark.load(Ordering::Relaxed), slot))
            .filter(|(mark, _)| *mark <= now)
            .min_by_key(|(mark, _)| *mark)
            .map(|(_, slot)| (Shed::LongestIdle, slot));
        let chosen = longest_idle.or_else(|| {
            waiting()
                .filter(|slot| slot.mark.load(Ordering::Relaxed) != WORKING)
                .map(|slot| (slot.seniority.load(Ordering::Relaxed), slot))
                .filter(|(seniority, _)| *seniority <= now)
                .min_by_key(|(seniority, _)| *seniority)
                .map(|(_, slot)| (Shed::OldestTransfer, slot))
        });
        chosen.map(|(shed, slot)| {
            slot.shed.cancel();
            shed
        })
    }

    fn log_full(&self, shed: Option<Shed>) {
        let mut registry = self.lock();
        if registry
            .last_full_log
            .is_none_or(|at| at.elapsed() >= FULL_LOG_INTERVAL)
        {
            registry.last_full_log = Some(Instant::now());
            match shed {
                Some(Shed::LongestIdle) => tracing::warn!(
                    "connection limit (smtp.max_connections) reached; closing the longest-idle sessions for new clients"
                ),
                Some(Shed::OldestTransfer) => tracing::warn!(
                    "connection limit (smtp.max_connections) reached and every session keeps pace; closing the oldest transfers for new clients"
                ),
                None => tracing::warn!(
                    "connection limit (smtp.max_connections) reached and every session is busy; new clients wait"
                ),
            }
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        let millis = at.saturating_duration_since(self.epoch).as_millis();
        u64::try_from(millis)
            .unwrap_or(WORKING - 1)
            .min(WORKING - 1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // The registry holds no invariant a panic elsewhere could break
        // halfway, so a poisoned lock is still usable.
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A session's connection permit and its entry in the registry; dropping it
/// frees both. Sessions that did not come through a listener (the maildrop
/// importer's in-memory sessions) hold an unregistered lease.
pub struct Lease {
    registered: Option<Registered>,
}

struct Registered {
    pressure: Arc<Pressure>,
    index: usize,
    slot: Arc<Slot>,
    stress: watch::Receiver<bool>,
    /// `None` only while dropping.
    permit: Option<OwnedSemaphorePermit>,
}

/// Which session was shed for a waiting client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shed {
    /// The one longest behind its pace.
    LongestIdle,
    /// Every session kept pace: the transfer that began first.
    OldestTransfer,
}

/// Why a wait on the client was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// The session was shed: close it with `421 4.4.2`.
    Shed,
    /// Stress mode began or ended: recompute the deadline.
    StressChanged,
}

impl Lease {
    /// For a session outside any listener: never shed, never stressed.
    pub fn unregistered() -> Lease {
        Lease { registered: None }
    }

    /// The session waits on its client; `mark` is its idle mark.
    pub fn waiting(&self, mark: Instant) {
        if let Some(registered) = &self.registered {
            let millis = registered.pressure.millis(mark);
            registered.slot.seniority.store(WORKING, Ordering::Relaxed);
            registered.slot.mark.store(millis, Ordering::Relaxed);
        }
    }

    /// The session waits on its client in the middle of a DATA/BDAT
    /// transfer: `mark` is its idle mark, and from `seniority` on it may be
    /// shed although it keeps pace, when no session is behind its pace.
    pub fn waiting_in_transfer(&self, mark: Instant, seniority: Instant) {
        if let Some(registered) = &self.registered {
            let pressure = &registered.pressure;
            let seniority = pressure.millis(seniority);
            registered
                .slot
                .seniority
                .store(seniority, Ordering::Relaxed);
            registered
                .slot
                .mark
                .store(pressure.millis(mark), Ordering::Relaxed);
        }
    }

    /// The server works for the session: it cannot be shed now.
    pub fn working(&self) {
        if let Some(registered) = &self.registered {
            registered.slot.mark.store(WORKING, Ordering::Relaxed);
            registered.slot.seniority.store(WORKING, Ordering::Relaxed);
        }
    }

    /// Whether stress mode is on; marks the state as seen, so that
    /// [`Lease::interrupted`] reports only later changes.
    pub fn stressed(&mut self) -> bool {
        self.registered
            .as_mut()
            .is_some_and(|registered| *registered.stress.borrow_and_update())
    }

    /// Whether this session was told to close.
    #[cfg(test)]
    fn is_shed(&self) -> bool {
        self.registered
            .as_ref()
            .is_some_and(|registered| registered.slot.shed.is_cancelled())
    }

    /// Resolves when the session is shed or stress mode changes; never for
    /// an unregistered lease. Cancel safe.
    pub async fn interrupted(&mut self) -> Interruption {
        let Some(registered) = self.registered.as_mut() else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = registered.slot.shed.cancelled() => Interruption::Shed,
            changed = registered.stress.changed() => match changed {
                Ok(()) => Interruption::StressChanged,
                // The sender lives in `Pressure`, which this lease keeps alive.
                Err(_) => std::future::pending().await,
            },
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // Deregistered before the permit is released, so the registry
        // never counts fewer sessions than permits.
        self.pressure.deregister(self.index);
        if let Some(permit) = self.permit.take()
            && self.pressure.pay_owed()
        {
            permit.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pressure(max_connections: usize) -> Arc<Pressure> {
        Pressure::new(max_connections, Arc::new(Metrics::new()))
    }

    async fn admit(pressure: &Arc<Pressure>) -> Lease {
        pressure
            .admit(&CancellationToken::new())
            .await
            .expect("admitted")
    }

    #[tokio::test(start_paused = true)]
    async fn the_longest_idle_session_is_shed_for_a_waiting_client() {
        let pressure = pressure(3);
        let start = Instant::now();
        let oldest = admit(&pressure).await;
        let working = admit(&pressure).await;
        let recent = admit(&pressure).await;
        tokio::time::advance(Duration::from_secs(10)).await;
        // The working session has been open longest but is never a candidate.
        working.working();
        oldest.waiting(start + Duration::from_secs(1));
        recent.waiting(start + Duration::from_secs(9));

        let waiting = tokio::spawn({
            let pressure = pressure.clone();
            async move { admit(&pressure).await }
        });
        tokio::task::yield_now().await;
        assert!(oldest.is_shed());
        assert!(!recent.is_shed() && !working.is_shed());
        assert!(
            !waiting.is_finished(),
            "no permit until the shed one leaves"
        );
        drop(oldest);
        let admitted = waiting.await.unwrap();
        assert!(!admitted.is_shed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_ahead_of_its_pace_is_not_shed() {
        let pressure = pressure(1);
        let fast = admit(&pressure).await;
        // A transfer that has earned credit until a minute from now.
        fast.waiting(Instant::now() + Duration::from_secs(60));
        assert_eq!(pressure.shed_one(), None);
        assert!(!fast.is_shed());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(pressure.shed_one(), Some(Shed::LongestIdle));
        assert!(fast.is_shed());
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_session_keeps_pace_the_oldest_transfer_is_shed() {
        let pressure = pressure(4);
        let start = Instant::now();
        let ahead = |lease: &Lease, began: u64| {
            lease.waiting_in_transfer(
                Instant::now() + Duration::from_secs(10),
                start + Duration::from_secs(began + 10),
            );
        };
        let older = admit(&pressure).await;
        let newer = admit(&pressure).await;
        let working = admit(&pressure).await;
        let command = admit(&pressure).await;
        ahead(&older, 0);
        ahead(&newer, 5);
        working.working();
        command.waiting(Instant::now() + Duration::from_secs(10));
        // No transfer has had its seniority yet: nothing to shed.
        assert_eq!(pressure.shed_one(), None);
        tokio::time::advance(Duration::from_secs(20)).await;
        ahead(&older, 0);
        ahead(&newer, 5);
        command.waiting(Instant::now() + Duration::from_secs(10));
        assert_eq!(pressure.shed_one(), Some(Shed::OldestTransfer));
        assert!(older.is_shed());
        assert!(!newer.is_shed() && !working.is_shed() && !command.is_shed());
        // A session behind its pace goes before any transfer.
        command.waiting(Instant::now());
        assert_eq!(pressure.shed_one(), Some(Shed::LongestIdle));
        assert!(command.is_shed() && !newer.is_shed());
        // A transfer the server is working for is never shed.
        newer.working();
        assert_eq!(pressure.shed_one(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn stress_mode_has_hysteresis() {
        let pressure = pressure(10);
        let mut leases = Vec::new();
        for _ in 0..8 {
            leases.push(admit(&pressure).await);
        }
        let mut observer = admit(&pressure).await; // 9 in use: 90%
        assert!(observer.stressed());
        leases.truncate(7); // 8 in use: below 90%, not yet below 80%
        assert!(observer.stressed());
        leases.truncate(6); // 7 in use
        assert_eq!(observer.interrupted().await, Interruption::StressChanged);
        assert!(!observer.stressed());
    }

    #[tokio::test]
    async fn a_reloaded_cap_frees_permits_or_takes_them_back_as_sessions_end() {
        let pressure = pressure(3);
        let first = admit(&pressure).await;
        let second = admit(&pressure).await;
        pressure.set_max_connections(1);
        // One permit was free and is gone; one more is owed by a session.
        assert_eq!(pressure.permits.available_permits(), 0);
        drop(first);
        assert_eq!(pressure.permits.available_permits(), 0, "paid the debt");
        drop(second);
        assert_eq!(pressure.permits.available_permits(), 1);
        let third = admit(&pressure).await;
        pressure.set_max_connections(4);
        assert_eq!(pressure.permits.available_permits(), 3);
        // Raising the cap while a lowering is still owed cancels the debt.
        let held: Vec<Lease> = vec![admit(&pressure).await, admit(&pressure).await];
        pressure.set_max_connections(1);
        pressure.set_max_connections(2);
        drop(third);
        drop(held);
        assert_eq!(pressure.permits.available_permits(), 2);
    }

    #[tokio::test]
    async fn permits_are_shared_by_every_caller() {
        let pressure = pressure(2);
        let first = admit(&pressure).await;
        let second = admit(&pressure).await;
        assert_eq!(pressure.permits.available_permits(), 0);
        drop((first, second));
        assert_eq!(pressure.permits.available_permits(), 2);
        assert_eq!(pressure.lock().in_use, 0);
    }
}
