//! Delivery status notifications (RFC 3464 inside an RFC 6522
//! `multipart/report`): the failure, delay and success reports relayq sends
//! to a message's reverse-path.
//!
//! Pure: the caller gathers the recipients that became final (or are
//! delayed) and the stored message, and queues what [`build`] returns.
//! Invariants of the output: every line ends in CRLF and is at most 998
//! octets (RFC 5322 §2.1.1); the `message/delivery-status` part is 7-bit
//! ASCII; the returned message is never quoted-printable or base64; nothing
//! taken from outside (a remote reply, an address) can start a header field
//! or a MIME part of its own.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::SystemTime;

use memchr::memmem;

use crate::bounce::BounceClass;
use crate::queue::envelope::Ret;
use crate::timefmt::rfc5322;
use crate::wire::text::one_line;

/// Max original content returned with RET=FULL; above it only headers are
/// returned and the human part says so.
pub const MAX_RETURNED_MESSAGE: usize = 1024 * 1024;

/// RFC 5322 §2.1.1: at most 998 octets a line, CRLF excluded.
const MAX_LINE: usize = 998;

/// Where the human-readable part wraps its lines.
const TEXT_WIDTH: usize = 76;

/// RFC 3464 §2.3.3 action values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Relayed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Relayed => "relayed",
        }
    }

    /// The status used when the caller's is not an RFC 3463 code.
    fn default_status(self) -> &'static str {
        match self {
            Action::Failed => "5.0.0",
            Action::Delayed => "4.0.0",
            Action::Relayed => "2.0.0",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Action::Failed => "could not be delivered",
            Action::Delayed => "not delivered yet, still trying",
            Action::Relayed => "relayed to a system that does not send delivery reports",
        }
    }
}

/// One recipient's per-recipient block (RFC 3464 §2.3).
#[derive(Debug, Clone)]
pub struct ReportedRecipient {
    /// The address relayq tried.
    pub final_recipient: String,
    /// ORCPT, decoded; emitted as `Original-Recipient: rfc822; <addr>`.
    pub original_recipient: Option<String>,
    pub action: Action,
    /// Enhanced status code (RFC 3463), e.g. "5.1.1", "4.4.7".
    pub status: String,
    /// Host name of the server that answered: `Remote-MTA: dns; mx.example.org`.
    pub remote_mta: Option<String>,
    /// The remote reply, e.g. "550 5.1.1 user unknown", emitted as
    /// `Diagnostic-Code: smtp; …`. Text that is not an SMTP reply (a DNS
    /// failure, a local reason) is typed `X-Relayq;` instead.
    pub diagnostic: Option<String>,
    pub last_attempt: Option<SystemTime>,
    /// Emitted for [`Action::Delayed`] only.
    pub will_retry_until: Option<SystemTime>,
    /// Why it failed (or, delayed, why the last attempt did), emitted as
    /// the extension field `X-Relayq-Class: spam_block` (RFC 3464 §2.4
    /// lets an MTA add `X-` fields to the per-recipient block).
    pub class: Option<BounceClass>,
}

/// Everything one DSN reports on.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// Our host name.
    pub reporting_mta: &'a str,
    /// The original message's queue id, emitted as `X-Relayq-Queue-ID`.
    pub queue_id: &'a str,
    /// The original reverse-path; the DSN goes to it. Never empty: the
    /// caller never reports on a message from `<>`.
    pub sender: &'a str,
    /// ENVID, decoded: `Original-Envelope-Id`.
    pub envid: Option<&'a str>,
    pub arrival: SystemTime,
    /// `None` returns the headers only: RET=HDRS is the default.
    pub ret: Option<Ret>,
    pub recipients: &'a [ReportedRecipient],
    /// The original message as stored (CRLF lines).
    pub original: &'a [u8],
    pub now: SystemTime,
    /// `<…@reporting_mta>`; the caller makes it unique.
    pub message_id: String,
}

