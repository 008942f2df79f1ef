//! Delivery events for the application (docs/events.md, "Webhooks"): every
//! `[[webhook]]` gets the events it subscribes to, durably, in commit order,
//! at least once, signed, in batches.
//!
//! Invariant: an event is in the outbox (`outbox`) only if the change it
//! announces was committed, because it is written in the same spool commit
//! (`stage` adds its records to the commit's changes; `committed` runs only
//! once that commit returned). It leaves the outbox only when the receiver
//! answered `2xx` to a post holding it, or when it is dropped past
//! `retry_for` or `max_backlog` (logged and counted).
//!
//! - `event`: the event's JSON and how it is made from a transition;
//! - `outbox`: one key range of a spool table per webhook;
//! - `sender`: one task per webhook that posts, retries, and deletes what was taken;
//! - `signature`: the `Relayq-Signature` header.

pub mod event;
mod event_type;
pub mod outbox;
mod sender;
pub mod signature;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use relayq_spool::{Change, Spool};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::WebhookSettings;
use crate::http::{HttpClient, Resolution, ResolverSource};
use crate::metrics::WebhookRow;
use crate::queue::hooks::{Staged as QueueStaged, TransitionHook};
use crate::queue::transition::Transition;
pub use event::{EventIds, EventType, WebhookEvent};

/// How long connecting to a receiver may take, of a post's `timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Response bodies kept for `relayq webhook test` and error messages.
const MAX_RESPONSE: usize = 64 * 1024;

/// The configured webhooks. Cheap to share; built once by the daemon.
pub struct Webhooks {
    hooks: Vec<Arc<Hook>>,
    /// Whether any webhook takes each of `EventType::SUBSCRIBABLE`.
    wanted: [bool; EventType::SUBSCRIBABLE.len()],
    ids: EventIds,
}

/// One webhook: its settings, its outbox range, its client and its counts.
pub(crate) struct Hook {
    settings: WebhookSettings,
    queue: outbox::Queue,
    takes: [bool; EventType::SUBSCRIBABLE.len()],
    client: HttpClient,
    /// Rung after a commit added events for it.
    wake: tokio::sync::Notify,
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    /// Events committed for this webhook, by type.
    events: [AtomicU64; EventType::SUBSCRIBABLE.len()],
    /// Events committed since the sender last looked (a hint, see `sender`).
    arrived: AtomicU64,
    /// Events waiting, as the sender keeps count (may be briefly off by
    /// the events of one commit; never negative when shown).
    backlog: AtomicI64,
    /// Milliseconds since the Unix epoch of the oldest waiting event; 0: none.
    oldest_ms: AtomicU64,
    posts_ok: AtomicU64,
    posts_failed: AtomicU64,
    dropped: AtomicU64,
    last: Mutex<LastPost>,
}

#[derive(Default, Clone)]
struct LastPost {
    success: Option<SystemTime>,
    error: Option<(SystemTime, String)>,
}

/// Records to add to a commit, and what to count once it is durable.
#[derive(Default)]
pub struct Staged {
    /// (hook index, event type) per event record staged.
    appended: Vec<(usize, EventType)>,
}

impl Staged {
    pub fn is_empty(&self) -> bool {
        self.appended.is_empty()
    }
}

/// `relayq webhook status`: one webhook.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct WebhookStatus {
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    pub backlog: u64,
    /// Seconds; absent when nothing waits.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub oldest_event_age: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_success: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_error_time: Option<String>,
    pub posts: u64,
    pub failures: u64,
    pub dropped: u64,
}

/// What `relayq webhook test` got back.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TestOutcome {
    pub webhook: String,
    /// The HTTP status; absent when no response came.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<u16>,
    /// The response body (as text, cut at 64 KiB), or why there was none.
    pub answer: String,
}

impl Webhooks {
    /// The webhooks of `settings`, each with its own client (the system's
    /// roots plus its `tls_ca_file`) resolving names through `resolver`.
    pub fn new(
        settings: &[WebhookSettings],
        resolver: &ResolverSource,
    ) -> anyhow::Result<Webhooks> {
        let mut hooks = Vec::with_capacity(settings.len());
        let mut wanted = [false; EventType::SUBSCRIBABLE.len()];
        for webhook in settings {
            let tls = crate::tls::TlsConfigs::with_trust_anchors(&webhook.extra_trust_anchors)?;
            let client = HttpClient::new(
                &tls.verifying(),
                Resolution::Resolver(resolver.clone()),
                CONNECT_TIMEOUT.min(webhook.timeout),
            )?;
            let mut takes = [false; EventType::SUBSCRIBABLE.len()];
            for event in &webhook.events {
                if let Some(index) = event.index() {
                    takes[index] = true;
                    wanted[index] = true;
                }
            }
            hooks.push(Arc::new(Hook {
                queue: outbox::Queue::for_name(&webhook.name),
                settings: webhook.clone(),
                takes,
                client,
                wake: tokio::sync::Notify::new(),
                counts: Counts::default(),
            }));
        }
        Ok(Webhooks {
            hooks,
            wanted,
            ids: EventIds::new(),
        })
    }

