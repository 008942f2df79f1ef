//! Unit tests of the pure transition builders: no spool, no clock.

use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use std::sync::Arc;

use super::*;
use crate::bounce::{BuiltinRules, OperatorRules};
use crate::config::RetrySettings;
use crate::queue::envelope::Recipient;

const ARRIVAL: u64 = 1_800_000_000_000;

pub(super) fn at(seconds_after_arrival: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ARRIVAL) + Duration::from_secs(seconds_after_arrival)
}

pub(super) fn envelope(recipients: &[&str]) -> Envelope {
    Envelope::new(
        "app@example.com".to_owned(),
        recipients
            .iter()
            .map(|address| Recipient::new((*address).to_owned()))
            .collect(),
        Lane::High,
        UNIX_EPOCH + Duration::from_millis(ARRIVAL),
        100,
    )
}

pub(super) fn classifier() -> Classifier {
    Classifier::new(
        OperatorRules::default(),
        Arc::new(BuiltinRules::compile().unwrap()),
    )
}

pub(super) fn policy(delay_warning: Option<Duration>) -> RetryPolicy {
    RetryPolicy::new(&RetrySettings {
        initial: Duration::from_secs(300),
        factor: 2.0,
        max: Duration::from_secs(3600),
        max_age: Duration::from_secs(5 * 86400),
        delay_warning,
    })
}

fn target() -> Target {
    Target {
        host: "mx.example.org".to_owned(),
        address: "127.0.0.2:25".parse::<SocketAddr>().unwrap(),
    }
}

pub(super) fn result(index: usize, outcome: Outcome, code: u16, status: &str) -> RecipientResult {
    RecipientResult {
        index,
        outcome,
        reply: RemoteReply {
            code,
            status: status.to_owned(),
            text: "text".to_owned(),
        },
        relay: Some(target()),
        next_hop_offers_dsn: false,
        protection: Default::default(),
    }
}

#[test]
fn results_set_states_and_note_what_the_sender_is_told() {
    let mut message = envelope(&["a@x.org", "b@x.org", "c@x.org"]);
    message.recipients[0].notify.success = true;
    let mut pass = PassResults::new(message);
    let delivered = pass.record(
        vec![
            result(0, Outcome::Delivered, 250, "2.0.0"),
            result(1, Outcome::Bounced, 550, "5.1.1"),
            result(2, Outcome::Deferred, 451, "4.3.0"),
            result(9, Outcome::Delivered, 250, "2.0.0"),
        ],
        Duration::from_secs(3),
        at(3),
        &classifier(),
    );
    assert_eq!(delivered, vec![0]);
    let statuses: Vec<RecipientStatus> = pass
        .envelope
        .recipients
        .iter()
        .map(|recipient| recipient.status)
        .collect();
    assert_eq!(
        statuses,
        vec![
            RecipientStatus::Delivered,
            RecipientStatus::Bounced,
            RecipientStatus::Deferred
        ]
    );
    assert_eq!(
        pass.envelope.recipients[1].last_reply.as_deref(),
        Some("550 5.1.1 text")
    );
    let notes: Vec<(usize, NoteKind)> = pass.notes.iter().map(|n| (n.index, n.kind)).collect();
    assert_eq!(notes, vec![(0, NoteKind::Relayed), (1, NoteKind::Failed)]);
    let kinds: Vec<EventKind> = pass.recipients.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::Delivered,
            EventKind::Bounced,
            EventKind::Deferred
        ]
    );
    assert_eq!(pass.recipients[0].delay, Duration::from_secs(3));
}

#[test]
fn a_next_hop_with_dsn_reports_success_itself() {
    let mut message = envelope(&["a@x.org"]);
    message.recipients[0].notify.success = true;
    let mut pass = PassResults::new(message);
    let mut delivered = result(0, Outcome::Delivered, 250, "2.0.0");
    delivered.next_hop_offers_dsn = true;
    pass.record(vec![delivered], Duration::ZERO, at(1), &classifier());
    assert!(pass.notes.is_empty());
}

#[test]
fn an_early_commit_marks_only_the_delivered_and_announces_only_them() {
    let mut pass = PassResults::new(envelope(&["a@x.org", "b@y.org"]));
    let delivered = pass.record(
        vec![
            result(0, Outcome::Delivered, 250, "2.0.0"),
            result(1, Outcome::Deferred, 421, "4.7.0"),
        ],
        Duration::ZERO,
        at(1),
        &classifier(),
    );
    let early = pass.delivered_early(QueueId(7), delivered, at(1));
    assert_eq!(early.record, Record::MarkDelivered(vec![0]));
    assert_eq!(early.recipients.len(), 1);
    assert_eq!(early.recipients[0].address, "a@x.org");
    assert!(early.notes.is_empty() && early.operator.is_none());
    // The deferral stays with the pass, for its end.
    assert_eq!(pass.recipients.len(), 1);
    assert_eq!(pass.recipients[0].kind, EventKind::Deferred);
}