/// The complete RFC 5322 message, CRLF line endings.
pub fn build(report: &Report) -> Vec<u8> {
    debug_assert!(!report.sender.is_empty(), "a DSN to <> is never sent");
    debug_assert!(!report.recipients.is_empty(), "RFC 3464 needs a recipient");
    let original = crlf_lines(report.original);
    let returned = Returned::choose(report.ret, &original);
    let human = human_part(report, &returned);
    let status = delivery_status(report);
    let boundary = boundary(
        &report.message_id,
        &[human.as_bytes(), status.as_bytes(), &returned.content],
    );

    let human_encoding = transfer_encoding(human.as_bytes());
    let returned_encoding = transfer_encoding(&returned.content);
    let eight_bit = human_encoding == "8bit" || returned_encoding == "8bit";

    let mut head = String::new();
    push_field(
        &mut head,
        "From",
        &format!(
            "Mail Delivery System <MAILER-DAEMON@{}>",
            one_line(report.reporting_mta)
        ),
    );
    push_field(
        &mut head,
        "To",
        &format!("<{}>", address_text(report.sender)),
    );
    push_field(&mut head, "Subject", Kind::of(report.recipients).subject());
    push_field(&mut head, "Date", &rfc5322(report.now));
    push_field(&mut head, "Message-ID", &one_line(&report.message_id));
    // RFC 3834 §5: keeps vacation responders and other bots from answering.
    push_field(&mut head, "Auto-Submitted", "auto-replied");
    push_field(&mut head, "MIME-Version", "1.0");
    let _ = write!(
        head,
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n"
    );
    push_field(
        &mut head,
        "Content-Transfer-Encoding",
        if eight_bit { "8bit" } else { "7bit" },
    );
    head.push_str("\r\nThis is a MIME-encapsulated message.\r\n");

    let human_head = format!(
        "Content-Description: Notification\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: {human_encoding}\r\n"
    );
    let status_head = "Content-Description: Delivery report\r\n\
                       Content-Type: message/delivery-status\r\n"
        .to_owned();
    let returned_head = if returned.whole {
        format!(
            "Content-Description: Returned message\r\n\
             Content-Type: message/rfc822\r\n\
             Content-Transfer-Encoding: {returned_encoding}\r\n"
        )
    } else {
        format!(
            "Content-Description: Returned message headers\r\n\
             Content-Type: text/rfc822-headers\r\n\
             Content-Transfer-Encoding: {returned_encoding}\r\n"
        )
    };

    let parts: [(&str, &[u8]); 3] = [
        (&human_head, human.as_bytes()),
        (&status_head, status.as_bytes()),
        (&returned_head, &returned.content),
    ];
    let mut out = Vec::with_capacity(
        head.len()
            + parts
                .iter()
                .map(|(h, b)| h.len() + b.len() + 80)
                .sum::<usize>()
            + 80,
    );
    out.extend_from_slice(head.as_bytes());
    for (part_head, body) in parts {
        // The CRLF before a delimiter belongs to the delimiter (RFC 2046 §5.1.1).
        let _ = write!(VecWriter(&mut out), "\r\n--{boundary}\r\n");
        out.extend_from_slice(part_head.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
    }
    let _ = write!(VecWriter(&mut out), "\r\n--{boundary}--\r\n");
    out
}

/// Lets `write!` append formatted text to a byte buffer.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }
}

/// What a report is about as a whole: a failure wins over a delay, which
/// wins over success, so the sender does not overlook bad news in a mixed
/// report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Failure,
    Delay,
    Success,
}

impl Kind {
    fn of(recipients: &[ReportedRecipient]) -> Kind {
        if recipients.iter().any(|r| r.action == Action::Failed) {
            Kind::Failure
        } else if recipients.iter().any(|r| r.action == Action::Delayed) {
            Kind::Delay
        } else {
            Kind::Success
        }
    }

    fn subject(self) -> &'static str {
        match self {
            Kind::Failure => "Undelivered Mail Returned to Sender",
            Kind::Delay => "Delayed Mail (still being retried)",
            Kind::Success => "Successful Mail Delivery Report",
        }
    }

    fn introduction(self) -> &'static str {
        match self {
            Kind::Failure => {
                "Your message could not be delivered to one or more of its recipients. The \
                 system has given up on them; the details are below."
            }
            Kind::Delay => {
                "Your message has not yet been delivered to one or more of its recipients. \
                 The system is still trying, so there is no need to send it again; the \
                 details are below."
            }
            Kind::Success => "This is the delivery report you asked for; the details are below.",
        }
    }
}

/// What goes into the third part: the whole message or its header section.
struct Returned<'a> {
    content: Cow<'a, [u8]>,
    /// `message/rfc822` when true, `text/rfc822-headers` otherwise.
    whole: bool,
    /// Why less than was asked for is returned, for the human part.
    shortened: Option<String>,
}

