//! Local submission: a small SMTP client that hands one message to relayq's
//! own intake. `sendmail` uses it over TCP to the listener; the maildrop
//! importer uses it over an in-memory pipe to a session, so a message from
//! the maildrop gets exactly the treatment of SMTP intake (trace headers,
//! local-name qualification, lane selection).
//!
//! One transaction, one command at a time, every wait bounded. All or
//! nothing: a refused recipient aborts the transaction before DATA (after
//! the other recipients were asked, so the refusal names them all), so a
//! message is accepted for every recipient or for none, and the caller can
//! leave it in the maildrop without risking duplicates. Outcomes are data
//! ([`Outcome`]), never errors.
//!
//! Not the MX client (`delivery::client`): that one keeps per-recipient
//! outcomes, which is the wrong contract for a hand-off that must be
//! all-or-nothing.

use std::time::Duration;

use smtp_proto::{EXT_8BIT_MIME, EXT_DSN, EXT_SIZE, EXT_SMTP_UTF8};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

use crate::wire::dot::dot_stuff_terminated;
use crate::wire::ehlo::Capabilities;
use crate::wire::reply::{Reply, parse_reply};

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
    /// (`2.0.0 Ok: queued as ID`, or `… ID (duplicate)` when it repeats an
    /// idempotent submission already stored).
    Accepted(String),
    /// Not stored, try again later: no connection, a timeout, a 4xx reply.
    /// If the reply to the final dot never came, the message may have been
    /// stored all the same (RFC 1047).
    Temporary(String),
    /// A 5xx reply: the message will not be accepted as it is.
    Permanent(String),
    /// Every recipient was refused at RCPT as unavailable (`550`, `551`:
    /// unknown, suppressed): there is nobody to send the message to.
    NoRecipients(String),
}

impl Outcome {
    /// The queue id from `250 2.0.0 Ok: queued as ID [(duplicate)]`, if the
    /// reply has one.
    pub fn queue_id(&self) -> Option<&str> {
        match self {
            Outcome::Accepted(text) => {
                let (_, rest) = text.split_once("queued as ")?;
                rest.split_whitespace().next()
            }
            _ => None,
        }
    }

    /// The server answered that it already holds this message (an
    /// idempotent submission's repeat): nothing new was stored.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Outcome::Accepted(text) if text.trim_end().ends_with("(duplicate)"))
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
        if greeting.code() != 220 {
            return Ok(refused("greeting", &greeting));
        }
        let ehlo = self.command(&format!("EHLO {helo}"), "EHLO").await?;
        // Our own intake's EHLO reply always parses; should it not, the
        // message goes without extensions, as after HELO.
        let offered = if ehlo.code() == 250 {
            Capabilities::from_ehlo(ehlo.raw()).unwrap_or_default()
        } else {
            let helo_reply = self.command(&format!("HELO {helo}"), "HELO").await?;
            if helo_reply.code() != 250 {
                return Ok(refused("HELO", &helo_reply));
            }
            Capabilities::default()
        };

