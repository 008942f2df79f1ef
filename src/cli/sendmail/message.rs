//! The message as `sendmail` reads it from stdin and hands it on, pure:
//! the end of input (EOF, or a lone dot without `-i`), CRLF line endings, the
//! header section (recipients for `-t`, `Bcc:` removed, `From:` added).

use std::io::{self, BufRead};

use base64::Engine as _;
use mail_parser::MessageParser;

use super::push_unique;

/// Why stdin could not be taken as a message.
#[derive(Debug)]
pub enum ReadError {
    TooBig,
    Io(io::Error),
}

/// Reads the message: lines end with LF or CRLF and come out CRLF; without
/// `ignore_dots` a line holding a single `.` ends the message (the rest of
/// the input is not read). A first line `From ` (an mbox separator) is
/// dropped. More than `limit` octets is [`ReadError::TooBig`].
pub fn read_message<R: BufRead>(
    mut input: R,
    ignore_dots: bool,
    limit: u64,
) -> Result<Vec<u8>, ReadError> {
    let mut message = Vec::new();
    let mut line = Vec::new();
    let mut first = true;
    loop {
        line.clear();
        let room = limit.saturating_sub(message.len() as u64) + 2;
        let count = io::Read::take(&mut input, room)
            .read_until(b'\n', &mut line)
            .map_err(ReadError::Io)?;
        if count == 0 {
            break;
        }
        let complete = line.ends_with(b"\n");
        if !complete && count as u64 == room {
            return Err(ReadError::TooBig);
        }
        let mut content: &[u8] = &line;
        content = content.strip_suffix(b"\n").unwrap_or(content);
        content = content.strip_suffix(b"\r").unwrap_or(content);
        if !ignore_dots && content == b"." {
            break;
        }
        if first && content.starts_with(b"From ") {
            first = false;
            continue;
        }
        first = false;
        message.extend_from_slice(content);
        message.extend_from_slice(b"\r\n");
        if message.len() as u64 > limit {
            return Err(ReadError::TooBig);
        }
    }
    Ok(message)
}

/// A message ready to submit.
#[derive(Debug, PartialEq, Eq)]
pub struct Prepared {
    pub message: Vec<u8>,
    /// From To, Cc and Bcc when `-t` was given.
    pub header_recipients: Vec<String>,
}

/// Header fields and where the body starts, in a CRLF message.
struct HeaderSection {
    /// (name, start, end): each field's octets including continuation lines
    /// and the final CRLF.
    fields: Vec<(String, usize, usize)>,
    /// Offset of the body (after the empty line if there is one).
    body: usize,
}

/// Splits the header section off. A line that is neither a field nor a
/// continuation ends the header section and starts the body, as in
/// Postfix and sendmail (the missing empty line is added on output).
fn header_section(message: &[u8]) -> HeaderSection {
    let mut fields: Vec<(String, usize, usize)> = Vec::new();
    let mut position = 0;
    while position < message.len() {
        let end = memchr::memmem::find(&message[position..], b"\r\n")
            .map_or(message.len(), |at| position + at + 2);
        let line = &message[position..end];
        let content = line.strip_suffix(b"\r\n").unwrap_or(line);
        if content.is_empty() {
            return HeaderSection { fields, body: end };
        }
        if matches!(content[0], b' ' | b'\t') {
            if let Some(last) = fields.last_mut() {
                last.2 = end;
                position = end;
                continue;
            }
        } else if let Some(name) = field_name(content) {
            fields.push((name, position, end));
            position = end;
            continue;
        }
        return HeaderSection {
            fields,
            body: position,
        };
    }
    HeaderSection {
        fields,
        body: message.len(),
    }
}

/// The field name of a header line (RFC 5322 §2.2: printable ASCII but
/// the colon, before a colon).
fn field_name(line: &[u8]) -> Option<String> {
    let colon = line.iter().position(|&byte| byte == b':')?;
    let name = &line[..colon];
    let valid = !name.is_empty() && name.iter().all(|&byte| (33..=126).contains(&byte));
    valid.then(|| String::from_utf8_lossy(name).into_owned())
}