impl<'a> Returned<'a> {
    fn choose(ret: Option<Ret>, original: &'a [u8]) -> Returned<'a> {
        let mut shortened = None;
        if ret == Some(Ret::Full) {
            if original.len() > MAX_RETURNED_MESSAGE {
                shortened = Some(format!(
                    "Your message was too large to return in full ({} octets; the limit is \
                     {MAX_RETURNED_MESSAGE}), so only its headers are attached.",
                    original.len()
                ));
            } else if !fits_8bit(original) {
                shortened = Some(
                    "Your message has lines too long (or NUL octets) to be returned in full, \
                     so only its headers are attached."
                        .to_owned(),
                );
            } else {
                return Returned {
                    content: Cow::Borrowed(original),
                    whole: true,
                    shortened,
                };
            }
        }
        let mut headers = header_section(original);
        if headers.len() > MAX_RETURNED_MESSAGE {
            let cut = memchr::memrchr(b'\n', &headers[..MAX_RETURNED_MESSAGE]).map_or(0, |i| i + 1);
            headers = &headers[..cut];
            shortened = Some(
                "The header section of your message was too large and has been cut short."
                    .to_owned(),
            );
        }
        Returned {
            content: make_8bit(headers),
            whole: false,
            shortened,
        }
    }
}

/// The header section: up to, not including, the first empty line. A
/// message without an empty line is all header section.
fn header_section(message: &[u8]) -> &[u8] {
    if message.starts_with(b"\r\n") {
        return &[];
    }
    match memmem::find(message, b"\r\n\r\n") {
        Some(end) => &message[..end + 2],
        None => message,
    }
}

/// The stored message with every line ending a CRLF: a lone CR or LF would
/// break the CRLF invariant of the report.
fn crlf_lines(bytes: &[u8]) -> Cow<'_, [u8]> {
    let clean = memchr::memchr2_iter(b'\r', b'\n', bytes).all(|i| match bytes[i] {
        b'\r' => bytes.get(i + 1) == Some(&b'\n'),
        _ => i > 0 && bytes[i - 1] == b'\r',
    });
    if clean {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            byte => out.push(byte),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// Whether CRLF-lined `bytes` can go as 7bit or 8bit (RFC 2045 §2.7, §2.8):
/// no NUL, no line over 998 octets.
fn fits_8bit(bytes: &[u8]) -> bool {
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', bytes) {
        if end - start > MAX_LINE + 1 {
            return false;
        }
        start = end + 1;
    }
    bytes.len() - start <= MAX_LINE && memchr::memchr(0, bytes).is_none()
}

/// Header lines made fit for 8bit: NUL dropped, a line over 998 octets cut
/// into continuation lines (which adds a space where it is unfolded).
fn make_8bit(headers: &[u8]) -> Cow<'_, [u8]> {
    if fits_8bit(headers) {
        return Cow::Borrowed(headers);
    }
    let mut out = Vec::with_capacity(headers.len() + headers.len() / 256);
    for line in headers.split_inclusive(|&b| b == b'\n') {
        let line: Vec<u8> = line.iter().copied().filter(|&b| b != 0).collect();
        let (mut rest, ending) = match line.strip_suffix(b"\r\n") {
            Some(text) => (text, &b"\r\n"[..]),
            None => (&line[..], &b""[..]),
        };
        let mut budget = MAX_LINE;
        while rest.len() > budget {
            // Not inside a UTF-8 sequence.
            let mut cut = budget;
            while cut > 1 && (rest[cut] & 0xC0) == 0x80 {
                cut -= 1;
            }
            out.extend_from_slice(&rest[..cut]);
            out.extend_from_slice(b"\r\n ");
            rest = &rest[cut..];
            budget = MAX_LINE - 1;
        }
        out.extend_from_slice(rest);
        out.extend_from_slice(ending);
    }
    Cow::Owned(out)
}

fn transfer_encoding(bytes: &[u8]) -> &'static str {
    if bytes.is_ascii() { "7bit" } else { "8bit" }
}

/// The first-choice boundary, from the report's Message-ID. `=_` cannot
/// occur in quoted-printable text.
fn first_boundary(message_id: &str) -> String {
    let unique: String = message_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        .take(40)
        .collect();
    format!("=_relayq_{unique}")
}

/// A boundary that occurs in none of `parts` (RFC 2046 §5.1.1): the first
/// choice, else the first choice with a counter.
fn boundary(message_id: &str, parts: &[&[u8]]) -> String {
    let first = first_boundary(message_id);
    (0u64..)
        .map(|n| {
            if n == 0 {
                first.clone()
            } else {
                format!("{first}_{n}")
            }
        })
        .find(|candidate| {
            let finder = memmem::Finder::new(candidate.as_bytes());
            parts.iter().all(|part| finder.find(part).is_none())
        })
        .expect("finite content cannot contain every candidate")
}

