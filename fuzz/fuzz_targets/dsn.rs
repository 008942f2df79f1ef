//! DSN building from arbitrary replies, addresses and stored messages: it
//! never panics, and the report is valid: every line ends in CRLF (no bare
//! LF, no lone CR), no line is over 998 octets, it parses with mail-parser
//! as a `multipart/report` of three parts whose delivery-status part is
//! 7-bit.
//!
//! Input layout, so that seeds are readable: a control segment (flags and
//! times), then text fields separated by 0xFF (which never occurs in UTF-8):
//! reporting MTA, queue id, sender, ENVID, Message-ID, then per recipient the
//! final recipient, ORCPT, status, remote MTA and diagnostic; whatever
//! follows is the stored message. An empty optional field means "absent".
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use mail_parser::{MessageParser, MimeHeaders};
use relayq::fuzzing::{Action, BounceClass, Report, ReportedRecipient, Ret, build_dsn};

const SEPARATOR: u8 = 0xFF;
const PER_MESSAGE_FIELDS: usize = 5;
const PER_RECIPIENT_FIELDS: usize = 5;

struct Control {
    ret: Option<Ret>,
    actions: Vec<Action>,
    arrival: SystemTime,
    now: SystemTime,
    last_attempt: Option<SystemTime>,
    will_retry_until: Option<SystemTime>,
    /// Per recipient, after everything else (so a short control segment
    /// leaves them absent).
    classes: Vec<Option<BounceClass>>,
}

fn time(input: &mut Unstructured) -> Result<SystemTime> {
    Ok(UNIX_EPOCH + Duration::from_millis(input.arbitrary()?))
}

fn control(input: &mut Unstructured) -> Result<Control> {
    let ret = *input.choose(&[None, Some(Ret::Headers), Some(Ret::Full)])?;
    let count = input.int_in_range(1..=3usize)?;
    let actions = (0..count)
        .map(|_| {
            input
                .choose(&[Action::Failed, Action::Delayed, Action::Relayed])
                .copied()
        })
        .collect::<Result<_>>()?;
    Ok(Control {
        ret,
        actions,
        arrival: time(input)?,
        now: time(input)?,
        last_attempt: input
            .arbitrary::<bool>()?
            .then(|| time(input))
            .transpose()?,
        will_retry_until: input
            .arbitrary::<bool>()?
            .then(|| time(input))
            .transpose()?,
        classes: (0..count)
            .map(|_| {
                let index = input.int_in_range(0..=BounceClass::ALL.len()).unwrap_or(0);
                index.checked_sub(1).map(|index| BounceClass::ALL[index])
            })
            .collect(),
    })
}

fn optional(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// Every line ends in CRLF and is at most 998 octets (RFC 5322 §2.1.1).
fn assert_lines(bytes: &[u8]) {
    assert!(bytes.ends_with(b"\r\n"), "the report ends with CRLF");
    for (index, &byte) in bytes.iter().enumerate() {
        match byte {
            b'\r' => assert_eq!(bytes.get(index + 1), Some(&b'\n'), "lone CR at {index}"),
            b'\n' => assert!(index > 0 && bytes[index - 1] == b'\r', "bare LF at {index}"),
            _ => {}
        }
    }
    for (number, line) in bytes.split(|&byte| byte == b'\n').enumerate() {
        let length = line.strip_suffix(b"\r").unwrap_or(line).len();
        assert!(length <= 998, "line {number} has {length} octets");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut segments = data.splitn(2, |&byte| byte == SEPARATOR);
    let Ok(control) = control(&mut Unstructured::new(segments.next().unwrap_or_default())) else {
        return;
    };
    let fields_wanted = PER_MESSAGE_FIELDS + PER_RECIPIENT_FIELDS * control.actions.len();
    let rest = segments.next().unwrap_or_default();
    let mut pieces = rest.splitn(fields_wanted + 1, |&byte| byte == SEPARATOR);
    let mut fields: Vec<String> = Vec::with_capacity(fields_wanted);
    for _ in 0..fields_wanted {
        fields.push(String::from_utf8_lossy(pieces.next().unwrap_or_default()).into_owned());
    }
    let original = pieces.next().unwrap_or_default();

    let (message_fields, recipient_fields) = fields.split_at(PER_MESSAGE_FIELDS);
    let [reporting_mta, queue_id, sender, envid, message_id] = message_fields else {
        unreachable!("split at the per-message field count");
    };
    if sender.is_empty() {
        // The caller never reports on a message from `<>`.
        return;
    }
    let recipients: Vec<ReportedRecipient> = recipient_fields
        .chunks(PER_RECIPIENT_FIELDS)
        .zip(&control.actions)
        .zip(&control.classes)
        .map(|((fields, &action), &class)| ReportedRecipient {
            final_recipient: fields[0].clone(),
            original_recipient: optional(&fields[1]),
            action,
            status: fields[2].clone(),
            remote_mta: optional(&fields[3]),
            diagnostic: optional(&fields[4]),
            last_attempt: control.last_attempt,
            will_retry_until: control.will_retry_until,
            class,
        })
        .collect();
    let envid = optional(envid);
    let report = Report {
        reporting_mta,
        queue_id,
        sender,
        envid: envid.as_deref(),
        arrival: control.arrival,
        ret: control.ret,
        recipients: &recipients,
        original,
        now: control.now,
        message_id: message_id.clone(),
    };

    let dsn = build_dsn(&report);
    assert_lines(&dsn);
    let message = MessageParser::default()
        .parse(&dsn[..])
        .expect("the report parses");
    let content_type = message
        .content_type()
        .expect("the report has a Content-Type");
    assert_eq!(content_type.ctype(), "multipart");
    assert_eq!(content_type.subtype(), Some("report"));
    let parts = message.parts[0].sub_parts().expect("a multipart message");
    assert_eq!(parts.len(), 3, "three parts");
    let status = &message.parts[parts[1] as usize];
    assert!(
        status.contents().is_ascii(),
        "the delivery-status part is 7-bit"
    );
});
