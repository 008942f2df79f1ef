//! MTA-STS (RFC 8461) for delivery by MX: discovery through the
//! `_mta-sts` TXT record, the HTTPS fetch of the policy, the policy cache
//! (in memory and in the spool directory), and what a policy asks of a
//! connection. Routes (smarthosts) are never subject to it.
//!
//! Code map: `policy` parses the TXT record and the policy file and matches
//! MX host names (pure); `http` fetches the policy file; `cache` keeps
//! fetched policies on disk.
//!
//! Invariant: a domain whose valid policy says `enforce` gets no MAIL FROM
//! except over STARTTLS with a certificate verified for an MX host the
//! policy names (enforced in `delivery::job`).

pub(crate) mod cache;
pub(crate) mod http;
pub(crate) mod policy;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hickory_resolver::proto::rr::Name;
use rustls::ClientConfig;

use self::cache::CachedPolicy;
use self::policy::{Mode, Policy};
use crate::dns::MxResolver;
use crate::outcome::{PolicyKind, Protection, Target, TlsProtection};

/// The whole fetch of a policy file: connect, TLS, request, response.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a failed fetch of a policy id is not tried again, so a domain
/// whose policy host is down does not cost every delivery a fetch.
const FAILED_FETCH_MEMORY: Duration = Duration::from_secs(300);
/// How long a TXT lookup that failed (timeout, SERVFAIL) is not repeated
/// for the domain, so name servers that drop TXT queries do not cost every
/// delivery the resolver's timeouts; the cached policy, if any, applies.
const FAILED_LOOKUP_MEMORY: Duration = Duration::from_secs(60);

/// A policy that applies to a delivery (mode `enforce` or `testing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivePolicy {
    pub domain: String,
    pub policy: Policy,
}

impl ActivePolicy {
    pub fn enforced(&self) -> bool {
        self.policy.mode == Mode::Enforce
    }

    pub fn kind(&self) -> PolicyKind {
        match self.policy.mode {
            Mode::Enforce => PolicyKind::MtaSts,
            _ => PolicyKind::MtaStsTesting,
        }
    }

    /// Why the policy refuses a session with `target` protected by `tls`,
    /// or `None` when it allows it (RFC 8461 §4). A session DANE
    /// authenticated is never refused: DANE wins (RFC 8461 §2).
    pub fn refusal(&self, target: &Target, tls: TlsProtection) -> Option<String> {
        if tls == TlsProtection::Dane {
            return None;
        }
        if !self.policy.allows(&target.host) {
            return Some(format!(
                "MX host {} does not match the policy's mx ({})",
                target.host,
                self.policy.mx.join(", ")
            ));
        }
        match tls {
            TlsProtection::None => Some(format!("{target} offers no STARTTLS")),
            TlsProtection::Unverified => Some(format!(
                "the certificate of {target} is not valid for {}",
                target.host
            )),
            TlsProtection::Verified | TlsProtection::Dane => None,
        }
    }
}

/// How a session protected by `tls` under the policy `active` was
/// protected, in the words of log lines and events.
pub fn protection(tls: TlsProtection, active: Option<&ActivePolicy>) -> Protection {
    Protection {
        tls,
        policy: active.map_or(PolicyKind::None, ActivePolicy::kind),
    }
}

/// The policies of recipient domains; cheap to share.
pub struct MtaSts {
    resolver: MxResolver,
    /// Verifies policy hosts against the system roots and `tls_ca_file`.
    tls: Arc<ClientConfig>,
    cache_path: PathBuf,
    state: Mutex<State>,
    /// One fetch per domain at a time; saves of the cache file in order.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    saving: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    policies: HashMap<String, CachedPolicy>,
    /// `(domain, id)` whose fetch failed, and when.
    failed: HashMap<(String, String), SystemTime>,
    /// Domains whose TXT lookup failed, and when.
    lookup_failed: HashMap<String, SystemTime>,
}