        let mut mail = format!("MAIL FROM:<{}>", submission.sender);
        if offered.offers(EXT_SIZE) {
            mail.push_str(&format!(" SIZE={}", message.len()));
        }
        if offered.offers(EXT_8BIT_MIME) && !message.is_ascii() {
            mail.push_str(" BODY=8BITMIME");
        }
        let international =
            !submission.sender.is_ascii() || submission.recipients.iter().any(|r| !r.is_ascii());
        if offered.offers(EXT_SMTP_UTF8) && international {
            mail.push_str(" SMTPUTF8");
        }
        let reply = self.command(&mail, "MAIL").await?;
        if reply.code() != 250 {
            return Ok(refused("MAIL", &reply));
        }
        // Every recipient is asked, so that the refusal names all that were
        // refused, and says whether any was taken.
        let mut refusals = Vec::new();
        for recipient in &submission.recipients {
            let mut rcpt = format!("RCPT TO:<{recipient}>");
            if let (true, Some(notify)) = (offered.offers(EXT_DSN), &submission.notify) {
                rcpt.push_str(&format!(" NOTIFY={notify}"));
            }
            let reply = self.command(&rcpt, "RCPT").await?;
            if !(250..=252).contains(&reply.code()) {
                refusals.push((
                    reply.code(),
                    refused(&format!("RCPT <{recipient}>"), &reply),
                ));
            }
        }
        if !refusals.is_empty() {
            return Ok(refused_recipients(refusals, submission.recipients.len()));
        }
        let reply = self.command("DATA", "DATA").await?;
        if reply.code() != 354 {
            return Ok(refused("DATA", &reply));
        }
        let content = dot_stuff_terminated(message);
        let limit = self.timeouts.final_reply;
        match timeout(limit, self.stream.write_all(&content)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(format!("connection lost sending the message: {error}")),
            Err(_) => return Err("timeout sending the message".to_owned()),
        }
        let reply = self
            .read_reply_within(limit, "waiting for the reply to the end of data")
            .await?;
        Ok(match reply.code() {
            250 => Outcome::Accepted(lines_joined(&reply)),
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
                    Err(error) => return Err(format!("protocol error after {stage}: {error}")),
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

/// The lines of a reply as sent, joined with a space.
fn lines_joined(reply: &Reply) -> String {
    reply.lines().collect::<Vec<_>>().join(" ")
}

/// All or nothing: a refused recipient refuses the message (`refusals`:
/// the reply code and outcome of each). Permanent when some refusal is (a
/// retry cannot succeed), and `NoRecipients` when every recipient's mailbox
/// is unavailable (550, 551: RFC 5321 §4.2.2; not a syntax error or a
/// policy refusal such as relay denied).
fn refused_recipients(refusals: Vec<(u16, Outcome)>, recipients: usize) -> Outcome {
    let permanent = refusals
        .iter()
        .filter(|(_, refusal)| matches!(refusal, Outcome::Permanent(_)))
        .count();
    let unavailable = refusals
        .iter()
        .filter(|(code, _)| matches!(code, 550 | 551))
        .count();
    let texts: Vec<String> = refusals
        .into_iter()
        .map(|(_, refusal)| match refusal {
            Outcome::Accepted(text)
            | Outcome::Temporary(text)
            | Outcome::Permanent(text)
            | Outcome::NoRecipients(text) => text,
        })
        .collect();
    let text = texts.join("; ");
    if permanent == 0 {
        Outcome::Temporary(text)
    } else if unavailable == recipients {
        Outcome::NoRecipients(text)
    } else {
        Outcome::Permanent(text)
    }
}

fn refused(stage: &str, reply: &Reply) -> Outcome {
    let text = format!("{stage}: {} {}", reply.code(), lines_joined(reply));
    match reply.code() {
        500..=599 => Outcome::Permanent(text),
        _ => Outcome::Temporary(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_multiline_replies() {
        let (reply, used) = parse_reply(b"250 2.0.0 Ok\r\nnext").unwrap().unwrap();
        assert_eq!((reply.code(), used), (250, 14));
        assert_eq!(lines_joined(&reply), "2.0.0 Ok");
        let ehlo = b"250-relay\r\n250-SIZE 100\r\n250 DSN\r\n";
        let (reply, used) = parse_reply(ehlo).unwrap().unwrap();
        assert_eq!(used, ehlo.len());
        assert_eq!(lines_joined(&reply), "relay SIZE 100 DSN");
        let offered = Capabilities::from_ehlo(reply.raw()).unwrap();
        assert!(offered.offers(EXT_SIZE) && offered.offers(EXT_DSN));
        assert!(!offered.offers(EXT_SMTP_UTF8));
        assert_eq!(parse_reply(b"250-relay\r\n250 SI").unwrap(), None);
        assert!(parse_reply(b"hello\r\n").is_err());
    }

    #[test]
    fn the_queue_id_is_read_from_a_new_or_a_duplicate_acceptance() {
        let new = Outcome::Accepted("2.0.0 Ok: queued as 0000000000002A".into());
        assert_eq!(new.queue_id(), Some("0000000000002A"));
        assert!(!new.is_duplicate());
        let repeat = Outcome::Accepted("2.0.0 Ok: queued as 0000000000002A (duplicate)".into());
        assert_eq!(repeat.queue_id(), Some("0000000000002A"));
        assert!(repeat.is_duplicate());
        assert_eq!(Outcome::Accepted("2.0.0 Ok".into()).queue_id(), None);
        assert_eq!(Outcome::Temporary("x".into()).queue_id(), None);
    }

    #[test]
    fn refusal_names_the_stage_and_the_reply() {
        let (reply, _) = parse_reply(b"452-4.3.1 full\r\n452 4.3.1 try later\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            refused("MAIL", &reply),
            Outcome::Temporary("MAIL: 452 4.3.1 full 4.3.1 try later".into())
        );
        let (reply, _) = parse_reply(b"554 5.7.1 no\r\n").unwrap().unwrap();
        assert_eq!(
            refused("end of data", &reply),
            Outcome::Permanent("end of data: 554 5.7.1 no".into())
        );
    }

    #[test]
    fn refusals_of_every_recipient_say_so() {
        let permanent = |code: u16, text: &str| (code, Outcome::Permanent(text.to_owned()));
        let temporary = |text: &str| (451, Outcome::Temporary(text.to_owned()));
        assert_eq!(
            refused_recipients(vec![permanent(550, "a"), permanent(551, "b")], 2),
            Outcome::NoRecipients("a; b".into())
        );
        assert_eq!(
            refused_recipients(vec![permanent(550, "a")], 2),
            Outcome::Permanent("a".into())
        );
        // A syntax error or a policy refusal is no unknown addressee.
        assert_eq!(
            refused_recipients(vec![permanent(550, "a"), permanent(501, "b")], 2),
            Outcome::Permanent("a; b".into())
        );
        assert_eq!(
            refused_recipients(vec![permanent(554, "a")], 1),
            Outcome::Permanent("a".into())
        );
        assert_eq!(
            refused_recipients(vec![permanent(550, "a"), temporary("b")], 2),
            Outcome::Permanent("a; b".into())
        );
        assert_eq!(
            refused_recipients(vec![temporary("b")], 1),
            Outcome::Temporary("b".into())
        );
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