#[test]
fn marking_delivered_is_idempotent_and_order_free() {
    let stored = envelope(&["a@x.org", "b@y.org", "c@z.org"]);
    let mut first_then_second = stored.clone();
    mark_delivered(&mut first_then_second, &[0]);
    mark_delivered(&mut first_then_second, &[2]);
    let mut second_then_first = stored.clone();
    mark_delivered(&mut second_then_first, &[2]);
    mark_delivered(&mut second_then_first, &[0]);
    mark_delivered(&mut second_then_first, &[0, 9]);
    assert_eq!(first_then_second, second_then_first);
    assert_eq!(
        first_then_second.recipients[1].status,
        RecipientStatus::Pending
    );
}

#[test]
fn a_pass_with_open_recipients_counts_an_attempt_and_schedules_the_next() {
    let mut pass = PassResults::new(envelope(&["a@x.org"]));
    pass.record(
        vec![result(0, Outcome::Deferred, 451, "4.3.0")],
        Duration::ZERO,
        at(10),
        &classifier(),
    );
    let transition = pass.finish(QueueId(1), None, &policy(None), at(10), 0.5);
    assert_eq!(transition.record, Record::Update);
    assert_eq!(transition.envelope.attempts, 1);
    // jitter 0.5 is the middle of ±10%: exactly `initial`.
    assert_eq!(
        transition.envelope.next_attempt_ms,
        Some(unix_ms(at(10) + Duration::from_secs(300)))
    );
    assert!(transition.notes.is_empty());
}

#[test]
fn a_pass_that_finalises_everyone_removes_the_message() {
    let mut pass = PassResults::new(envelope(&["a@x.org", "b@x.org"]));
    pass.record(
        vec![
            result(0, Outcome::Delivered, 250, "2.0.0"),
            result(1, Outcome::Bounced, 550, "5.1.1"),
        ],
        Duration::ZERO,
        at(1),
        &classifier(),
    );
    let transition = pass.finish(QueueId(1), None, &policy(None), at(1), 0.5);
    assert_eq!(transition.record, Record::Remove);
    assert_eq!(transition.notes.len(), 1);
}

#[test]
fn past_max_age_open_recipients_expire_with_a_failure_report() {
    let mut pass = PassResults::new(envelope(&["a@x.org", "b@x.org"]));
    let now = at(5 * 86400 + 1);
    pass.record(
        vec![
            result(0, Outcome::Delivered, 250, "2.0.0"),
            result(1, Outcome::Deferred, 451, "4.3.0"),
        ],
        Duration::ZERO,
        now,
        &classifier(),
    );
    let transition = pass.finish(QueueId(1), None, &policy(None), now, 0.5);
    assert_eq!(transition.record, Record::Remove);
    let expired: Vec<&RecipientChange> = transition
        .recipients
        .iter()
        .filter(|change| change.kind == EventKind::Expired)
        .collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].address, "b@x.org");
    assert_eq!(expired[0].reply.text, "451 4.3.0 text");
    assert_eq!(transition.notes.len(), 1);
    assert_eq!(transition.notes[0].reply.status, "4.4.7");
    assert!(
        transition.notes[0]
            .reply
            .text
            .starts_with("delivery time expired; last reply: 451")
    );
}

#[test]
fn time_on_hold_does_not_count_toward_expiry() {
    let mut message = envelope(&["a@x.org"]);
    // Held for four of the five days.
    message.held_ms = 4 * 86400 * 1000;
    let mut pass = PassResults::new(message);
    let now = at(5 * 86400 + 1);
    pass.record(
        vec![result(0, Outcome::Deferred, 451, "4.3.0")],
        Duration::ZERO,
        now,
        &classifier(),
    );
    let transition = pass.finish(QueueId(1), None, &policy(None), now, 0.5);
    assert_eq!(transition.record, Record::Update);
    assert!(
        transition
            .recipients
            .iter()
            .all(|c| c.kind != EventKind::Expired)
    );
}