    /// No webhook at all.
    pub fn none() -> Webhooks {
        Webhooks {
            hooks: Vec::new(),
            wanted: [false; EventType::SUBSCRIBABLE.len()],
            ids: EventIds::new(),
        }
    }

    /// Whether some webhook takes `event_type`: callers build no event
    /// nobody takes.
    pub fn wants(&self, event_type: EventType) -> bool {
        event_type.index().is_some_and(|index| self.wanted[index])
    }

    pub fn ids(&self) -> &EventIds {
        &self.ids
    }

    /// Adds to `changes` the records that put `events` in the outbox of each
    /// webhook that takes them; the caller commits `changes` and then calls
    /// [`Webhooks::committed`] with the result.
    pub fn stage(&self, events: &[WebhookEvent], changes: &mut Vec<Change>) -> Staged {
        let mut staged = Staged::default();
        for event in events {
            let Some(type_index) = event.event_type.index() else {
                continue;
            };
            let mut stored = None;
            for (hook_index, hook) in self.hooks.iter().enumerate() {
                if !hook.takes[type_index] {
                    continue;
                }
                let bytes = stored.get_or_insert_with(|| event.encode()).clone();
                changes.push(hook.queue.append(bytes));
                staged.appended.push((hook_index, event.event_type));
            }
        }
        staged
    }

    /// After the commit that held `staged`: counts, and wakes the senders.
    pub fn committed(&self, staged: Staged) {
        let mut woken = vec![false; self.hooks.len()];
        for (hook_index, event_type) in staged.appended {
            let hook = &self.hooks[hook_index];
            if let Some(type_index) = event_type.index() {
                hook.counts.events[type_index].fetch_add(1, Ordering::Relaxed);
            }
            hook.counts.arrived.fetch_add(1, Ordering::Relaxed);
            woken[hook_index] = true;
        }
        for (hook, woken) in self.hooks.iter().zip(woken) {
            if woken {
                hook.wake.notify_one();
            }
        }
    }

    /// Commits `events` on their own (events that announce no stored
    /// change, such as a recipient refused at RCPT).
    pub async fn record(&self, spool: &Spool, events: &[WebhookEvent]) {
        let mut changes = Vec::new();
        let staged = self.stage(events, &mut changes);
        if staged.is_empty() {
            return;
        }
        match spool.apply(changes).await {
            Ok(()) => self.committed(staged),
            Err(error) => tracing::error!("cannot store webhook events: {error}"),
        }
    }

