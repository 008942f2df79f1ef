//! Bounces that put their recipients on the list: a recipient that failed
//! for good (bounced, or expired) with a class in `suppression.classes` is
//! added in the commit of the transition that records the failure
//! (`Suppression` is one of `QueueHandle::apply_all`'s [`TransitionHook`]s:
//! staged before its commit, told after it).
//!
//! An operator's bounce has class `admin`: it suppresses only when `admin`
//! is listed.

use relayq_spool::Change;

use super::entry::{Entry, Source, normalize, one_line};
use super::{Suppression, store};
use crate::config::SuppressionSettings;
use crate::events::EventKind;
use crate::queue::hooks::{Staged, TransitionHook};
use crate::queue::transition::Transition;

/// The entries a batch of transitions added, staged with their commit.
struct Added {
    entries: Vec<(relayq_spool::QueueId, Entry)>,
    publish: bool,
}

impl TransitionHook for Suppression {
    /// The spool changes that add the transitions' suppressed recipients
    /// (and, with a cluster, queue them for the fleet's stream).
    fn stage(&self, transitions: &[Transition], changes: &mut Vec<Change>) -> Staged {
        let live = self.settings.snapshot();
        let publish = live.config.cluster.redis_url.is_some();
        let mut entries = Vec::new();
        for transition in transitions {
            for entry in suppressed_by(transition, &live.config.suppression) {
                store::put(changes, &entry, publish);
                entries.push((transition.id, entry));
            }
        }
        Box::new(Added { entries, publish })
    }

    /// After the commit: the entries it stored join the set.
    fn committed(&self, _transitions: &[Transition], staged: Staged) {
        let Ok(added) = staged.downcast::<Added>() else {
            return;
        };
        if added.entries.is_empty() {
            return;
        }
        for (id, entry) in &added.entries {
            tracing::info!(
                queue_id = %id,
                "{id}: <{}> added to the suppression list (class {}): later mail to it is refused at RCPT",
                entry.address,
                entry.class
            );
            self.insert(entry);
        }
        self.settled(added.publish);
    }
}

/// The entries `transition` adds under `settings` (pure): one per
/// recipient that bounced or expired with a class that suppresses.
fn suppressed_by(transition: &Transition, settings: &SuppressionSettings) -> Vec<Entry> {
    transition
        .recipients
        .iter()
        .filter(|change| matches!(change.kind, EventKind::Bounced | EventKind::Expired))
        .filter_map(|change| {
            let class = change.class.filter(|class| settings.suppresses(*class))?;
            Some(Entry {
                address: normalize(&change.address),
                class,
                reply: one_line(&change.reply.to_string()),
                time: transition.now,
                source: Source::Bounce,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::bounce::BounceClass;
    use crate::outcome::RemoteReply;
    use crate::queue::transition::{Cause, RecipientChange, Record};
    use crate::queue::{Envelope, Lane};

    fn change(address: &str, kind: EventKind, class: Option<BounceClass>) -> RecipientChange {
        RecipientChange {
            address: address.to_owned(),
            kind,
            reply: RemoteReply {
                code: 550,
                status: "5.1.1".to_owned(),
                text: "<x>: user unknown".to_owned(),
            },
            class,
            cause: Cause::Operator,
            delay: Duration::ZERO,
        }
    }

    fn transition(recipients: Vec<RecipientChange>) -> Transition {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_424_516);
        Transition {
            id: relayq_spool::QueueId(7),
            lane: Lane::High,
            envelope: Envelope::new(String::new(), Vec::new(), Lane::High, now, 1),
            record: Record::Remove,
            recipients,
            notes: Vec::new(),
            delayed: Vec::new(),
            operator: None,
            now,
        }
    }

    #[test]
    fn hard_bounces_of_the_listed_classes_suppress() {
        let transition = transition(vec![
            change(
                "Gone@Example.org",
                EventKind::Bounced,
                Some(BounceClass::InvalidRecipient),
            ),
            change(
                "full@example.org",
                EventKind::Bounced,
                Some(BounceClass::MailboxFull),
            ),
            change(
                "later@example.org",
                EventKind::Deferred,
                Some(BounceClass::InvalidRecipient),
            ),
            change("fine@example.org", EventKind::Delivered, None),
            change(
                "old@example.org",
                EventKind::Expired,
                Some(BounceClass::Expired),
            ),
            change(
                "nxdomain@example.org",
                EventKind::Bounced,
                Some(BounceClass::BadDomain),
            ),
        ]);
        let settings = SuppressionSettings::default();
        let entries = suppressed_by(&transition, &settings);
        let addresses: Vec<&str> = entries.iter().map(|entry| entry.address.as_str()).collect();
        assert_eq!(addresses, ["gone@example.org", "nxdomain@example.org"]);
        let gone = &entries[0];
        assert_eq!(gone.class, BounceClass::InvalidRecipient);
        assert_eq!(gone.source, Source::Bounce);
        assert_eq!(gone.reply, "550 5.1.1 <x>: user unknown");
        assert_eq!(gone.time, transition.now);

        let expired_too = SuppressionSettings {
            classes: vec![BounceClass::Expired],
            ..SuppressionSettings::default()
        };
        let entries = suppressed_by(&transition, &expired_too);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].address, "old@example.org");

        let disabled = SuppressionSettings {
            enabled: false,
            ..SuppressionSettings::default()
        };
        assert!(suppressed_by(&transition, &disabled).is_empty());
    }

    #[test]
    fn an_operators_bounce_suppresses_only_when_admin_is_listed() {
        let transition = transition(vec![change(
            "bounced@example.org",
            EventKind::Bounced,
            Some(BounceClass::Admin),
        )]);
        let default = SuppressionSettings::default();
        assert!(suppressed_by(&transition, &default).is_empty());
        let with_admin = SuppressionSettings {
            classes: vec![BounceClass::Admin],
            ..default
        };
        assert_eq!(suppressed_by(&transition, &with_admin).len(), 1);
    }
}
