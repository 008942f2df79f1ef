//! The bounce class: why a recipient failed, in one of a fixed set of words
//! that applications, `queue show`, logs, events and metrics share
//! (docs/events.md, "Bounce classes").
//!
//! The names are a contract: they appear in JSON, log lines, DSNs, metric
//! labels, the operator's rules file and (later) suppression entries.
//! Never rename one; a new class is a new variant at the end.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a delivery attempt failed, or why a recipient was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BounceClass {
    /// The address does not exist at the destination (`5.1.1 user unknown`).
    InvalidRecipient,
    /// The mailbox exists but is disabled, closed or abandoned (`5.2.1`).
    InactiveMailbox,
    /// The recipient's domain does not exist or accepts no mail (NXDOMAIN,
    /// null MX).
    BadDomain,
    /// The mailbox (or the receiving system) is out of space (`5.2.2`).
    MailboxFull,
    /// The message is larger than the receiver takes (`5.3.4`, `5.2.3`).
    MessageTooLarge,
    /// Refused for the sender's reputation: blocklists, low IP or domain
    /// reputation, rate refusals by policy.
    SpamBlock,
    /// Refused for what the message contains: spam or virus filters.
    SpamContent,
    /// Refused by the receiver's policy: DMARC, SPF/DKIM failures, relay
    /// denied, greylisting, and other policy.
    Policy,
    /// TLS could not be used as required (STARTTLS missing, a failed
    /// handshake, an MTA-STS or DANE refusal).
    TlsFailure,
    /// A DNS lookup failed for now (timeout, SERVFAIL).
    DnsFailure,
    /// No connection, a timeout, or a connection lost.
    ConnectionFailure,
    /// The two sides did not understand each other (syntax, sequence, a
    /// needed extension the receiver lacks).
    ProtocolError,
    /// The receiver asks the sender to slow down (421/450/451 rate replies).
    RateLimited,
    /// The recipient was still undelivered at `retry.max_age`.
    Expired,
    /// An operator bounced the message.
    Admin,
    /// No rule recognised the reply.
    Unclassified,
}

impl BounceClass {
    /// Every class, in the order of the documentation.
    pub const ALL: [BounceClass; 16] = [
        BounceClass::InvalidRecipient,
        BounceClass::InactiveMailbox,
        BounceClass::BadDomain,
        BounceClass::MailboxFull,
        BounceClass::MessageTooLarge,
        BounceClass::SpamBlock,
        BounceClass::SpamContent,
        BounceClass::Policy,
        BounceClass::TlsFailure,
        BounceClass::DnsFailure,
        BounceClass::ConnectionFailure,
        BounceClass::ProtocolError,
        BounceClass::RateLimited,
        BounceClass::Expired,
        BounceClass::Admin,
        BounceClass::Unclassified,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BounceClass::InvalidRecipient => "invalid_recipient",
            BounceClass::InactiveMailbox => "inactive_mailbox",
            BounceClass::BadDomain => "bad_domain",
            BounceClass::MailboxFull => "mailbox_full",
            BounceClass::MessageTooLarge => "message_too_large",
            BounceClass::SpamBlock => "spam_block",
            BounceClass::SpamContent => "spam_content",
            BounceClass::Policy => "policy",
            BounceClass::TlsFailure => "tls_failure",
            BounceClass::DnsFailure => "dns_failure",
            BounceClass::ConnectionFailure => "connection_failure",
            BounceClass::ProtocolError => "protocol_error",
            BounceClass::RateLimited => "rate_limited",
            BounceClass::Expired => "expired",
            BounceClass::Admin => "admin",
            BounceClass::Unclassified => "unclassified",
        }
    }

    /// The position in [`BounceClass::ALL`]: an index for per-class
    /// counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for BounceClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a bounce class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown bounce class {name:?} (expected one of: {})", expected())]
pub struct UnknownClass {
    pub name: String,
}

fn expected() -> String {
    BounceClass::ALL.map(BounceClass::as_str).join(", ")
}

impl FromStr for BounceClass {
    type Err = UnknownClass;

    /// The exact lower-case name, as [`BounceClass::as_str`] writes it.
    fn from_str(name: &str) -> Result<BounceClass, UnknownClass> {
        BounceClass::ALL
            .into_iter()
            .find(|class| class.as_str() == name)
            .ok_or_else(|| UnknownClass {
                name: name.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_serde() {
        for (index, class) in BounceClass::ALL.into_iter().enumerate() {
            assert_eq!(class.index(), index);
            assert_eq!(class.as_str().parse::<BounceClass>(), Ok(class));
            assert_eq!(class.to_string(), class.as_str());
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.as_str()));
            assert_eq!(serde_json::from_str::<BounceClass>(&json).unwrap(), class);
        }
    }

    #[test]
    fn the_contract_names() {
        let names = BounceClass::ALL.map(BounceClass::as_str);
        assert_eq!(
            names,
            [
                "invalid_recipient",
                "inactive_mailbox",
                "bad_domain",
                "mailbox_full",
                "message_too_large",
                "spam_block",
                "spam_content",
                "policy",
                "tls_failure",
                "dns_failure",
                "connection_failure",
                "protocol_error",
                "rate_limited",
                "expired",
                "admin",
                "unclassified",
            ]
        );
    }

    #[test]
    fn unknown_names_say_what_is_expected() {
        let error = "Spam_Block".parse::<BounceClass>().unwrap_err();
        let message = error.to_string();
        assert!(message.contains("\"Spam_Block\""), "{message}");
        assert!(message.contains("spam_block, spam_content"), "{message}");
        assert!(serde_json::from_str::<BounceClass>("\"spam\"").is_err());
    }
}
