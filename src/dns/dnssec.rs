//! DNSSEC validation for DANE (`delivery.dane`; RFC 7672 §2.1): a second
//! hickory resolver on the same name servers that validates every answer
//! from the configured trust anchors (used for MX delivery only, so routes,
//! webhooks and MTA-STS keep working whatever DNSSEC does); the priming of
//! DS anchors; and the check that tells an operator whether the name
//! servers pass DNSSEC through at all.
//!
//! A name server path that strips DNSSEC records (a plain forwarder that
//! drops RRSIGs, DS and DNSKEY) makes every answer unprovable: nothing can
//! be shown insecure either, so MX delivery fails closed (deferred) rather
//! than take such answers for unsigned ones, which is exactly the
//! downgrade DANE exists to stop. [`Validation::check`] finds that case
//! (the trust anchor's own DNSKEY RRset does not validate), logs it once
//! per change at error level, and its reason is added to the deferrals.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::NameServerConfig;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::dnssec::TrustAnchors;
use hickory_resolver::proto::dnssec::rdata::{DNSKEY, DNSSECRData};
use hickory_resolver::proto::rr::{RData, RecordType};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::anchor::TrustAnchorSource;
use super::lookup::{Answer, Path, ask};
use super::names::host_text;
use super::{LookupLimits, resolver_setup};

/// Negative answers from the validating resolver are kept this long:
/// hickory does not derive a negative TTL for validated denials, and
/// without one every connection to a host without AAAA or TLSA records
/// would ask (and validate) again.
const NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// A failed priming of DS anchors is retried at most this often.
const PRIMING_RETRY: Duration = Duration::from_secs(10);
/// How long a check's result stands before the next lookup failure checks
/// again.
const CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// The validating side of the resolver.
pub(super) struct Validation {
    source: TrustAnchorSource,
    name_servers: Vec<NameServerConfig>,
    limits: LookupLimits,
    /// Readable list of the name servers, for the operator.
    servers: String,
    /// Built at once for DNSKEY anchors; for DS anchors once priming
    /// succeeded.
    resolver: OnceCell<TokioResolver>,
    last_priming_failure: Mutex<Option<(Instant, String)>>,
    last_check: Mutex<Option<(Instant, Result<String, String>)>>,
}

impl std::fmt::Debug for Validation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validation")
            .field("source", &self.source.to_string())
            .field("servers", &self.servers)
            .finish()
    }
}

