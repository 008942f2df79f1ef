//! A report sent by mail (RFC 8460 §5.3): the message, written by
//! mail-auth (`multipart/report; report-type=tlsrpt`, a text part and the
//! gzip attachment named as §5.1 says, with `TLS-Report-Domain`,
//! `TLS-Report-Submitter` and the §5.3 subject), and the envelope it is
//! queued with in the low lane. Pure.

use std::time::SystemTime;

use mail_auth::report::tlsrpt::TlsReport;

use crate::queue::envelope::{Notify, Recipient};
use crate::queue::{Envelope, Lane};

/// Lines of a rewritten header field are folded before this length
/// (RFC 5322 §2.1.1).
const LINE_LENGTH: usize = 78;

/// The message carrying `report` (its gzip: `compressed`) on `domain`
/// from `from` (whose domain is `submitter`) to the `mailto:` addresses
/// `to`.
pub fn build(
    report: &TlsReport,
    compressed: &[u8],
    domain: &str,
    submitter: &str,
    from: &str,
    to: &[String],
) -> Vec<u8> {
    let mut message = Vec::with_capacity(compressed.len() * 4 / 3 + 2048);
    report
        .write_rfc5322_from_bytes(
            domain,
            submitter,
            from,
            to.iter().map(String::as_str),
            compressed,
            &mut message,
        )
        .expect("writing a message into memory does not fail");
    // mail-builder writes any unstructured field longer than a line as
    // encoded words; RFC 8460 §5.3 gives the subject's own ABNF (words
    // separated by folding white space), which an encoded word is not.
    let subject = format!(
        "Report Domain: {domain} Submitter: {submitter} Report-ID: <{}>",
        report.report_id
    );
    replace_field(&message, "Subject", &subject)
}

/// `message` with the value of its `name` field replaced by `value`,
/// folded at its spaces.
fn replace_field(message: &[u8], name: &str, value: &str) -> Vec<u8> {
    let header_end =
        memchr::memmem::find(message, b"\r\n\r\n").map_or(message.len(), |end| end + 2);
    let mut start = 0;
    while start < header_end {
        let mut end = start;
        loop {
            end = memchr::memchr(b'\n', &message[end..header_end])
                .map_or(header_end, |at| end + at + 1);
            if end >= header_end || !matches!(message[end], b' ' | b'\t') {
                break;
            }
        }
        let field = &message[start..end];
        let is_named = field.len() > name.len()
            && field[..name.len()].eq_ignore_ascii_case(name.as_bytes())
            && field[name.len()] == b':';
        if is_named {
            let mut rewritten = Vec::with_capacity(message.len() + value.len());
            rewritten.extend_from_slice(&message[..start]);
            rewritten.extend_from_slice(folded(name, value).as_bytes());
            rewritten.extend_from_slice(&message[end..]);
            return rewritten;
        }
        start = end;
    }
    message.to_vec()
}

/// `name: value`, CRLF-terminated, a line break put before a word that
/// would take a line past [`LINE_LENGTH`].
fn folded(name: &str, value: &str) -> String {
    let mut field = format!("{name}:");
    let mut line = field.len();
    for word in value.split(' ').filter(|word| !word.is_empty()) {
        if line + 1 + word.len() > LINE_LENGTH && line > name.len() + 1 {
            field.push_str("\r\n");
            line = 0;
        }
        field.push(' ');
        field.push_str(word);
        line += 1 + word.len();
    }
    field.push_str("\r\n");
    field
}

