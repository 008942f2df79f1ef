//! Local submission: a small SMTP client that hands one message to relayq's
//! own intake. `sendmail` uses it over TCP to the listener; the maildrop
//! importer uses it over an in-memory pipe to a session, so a message from
//! the maildrop gets exactly the treatment of SMTP intake (trace headers,
//! local-name qualification, lane selection).
//!
//! One transaction, one command at a time, every wait bounded. All or
//! nothing: a refused recipient aborts the transaction before DATA, so a
//! message is accepted for every recipient or for none, and the caller can
//! leave it in the maildrop without risking duplicates. Outcomes are data
//! ([`Outcome`]), never errors.
//!
//! Not the MX client (`delivery::client`): that one keeps per-recipient
//! outcomes, which is the wrong contract for a hand-off that must be
//! all-or-nothing.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

/// The envelope of a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The reverse-path without angle brackets; empty for `<>`. A bare
    /// local name is qualified by intake.
    pub sender: String,
    /// At least one; bare local names are qualified (or redirected to
    /// `smtp.admin_address`) by intake.
    pub recipients: Vec<String>,
    /// The RFC 3461 NOTIFY value for every recipient (`NEVER`,
    /// `SUCCESS,FAILURE`, ...), sent when the server offers DSN.
    pub notify: Option<String>,
}

/// How the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `250` to the final dot: the message is stored. Holds the reply text
    /// (`2.0.0 Ok: queued as ID`).
    Accepted(String),
    /// Not stored, try again later: no connection, a timeout, a 4xx reply.
    /// If the reply to the final dot never came, the message may have been
    /// stored all the same (RFC 1047).
    Temporary(String),
    /// A 5xx reply: the message will not be accepted as it is.
    Permanent(String),
}

impl Outcome {
    /// The queue id from `250 2.0.0 Ok: queued as ID`, if the reply has one.
    pub fn queue_id(&self) -> Option<&str> {
        match self {
            Outcome::Accepted(text) => text.rsplit(' ').next(),
            _ => None,
        }
    }
}

/// How long each wait may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// The greeting and the replies to EHLO, MAIL, RCPT and DATA.
    pub reply: Duration,
    /// Writing the content and the reply to the final dot.
    pub final_reply: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            reply: Duration::from_secs(60),
            final_reply: Duration::from_secs(300),
        }
    }
}

/// A reply: its code and its text (lines joined with a space).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" "))
    }
}

/// Submits `message` (CRLF lines, not dot-stuffed) over `stream` and ends
/// the session with QUIT.
pub async fn submit<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    helo: &str,
    submission: &Submission,
    message: &[u8],
    timeouts: Timeouts,
) -> Outcome {
    let mut client = Client {
        stream,
        input: Vec::with_capacity(1024),
        timeouts,
    };
    let outcome = client.transaction(helo, submission, message).await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(detail) => Outcome::Temporary(detail),
    };
    client.quit().await;
    outcome
}

struct Client<S> {
    stream: S,
    input: Vec<u8>,
    timeouts: Timeouts,
}

