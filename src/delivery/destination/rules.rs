//! The settings destinations are made with: the default connection cap
//! and the `[[destination]]` rules, in file order; which destination a
//! recipient domain's mail belongs to. Replaced whole by a reload.

use std::sync::Arc;
use std::time::Duration;

use super::idle::MAX_TRANSACTIONS_PER_CONNECTION;
use super::{DestinationKey, NextHop};
use crate::config::DestinationRule;

pub(super) struct Rules {
    default_cap: usize,
    /// In file order, each with its name as the key uses it.
    rules: Vec<(Arc<str>, DestinationRule)>,
    /// The destinations with a rate (only rules have one).
    pub(super) rated: Vec<DestinationKey>,
}

impl Rules {
    pub(super) fn new(default_cap: usize, rules: &[DestinationRule]) -> Rules {
        let rules: Vec<(Arc<str>, DestinationRule)> = rules
            .iter()
            .map(|rule| (Arc::from(rule.name.as_str()), rule.clone()))
            .collect();
        let rated = rules
            .iter()
            .filter(|(_, rule)| rule.rate.is_some())
            .map(|(name, _)| DestinationKey::Rule(name.clone()))
            .collect();
        Rules {
            default_cap: default_cap.max(1),
            rules,
            rated,
        }
    }

    pub(super) fn rule(&self, name: &str) -> Option<&DestinationRule> {
        self.rules
            .iter()
            .find(|(rule_name, _)| &**rule_name == name)
            .map(|(_, rule)| rule)
    }

    pub(super) fn all(&self) -> impl Iterator<Item = &DestinationRule> {
        self.rules.iter().map(|(_, rule)| rule)
    }

    /// Whether `key` is a rule's destination, kept while the rule exists
    /// (a next hop's, or a removed rule's, goes when nothing refers to it).
    pub(super) fn has_rule(&self, key: &DestinationKey) -> bool {
        matches!(key, DestinationKey::Rule(name) if self.rule(name).is_some())
    }

    /// The cap and rate interval a destination of `key` has now. A rule
    /// that a reload removed while its mail was in flight counts as a next
    /// hop without a rule.
    pub(super) fn limits(&self, key: &DestinationKey) -> (usize, Option<Duration>) {
        match key {
            DestinationKey::Rule(name) => match self.rule(name) {
                Some(rule) => (rule.concurrency, rule.rate.map(|rate| rate.interval())),
                None => (self.default_cap, None),
            },
            DestinationKey::Hop(_) => (self.default_cap, None),
        }
    }

    /// Transactions a connection of `key` carries before it is closed.
    pub(super) fn transactions_per_connection(&self, key: &DestinationKey) -> u32 {
        match key {
            DestinationKey::Rule(name) => self
                .rule(name)
                .map_or(MAX_TRANSACTIONS_PER_CONNECTION, |rule| {
                    rule.messages_per_connection
                }),
            DestinationKey::Hop(_) => MAX_TRANSACTIONS_PER_CONNECTION,
        }
    }

    /// The first rule matching a recipient domain (or its most preferred MX
    /// host, for a next hop by MX), else the next hop itself; and whether
    /// the rule matched by the MX host.
    pub(super) fn key_for(
        &self,
        domain: &str,
        hop: &NextHop,
        mx_host: Option<&str>,
    ) -> (DestinationKey, bool) {
        let mx_host = match hop {
            NextHop::Mx(_) => mx_host,
            NextHop::Route(_) => None,
        };
        for (name, rule) in &self.rules {
            if rule.matches(domain, None) {
                return (DestinationKey::Rule(name.clone()), false);
            }
            if rule.matches(domain, mx_host) {
                return (DestinationKey::Rule(name.clone()), true);
            }
        }
        (DestinationKey::Hop(hop.clone()), false)
    }

    /// A domain's destination when it can be decided without its MX host:
    /// a rule matching the domain comes before any rule with `mx:`
    /// patterns, or no rule has them.
    pub(super) fn key_without_mx(&self, domain: &str, hop: &NextHop) -> Option<DestinationKey> {
        for (name, rule) in &self.rules {
            if rule.matches(domain, None) {
                return Some(DestinationKey::Rule(name.clone()));
            }
            if rule.needs_mx() && matches!(hop, NextHop::Mx(_)) {
                return None;
            }
        }
        Some(DestinationKey::Hop(hop.clone()))
    }
}