    /// Starts one sender per webhook, after deleting the events of webhooks
    /// that are no longer configured.
    pub async fn start(
        self: &Arc<Self>,
        spool: &Spool,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) {
        let owned: Vec<outbox::Queue> = self.hooks.iter().map(|hook| hook.queue.clone()).collect();
        let reader = spool.clone();
        let orphans = tokio::task::spawn_blocking(move || outbox::orphans(&reader, &owned)).await;
        match orphans {
            Ok(Ok(orphans)) => {
                for orphan in orphans {
                    match spool.apply(vec![orphan.delete_all()]).await {
                        Ok(()) => tracing::warn!(
                            "webhook events of a webhook no longer configured were deleted"
                        ),
                        Err(error) => tracing::error!(
                            "cannot delete the events of a webhook no longer configured: {error}"
                        ),
                    }
                }
            }
            Ok(Err(error)) => tracing::error!("cannot read the webhook outbox: {error}"),
            Err(error) => tracing::error!("cannot read the webhook outbox: {error}"),
        }
        for hook in &self.hooks {
            tracing::info!(
                "webhook {}: posting {} to {}",
                hook.settings.name,
                hook.settings
                    .events
                    .iter()
                    .map(|event| event.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                hook.settings.url
            );
            tracker.spawn(sender::run(hook.clone(), spool.clone(), shutdown.clone()));
        }
    }

    pub fn status(&self) -> Vec<WebhookStatus> {
        let now = SystemTime::now();
        self.hooks
            .iter()
            .map(|hook| {
                let counts = &hook.counts;
                let last = counts
                    .last
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                WebhookStatus {
                    name: hook.settings.name.clone(),
                    url: hook.settings.url.clone(),
                    events: hook
                        .settings
                        .events
                        .iter()
                        .map(|event| event.as_str().to_owned())
                        .collect(),
                    backlog: hook.backlog(),
                    oldest_event_age: hook.oldest_age(now).map(|age| age.as_secs_f64()),
                    last_success: last.success.map(event::rfc3339_millis),
                    last_error_time: last
                        .error
                        .as_ref()
                        .map(|(at, _)| event::rfc3339_millis(*at)),
                    last_error: last.error.map(|(_, error)| error),
                    posts: counts.posts_ok.load(Ordering::Relaxed)
                        + counts.posts_failed.load(Ordering::Relaxed),
                    failures: counts.posts_failed.load(Ordering::Relaxed),
                    dropped: counts.dropped.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// The rows of the `relayq_webhook_*` metrics.
    pub fn metric_rows(&self) -> Vec<WebhookRow> {
        let now = SystemTime::now();
        self.hooks
            .iter()
            .map(|hook| {
                let counts = &hook.counts;
                WebhookRow {
                    webhook: hook.settings.name.clone(),
                    events: EventType::SUBSCRIBABLE
                        .iter()
                        .zip(&counts.events)
                        .filter(|(event, _)| hook.settings.events.contains(event))
                        .map(|(event, count)| (event.as_str(), count.load(Ordering::Relaxed)))
                        .collect(),
                    posts_ok: counts.posts_ok.load(Ordering::Relaxed),
                    posts_error: counts.posts_failed.load(Ordering::Relaxed),
                    backlog: hook.backlog(),
                    oldest_event_seconds: hook.oldest_age(now).map_or(0.0, |age| age.as_secs_f64()),
                    dropped: counts.dropped.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Posts one `test` event to webhook `name` now, outside the outbox.
    /// `None`: no such webhook.
    pub async fn test(&self, name: &str) -> Option<TestOutcome> {
        let hook = self.hooks.iter().find(|hook| hook.settings.name == name)?;
        let now = SystemTime::now();
        let event = WebhookEvent::new(self.ids.next(now), EventType::Test, now);
        let json = serde_json::to_vec(&event).unwrap_or_default();
        let body = sender::batch_body([json.as_slice()]);
        let outcome = match hook.post(&body, &format!("test-{}", event.id)).await {
            Ok(response) => TestOutcome {
                webhook: name.to_owned(),
                status: Some(response.status),
                answer: String::from_utf8_lossy(&response.body).into_owned(),
            },
            Err(error) => TestOutcome {
                webhook: name.to_owned(),
                status: None,
                answer: error.to_string(),
            },
        };
        Some(outcome)
    }
}

/// Webhooks take the events of every committed transition: staged into
/// its commit (the outbox), counted and their senders woken after it.
impl TransitionHook for Webhooks {
    fn stage(&self, transitions: &[Transition], changes: &mut Vec<Change>) -> QueueStaged {
        if self.hooks.is_empty() {
            return Box::new(Staged::default());
        }
        let events: Vec<WebhookEvent> = transitions
            .iter()
            .flat_map(|transition| {
                event::for_transition(transition, |event_type| self.wants(event_type), &self.ids)
            })
            .collect();
        Box::new(Webhooks::stage(self, &events, changes))
    }

    fn committed(&self, _transitions: &[Transition], staged: QueueStaged) {
        if let Ok(staged) = staged.downcast::<Staged>() {
            Webhooks::committed(self, *staged);
        }
    }
}

impl Hook {
    /// The sender's count plus the events committed since it last looked:
    /// while it retries a batch it does not look, and the backlog grows.
    fn backlog(&self) -> u64 {
        let counted = self.counts.backlog.load(Ordering::Relaxed);
        let arrived = self.counts.arrived.load(Ordering::Relaxed);
        counted.saturating_add_unsigned(arrived).max(0) as u64
    }

    fn oldest_age(&self, now: SystemTime) -> Option<Duration> {
        match self.counts.oldest_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(
                now.duration_since(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
                    .unwrap_or_default(),
            ),
        }
    }

    /// One signed POST of `body`.
    async fn post(
        &self,
        body: &[u8],
        batch: &str,
    ) -> Result<crate::http::Response, crate::http::HttpError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let headers = [
            (
                "Relayq-Signature",
                signature::sign(&self.settings.secret.0, now, body),
            ),
            ("Relayq-Batch", batch.to_owned()),
        ];
        self.client
            .post(
                &self.settings.url,
                "application/json",
                &headers,
                body.to_vec(),
                self.settings.timeout,
                MAX_RESPONSE,
            )
            .await
    }
}