/// What the server offered in its EHLO reply.
#[derive(Debug, Default)]
struct Extensions {
    size: bool,
    eight_bit_mime: bool,
    smtputf8: bool,
    dsn: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// `Err` for I/O failures and timeouts (a temporary outcome); replies
    /// that end the transaction come back as `Ok(outcome)`.
    async fn transaction(
        &mut self,
        helo: &str,
        submission: &Submission,
        message: &[u8],
    ) -> Result<Outcome, String> {
        let greeting = self.read_reply("waiting for the greeting").await?;
        if greeting.code != 220 {
            return Ok(refused("greeting", &greeting));
        }
        let ehlo = self.command(&format!("EHLO {helo}"), "EHLO").await?;
        let extensions = if ehlo.code == 250 {
            extensions(&ehlo)
        } else {
            let helo_reply = self.command(&format!("HELO {helo}"), "HELO").await?;
            if helo_reply.code != 250 {
                return Ok(refused("HELO", &helo_reply));
            }
            Extensions::default()
        };

        let mut mail = format!("MAIL FROM:<{}>", submission.sender);
        if extensions.size {
            mail.push_str(&format!(" SIZE={}", message.len()));
        }
        if extensions.eight_bit_mime && !message.is_ascii() {
            mail.push_str(" BODY=8BITMIME");
        }
        let international =
            !submission.sender.is_ascii() || submission.recipients.iter().any(|r| !r.is_ascii());
        if extensions.smtputf8 && international {
            mail.push_str(" SMTPUTF8");
        }
        let reply = self.command(&mail, "MAIL").await?;
        if reply.code != 250 {
            return Ok(refused("MAIL", &reply));
        }
        for recipient in &submission.recipients {
            let mut rcpt = format!("RCPT TO:<{recipient}>");
            if let (true, Some(notify)) = (extensions.dsn, &submission.notify) {
                rcpt.push_str(&format!(" NOTIFY={notify}"));
            }
            let reply = self.command(&rcpt, "RCPT").await?;
            if !(250..=252).contains(&reply.code) {
                return Ok(refused(&format!("RCPT <{recipient}>"), &reply));
            }
        }
        let reply = self.command("DATA", "DATA").await?;
        if reply.code != 354 {
            return Ok(refused("DATA", &reply));
        }
        let content = dot_stuff(message);
        let limit = self.timeouts.final_reply;
        match timeout(limit, self.stream.write_all(&content)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(format!("connection lost sending the message: {error}")),
            Err(_) => return Err("timeout sending the message".to_owned()),
        }
        let reply = self
            .read_reply_within(limit, "waiting for the reply to the end of data")
            .await?;
        Ok(match reply.code {
            250 => Outcome::Accepted(reply.lines.join(" ")),
            _ => refused("end of data", &reply),
        })
    }