impl Validation {
    pub(super) fn new(
        source: TrustAnchorSource,
        name_servers: Vec<NameServerConfig>,
        limits: LookupLimits,
    ) -> anyhow::Result<Validation> {
        let servers = name_servers
            .iter()
            .map(|server| server.ip.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let validation = Validation {
            name_servers,
            limits,
            servers,
            resolver: OnceCell::new(),
            last_priming_failure: Mutex::new(None),
            last_check: Mutex::new(None),
            source,
        };
        if !validation.source.needs_priming() {
            let anchors = validation
                .source
                .trusted_keys(&[])
                .map_err(|reason| anyhow::anyhow!(reason))?;
            let resolver = validation
                .build(anchors)
                .map_err(|reason| anyhow::anyhow!(reason))?;
            let _ = validation.resolver.set(resolver);
        }
        Ok(validation)
    }

    /// The validating resolver, priming DS anchors first if need be.
    /// `Err` is a reason to defer.
    pub(super) async fn resolver(&self, plain: Path<'_>) -> Result<&TokioResolver, String> {
        if let Some(resolver) = self.resolver.get() {
            return Ok(resolver);
        }
        if let Some((at, reason)) = &*self.last_priming_failure.lock().expect("priming state")
            && at.elapsed() < PRIMING_RETRY
        {
            return Err(reason.clone());
        }
        let primed = self
            .resolver
            .get_or_try_init(|| async {
                let anchors = self.prime(plain).await?;
                self.build(anchors)
            })
            .await;
        match primed {
            Ok(resolver) => Ok(resolver),
            Err(reason) => {
                let reason = format!(
                    "cannot use {} yet: {reason} (name servers {})",
                    self.source, self.servers
                );
                *self.last_priming_failure.lock().expect("priming state") =
                    Some((Instant::now(), reason.clone()));
                Err(reason)
            }
        }
    }

    /// Fetches the DNSKEY RRsets the DS anchors stand for (from the plain
    /// resolver: nothing is trusted yet) and keeps the keys they match.
    async fn prime(&self, plain: Path<'_>) -> Result<Arc<TrustAnchors>, String> {
        let mut fetched = Vec::new();
        for owner in self.source.owners() {
            let keys = match ask(plain, &owner, RecordType::DNSKEY, dnskey_of)
                .await?
                .answer
            {
                Answer::Records(keys) => keys,
                Answer::NoData | Answer::NxDomain => Vec::new(),
            };
            fetched.push((owner, keys));
        }
        self.source.trusted_keys(&fetched)
    }

    fn build(&self, anchors: Arc<TrustAnchors>) -> Result<TokioResolver, String> {
        let (config, mut options) = resolver_setup(self.name_servers.clone(), self.limits);
        options.negative_min_ttl = Some(NEGATIVE_TTL);
        TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .with_trust_anchor(anchors)
            .build()
            .map_err(|error| format!("building the validating resolver: {error}"))
    }

    /// Whether validation works on this name server path: the DNSKEY
    /// RRset of every trust anchor's owner validates. `Ok` describes what
    /// was checked, `Err` why it failed, for the operator. A result stands
    /// for a minute; a change is logged (an error once when validation
    /// stops working, an info line when it works).
    pub(super) async fn check(&self, plain: Path<'_>) -> Result<String, String> {
        if let Some((at, result)) = &*self.last_check.lock().expect("check state")
            && at.elapsed() < CHECK_INTERVAL
        {
            return result.clone();
        }
        let result = self.check_now(plain).await;
        let previous = self
            .last_check
            .lock()
            .expect("check state")
            .replace((Instant::now(), result.clone()));
        let changed = match &previous {
            None => true,
            Some((_, before)) => before.is_ok() != result.is_ok(),
        };
        if changed {
            match &result {
                Ok(what) => tracing::info!("dns: DNSSEC validation works: {what}"),
                Err(why) => tracing::error!("dns: DNSSEC validation fails: {why}"),
            }
        }
        result
    }

    async fn check_now(&self, plain: Path<'_>) -> Result<String, String> {
        let resolver = self.resolver(plain).await?;
        let path = Path {
            resolver,
            validating: true,
        };
        let mut checked = Vec::new();
        for owner in self.source.owners() {
            let lookup = tokio::time::timeout(
                self.limits.total,
                ask(path, &owner, RecordType::DNSKEY, dnskey_of),
            )
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "timeout looking up DNSKEY for {}",
                    host_text(&owner)
                ))
            });
            let unproven = |why: String| {
                format!(
                    "the DNSKEY RRset of {} does not validate against {} ({why}): \
                     the name servers ({}) do not seem to pass DNSSEC records \
                     (RRSIG, DNSKEY, DS) through; MX delivery is deferred until they do",
                    owner.to_ascii(),
                    self.source,
                    self.servers
                )
            };
            match lookup {
                Ok(reply) if reply.secure && matches!(reply.answer, Answer::Records(_)) => {
                    checked.push(owner.to_ascii());
                }
                Ok(_) => return Err(unproven("no signed DNSKEY records".to_owned())),
                Err(why) => return Err(unproven(why)),
            }
        }
        Ok(format!(
            "the DNSKEY RRset of {} validates against {} (name servers {})",
            checked.join(", "),
            self.source,
            self.servers
        ))
    }
}

fn dnskey_of(data: &RData) -> Option<DNSKEY> {
    match data {
        RData::DNSSEC(DNSSECRData::DNSKEY(key)) => Some(key.clone()),
        _ => None,
    }
}