/// The envelope of a report message of `size` octets: from `from` (the
/// submitter's address, RFC 8460 §5.3) to `to`, in the low lane, asking
/// for no DSN (NOTIFY=NEVER: a report that cannot be delivered is retried
/// and, past `retry.max_age`, dropped with a log line, never bounced to a
/// no-reply address), and marked as a report.
pub fn envelope(from: &str, to: &[String], now: SystemTime, size: u64) -> Envelope {
    let recipients = to
        .iter()
        .map(|address| Recipient {
            notify: Notify {
                never: true,
                ..Notify::default()
            },
            ..Recipient::new(address.clone())
        })
        .collect();
    let mut envelope = Envelope::new(from.to_owned(), recipients, Lane::Low, now, size);
    envelope.smtputf8 = to.iter().any(|address| !address.is_ascii());
    envelope.tls_report = true;
    envelope
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::GzDecoder;
    use mail_auth::report::tlsrpt::{DateRange, PolicyDetails, PolicyType, Summary};
    use mail_parser::{MessageParser, MimeHeaders};

    use super::*;
    use crate::tls_rpt::report;

    fn sample() -> TlsReport {
        TlsReport {
            organization_name: Some("Example Inc".into()),
            date_range: DateRange::from_timestamps(1_459_468_800, 1_459_555_199),
            contact_info: Some("tlsrpt@example.com".into()),
            report_id: "1459468800.1459555200.example.org@relay.example.com".into(),
            policies: vec![mail_auth::report::tlsrpt::Policy {
                policy: PolicyDetails::new(PolicyType::Sts, "example.org"),
                summary: Summary {
                    total_success: 5,
                    total_failure: 0,
                },
                failure_details: vec![],
            }],
        }
    }

    #[test]
    fn the_message_is_a_tlsrpt_report_with_the_gzip_attached() {
        let report = sample();
        let compressed = report::gzip(&report);
        let to = vec![
            "tls@example.org".to_string(),
            "more@example.net".to_string(),
        ];
        let message = build(
            &report,
            &compressed,
            "example.org",
            "relay.example.com",
            "tlsrpt-noreply@relay.example.com",
            &to,
        );
        assert!(message.is_ascii());
        assert_eq!(
            message
                .windows(b"\nSubject:".len())
                .filter(|window| window == b"\nSubject:")
                .count(),
            1
        );
        assert!(
            !message
                .windows(2)
                .any(|pair| pair[1] == b'\n' && pair[0] != b'\r')
        );
        let parsed = MessageParser::new().parse(&message).expect("parses");
        let header = |name: &str| {
            parsed
                .header_raw(name)
                .unwrap_or_else(|| panic!("no {name}"))
                .trim()
                .to_string()
        };
        assert_eq!(header("TLS-Report-Domain"), "example.org");
        assert_eq!(header("TLS-Report-Submitter"), "relay.example.com");
        // The subject as RFC 8460 §5.3 writes it: plain words, folded.
        assert_eq!(
            parsed.subject(),
            Some(
                "Report Domain: example.org Submitter: relay.example.com \
                 Report-ID: <1459468800.1459555200.example.org@relay.example.com>"
            )
        );
        assert!(!header("Subject").contains("=?"), "{}", header("Subject"));
        let text = String::from_utf8(message.clone()).unwrap();
        let subject_lines: Vec<&str> = text
            .lines()
            .skip_while(|line| !line.starts_with("Subject:"))
            .take(2)
            .collect();
        assert!(subject_lines[1].starts_with(' '), "{text}");
        assert!(
            subject_lines.iter().all(|line| line.len() <= LINE_LENGTH),
            "{text}"
        );
        assert!(text.lines().all(|line| line.len() <= 998));
        assert!(header("From").contains("tlsrpt-noreply@relay.example.com"));
        assert!(header("To").contains("more@example.net"));
        assert!(parsed.date().is_some() && parsed.message_id().is_some());
        let content_type = parsed.content_type().expect("Content-Type");
        assert_eq!(content_type.ctype(), "multipart");
        assert_eq!(content_type.subtype(), Some("report"));
        assert_eq!(content_type.attribute("report-type"), Some("tlsrpt"));

        let attachment = parsed.attachment(0).expect("one attachment");
        let attachment_type = attachment.content_type().unwrap();
        assert_eq!(attachment_type.ctype(), "application");
        assert_eq!(attachment_type.subtype(), Some("tlsrpt+gzip"));
        // RFC 8460 §5.1: sender!policy-domain!begin!end.json.gz
        assert_eq!(
            attachment.attachment_name(),
            Some("relay.example.com!example.org!1459468800!1459555199.json.gz")
        );
        assert_eq!(attachment.contents(), compressed.as_slice());
        let mut json = String::new();
        GzDecoder::new(attachment.contents())
            .read_to_string(&mut json)
            .unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            value["policies"][0]["summary"]["total-successful-session-count"],
            5
        );
    }

    #[test]
    fn the_envelope_is_a_low_lane_report_without_dsns() {
        let to = vec![
            "tls@example.org".to_string(),
            "rapports@exämple.fr".to_string(),
        ];
        let envelope = envelope(
            "tlsrpt-noreply@relay.example.com",
            &to,
            SystemTime::now(),
            1234,
        );
        assert_eq!(envelope.reverse_path, "tlsrpt-noreply@relay.example.com");
        assert_eq!(envelope.lane, Lane::Low);
        assert!(envelope.tls_report);
        assert!(envelope.smtputf8);
        assert_eq!(envelope.size, 1234);
        assert_eq!(envelope.recipients.len(), 2);
        assert!(
            envelope
                .recipients
                .iter()
                .all(|recipient| recipient.notify.never)
        );
        assert!(envelope.client_address.is_none());
    }
}