fn human_part(report: &Report, returned: &Returned) -> String {
    let mut text = String::new();
    let mta = one_line(report.reporting_mta);
    push_wrapped(
        &mut text,
        "",
        "",
        &format!("This is the mail system at host {mta}."),
    );
    text.push_str("\r\n");
    let intro = Kind::of(report.recipients).introduction();
    push_wrapped(&mut text, "", "", intro);
    text.push_str("\r\n");

    for recipient in report.recipients {
        let address = address_text(&recipient.final_recipient);
        let mut headline = format!("<{address}>");
        if let Some(original) = &recipient.original_recipient {
            let original = address_text(original);
            if original != address {
                let _ = write!(headline, " (originally addressed to <{original}>)");
            }
        }
        let _ = write!(headline, ": {}.", recipient.action.describe());
        push_wrapped(&mut text, "", "    ", &headline);

        // The reply goes on lines of its own, so it reads (and copies) whole.
        let status = status_code(recipient);
        let remote = recipient.remote_mta.as_deref().map(one_line);
        let diagnostic = recipient.diagnostic.as_deref().map(one_line);
        let (detail, reply) = match (remote, diagnostic.filter(|d| !d.is_empty())) {
            (Some(host), Some(reply)) => (
                format!("Status {status}; the mail server {host} replied:"),
                Some(reply),
            ),
            (None, Some(reason)) => (format!("Status {status}; reason:"), Some(reason)),
            (Some(host), None) => (
                format!("Status {status}; last mail server tried: {host}."),
                None,
            ),
            (None, None) => (format!("Status {status}."), None),
        };
        push_wrapped(&mut text, "    ", "    ", &detail);
        if let Some(reply) = reply {
            push_wrapped(&mut text, "    ", "    ", &reply);
        }
        if recipient.action == Action::Delayed
            && let Some(until) = recipient.will_retry_until
        {
            let until = rfc5322(until);
            push_wrapped(
                &mut text,
                "    ",
                "    ",
                &format!("Retrying until {until}."),
            );
        }
        text.push_str("\r\n");
    }

    let attached = match (&returned.shortened, returned.whole) {
        (Some(why), _) => why.as_str(),
        (None, true) => "Your message is attached.",
        (None, false) => "The headers of your message are attached.",
    };
    push_wrapped(&mut text, "", "", attached);
    text
}

/// The `message/delivery-status` body (RFC 3464 §2.1), fields in the order
/// of its grammar, extension fields last. 7-bit ASCII throughout.
fn delivery_status(report: &Report) -> String {
    let mut fields = String::new();
    if let Some(envid) = report.envid {
        push_field(&mut fields, "Original-Envelope-Id", &ascii_text(envid));
    }
    push_field(
        &mut fields,
        "Reporting-MTA",
        &format!("dns; {}", ascii_text(report.reporting_mta)),
    );
    push_field(&mut fields, "Arrival-Date", &rfc5322(report.arrival));
    push_field(
        &mut fields,
        "X-Relayq-Queue-ID",
        &ascii_text(report.queue_id),
    );

    for recipient in report.recipients {
        fields.push_str("\r\n");
        if let Some(original) = &recipient.original_recipient {
            push_field(&mut fields, "Original-Recipient", &typed_address(original));
        }
        push_field(
            &mut fields,
            "Final-Recipient",
            &typed_address(&recipient.final_recipient),
        );
        push_field(&mut fields, "Action", recipient.action.as_str());
        push_field(&mut fields, "Status", status_code(recipient));
        if let Some(host) = &recipient.remote_mta {
            push_field(
                &mut fields,
                "Remote-MTA",
                &format!("dns; {}", ascii_text(host)),
            );
        }
        if let Some(diagnostic) = recipient.diagnostic.as_deref().map(ascii_text)
            && !diagnostic.is_empty()
        {
            let kind = if is_smtp_reply(&diagnostic) {
                "smtp"
            } else {
                "X-Relayq"
            };
            push_field(
                &mut fields,
                "Diagnostic-Code",
                &format!("{kind}; {diagnostic}"),
            );
        }
        if let Some(when) = recipient.last_attempt {
            push_field(&mut fields, "Last-Attempt-Date", &rfc5322(when));
        }
        if recipient.action == Action::Delayed
            && let Some(until) = recipient.will_retry_until
        {
            push_field(&mut fields, "Will-Retry-Until", &rfc5322(until));
        }
        if let Some(class) = recipient.class {
            push_field(&mut fields, "X-Relayq-Class", class.as_str());
        }
    }
    fields
}

