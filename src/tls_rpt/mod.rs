//! SMTP TLS reporting (RFC 8460; docs/tls-rpt.md): the sessions delivery
//! had with the MX hosts of MTA-STS and DANE domains are counted per
//! domain and reporting window, and when a window ends each domain that
//! publishes a `_smtp._tls` TXT record gets one aggregate report, by mail
//! (queued in the low lane) or an HTTPS POST.
//!
//! Code map: `counts` (the counts, how they add up and are stored; pure
//! but for one read), `rua` (the TXT record; pure), `report` (the JSON
//! report and its gzip; pure), `message` (the report as a message and its
//! envelope; pure), `results` (a certificate error in RFC 8460's terms;
//! pure), `reporter` (the task that ends windows), `https` (the
//! posts still to make, and the task that makes them).
//!
//! Counting is off the hot path's commits: [`TlsRpt::record`] adds to
//! counts in memory (a lock and a map update, no I/O), and a task commits
//! them every [`FLUSH_EVERY`] (one spool commit for all domains), at the
//! end of each window and at shutdown. A crash loses at most the counts of
//! the last [`FLUSH_EVERY`].
//!
//! Invariant: a window's counts of a domain leave the spool in the commit
//! that queues its report message and stores its pending posts, so a
//! crash neither loses a report nor sends one twice by mail; a post is
//! deleted once the receiver answered `2xx` (after a crash it may be made
//! again, with the same `report-id`).

pub(crate) mod counts;
pub(crate) mod https;
pub(crate) mod message;
pub(crate) mod report;
mod reporter;
pub(crate) mod results;
pub(crate) mod rua;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mail_auth::report::tlsrpt::{Policy, PolicyDetails};
use relayq_spool::SpoolError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dkim::SigningKeys;
use crate::http::{HttpClient, Resolution, ResolverSource};
use crate::live::Settings;
use crate::queue::handle::QueueHandle;

pub use self::counts::SessionResult;
use self::counts::{CountKey, Window};

/// How often counts in memory are committed: what a crash can lose.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// Connecting to a report receiver.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// TLS reporting: where delivery records sessions, and the tasks that
/// commit counts and send reports. Cheap to clone.
#[derive(Clone)]
pub struct TlsRpt {
    shared: Arc<Shared>,
}

struct Shared {
    /// The spool and the schedule (report messages join it).
    handle: QueueHandle,
    /// The live settings: `[tls_rpt]`, and the resolver of `_smtp._tls`
    /// records.
    settings: Settings,
    dkim: Arc<SigningKeys>,
    /// Verifies receivers against the system roots and
    /// `delivery.tls_ca_file`.
    http: HttpClient,
    /// Counts not committed yet.
    pending: Mutex<HashMap<CountKey, Vec<Policy>>>,
    /// One flush at a time: once a flush returns, every count recorded
    /// before it began is committed.
    flushing: tokio::sync::Mutex<()>,
    /// Wakes the sender when posts were stored.
    posts_waiting: tokio::sync::Notify,
}

impl TlsRpt {
    /// The component; `resolver` finds the hosts of `https:` receivers.
    pub fn new(
        handle: QueueHandle,
        settings: Settings,
        dkim: Arc<SigningKeys>,
        resolver: &ResolverSource,
    ) -> anyhow::Result<TlsRpt> {
        let live = settings.snapshot();
        let tls =
            crate::tls::TlsConfigs::with_trust_anchors(&live.config.delivery.extra_trust_anchors)?;
        let http = HttpClient::new(
            &tls.verifying(),
            Resolution::Resolver(resolver.clone()),
            CONNECT_TIMEOUT,
        )?;
        Ok(TlsRpt {
            shared: Arc::new(Shared {
                handle,
                settings,
                dkim,
                http,
                pending: Mutex::default(),
                flushing: tokio::sync::Mutex::new(()),
                posts_waiting: tokio::sync::Notify::new(),
            }),
        })
    }

    /// Counts one session with an MX host of `policy.policy_domain` under
    /// `policy`, in the window of now, when `[tls_rpt]` is enabled. No
    /// I/O, no await: delivery calls it once per session.
    pub fn record(&self, policy: &PolicyDetails, result: &SessionResult) {
        let live = self.shared.settings.snapshot();
        let settings = &live.config.tls_rpt;
        if !settings.enabled {
            return;
        }
        let key = CountKey {
            window: Window::containing(SystemTime::now(), settings.interval),
            domain: policy
                .policy_domain
                .trim_end_matches('.')
                .to_ascii_lowercase(),
        };
        let mut pending = lock(&self.shared.pending);
        counts::add(pending.entry(key).or_default(), policy, result);
    }

    /// Commits the counts recorded so far (one spool commit); on an error
    /// they stay in memory for the next flush.
    pub async fn flush(&self) -> Result<(), SpoolError> {
        self.shared.flush().await
    }

    /// Starts the tasks: the flusher, the reporter and the sender of
    /// posts, all stopping at `shutdown`. The last counts are committed by
    /// a [`TlsRpt::flush`] once delivery has stopped.
    pub fn spawn(&self, tracker: &TaskTracker, shutdown: CancellationToken) {
        tracker.spawn(flusher(self.shared.clone(), shutdown.clone()));
        tracker.spawn(reporter::run(self.clone(), shutdown.clone()));
        tracker.spawn(https::run(self.clone(), shutdown));
    }
}

impl Shared {
    async fn flush(&self) -> Result<(), SpoolError> {
        let _one_at_a_time = self.flushing.lock().await;
        let taken = std::mem::take(&mut *lock(&self.pending));
        if taken.is_empty() {
            return Ok(());
        }
        let changes = taken
            .iter()
            .map(|(key, policies)| counts::add_change(key, policies.clone()))
            .collect();
        match self.handle.spool.apply(changes).await {
            Ok(()) => {
                tracing::debug!("tls-rpt: counts of {} domains committed", taken.len());
                Ok(())
            }
            Err(error) => {
                let mut pending = lock(&self.pending);
                for (key, policies) in taken {
                    counts::merge(pending.entry(key).or_default(), policies);
                }
                Err(error)
            }
        }
    }
}

/// Commits the counts every [`FLUSH_EVERY`] until `shutdown`.
async fn flusher(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(FLUSH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(error) = shared.flush().await {
            tracing::warn!(
                "tls-rpt: cannot commit the session counts (kept for the next try): {error}"
            );
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
