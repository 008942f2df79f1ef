//! MTA-STS (RFC 8461) for delivery by MX: discovery through the
//! `_mta-sts` TXT record, the HTTPS fetch of the policy, the policy cache
//! (in memory and in the spool directory), and what a policy asks of a
//! connection. Routes (smarthosts) are never subject to it.
//!
//! Code map: `policy` parses the TXT record and the policy file and matches
//! MX host names (pure); `fetch` runs fetches off the lane workers, one per
//! domain at a time; `http` fetches the policy file; `cache` keeps fetched
//! policies on disk and says when one is due for its refresh; `report` says
//! what a TLS report (RFC 8460) says of policies, and of fetches that
//! failed (which `fetch` counts for the domain's report).
//!
//! Invariant: a domain whose valid policy says `enforce` gets no MAIL FROM
//! except over STARTTLS with a certificate verified for an MX host the
//! policy names (enforced in `delivery::job::policy`), relayq's own TLS
//! reports excepted (RFC 8460 §5.3).

pub(crate) mod cache;
mod fetch;
pub(crate) mod http;
pub(crate) mod policy;
mod report;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hickory_resolver::proto::rr::Name;
use rustls::ClientConfig;
use tokio_util::task::TaskTracker;

use self::cache::CachedPolicy;
pub(crate) use self::fetch::FETCH_TIMEOUT;
use self::policy::{Mode, Policy};
use crate::dns::MxResolver;
use crate::outcome::{PolicyKind, Protection, Target, TlsProtection};
use crate::tls_rpt::TlsRpt;

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

/// What [`MtaSts::policy_for`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The policy that applies to the delivery now (`None`: no policy).
    Ready(Option<ActivePolicy>),
    /// The domain announces a policy that is being fetched, and none is
    /// cached: its mail waits for the fetch (at most `FETCH_TIMEOUT`).
    Fetching { domain: String },
}

/// The policies of recipient domains; shared by the lane workers.
pub struct MtaSts {
    /// Verifies policy hosts against the system roots and `tls_ca_file`.
    tls: Arc<ClientConfig>,
    cache_path: PathBuf,
    state: Mutex<State>,
    /// Saves of the cache file, one at a time and in order.
    saving: tokio::sync::Mutex<()>,
    /// Fetches run on tasks of their own, which shutdown waits for.
    tracker: TaskTracker,
    /// Where a policy that could not be fetched is counted for the
    /// domain's TLS report.
    tls_rpt: TlsRpt,
}

#[derive(Default)]
struct State {
    policies: HashMap<String, CachedPolicy>,
    /// `(domain, id)` whose fetch failed, and when.
    failed: HashMap<(String, String), SystemTime>,
    /// Domains whose TXT lookup failed, and when.
    lookup_failed: HashMap<String, SystemTime>,
    /// The fetch running for each domain (one at a time).
    fetching: HashMap<String, fetch::Running>,
}

impl MtaSts {
    /// Loads the cache file from `spool_directory`.
    pub fn new(
        tls: Arc<ClientConfig>,
        spool_directory: &std::path::Path,
        tracker: TaskTracker,
        tls_rpt: TlsRpt,
    ) -> MtaSts {
        let cache_path = spool_directory.join(cache::FILE_NAME);
        let policies = cache::load(&cache_path);
        MtaSts {
            tls,
            cache_path,
            state: Mutex::new(State {
                policies,
                ..State::default()
            }),
            saving: tokio::sync::Mutex::new(()),
            tracker,
            tls_rpt,
        }
    }

    /// The policy that applies to mail for `domain` now (RFC 8461 §5.1),
    /// looked up with `resolver` (the delivery's own, so a reload's `[dns]`
    /// applies): the TXT record's id decides whether the cached policy is
    /// current; a new id is fetched, on a task of its own, and waited for
    /// briefly. Without a TXT record, or while the fetch runs or when it
    /// fails, a cached policy still within its `max_age` is used; with
    /// none, mail waits while the fetch runs, and after a failure is
    /// treated as having no policy. A cached policy due for its refresh
    /// (RFC 8461 §3.3) is fetched again in the background and used
    /// meanwhile.
    pub async fn policy_for(self: &Arc<Self>, resolver: &MxResolver, domain: &str) -> Lookup {
        if domain.starts_with('[') {
            return Lookup::Ready(None);
        }
        // IDN as punycode: the name in the policy host's certificate.
        let domain = Name::from_utf8(domain.trim_end_matches('.'))
            .map(|name| name.to_ascii())
            .unwrap_or_else(|_| domain.to_owned())
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let announced = self.announced_id(resolver, &domain).await;
        let cached = self.cached(&domain);
        let policy = match (announced, cached) {
            (Some(id), Some(cached)) if cached.id == id => {
                if cached.refresh_due(SystemTime::now()) {
                    self.start_fetch(resolver, &domain, &id);
                }
                Some(cached.policy)
            }
            (Some(id), cached) => {
                if let Some(running) = self.start_fetch(resolver, &domain, &id) {
                    running.wait_briefly().await;
                }
                match (self.cached(&domain), cached) {
                    (Some(fresh), _) if fresh.id == id => Some(fresh.policy),
                    (_, Some(cached)) => Some(cached.policy),
                    (_, None) if self.is_fetching(&domain) => {
                        return Lookup::Fetching { domain };
                    }
                    (_, None) => None,
                }
            }
            (None, cached) => cached.map(|cached| cached.policy),
        };
        Lookup::Ready(
            policy
                .filter(|policy| policy.mode != Mode::None)
                .map(|policy| ActivePolicy { domain, policy }),
        )
    }

    /// The policy id in the domain's `_mta-sts` TXT record, if it has one
    /// that is valid and it could be looked up.
    async fn announced_id(&self, resolver: &MxResolver, domain: &str) -> Option<String> {
        if let Some(at) = lock(&self.state).lookup_failed.get(domain)
            && at.elapsed().unwrap_or_default() < FAILED_LOOKUP_MEMORY
        {
            return None;
        }
        match resolver.txt_records(&format!("_mta-sts.{domain}")).await {
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