/// The recipient's status if it is an RFC 3463 code, else the action's
/// generic one.
fn status_code(recipient: &ReportedRecipient) -> &str {
    let status = recipient.status.trim();
    let mut pieces = status.split('.');
    let class_ok = matches!(pieces.next(), Some("2" | "4" | "5"));
    let rest: Vec<&str> = pieces.collect();
    let numbers_ok = rest.len() == 2
        && rest
            .iter()
            .all(|n| (1..=3).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()));
    if class_ok && numbers_ok {
        status
    } else {
        recipient.action.default_status()
    }
}

/// `250 …`, `550-…`: three digits, then nothing, a space or a hyphen.
fn is_smtp_reply(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 3
        && (b'2'..=b'5').contains(&bytes[0])
        && bytes[1..3].iter().all(u8::is_ascii_digit)
        && matches!(bytes.get(3), None | Some(b' ' | b'-'))
}

/// `rfc822; addr`, or for an address with non-ASCII characters RFC 6533's
/// `utf-8; ` with utf-8-addr-xtext, which keeps the part 7-bit: `\x{HEX}`
/// for non-ASCII, space, `\`, `+` and `=`.
fn typed_address(address: &str) -> String {
    let address = address_text(address);
    if address.is_ascii() {
        return format!("rfc822; {address}");
    }
    let mut typed = String::from("utf-8; ");
    for c in address.chars() {
        match c {
            '\\' | '+' | '=' => {
                let _ = write!(typed, "\\x{{{:X}}}", c as u32);
            }
            '!'..='~' => typed.push(c),
            _ => {
                let _ = write!(typed, "\\x{{{:X}}}", c as u32);
            }
        }
    }
    typed
}

/// An address with control characters (CR and LF among them) removed;
/// spaces are kept, a quoted local part may hold them.
fn address_text(address: &str) -> String {
    address.trim().chars().filter(|c| !c.is_control()).collect()
}

/// [`one_line`], with non-ASCII characters as `\x{HEX}` (RFC 6533's
/// notation) so the delivery-status part stays 7-bit.
fn ascii_text(text: &str) -> String {
    let line = one_line(text);
    if line.is_ascii() {
        return line;
    }
    let mut ascii = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else {
            let _ = write!(ascii, "\\x{{{:X}}}", c as u32);
        }
    }
    ascii
}

/// Appends the field `name: value`, folded before a space (RFC 5322 §2.2.3)
/// only where the line would pass 998 octets, so DSN readers that do not
/// unfold still see short fields whole. A run without spaces longer than a
/// line is cut, which adds a space where it is unfolded. `value` must be
/// one line, as [`one_line`] makes it.
fn push_field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    let mut budget = MAX_LINE - name.len() - 2;
    let mut rest = value;
    while rest.len() > budget {
        let cut = match rest.as_bytes()[1..=budget].iter().rposition(|&b| b == b' ') {
            Some(space) => space + 1,
            None => floor_char_boundary(rest, budget),
        };
        out.push_str(&rest[..cut]);
        out.push_str("\r\n");
        rest = &rest[cut..];
        if rest.starts_with(' ') {
            budget = MAX_LINE;
        } else {
            out.push(' ');
            budget = MAX_LINE - 1;
        }
    }
    out.push_str(rest);
    out.push_str("\r\n");
}

/// Appends `text` as lines of about `TEXT_WIDTH` octets, broken at spaces:
/// the first line starts with `first`, the others with `indent`. A word
/// too long for any line is cut at 998 octets.
fn push_wrapped(out: &mut String, first: &str, indent: &str, text: &str) {
    let mut line = String::from(first);
    let mut empty = true;
    for mut word in text.split(' ').filter(|w| !w.is_empty()) {
        if !empty && line.len() + 1 + word.len() > TEXT_WIDTH {
            out.push_str(&line);
            out.push_str("\r\n");
            line.clear();
            line.push_str(indent);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        while line.len() + word.len() > MAX_LINE {
            let cut = floor_char_boundary(word, MAX_LINE - line.len());
            line.push_str(&word[..cut]);
            out.push_str(&line);
            out.push_str("\r\n");
            line.clear();
            line.push_str(indent);
            word = &word[cut..];
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push_str("\r\n");
}

/// The largest char boundary of `text` at or below `index`, but never 0 for
/// non-empty `text`: a cut there always makes progress.
fn floor_char_boundary(text: &str, index: usize) -> usize {
    let mut index = index.min(text.len());
    while index > 0 && !text.is_char_boundary(index) {
        index -= 1;
    }
    if index == 0 {
        text.chars().next().map_or(0, char::len_utf8)
    } else {
        index
    }
}

#[cfg(test)]
mod tests;
