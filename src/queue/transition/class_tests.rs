//! Unit tests of bounce classes in transitions: what a failure's class
//! is, and where it goes (envelope, announcement, report).

use std::sync::Arc;
use std::time::Duration;

use super::tests::{at, classifier, envelope, policy, result};
use super::*;
use crate::bounce::{BuiltinRules, OperatorRules};

fn reply_result(index: usize, outcome: Outcome, line: (u16, &str, &str)) -> RecipientResult {
    let (code, status, text) = line;
    RecipientResult {
        reply: RemoteReply {
            code,
            status: status.to_owned(),
            text: text.to_owned(),
        },
        ..result(index, outcome, code, status)
    }
}

#[test]
fn failures_carry_their_class_to_the_envelope_the_announcement_and_the_report() {
    let mut pass = PassResults::new(envelope(&["a@x.org", "b@x.org", "c@x.org"]));
    pass.record(
        vec![
            reply_result(0, Outcome::Delivered, (250, "2.0.0", "ok")),
            reply_result(
                1,
                Outcome::Bounced,
                (
                    550,
                    "5.7.1",
                    "Client host [192.0.2.1] blocked using zen.spamhaus.org",
                ),
            ),
            reply_result(
                2,
                Outcome::Deferred,
                (
                    452,
                    "4.2.2",
                    "The email account that you tried to reach is over quota",
                ),
            ),
        ],
        Duration::ZERO,
        at(1),
        &classifier(),
    );
    let classes: Vec<Option<BounceClass>> = pass
        .envelope
        .recipients
        .iter()
        .map(|recipient| recipient.class)
        .collect();
    assert_eq!(
        classes,
        vec![
            None,
            Some(BounceClass::SpamBlock),
            Some(BounceClass::MailboxFull)
        ]
    );
    let announced: Vec<(EventKind, Option<BounceClass>)> = pass
        .recipients
        .iter()
        .map(|change| (change.kind, change.class))
        .collect();
    assert_eq!(
        announced,
        vec![
            (EventKind::Delivered, None),
            (EventKind::Bounced, Some(BounceClass::SpamBlock)),
            (EventKind::Deferred, Some(BounceClass::MailboxFull)),
        ]
    );
    assert_eq!(pass.notes.len(), 1);
    assert_eq!(pass.notes[0].class, Some(BounceClass::SpamBlock));

    // Delivered on the next pass: the class of the old failure goes.
    let mut next = PassResults::new(pass.envelope.clone());
    next.record(
        vec![reply_result(2, Outcome::Delivered, (250, "2.0.0", "ok"))],
        Duration::ZERO,
        at(400),
        &classifier(),
    );
    assert_eq!(next.envelope.recipients[2].class, None);
    let mut stored = pass.envelope;
    mark_delivered(&mut stored, &[2]);
    assert_eq!(stored.recipients[2].class, None);
}

#[test]
fn the_operators_rules_decide_first() {
    let operator =
        OperatorRules::compile(vec![(BounceClass::Policy, "over quota".to_owned())]).unwrap();
    let classifier = Classifier::new(operator, Arc::new(BuiltinRules::compile().unwrap()));
    let mut pass = PassResults::new(envelope(&["a@x.org"]));
    pass.record(
        vec![reply_result(
            0,
            Outcome::Deferred,
            (452, "4.2.2", "over quota"),
        )],
        Duration::ZERO,
        at(1),
        &classifier,
    );
    assert_eq!(pass.recipients[0].class, Some(BounceClass::Policy));
}

#[test]
fn expiry_operator_bounces_waits_and_delay_warnings_have_their_class() {
    // Expiry: `expired`, whatever the last reply was.
    let mut pass = PassResults::new(envelope(&["a@x.org"]));
    let now = at(5 * 86400 + 1);
    pass.record(
        vec![reply_result(
            0,
            Outcome::Deferred,
            (421, "4.7.0", "Too many concurrent SMTP connections"),
        )],
        Duration::ZERO,
        now,
        &classifier(),
    );
    assert_eq!(pass.recipients[0].class, Some(BounceClass::RateLimited));
    let expired = pass.finish(QueueId(1), None, &policy(None), now, 0.5);
    let change = expired
        .recipients
        .iter()
        .find(|change| change.kind == EventKind::Expired)
        .unwrap();
    assert_eq!(change.class, Some(BounceClass::Expired));
    assert_eq!(expired.notes[0].class, Some(BounceClass::Expired));
    assert_eq!(
        expired.envelope.recipients[0].class,
        Some(BounceClass::Expired)
    );

    // An operator's bounce: `admin`.
    let bounced = operator(
        QueueId(1),
        envelope(&["a@x.org"]),
        Operation::Bounce,
        at(10),
    );
    assert_eq!(bounced.recipients[0].class, Some(BounceClass::Admin));
    assert_eq!(bounced.notes[0].class, Some(BounceClass::Admin));
    assert_eq!(
        bounced.envelope.recipients[0].class,
        Some(BounceClass::Admin)
    );

    // A wait is stored with its class (it is the recipient's last reply).
    let mut message = envelope(&["a@x.org"]);
    message.recipients[0].notify.delay = true;
    let mut pass = PassResults::new(message);
    pass.record(
        vec![RecipientResult {
            index: 0,
            outcome: Outcome::Waiting {
                until: at(5 * 3600 + 60),
            },
            reply: RemoteReply::local("4.7.0", "destination x rate limit: next start in 7.0s"),
            relay: None,
            next_hop_offers_dsn: false,
            protection: Default::default(),
        }],
        Duration::ZERO,
        at(5 * 3600),
        &classifier(),
    );
    assert_eq!(
        pass.envelope.recipients[0].class,
        Some(BounceClass::RateLimited)
    );
    // The delay warning reports the class of the last try.
    let warning = Some(Duration::from_secs(4 * 3600));
    let warned = pass.finish(QueueId(1), None, &policy(warning), at(5 * 3600), 0.5);
    assert_eq!(warned.notes[0].kind, NoteKind::Delayed);
    assert_eq!(warned.notes[0].class, Some(BounceClass::RateLimited));
}