impl MtaSts {
    /// Loads the cache file from `spool_directory`.
    pub fn new(
        resolver: MxResolver,
        tls: Arc<ClientConfig>,
        spool_directory: &std::path::Path,
    ) -> MtaSts {
        let cache_path = spool_directory.join(cache::FILE_NAME);
        let policies = cache::load(&cache_path);
        MtaSts {
            resolver,
            tls,
            cache_path,
            state: Mutex::new(State {
                policies,
                ..State::default()
            }),
            fetching: Mutex::default(),
            saving: tokio::sync::Mutex::new(()),
        }
    }

    /// The policy that applies to mail for `domain` now, if any (RFC 8461
    /// §5.1): the TXT record's id decides whether the cached policy is
    /// current; a new id is fetched. Without a TXT record, or when the
    /// fetch fails, a cached policy still within its `max_age` is used;
    /// else the domain is treated as having no policy.
    pub async fn policy_for(&self, domain: &str) -> Option<ActivePolicy> {
        if domain.starts_with('[') {
            return None;
        }
        // IDN as punycode: the name in the policy host's certificate.
        let domain = Name::from_utf8(domain.trim_end_matches('.'))
            .map(|name| name.to_ascii())
            .unwrap_or_else(|_| domain.to_owned())
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let announced = self.announced_id(&domain).await;
        let cached = self.cached(&domain);
        let policy = match (announced, cached) {
            (Some(id), Some(cached)) if cached.id == id => Some(cached.policy),
            (Some(id), cached) => match self.refresh(&domain, &id).await {
                Some(policy) => Some(policy),
                None => cached.map(|cached| cached.policy),
            },
            (None, cached) => cached.map(|cached| cached.policy),
        }?;
        (policy.mode != Mode::None).then_some(ActivePolicy { domain, policy })
    }

    /// The policy id in the domain's `_mta-sts` TXT record, if it has one
    /// that is valid and it could be looked up.
    async fn announced_id(&self, domain: &str) -> Option<String> {
        if let Some(at) = lock(&self.state).lookup_failed.get(domain)
            && at.elapsed().unwrap_or_default() < FAILED_LOOKUP_MEMORY
        {
            return None;
        }
        match self
            .resolver
            .txt_records(&format!("_mta-sts.{domain}"))
            .await
        {
            Ok(records) => match policy::policy_id(&records) {
                Ok(id) => Some(id),
                Err(policy::PolicyError::NoRecord) => None,
                Err(error) => {
                    tracing::warn!("MTA-STS {domain}: {error}");
                    None
                }
            },
            Err(reason) => {
                tracing::info!("MTA-STS {domain}: {reason}; using the cached policy, if any");
                let mut state = lock(&self.state);
                state
                    .lookup_failed
                    .retain(|_, at| at.elapsed().unwrap_or_default() < FAILED_LOOKUP_MEMORY);
                state
                    .lookup_failed
                    .insert(domain.to_owned(), SystemTime::now());
                None
            }
        }
    }

    /// The cached policy of `domain` while within its `max_age`.
    fn cached(&self, domain: &str) -> Option<CachedPolicy> {
        let state = lock(&self.state);
        state
            .policies
            .get(domain)
            .filter(|cached| cached.is_valid_at(SystemTime::now()))
            .cloned()
    }

    /// Fetches the policy with id `id` (once at a time per domain), caches
    /// and saves it. `None` when it cannot be had now.
    async fn refresh(&self, domain: &str, id: &str) -> Option<Policy> {
        let gate = lock(&self.fetching)
            .entry(domain.to_owned())
            .or_default()
            .clone();
        let policy = {
            let _one_at_a_time = gate.lock().await;
            self.refresh_alone(domain, id).await
        };
        let mut fetching = lock(&self.fetching);
        // Nobody else waits for this domain's gate: forget it, so the map
        // holds only fetches in progress.
        if Arc::strong_count(&gate) == 2 {
            fetching.remove(domain);
        }
        policy
    }