#[test]
fn the_delay_warning_goes_once_to_those_who_asked() {
    let mut message = envelope(&["a@x.org", "b@x.org"]);
    message.recipients[0].notify.delay = true;
    let now = at(5 * 3600);
    let mut pass = PassResults::new(message);
    pass.record(
        vec![
            result(0, Outcome::Deferred, 451, "4.3.0"),
            result(1, Outcome::Deferred, 451, "4.3.0"),
        ],
        Duration::ZERO,
        now,
        &classifier(),
    );
    let warning = Some(Duration::from_secs(4 * 3600));
    let transition = pass.finish(QueueId(1), None, &policy(warning), now, 0.5);
    let notes: Vec<(usize, NoteKind)> =
        transition.notes.iter().map(|n| (n.index, n.kind)).collect();
    assert_eq!(notes, vec![(0, NoteKind::Delayed)]);
    // Events go for every open recipient, whatever its NOTIFY.
    assert_eq!(transition.delayed, vec![0, 1]);
    assert!(transition.envelope.delay_warned);
    let again =
        PassResults::new(transition.envelope).finish(QueueId(1), None, &policy(warning), now, 0.5);
    assert!(again.notes.is_empty());
    assert!(again.delayed.is_empty());
}

#[test]
fn operations_left_with_a_pass_are_applied_at_its_end() {
    let deferred = |pending| {
        let mut pass = PassResults::new(envelope(&["a@x.org", "b@x.org"]));
        pass.record(
            vec![
                result(0, Outcome::Delivered, 250, "2.0.0"),
                result(1, Outcome::Deferred, 451, "4.3.0"),
            ],
            Duration::ZERO,
            at(1),
            &classifier(),
        );
        pass.finish(QueueId(1), pending, &policy(None), at(1), 0.5)
    };
    let held = deferred(Some(Operation::Hold));
    assert_eq!(held.record, Record::Update);
    assert!(held.envelope.held);
    assert_eq!(held.operator, Some(OperatorAction::Held));

    let deleted = deferred(Some(Operation::Delete));
    assert_eq!(deleted.record, Record::Remove);
    assert_eq!(deleted.operator, Some(OperatorAction::Deleted));
    assert!(deleted.notes.is_empty());

    let bounced = deferred(Some(Operation::Bounce));
    assert_eq!(bounced.record, Record::Remove);
    let operator_bounces: Vec<&str> = bounced
        .recipients
        .iter()
        .filter(|change| change.cause == Cause::Operator)
        .map(|change| change.address.as_str())
        .collect();
    assert_eq!(operator_bounces, vec!["b@x.org"]);
    assert_eq!(bounced.notes.len(), 1);
    assert_eq!(bounced.notes[0].reply.status, OPERATOR_BOUNCE_STATUS);
}

#[test]
fn operator_operations_on_a_claimed_message() {
    let mut message = envelope(&["a@x.org", "b@x.org"]);
    message.recipients[0].status = RecipientStatus::Delivered;
    message.next_attempt_ms = Some(unix_ms(at(600)));

    let held = operator(QueueId(1), message.clone(), Operation::Hold, at(10));
    assert!(held.envelope.held && held.record == Record::Update);
    assert_eq!(held.envelope.held_since_ms, Some(unix_ms(at(10))));

    let released = operator(QueueId(1), held.envelope, Operation::Release, at(70));
    assert!(!released.envelope.held);
    assert_eq!(released.envelope.held_ms, 60_000);
    assert_eq!(released.envelope.next_attempt_ms, None);
    assert_eq!(released.operator, Some(OperatorAction::Released));

    let retried = operator(QueueId(1), message.clone(), Operation::Retry, at(10));
    assert_eq!(retried.envelope.next_attempt_ms, None);
    assert_eq!(retried.operator, Some(OperatorAction::Retried));

    let deleted = operator(QueueId(1), message.clone(), Operation::Delete, at(10));
    assert_eq!(deleted.record, Record::Remove);
    assert!(deleted.notes.is_empty() && deleted.recipients.is_empty());

    let bounced = operator(QueueId(1), message, Operation::Bounce, at(10));
    assert_eq!(bounced.record, Record::Remove);
    assert_eq!(
        bounced.recipients.len(),
        1,
        "the delivered one stays delivered"
    );
    assert_eq!(bounced.recipients[0].kind, EventKind::Bounced);
    assert_eq!(bounced.recipients[0].delay, Duration::from_secs(10));
    assert_eq!(
        bounced.envelope.recipients[1].last_reply.as_deref(),
        Some("5.0.0 bounced by administrator")
    );
}

#[test]
fn reports_follow_notify_and_never_go_to_the_null_sender() {
    let mut message = envelope(&["a@x.org", "b@x.org", "c@x.org", "d@x.org"]);
    message.recipients[1].notify.never = true;
    message.recipients[2].notify.success = true;
    message.recipients[3].notify.failure = true;
    let note = |index, kind| Note {
        index,
        kind,
        reply: RemoteReply::local("5.0.0", "x"),
        class: None,
        relay: None,
        at: at(0),
    };
    let notes = vec![
        note(0, NoteKind::Failed),
        note(1, NoteKind::Failed),
        note(2, NoteKind::Failed),
        note(3, NoteKind::Failed),
        note(2, NoteKind::Relayed),
    ];
    let selected: Vec<(NoteKind, Vec<usize>)> = reported(&message, &notes)
        .into_iter()
        .map(|(kind, notes)| (kind, notes.iter().map(|n| n.index).collect()))
        .collect();
    // Without NOTIFY failures are reported; NEVER and SUCCESS-only are not.
    assert_eq!(
        selected,
        vec![(NoteKind::Failed, vec![0, 3]), (NoteKind::Relayed, vec![2])]
    );
    assert_eq!(unreported_failures(&message, &notes), 0);

    message.reverse_path.clear();
    assert!(reported(&message, &notes).is_empty());
    assert_eq!(unreported_failures(&message, &notes), 2);
}

