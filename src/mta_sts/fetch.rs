//! Fetching policy files off the lane workers (RFC 8461 §3.3): one fetch
//! per domain at a time, on a task of its own. A delivery that needs a new
//! policy waits for its fetch at most `WAIT_FOR_FETCH` after the fetch
//! began, so a policy host that accepts and never answers (a tarpit) holds
//! no delivery slot for the `FETCH_TIMEOUT` the fetch may take. A fetch of
//! a policy id that failed is not tried again for `FAILED_FETCH_MEMORY`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use mail_auth::report::tlsrpt::{FailureDetails, PolicyDetails, PolicyType};

use super::cache::{self, CachedPolicy};
use super::report::{self, Unavailable};
use super::{MtaSts, http, lock, policy};
use crate::dns::MxResolver;
use crate::tls_rpt::SessionResult;

/// The whole fetch of a policy file: connect, TLS, request, response.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// RFC 8461 §3.3 suggests not trying a failed fetch again for five minutes
/// per policy id, so a domain whose policy host is down does not cost every
/// delivery a fetch.
const FAILED_FETCH_MEMORY: Duration = Duration::from_secs(300);
/// How long after a fetch began a delivery waits for it. Most policy hosts
/// answer well within this, so mail to a domain seen for the first time
/// goes in the same attempt.
const WAIT_FOR_FETCH: Duration = Duration::from_secs(1);

/// A fetch in progress.
#[derive(Clone)]
pub(super) struct Running {
    began: Instant,
    /// Becomes `true` when the fetch is over, however it ended.
    done: watch::Receiver<bool>,
}

impl Running {
    /// Until the fetch is over, but no later than `WAIT_FOR_FETCH` after it
    /// began.
    pub(super) async fn wait_briefly(mut self) {
        let deadline = self.began + WAIT_FOR_FETCH;
        let _ = tokio::time::timeout_at(deadline, self.done.wait_for(|done| *done)).await;
    }
}

impl MtaSts {
    /// Starts fetching policy `id` of `domain` with `resolver`; returns the
    /// fetch running for the domain (this one, or one begun earlier), or
    /// `None` when the fetch of this id failed lately.
    pub(super) fn start_fetch(
        self: &Arc<Self>,
        resolver: &MxResolver,
        domain: &str,
        id: &str,
    ) -> Option<Running> {
        let mut state = lock(&self.state);
        if let Some(running) = state.fetching.get(domain) {
            return Some(running.clone());
        }
        let key = (domain.to_owned(), id.to_owned());
        if let Some(at) = state.failed.get(&key)
            && at.elapsed().unwrap_or_default() < FAILED_FETCH_MEMORY
        {
            return None;
        }
        let (finished, done) = watch::channel(false);
        let running = Running {
            began: Instant::now(),
            done,
        };
        state.fetching.insert(domain.to_owned(), running.clone());
        drop(state);
        let (mta_sts, resolver) = (self.clone(), resolver.clone());
        let (domain, id) = key;
        self.tracker.spawn(async move {
            mta_sts.fetch(&resolver, &domain, &id).await;
            lock(&mta_sts.state).fetching.remove(&domain);
            let _ = finished.send(true);
        });
        Some(running)
    }

    /// Whether a fetch for `domain` is in progress.
    pub(super) fn is_fetching(&self, domain: &str) -> bool {
        lock(&self.state).fetching.contains_key(domain)
    }

    /// Fetches policy `id` of `domain`; caches and saves it, or remembers
    /// the failure (logged: RFC 8461 §3.3 asks that failed refreshes be
    /// reported to administrators).
    async fn fetch(&self, resolver: &MxResolver, domain: &str, id: &str) {
        let refresh = self.cached(domain).is_some_and(|cached| cached.id == id);
        let host = format!("mta-sts.{domain}");
        let fetched = match resolver.host_addresses(&host).await {
            Ok(addresses) => http::fetch(&host, &addresses, self.tls.clone(), FETCH_TIMEOUT)
                .await
                .map_err(|error| (error.to_string(), Unavailable::Fetch(error))),
            Err(error) => Err((error.to_string(), Unavailable::Lookup)),
        }
        .and_then(|text| {
            let policy = policy::parse_policy(&text)
                .map_err(|error| (error.to_string(), Unavailable::Invalid))?;
            Ok((text, policy))
        });
        let (text, policy) = match fetched {
            Ok(fetched) => fetched,
            Err((reason, unavailable)) => {
                let what = if refresh { "refresh" } else { "fetch" };
                tracing::warn!(
                    "MTA-STS {domain}: cannot {what} policy {id} from https://{host}{}: {reason}",
                    http::POLICY_PATH
                );
                self.count_unavailable(domain, &unavailable, reason);
                let mut state = lock(&self.state);
                state
                    .failed
                    .retain(|_, at| at.elapsed().unwrap_or_default() < FAILED_FETCH_MEMORY);
                state
                    .failed
                    .insert((domain.to_owned(), id.to_owned()), SystemTime::now());
                return;
            }
        };
        tracing::info!(
            "MTA-STS {domain}: policy {id} {}: mode {}, mx {}, max_age {}s",
            if refresh { "refreshed" } else { "fetched" },
            policy.mode.as_str(),
            policy.mx.join(" "),
            policy.max_age.as_secs()
        );
        let cached = CachedPolicy {
            id: id.to_owned(),
            fetched: SystemTime::now(),
            text,
            policy,
        };
        lock(&self.state).policies.insert(domain.to_owned(), cached);
        self.save().await;
    }

    /// Counts a policy that could not be had for the domain's TLS report
    /// (RFC 8460 §4.3.2.1): under the cached policy, which still applies,
    /// or else as `no-policy-found`. At most one per policy id and
    /// `FAILED_FETCH_MEMORY`, as fetches are.
    fn count_unavailable(&self, domain: &str, unavailable: &Unavailable, reason: String) {
        let details = match self.cached(domain) {
            Some(cached) => report::report_details(domain, &cached.policy),
            None => PolicyDetails::new(PolicyType::NoPolicyFound, domain),
        };
        let failure = FailureDetails {
            additional_information: Some(reason),
            ..FailureDetails::new(unavailable.result_type())
        };
        self.tls_rpt
            .record(&details, &SessionResult::Failure(failure));
    }

    /// Writes the cache file (expired policies left out) on the blocking
    /// pool. A failure is logged: the policies stay in memory.
    async fn save(&self) {
        let _in_order = self.saving.lock().await;
        let snapshot = {
            let mut state = lock(&self.state);
            let now = SystemTime::now();
            state.policies.retain(|_, cached| cached.is_valid_at(now));
            state.policies.clone()
        };
        let path = self.cache_path.clone();
        let saved = tokio::task::spawn_blocking(move || cache::save(&path, &snapshot)).await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(
                "MTA-STS policy cache {}: cannot save: {error}",
                self.cache_path.display()
            ),
            Err(error) => tracing::warn!("MTA-STS policy cache: cannot save: {error}"),
        }
    }
}
