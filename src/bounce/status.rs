//! What an enhanced status code (RFC 3463, and the codes registered since in
//! the IANA "SMTP Enhanced Status Codes" registry) says about a failure's
//! class, and what a basic reply code (RFC 5321 §4.2.3) says when there is
//! nothing better. Pure.
//!
//! Some codes decide the class (`X.1.1`: the mailbox does not exist); some
//! only suggest one, because senders use them for many things (`X.7.1`
//! "delivery not authorized" covers blocklists, spam filters and relay
//! refusals alike) and the reply text decides first; generic ones (`X.0.0`,
//! the code relayq derives when a server gives none) say nothing.

use super::BounceClass;

/// An enhanced status code: `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// 2, 4 or 5.
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl Status {
    /// `"5.1.1"` → `5.1.1`; `None` for anything that is not an RFC 3463
    /// code (a class of 2, 4 or 5, then two numbers of 1–3 digits).
    pub fn parse(text: &str) -> Option<Status> {
        let mut parts = text.trim().split('.');
        let class = match parts.next()? {
            "2" => 2,
            "4" => 4,
            "5" => 5,
            _ => return None,
        };
        let number = |part: Option<&str>| -> Option<u16> {
            let part = part?;
            if (1..=3).contains(&part.len()) && part.bytes().all(|byte| byte.is_ascii_digit()) {
                part.parse().ok()
            } else {
                None
            }
        };
        let subject = number(parts.next())?;
        let detail = number(parts.next())?;
        if parts.next().is_some() {
            return None;
        }
        Some(Status {
            class,
            subject,
            detail,
        })
    }

    pub fn is_temporary(self) -> bool {
        self.class == 4
    }
}

/// What a status code says about the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The code means one thing: the reply text is not consulted.
    Decided(BounceClass),
    /// The class when the reply text says nothing more specific.
    Suggested(BounceClass),
}

/// The class an enhanced status code gives, if it gives one. `temporary`
/// is the reply's class (4xx), which splits a few codes: an unroutable
/// domain is a DNS failure while it may recover and a bad domain once the
/// receiver says it will not.
pub fn verdict(status: Status) -> Option<Verdict> {
    use BounceClass::*;
    use Verdict::{Decided, Suggested};
    let temporary = status.is_temporary();
    let verdict = match (status.subject, status.detail) {
        // X.1: addressing.
        (1, 1) | (1, 3) | (1, 4) => Decided(InvalidRecipient),
        (1, 2) | (1, 10) => Decided(BadDomain),
        // Mailbox has moved, no forwarding address.
        (1, 6) => Decided(InactiveMailbox),
        // Bad sender address or sender system: the receiver refuses us.
        (1, 7) | (1, 8) => Decided(Policy),
        (1, _) => Suggested(InvalidRecipient),
        // X.2: the mailbox.
        (2, 1) => Decided(InactiveMailbox),
        (2, 2) => Decided(MailboxFull),
        (2, 3) => Decided(MessageTooLarge),
        // X.3: the mail system.
        (3, 1) => Decided(MailboxFull),
        (3, 2) => Suggested(ConnectionFailure),
        (3, 3) => Decided(ProtocolError),
        (3, 4) => Decided(MessageTooLarge),
        // X.4: network and routing.
        (4, 1) | (4, 2) => Decided(ConnectionFailure),
        (4, 3) => Decided(DnsFailure),
        (4, 4) if temporary => Decided(DnsFailure),
        (4, 4) => Decided(BadDomain),
        (4, 5) => Decided(RateLimited),
        (4, 7) => Decided(Expired),
        (4, _) => Suggested(ConnectionFailure),
        // X.5: the protocol; X.5.3 is "too many recipients".
        (5, 3) => Decided(RateLimited),
        (5, 0) => Suggested(ProtocolError),
        (5, _) => Decided(ProtocolError),
        // X.6: content conversion and internationalisation.
        (6, 0) => Suggested(ProtocolError),
        (6, _) => Decided(ProtocolError),
        // X.7: security and policy.
        (7, 4..=6) | (7, 10) | (7, 11) | (7, 30) => Decided(TlsFailure),
        (7, 16) => Decided(MessageTooLarge),
        // RRVS (RFC 7293): the mailbox, or the domain, has a new owner.
        (7, 17) => Decided(InactiveMailbox),
        (7, 18) => Decided(BadDomain),
        // "Mail flood detected": a rate refusal.
        (7, 28) if temporary => Decided(RateLimited),
        (7, 28) => Decided(SpamBlock),
        (7, 2 | 3 | 7 | 8 | 9 | 12 | 13 | 14 | 15 | 19..=27 | 29) => Decided(Policy),
        // X.7.0, X.7.1 and codes outside the registry (Microsoft's 5.7.606
        // and the like) are used for everything from blocklists to relay
        // refusals.
        (7, _) => Suggested(Policy),
        _ => return None,
    };
    Some(verdict)
}

