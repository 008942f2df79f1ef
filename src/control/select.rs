//! Which queued messages a request means: the filters of `queue list` and
//! of the bulk operations (`lane`, `state`, `domain`, `older_than`),
//! decided from the schedule alone, without reading an envelope.

use std::time::SystemTime;

use serde::Deserialize;

use super::http::Request;
use crate::queue::envelope::unix_ms;
use crate::queue::{DomainSets, Entry, Lane, State};

/// Filters that a message must pass; an unset one passes everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default)]
    pub lane: Option<Lane>,
    #[serde(default)]
    pub state: Option<State>,
    /// An open recipient at this domain (lower-cased when parsed).
    #[serde(default)]
    pub domain: Option<String>,
    /// At least this old, in seconds since arrival.
    #[serde(default)]
    pub older_than: Option<u64>,
}

impl Filter {
    /// The filters of a `GET /queue?lane=…&state=…&domain=…&older_than=…`.
    pub fn from_query(request: &Request) -> Result<Filter, String> {
        let lane = match request.param("lane") {
            Some(name) => Some(name.parse::<Lane>().map_err(|_| "lane: high or low")?),
            None => None,
        };
        let state = match request.param("state") {
            Some(name) => Some(parse_state(name)?),
            None => None,
        };
        let older_than = match request.param("older_than") {
            Some(seconds) => Some(
                seconds
                    .parse::<u64>()
                    .map_err(|_| "older_than: seconds".to_owned())?,
            ),
            None => None,
        };
        Ok(Filter {
            lane,
            state,
            domain: request.param("domain").map(str::to_ascii_lowercase),
            older_than,
        }
        .normalised())
    }

    /// Lower-cases the domain.
    pub fn normalised(mut self) -> Filter {
        if let Some(domain) = &mut self.domain {
            domain.make_ascii_lowercase();
        }
        self
    }

    /// Prepares the filter for a walk at `now`.
    pub fn at(&self, now: SystemTime) -> Matcher<'_> {
        Matcher {
            filter: self,
            now_ms: unix_ms(now),
        }
    }
}

/// A filter with the time of the walk it is used in.
pub struct Matcher<'a> {
    filter: &'a Filter,
    now_ms: u64,
}

impl Matcher<'_> {
    pub fn matches(&self, entry: &Entry, domains: &DomainSets) -> bool {
        let filter = self.filter;
        filter.lane.is_none_or(|lane| entry.lane == lane)
            && filter.state.is_none_or(|state| entry.state() == state)
            && filter.older_than.is_none_or(|seconds| {
                self.now_ms.saturating_sub(entry.arrival_ms) >= seconds.saturating_mul(1000)
            })
            && filter
                .domain
                .as_deref()
                .is_none_or(|domain| domains.contains(entry.domains, domain))
    }
}

fn parse_state(name: &str) -> Result<State, String> {
    State::ALL
        .into_iter()
        .find(|state| state.as_str() == name)
        .ok_or_else(|| "state: ready, active, deferred or held".to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::queue::Phase;

    fn entry(lane: Lane, attempts: u32, arrival_ms: u64, domains: u32) -> Entry {
        Entry {
            lane,
            phase: Phase::Held,
            arrival_ms,
            attempts,
            domains,
        }
    }

    #[test]
    fn every_set_filter_must_pass() {
        let mut sets = DomainSets::default();
        let example = sets.acquire(vec!["example.org".to_owned()]);
        let other = sets.acquire(vec!["other.org".to_owned()]);
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        let old = entry(Lane::Low, 0, 1_000_000, example);
        let new = entry(Lane::Low, 0, 9_999_000, other);
        let filter = Filter {
            lane: Some(Lane::Low),
            state: Some(State::Held),
            domain: Some("EXAMPLE.org".to_owned()),
            older_than: Some(3600),
        }
        .normalised();
        let matcher = filter.at(now);
        assert!(matcher.matches(&old, &sets));
        assert!(!matcher.matches(&new, &sets));
        assert!(!matcher.matches(&entry(Lane::High, 0, 1_000_000, example), &sets));
        assert!(Filter::default().at(now).matches(&new, &sets));
    }
}
