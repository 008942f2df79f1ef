//! Idempotent submission (docs/idempotency.md): the claims that make a
//! repeat of a message find its original.
//!
//! A message that carries a key is stored with a record of its claim
//! (scope and key → fingerprint, queue id, time) in the same spool commit
//! as the message itself, so the key is exactly as durable as the message:
//! a crash right after the `250` keeps both. The records are ordered by
//! kind and time, so a commit appends at the table's end and the sweep
//! (`sweep`) forgets them from the oldest; they are looked up in memory
//! (`claims`), where a message's claims are taken before its commit and a
//! concurrent repeat waits for that commit's outcome.

pub mod claims;
mod fingerprint;
pub mod sweep;

use std::net::IpAddr;
use std::time::Duration;

use relayq_spool::{Change, QueueId, RecordTable};

pub use fingerprint::{ContentHasher, fingerprint};

/// Claims by time: kind, acceptance time (ms, big-endian) and the claim's
/// key ([`index_key`]) → [`Remembered`].
pub const CLAIMS: RecordTable = RecordTable::new("idempotency_keys_by_time");
/// Earlier versions' claims, keyed by claim (their entries in `CLAIMS`
/// had empty values); moved into `CLAIMS` at start (`claims::Claims::load`).
pub const OLD_CLAIMS: RecordTable = RecordTable::new("idempotency_keys");

/// How long the claim of an imported maildrop file is kept at least,
/// whatever the window: a daemon that crashed between an import's commit
/// and the file's removal may be restarted much later, and must then still
/// know the file was imported.
pub const MAILDROP_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a claim stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An `Idempotency-Key` (or the `Message-ID` under
    /// `smtp.dedupe_message_id`), in its scope.
    Key = 0,
    /// A maildrop file, by name: imported once even if the daemon stopped
    /// between the commit and the file's removal.
    MaildropFile = 1,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Key, Kind::MaildropFile];

    fn from_byte(byte: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| *kind as u8 == byte)
    }

    /// How long a claim of this kind is kept once `window` is the
    /// idempotency window.
    pub fn retention(self, window: Duration) -> Duration {
        match self {
            Kind::Key => window,
            Kind::MaildropFile => window.max(MAILDROP_RETENTION),
        }
    }
}

/// Whose keys a key is among: the authenticated user when there is one,
/// else the client's host. Every loopback address (and the maildrop
/// importer, which submits as 127.0.0.1) is one host, "local": a local
/// application that connects over IPv4 once and IPv6 the next time, or
/// whose `sendmail` call fell back to the maildrop, is still the same
/// submitter. Remote hosts are told apart by address (IPv4-mapped IPv6 as
/// IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    User(&'a str),
    Local,
    Host(IpAddr),
}

impl<'a> Scope<'a> {
    pub fn of(auth_user: Option<&'a str>, client: IpAddr) -> Scope<'a> {
        if let Some(user) = auth_user {
            return Scope::User(user);
        }
        let client = client.to_canonical();
        if client.is_loopback() {
            Scope::Local
        } else {
            Scope::Host(client)
        }
    }
}

/// One key a message claims, as its record key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub kind: Kind,
    pub key: Vec<u8>,
}

impl Claim {
    /// An idempotency key in its scope.
    pub fn key(scope: Scope<'_>, key: &str) -> Claim {
        let mut bytes = Vec::with_capacity(key.len() + 48);
        match scope {
            Scope::User(user) => {
                bytes.extend_from_slice(b"user:");
                bytes.extend_from_slice(user.as_bytes());
            }
            Scope::Local => bytes.extend_from_slice(b"host:local"),
            Scope::Host(address) => {
                bytes.extend_from_slice(b"host:");
                bytes.extend_from_slice(address.to_string().as_bytes());
            }
        }
        // Keys are visible ASCII: a NUL cannot be part of one.
        bytes.push(0);
        bytes.extend_from_slice(key.as_bytes());
        Claim {
            kind: Kind::Key,
            key: bytes,
        }
    }

    /// The maildrop file `name`.
    pub fn maildrop_file(name: &str) -> Claim {
        let mut key = b"maildrop:".to_vec();
        key.extend_from_slice(name.as_bytes());
        Claim {
            kind: Kind::MaildropFile,
            key,
        }
    }
}

/// What a claim's record remembers of the message that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remembered {
    pub kind: Kind,
    pub fingerprint: u128,
    pub original: QueueId,
    /// When it was accepted, in ms since the Unix epoch.
    pub accepted_ms: u64,
}

/// The first octet of a claim's value.
const FORMAT: u8 = 1;
const VALUE_LENGTH: usize = 2 + 16 + 8 + 8;

impl Remembered {
    pub fn encode(&self) -> Vec<u8> {
        let mut value = Vec::with_capacity(VALUE_LENGTH);
        value.push(FORMAT);
        value.push(self.kind as u8);
        value.extend_from_slice(&self.fingerprint.to_be_bytes());
        value.extend_from_slice(&self.original.0.to_be_bytes());
        value.extend_from_slice(&self.accepted_ms.to_be_bytes());
        value
    }

