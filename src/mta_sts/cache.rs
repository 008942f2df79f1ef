//! The MTA-STS policy cache file in the spool directory, so policies
//! outlive restarts (RFC 8461 §5.1): the policy text as fetched, its id and
//! when it was fetched, per domain. Written whole, atomically (temporary
//! file, fsync, rename, directory fsync); a file that cannot be read is
//! ignored with a warning and policies are fetched again.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::policy::{Policy, parse_policy};

/// The name of the cache file in the spool directory.
pub const FILE_NAME: &str = "mta-sts-policies.json";
/// RFC 8461 §3.3: "MTAs SHOULD proactively refresh cached policies before
/// they expire; a suggested refresh frequency is once per day."
const REFRESH_EVERY: Duration = Duration::from_secs(24 * 3600);

/// A policy as fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedPolicy {
    /// The TXT record's id when the policy was fetched.
    pub id: String,
    pub fetched: SystemTime,
    /// The policy file, as served: what the cache file stores.
    pub text: String,
    pub policy: Policy,
}

impl CachedPolicy {
    /// A policy is used for `max_age` after it was fetched, no longer.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        now < self.fetched + self.policy.max_age
    }

    /// Whether the policy should be fetched again although its id did not
    /// change: once a day, or after half its `max_age` when that is
    /// shorter, so that it is renewed well before it runs out.
    pub fn refresh_due(&self, now: SystemTime) -> bool {
        now >= self.fetched + REFRESH_EVERY.min(self.policy.max_age / 2)
    }
}

#[derive(Serialize, Deserialize)]
struct Entry {
    id: String,
    /// Unix time, milliseconds.
    fetched: u64,
    policy: String,
}

/// Reads the cache; entries whose policy no longer parses are dropped.
pub fn load(path: &Path) -> HashMap<String, CachedPolicy> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(error) => {
            tracing::warn!(
                "MTA-STS policy cache {}: {error}; starting empty",
                path.display()
            );
            return HashMap::new();
        }
    };
    let entries: HashMap<String, Entry> = match serde_json::from_slice(&text) {
        Ok(entries) => entries,
        Err(error) => {
            tracing::warn!(
                "MTA-STS policy cache {}: {error}; starting empty",
                path.display()
            );
            return HashMap::new();
        }
    };
    entries
        .into_iter()
        .filter_map(|(domain, entry)| {
            let policy = parse_policy(&entry.policy).ok()?;
            Some((
                domain,
                CachedPolicy {
                    id: entry.id,
                    fetched: UNIX_EPOCH + Duration::from_millis(entry.fetched),
                    text: entry.policy,
                    policy,
                },
            ))
        })
        .collect()
}

/// Replaces the cache file with `policies`, atomically and durably.
pub fn save(path: &Path, policies: &HashMap<String, CachedPolicy>) -> std::io::Result<()> {
    let entries: HashMap<&str, Entry> = policies
        .iter()
        .map(|(domain, cached)| {
            let fetched = cached
                .fetched
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            let entry = Entry {
                id: cached.id.clone(),
                fetched: u64::try_from(fetched).unwrap_or(u64::MAX),
                policy: cached.text.clone(),
            };
            (domain.as_str(), entry)
        })
        .collect();
    let json = serde_json::to_vec_pretty(&entries).map_err(std::io::Error::other)?;
    let temporary = path.with_extension("json.tmp");
    {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&json)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    if let Some(directory) = path.parent() {
        std::fs::File::open(directory)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_survive_a_save_and_load() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join(FILE_NAME);
        assert!(load(&path).is_empty(), "no file: empty");
        let text = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n";
        let fetched = UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
        let cached = CachedPolicy {
            id: "abc1".into(),
            fetched,
            text: text.into(),
            policy: parse_policy(text).unwrap(),
        };
        let policies = HashMap::from([("example.com".to_owned(), cached.clone())]);
        save(&path, &policies).unwrap();
        assert_eq!(load(&path), policies);
        assert!(cached.is_valid_at(fetched + Duration::from_secs(86_399)));
        assert!(!cached.is_valid_at(fetched + Duration::from_secs(86_400)));

        // Refreshed after half its max_age (a day is longer), while valid.
        assert!(!cached.refresh_due(fetched + Duration::from_secs(43_199)));
        assert!(cached.refresh_due(fetched + Duration::from_secs(43_200)));
        let weekly_text = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 604800\n";
        let weekly = CachedPolicy {
            text: weekly_text.into(),
            policy: parse_policy(weekly_text).unwrap(),
            ..cached.clone()
        };
        // A week-long policy is refreshed once a day.
        assert!(!weekly.refresh_due(fetched + Duration::from_secs(86_399)));
        assert!(weekly.refresh_due(fetched + Duration::from_secs(86_400)));

        std::fs::write(&path, b"{ not json").unwrap();
        assert!(load(&path).is_empty(), "a broken file is ignored");
    }
}