/// The class a basic reply code gives when neither the enhanced code nor
/// the text decided (RFC 5321 §4.2.2's meanings).
pub fn by_reply_code(code: u16) -> Option<BounceClass> {
    use BounceClass::*;
    match code {
        // Syntax errors, unimplemented commands, bad sequence; parameters
        // not recognised.
        500..=504 | 555 => Some(ProtocolError),
        // Authentication required or refused.
        530 | 535 => Some(Policy),
        // User not local; mailbox name not allowed.
        551 | 553 => Some(InvalidRecipient),
        // Exceeded storage allocation.
        552 => Some(MailboxFull),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::BounceClass::*;
    use super::Verdict::{Decided, Suggested};
    use super::*;

    fn of(text: &str) -> Option<Verdict> {
        verdict(Status::parse(text).unwrap())
    }

    #[test]
    fn parsing_takes_rfc_3463_codes_only() {
        assert_eq!(
            Status::parse("5.1.10"),
            Some(Status {
                class: 5,
                subject: 1,
                detail: 10
            })
        );
        assert_eq!(Status::parse(" 4.7.650 ").map(|s| s.detail), Some(650));
        for bad in [
            "", "5", "5.1", "3.1.1", "5.1.1.1", "5.x.1", "5.1.1000", "5..1",
        ] {
            assert_eq!(Status::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn addressing_codes() {
        assert_eq!(of("5.1.1"), Some(Decided(InvalidRecipient)));
        assert_eq!(of("5.1.3"), Some(Decided(InvalidRecipient)));
        assert_eq!(of("5.1.2"), Some(Decided(BadDomain)));
        assert_eq!(of("5.1.10"), Some(Decided(BadDomain)));
        assert_eq!(of("5.1.6"), Some(Decided(InactiveMailbox)));
        assert_eq!(of("5.1.7"), Some(Decided(Policy)));
        assert_eq!(of("5.1.0"), Some(Suggested(InvalidRecipient)));
    }

    #[test]
    fn mailbox_and_system_codes() {
        assert_eq!(of("5.2.1"), Some(Decided(InactiveMailbox)));
        assert_eq!(of("4.2.2"), Some(Decided(MailboxFull)));
        assert_eq!(of("5.2.3"), Some(Decided(MessageTooLarge)));
        assert_eq!(of("5.3.4"), Some(Decided(MessageTooLarge)));
        assert_eq!(of("4.3.1"), Some(Decided(MailboxFull)));
        assert_eq!(of("5.2.0"), None);
        assert_eq!(of("4.3.0"), None);
    }

    #[test]
    fn network_codes() {
        assert_eq!(of("4.4.1"), Some(Decided(ConnectionFailure)));
        assert_eq!(of("4.4.2"), Some(Decided(ConnectionFailure)));
        assert_eq!(of("4.4.3"), Some(Decided(DnsFailure)));
        assert_eq!(of("4.4.4"), Some(Decided(DnsFailure)));
        assert_eq!(of("5.4.4"), Some(Decided(BadDomain)));
        assert_eq!(of("4.4.5"), Some(Decided(RateLimited)));
        assert_eq!(of("5.4.7"), Some(Decided(Expired)));
        assert_eq!(of("4.4.0"), Some(Suggested(ConnectionFailure)));
        assert_eq!(of("4.4.316"), Some(Suggested(ConnectionFailure)));
    }

    #[test]
    fn protocol_and_content_codes() {
        assert_eq!(of("4.5.3"), Some(Decided(RateLimited)));
        assert_eq!(of("5.5.2"), Some(Decided(ProtocolError)));
        assert_eq!(of("5.5.0"), Some(Suggested(ProtocolError)));
        assert_eq!(of("5.6.7"), Some(Decided(ProtocolError)));
        assert_eq!(of("5.6.0"), Some(Suggested(ProtocolError)));
    }

    #[test]
    fn security_and_policy_codes() {
        assert_eq!(of("4.7.5"), Some(Decided(TlsFailure)));
        assert_eq!(of("4.7.10"), Some(Decided(TlsFailure)));
        assert_eq!(of("5.7.26"), Some(Decided(Policy)));
        assert_eq!(of("5.7.25"), Some(Decided(Policy)));
        assert_eq!(of("5.7.9"), Some(Decided(Policy)));
        assert_eq!(of("4.7.28"), Some(Decided(RateLimited)));
        assert_eq!(of("5.7.28"), Some(Decided(SpamBlock)));
        assert_eq!(of("5.7.17"), Some(Decided(InactiveMailbox)));
        assert_eq!(of("5.7.18"), Some(Decided(BadDomain)));
        assert_eq!(of("5.7.1"), Some(Suggested(Policy)));
        assert_eq!(of("4.7.0"), Some(Suggested(Policy)));
        assert_eq!(of("5.7.606"), Some(Suggested(Policy)));
        assert_eq!(of("5.0.0"), None);
        assert_eq!(of("4.0.0"), None);
    }

    #[test]
    fn reply_codes() {
        assert_eq!(by_reply_code(500), Some(ProtocolError));
        assert_eq!(by_reply_code(503), Some(ProtocolError));
        assert_eq!(by_reply_code(552), Some(MailboxFull));
        assert_eq!(by_reply_code(553), Some(InvalidRecipient));
        assert_eq!(by_reply_code(535), Some(Policy));
        assert_eq!(by_reply_code(550), None);
        assert_eq!(by_reply_code(421), None);
    }
}