    /// `None` for a value this relayq did not write.
    pub fn decode(value: &[u8]) -> Option<Remembered> {
        if value.len() != VALUE_LENGTH || value[0] != FORMAT {
            return None;
        }
        Some(Remembered {
            kind: Kind::from_byte(value[1])?,
            fingerprint: u128::from_be_bytes(value[2..18].try_into().ok()?),
            original: QueueId(u64::from_be_bytes(value[18..26].try_into().ok()?)),
            accepted_ms: u64::from_be_bytes(value[26..34].try_into().ok()?),
        })
    }
}

/// The record key of a claim made at `accepted_ms`.
pub fn index_key(kind: Kind, accepted_ms: u64, claim_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + claim_key.len());
    key.push(kind as u8);
    key.extend_from_slice(&accepted_ms.to_be_bytes());
    key.extend_from_slice(claim_key);
    key
}

/// The acceptance time and claim key of a record key ([`index_key`]);
/// `None` for a key too short to be one.
pub fn parse_index_key(key: &[u8]) -> Option<(u64, &[u8])> {
    let time = key.get(1..9)?.try_into().ok()?;
    Some((u64::from_be_bytes(time), key.get(9..)?))
}

/// The changes that record `claims` for the message `original`, to commit
/// with it. The claims were taken in memory first ([`claims::Claims::take`]).
pub fn claim_changes(
    claims: &[Claim],
    fingerprint: u128,
    original: QueueId,
    accepted_ms: u64,
) -> Vec<Change> {
    claims
        .iter()
        .map(|claim| Change::PutRecord {
            table: CLAIMS,
            key: index_key(claim.kind, accepted_ms, &claim.key),
            value: Remembered {
                kind: claim.kind,
                fingerprint,
                original,
                accepted_ms,
            }
            .encode(),
        })
        .collect()
}

/// How intake answers a message whose claim is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// The same message: `250 … queued as ORIGINAL (duplicate)`, nothing stored.
    Duplicate(QueueId),
    /// Another message under the same key: `554 5.6.0`.
    Conflict(QueueId),
}

impl Repeat {
    /// Judges a message with `fingerprint` against the claim it collided
    /// with.
    pub fn of(remembered: &Remembered, fingerprint: u128) -> Repeat {
        if remembered.fingerprint == fingerprint {
            Repeat::Duplicate(remembered.original)
        } else {
            Repeat::Conflict(remembered.original)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_the_user_else_the_host_with_loopback_as_one() {
        let local = |address: &str| Scope::of(None, address.parse().unwrap());
        assert_eq!(local("127.0.0.1"), Scope::Local);
        assert_eq!(local("127.9.9.9"), Scope::Local);
        assert_eq!(local("::1"), Scope::Local);
        assert_eq!(local("::ffff:127.0.0.1"), Scope::Local);
        assert_eq!(
            local("::ffff:192.0.2.7"),
            Scope::Host("192.0.2.7".parse().unwrap())
        );
        assert_eq!(
            Scope::of(Some("alice"), "127.0.0.1".parse().unwrap()),
            Scope::User("alice")
        );
        let keys: Vec<Vec<u8>> = [
            Scope::User("alice"),
            Scope::User("bob"),
            Scope::Local,
            Scope::Host("192.0.2.7".parse().unwrap()),
        ]
        .into_iter()
        .map(|scope| Claim::key(scope, "k").key)
        .collect();
        for (index, key) in keys.iter().enumerate() {
            assert!(!keys[index + 1..].contains(key), "{key:?}");
        }
        assert_eq!(Claim::key(Scope::Local, "k").key, b"host:local\0k");
        assert_ne!(
            Claim::maildrop_file("k").key,
            Claim::key(Scope::Local, "k").key
        );
    }

    #[test]
    fn a_remembered_claim_round_trips_and_judges_repeats() {
        let remembered = Remembered {
            kind: Kind::MaildropFile,
            fingerprint: u128::MAX - 7,
            original: QueueId(0x0123_4567_89AB),
            accepted_ms: 1_790_000_000_123,
        };
        let value = remembered.encode();
        assert_eq!(Remembered::decode(&value), Some(remembered));
        assert_eq!(
            Repeat::of(&remembered, u128::MAX - 7),
            Repeat::Duplicate(remembered.original)
        );
        assert_eq!(
            Repeat::of(&remembered, 1),
            Repeat::Conflict(remembered.original)
        );
        assert_eq!(Remembered::decode(&value[1..]), None);
        let mut future = value.clone();
        future[0] = 2;
        assert_eq!(Remembered::decode(&future), None);
    }

    #[test]
    fn the_time_index_sorts_by_kind_then_time() {
        let early = index_key(Kind::Key, 5, b"zzz");
        let late = index_key(Kind::Key, 256, b"aaa");
        let file = index_key(Kind::MaildropFile, 1, b"aaa");
        assert!(early < late && late < file);
        assert_eq!(parse_index_key(&late), Some((256, &b"aaa"[..])));
        assert_eq!(parse_index_key(&late[..8]), None);
        assert_eq!(
            Kind::MaildropFile.retention(Duration::from_secs(1)),
            MAILDROP_RETENTION
        );
        assert_eq!(
            Kind::Key.retention(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }
}