/// Prepares a CRLF message: collects To/Cc/Bcc recipients when
/// `extract_recipients`, removes Bcc (it must not reach the recipients),
/// and adds `From: "full name" <from_address>` when there is no From.
pub fn prepare(
    message: &[u8],
    extract_recipients: bool,
    full_name: Option<&str>,
    from_address: &str,
) -> Result<Prepared, String> {
    let section = header_section(message);
    let mut out = Vec::with_capacity(message.len() + 128);
    let mut header_recipients = Vec::new();
    let mut has_from = false;
    for (name, start, end) in &section.fields {
        let field = &message[*start..*end];
        let is = |wanted: &str| name.eq_ignore_ascii_case(wanted);
        has_from |= is("From");
        if extract_recipients && (is("To") || is("Cc") || is("Bcc")) {
            for address in field_addresses(&field[name.len() + 1..])? {
                push_unique(&mut header_recipients, address);
            }
        }
        if !(is("Bcc") || is("Resent-Bcc")) {
            out.extend_from_slice(field);
        }
    }
    if !has_from {
        out.extend_from_slice(from_field(full_name, from_address).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    // `section.body` is past the empty line, or at the line that ended the
    // header section without one; either way the empty line was written above.
    out.extend_from_slice(&message[section.body..]);
    Ok(Prepared {
        message: out,
        header_recipients,
    })
}

/// The addresses of one To/Cc/Bcc field value (groups included).
fn field_addresses(value: &[u8]) -> Result<Vec<String>, String> {
    let mut text = b"To:".to_vec();
    text.extend_from_slice(value);
    text.extend_from_slice(b"\r\n");
    let parsed = MessageParser::new()
        .parse_headers(&text[..])
        .ok_or("cannot parse the header section")?;
    let mut addresses = Vec::new();
    if let Some(list) = parsed.to() {
        for entry in list.iter() {
            // A bare local name (`To: root`, as cron writes it) comes back
            // as a display name without an address.
            let bare_name = entry
                .name()
                .filter(|name| !name.trim().contains(char::is_whitespace));
            let Some(address) = entry.address().or(bare_name) else {
                continue;
            };
            let address = address.trim();
            if address.is_empty() {
                continue;
            }
            if address.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(format!("invalid address {address:?} in the header section"));
            }
            addresses.push(address.to_owned());
        }
    }
    Ok(addresses)
}

/// `From: "Name" <address>`; a non-ASCII name as an RFC 2047 encoded word.
fn from_field(full_name: Option<&str>, address: &str) -> String {
    let name = full_name.map(str::trim).filter(|name| !name.is_empty());
    match name {
        None => format!("From: {address}\r\n"),
        Some(name) if name.is_ascii() && !name.chars().any(|c| c.is_ascii_control()) => {
            let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
            format!("From: \"{escaped}\" <{address}>\r\n")
        }
        Some(name) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(name.as_bytes());
            format!("From: =?UTF-8?B?{encoded}?= <{address}>\r\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_line_ends_input_unless_ignored() {
        let input = b"Subject: x\n\nline\n.\nafter\n";
        let message = read_message(&input[..], false, 1000).unwrap();
        assert_eq!(message, b"Subject: x\r\n\r\nline\r\n");
        let message = read_message(&input[..], true, 1000).unwrap();
        assert_eq!(message, b"Subject: x\r\n\r\nline\r\n.\r\nafter\r\n");
        let mixed = b"From someone Mon Jan 1\r\nA: b\r\n\r\nno newline";
        let message = read_message(&mixed[..], true, 1000).unwrap();
        assert_eq!(message, b"A: b\r\n\r\nno newline\r\n");
        assert!(matches!(
            read_message(&[b'x'; 200][..], true, 100),
            Err(ReadError::TooBig)
        ));
    }

    #[test]
    fn extracts_recipients_and_strips_bcc() {
        let message =
            b"To: Joe <joe@example.org>, root\r\nCc: a@example.org,\r\n b@example.org\r\n\
Bcc: hidden@example.org\r\nSubject: hi\r\n\r\nbody\r\n";
        let prepared = prepare(message, true, None, "app@example.com").unwrap();
        assert_eq!(
            prepared.header_recipients,
            [
                "joe@example.org",
                "root",
                "a@example.org",
                "b@example.org",
                "hidden@example.org"
            ]
        );
        let text = String::from_utf8(prepared.message).unwrap();
        assert_eq!(
            text,
            "To: Joe <joe@example.org>, root\r\nCc: a@example.org,\r\n b@example.org\r\n\
Subject: hi\r\nFrom: app@example.com\r\n\r\nbody\r\n"
        );
        let group = prepare(
            b"To: undisclosed-recipients:;\r\n\r\nx\r\n",
            true,
            None,
            "a@b",
        )
        .unwrap();
        assert!(group.header_recipients.is_empty());
    }

    #[test]
    fn adds_from_with_full_name_and_body_without_headers() {
        let prepared = prepare(b"From: me@x\r\n\r\nx\r\n", false, Some("Cron"), "root@h").unwrap();
        assert_eq!(prepared.message, b"From: me@x\r\n\r\nx\r\n");
        let prepared = prepare(
            b"Subject: s\r\n\r\nx\r\n",
            false,
            Some("Cron \"D\""),
            "root@h",
        )
        .unwrap();
        assert_eq!(
            prepared.message,
            b"Subject: s\r\nFrom: \"Cron \\\"D\\\"\" <root@h>\r\n\r\nx\r\n"
        );
        let prepared = prepare(b"just text\r\nmore\r\n", false, None, "u@h").unwrap();
        assert_eq!(prepared.message, b"From: u@h\r\n\r\njust text\r\nmore\r\n");
        let prepared = prepare(b"", false, Some("Jörg"), "u@h").unwrap();
        assert_eq!(
            prepared.message,
            b"From: =?UTF-8?B?SsO2cmc=?= <u@h>\r\n\r\n"
        );
    }
}
