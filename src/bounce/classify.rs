//! The classifier: a reply (or a local condition written as one) → its
//! [`BounceClass`]. Pure; built by `live::Live::build` and handed to the
//! delivery passes through the live settings, so a reload replaces the
//! operator's rules without touching work in flight.
//!
//! The order (docs/events.md, "How a reply is classified"):
//! 1. the operator's rules (`bounce.rules_file`), in file order;
//! 2. for a server's reply, the built-in phrases that decide whatever the
//!    enhanced status code says ([`rules::OVERRIDES`]: blocklists, rate
//!    refusals, providers that misuse a code);
//! 3. an enhanced status code (RFC 3463) that decides ([`status::verdict`]);
//! 4. the built-in wordings ([`rules::WORDINGS`]);
//! 5. the class an ambiguous status code suggests (`X.7.1` → `policy`);
//! 6. the basic reply code (`552` → `mailbox_full`);
//! 7. `unclassified`.
//!
//! Local conditions (code 0) carry relayq's own exact status code, so for
//! them step 2 is skipped: a domain name in the text cannot outvote it.

use std::sync::Arc;

use super::BounceClass;
use super::operator::OperatorRules;
use super::rules::{self, Compiled, first_match};
use super::status::{self, Status, Verdict};
use crate::outcome::RemoteReply;

/// The built-in rules, compiled once at start and shared by every
/// generation of live settings.
#[derive(Debug)]
pub struct BuiltinRules {
    overrides: Vec<Compiled>,
    wordings: Vec<Compiled>,
}

impl BuiltinRules {
    /// Fails only if a built-in pattern does not compile (a unit test
    /// guards them).
    pub fn compile() -> Result<BuiltinRules, regex::Error> {
        Ok(BuiltinRules {
            overrides: rules::compile_table(rules::OVERRIDES)?,
            wordings: rules::compile_table(rules::WORDINGS)?,
        })
    }

    /// Steps 2 to 7 of the module's order.
    fn classify(&self, reply: &RemoteReply, subject: &str) -> BounceClass {
        let temporary = !reply.is_permanent();
        if !reply.is_local()
            && let Some(class) = first_match(&self.overrides, subject, temporary)
        {
            return class;
        }
        let verdict = Status::parse(&reply.status).and_then(status::verdict);
        if let Some(Verdict::Decided(class)) = verdict {
            return class;
        }
        if let Some(class) = first_match(&self.wordings, subject, temporary) {
            return class;
        }
        if let Some(Verdict::Suggested(class)) = verdict {
            return class;
        }
        status::by_reply_code(reply.code).unwrap_or(BounceClass::Unclassified)
    }
}

/// The operator's rules and the built-in ones. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Classifier {
    operator: OperatorRules,
    builtin: Arc<BuiltinRules>,
}

impl Classifier {
    pub fn new(operator: OperatorRules, builtin: Arc<BuiltinRules>) -> Classifier {
        Classifier { operator, builtin }
    }

    /// The built-in rules, for the next generation of live settings.
    pub fn builtin(&self) -> &Arc<BuiltinRules> {
        &self.builtin
    }

    /// The class of a failed attempt's reply. The rules see the reply as
    /// `queue show` and the log print it: `CODE STATUS TEXT`, or `STATUS
    /// TEXT` for a local condition.
    pub fn classify(&self, reply: &RemoteReply) -> BounceClass {
        let subject = reply.to_string();
        self.operator
            .classify(&subject)
            .unwrap_or_else(|| self.builtin.classify(reply, &subject))
    }
}

#[cfg(test)]
mod tests;