    async fn refresh_alone(&self, domain: &str, id: &str) -> Option<Policy> {
        // Fetched meanwhile by another delivery?
        if let Some(cached) = self.cached(domain)
            && cached.id == id
        {
            return Some(cached.policy);
        }
        let key = (domain.to_owned(), id.to_owned());
        if let Some(at) = lock(&self.state).failed.get(&key)
            && at.elapsed().unwrap_or_default() < FAILED_FETCH_MEMORY
        {
            return None;
        }
        let host = format!("mta-sts.{domain}");
        let fetched = match self.resolver.host_addresses(&host).await {
            Ok(addresses) => http::fetch(&host, &addresses, self.tls.clone(), FETCH_TIMEOUT)
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        }
        .and_then(|text| {
            let policy = policy::parse_policy(&text).map_err(|error| error.to_string())?;
            Ok((text, policy))
        });
        let (text, policy) = match fetched {
            Ok(fetched) => fetched,
            Err(reason) => {
                tracing::warn!(
                    "MTA-STS {domain}: cannot fetch policy {id} from https://{host}{}: {reason}",
                    http::POLICY_PATH
                );
                let mut state = lock(&self.state);
                state
                    .failed
                    .retain(|_, at| at.elapsed().unwrap_or_default() < FAILED_FETCH_MEMORY);
                state.failed.insert(key, SystemTime::now());
                return None;
            }
        };
        tracing::info!(
            "MTA-STS {domain}: policy {id} fetched: mode {}, mx {}, max_age {}s",
            policy.mode.as_str(),
            policy.mx.join(" "),
            policy.max_age.as_secs()
        );
        let cached = CachedPolicy {
            id: id.to_owned(),
            fetched: SystemTime::now(),
            text,
            policy: policy.clone(),
        };
        lock(&self.state).policies.insert(domain.to_owned(), cached);
        self.save().await;
        Some(policy)
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(mode: &str) -> ActivePolicy {
        let text = format!("version: STSv1\nmode: {mode}\nmx: mx.sts.test\nmax_age: 60\n");
        ActivePolicy {
            domain: "sts.test".into(),
            policy: policy::parse_policy(&text).unwrap(),
        }
    }

    fn target(host: &str) -> Target {
        Target {
            host: host.into(),
            address: "127.0.0.1:25".parse().unwrap(),
        }
    }

    fn tls(verified: bool) -> TlsProtection {
        if verified {
            TlsProtection::Verified
        } else {
            TlsProtection::Unverified
        }
    }

    #[test]
    fn what_a_policy_refuses() {
        let enforce = active("enforce");
        assert!(enforce.enforced());
        assert_eq!(enforce.refusal(&target("mx.sts.test"), tls(true)), None);
        let other = enforce.refusal(&target("other.test"), tls(true)).unwrap();
        assert!(other.contains("does not match"), "{other}");
        let plain = enforce
            .refusal(&target("mx.sts.test"), TlsProtection::None)
            .unwrap();
        assert!(plain.contains("no STARTTLS"), "{plain}");
        let unverified = enforce.refusal(&target("mx.sts.test"), tls(false)).unwrap();
        assert!(unverified.contains("not valid"), "{unverified}");
    }

    #[test]
    fn protection_words() {
        let testing = active("testing");
        let protection = protection(tls(false), Some(&testing));
        assert_eq!(protection.tls.as_str(), "unverified");
        assert_eq!(protection.policy.as_str(), "mta-sts-testing");
        let none = super::protection(TlsProtection::None, None);
        assert_eq!((none.tls.as_str(), none.policy.as_str()), ("none", "none"));
        let verified = super::protection(tls(true), Some(&active("enforce")));
        assert_eq!(
            (verified.tls.as_str(), verified.policy.as_str()),
            ("verified", "mta-sts")
        );
    }
}