#[test]
fn held_back_recipients_wait_without_an_attempt_or_backoff() {
    let mut message = envelope(&["a@x.org", "b@y.org"]);
    message.attempts = 2;
    let mut pass = PassResults::new(message);
    let wait = |index, seconds| RecipientResult {
        index,
        outcome: Outcome::Waiting { until: at(seconds) },
        reply: RemoteReply::local("4.7.0", "destination x rate limit: next start in 7.0s"),
        relay: None,
        next_hop_offers_dsn: false,
        protection: Default::default(),
    };
    pass.record(
        vec![wait(0, 17), wait(1, 12)],
        Duration::ZERO,
        at(10),
        &classifier(),
    );
    assert!(pass.recipients.is_empty(), "a wait is not announced");
    let transition = pass.finish(QueueId(7), None, &policy(None), at(10), 0.5);
    assert_eq!(transition.envelope.attempts, 2, "no attempt counted");
    assert_eq!(transition.record, Record::Update);
    assert_eq!(transition.envelope.next_attempt_ms, Some(unix_ms(at(12))));
    let recipient = &transition.envelope.recipients[0];
    assert_eq!(recipient.status, RecipientStatus::Deferred);
    assert_eq!(
        recipient.last_reply.as_deref(),
        Some("4.7.0 destination x rate limit: next start in 7.0s")
    );
    assert!(transition.recipients.is_empty());
    assert!(transition.notes.is_empty());
}

#[test]
fn an_attempt_beside_a_wait_counts_and_comes_back_at_the_earlier_time() {
    let mut pass = PassResults::new(envelope(&["a@x.org", "b@y.org"]));
    let waiting = RecipientResult {
        index: 1,
        outcome: Outcome::Waiting { until: at(20) },
        reply: RemoteReply::local("4.7.0", "destination y suspended"),
        relay: None,
        next_hop_offers_dsn: false,
        protection: Default::default(),
    };
    pass.record(
        vec![result(0, Outcome::Deferred, 451, "4.3.0"), waiting],
        Duration::ZERO,
        at(10),
        &classifier(),
    );
    let transition = pass
        .clone()
        .finish(QueueId(7), None, &policy(None), at(10), 0.5);
    assert_eq!(transition.envelope.attempts, 1);
    assert_eq!(transition.envelope.next_attempt_ms, Some(unix_ms(at(20))));
    assert_eq!(
        transition.recipients.len(),
        1,
        "only the attempt is announced"
    );

    // A wait longer than the backoff: the backoff decides.
    pass.wait_until = Some(at(100_000));
    let transition = pass.finish(QueueId(7), None, &policy(None), at(10), 0.5);
    let backoff = unix_ms(at(10) + policy(None).delay(1, 0.5));
    assert_eq!(transition.envelope.next_attempt_ms, Some(backoff));
}

#[test]
fn a_wait_past_the_maximum_age_still_expires() {
    let mut pass = PassResults::new(envelope(&["a@x.org"]));
    pass.record(
        vec![RecipientResult {
            index: 0,
            outcome: Outcome::Waiting {
                until: at(6 * 86400),
            },
            reply: RemoteReply::local("4.7.0", "destination x suspended"),
            relay: None,
            next_hop_offers_dsn: false,
            protection: Default::default(),
        }],
        Duration::ZERO,
        at(6 * 86400 - 1),
        &classifier(),
    );
    let transition = pass.finish(QueueId(7), None, &policy(None), at(6 * 86400), 0.5);
    assert_eq!(transition.record, Record::Remove);
    assert_eq!(transition.recipients[0].kind, EventKind::Expired);
}

#[test]
fn a_bulk_delete_needs_no_envelope() {
    let transition = deleted(QueueId(4), Lane::Low, ARRIVAL, at(60));
    assert_eq!(transition.record, Record::Remove);
    assert_eq!(transition.operator, Some(OperatorAction::Deleted));
    assert!(transition.notes.is_empty() && transition.recipients.is_empty());
    assert_eq!(transition.lane, Lane::Low);
    assert_eq!(transition.envelope.arrival(), at(0));
    assert!(reported(&transition.envelope, &transition.notes).is_empty());
}