    async fn command(&mut self, line: &str, verb: &str) -> Result<Reply, String> {
        let limit = self.timeouts.reply;
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        match timeout(limit, self.stream.write_all(&bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(format!("connection lost sending {verb}: {error}")),
            Err(_) => return Err(format!("timeout sending {verb}")),
        }
        self.read_reply(verb).await
    }

    async fn read_reply(&mut self, stage: &str) -> Result<Reply, String> {
        self.read_reply_within(self.timeouts.reply, stage).await
    }

    async fn read_reply_within(&mut self, limit: Duration, stage: &str) -> Result<Reply, String> {
        let read = async {
            loop {
                match parse_reply(&self.input) {
                    Ok(Some((reply, used))) => {
                        self.input.drain(..used);
                        return Ok(reply);
                    }
                    Ok(None) => {}
                    Err(detail) => return Err(format!("protocol error after {stage}: {detail}")),
                }
                if self.input.len() > MAX_REPLY {
                    return Err(format!("reply to {stage} too long"));
                }
                let mut chunk = [0u8; 1024];
                match self.stream.read(&mut chunk).await {
                    Ok(0) => return Err(format!("connection closed ({stage})")),
                    Ok(count) => self.input.extend_from_slice(&chunk[..count]),
                    Err(error) => return Err(format!("connection lost ({stage}): {error}")),
                }
            }
        };
        match timeout(limit, read).await {
            Ok(result) => result,
            Err(_) => Err(format!("timeout {stage}")),
        }
    }

    /// QUIT and a short wait for its reply; the outcome is already known.
    async fn quit(&mut self) {
        let short = Timeouts {
            reply: self.timeouts.reply.min(Duration::from_secs(5)),
            ..self.timeouts
        };
        self.timeouts = short;
        let _ = self.command("QUIT", "QUIT").await;
        let _ = timeout(short.reply, self.stream.shutdown()).await;
    }
}

/// A reply longer than this is a protocol error (a reply line is at most
/// 512 octets, RFC 5321 §4.5.3.1.5; EHLO has a few dozen lines).
const MAX_REPLY: usize = 64 * 1024;

fn refused(stage: &str, reply: &Reply) -> Outcome {
    let text = format!("{stage}: {}", reply.text());
    match reply.code {
        500..=599 => Outcome::Permanent(text),
        _ => Outcome::Temporary(text),
    }
}

fn extensions(ehlo: &Reply) -> Extensions {
    let mut offered = Extensions::default();
    for line in ehlo.lines.iter().skip(1) {
        let keyword = line.split_whitespace().next().unwrap_or("");
        match keyword.to_ascii_uppercase().as_str() {
            "SIZE" => offered.size = true,
            "8BITMIME" => offered.eight_bit_mime = true,
            "SMTPUTF8" => offered.smtputf8 = true,
            "DSN" => offered.dsn = true,
            _ => {}
        }
    }
    offered
}

/// Parses one complete reply at the start of `input`: the reply and the
/// bytes it used, `None` when more input is needed.
fn parse_reply(input: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut code = None;
    while let Some(newline) = input[start..].iter().position(|&byte| byte == b'\n') {
        let end = start + newline + 1;
        let line = &input[start..end];
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = String::from_utf8_lossy(line);
        let this_code: u16 = line
            .get(..3)
            .filter(|digits| digits.bytes().all(|byte| byte.is_ascii_digit()))
            .and_then(|digits| digits.parse().ok())
            .ok_or_else(|| format!("malformed reply line {line:?}"))?;
        if *code.get_or_insert(this_code) != this_code {
            return Err(format!("reply codes differ within one reply: {line:?}"));
        }
        let separator = line.as_bytes().get(3).copied();
        lines.push(line.get(4..).unwrap_or("").to_owned());
        start = end;
        match separator {
            Some(b'-') => continue,
            None | Some(b' ') => {
                return Ok(Some((
                    Reply {
                        code: this_code,
                        lines,
                    },
                    start,
                )));
            }
            Some(_) => return Err(format!("malformed reply line {line:?}")),
        }
    }
    Ok(None)
}

/// Dot-stuffs CRLF-lined content (RFC 5321 §4.5.2) and appends the end of
/// data, after a CRLF of its own when the content does not end with one.
fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 5);
    let mut at_line_start = true;
    for &byte in message {
        if at_line_start && byte == b'.' {
            out.push(b'.');
        }
        out.push(byte);
        at_line_start = byte == b'\n';
    }
    if !message.is_empty() && !message.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_multiline_replies() {
        let (reply, used) = parse_reply(b"250 2.0.0 Ok\r\nnext").unwrap().unwrap();
        assert_eq!((reply.code, used), (250, 14));
        assert_eq!(reply.text(), "250 2.0.0 Ok");
        let ehlo = b"250-relay\r\n250-SIZE 100\r\n250 DSN\r\n";
        let (reply, used) = parse_reply(ehlo).unwrap().unwrap();
        assert_eq!(used, ehlo.len());
        let offered = extensions(&reply);
        assert!(offered.size && offered.dsn && !offered.smtputf8);
        assert_eq!(parse_reply(b"250-relay\r\n250 SI").unwrap(), None);
        assert!(parse_reply(b"hello\r\n").is_err());
    }

    #[test]
    fn dot_stuffing_and_terminator() {
        assert_eq!(
            dot_stuff(b".\r\n..x\r\na.\r\n"),
            b"..\r\n...x\r\na.\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }

    #[tokio::test]
    async fn refused_recipient_aborts_before_data() {
        let (client, mut server) = tokio::io::duplex(4096);
        let script = tokio::spawn(async move {
            let mut seen = Vec::new();
            server.write_all(b"220 hi\r\n").await.unwrap();
            for reply in [
                &b"250-hi\r\n250 DSN\r\n"[..],
                b"250 ok\r\n",
                b"250 ok\r\n",
                b"550 5.1.1 no such user\r\n",
                b"221 bye\r\n",
            ] {
                let mut buffer = [0u8; 512];
                let count = server.read(&mut buffer).await.unwrap();
                seen.push(String::from_utf8_lossy(&buffer[..count]).into_owned());
                server.write_all(reply).await.unwrap();
            }
            seen
        });
        let submission = Submission {
            sender: "app@example.com".into(),
            recipients: vec!["a@example.org".into(), "b@example.org".into()],
            notify: Some("NEVER".into()),
        };
        let outcome = submit(
            client,
            "localhost",
            &submission,
            b"x\r\n",
            Timeouts::default(),
        )
        .await;
        assert_eq!(
            outcome,
            Outcome::Permanent("RCPT <b@example.org>: 550 5.1.1 no such user".into())
        );
        let seen = script.await.unwrap();
        assert_eq!(seen[2], "RCPT TO:<a@example.org> NOTIFY=NEVER\r\n");
        assert_eq!(seen[4], "QUIT\r\n");
    }
}
