//! One mail transaction (RFC 5321 §3.3): MAIL, RCPT for every recipient,
//! DATA and the streamed content; pipelined in one write when the server
//! offers PIPELINING (RFC 2920), one command at a time otherwise.

use smtp_proto::{EXT_PIPELINING, EXT_SMTP_UTF8};
use tokio::io::AsyncRead;

use super::body::send_body;
use super::connection::Connection;
use super::params::{is_safe_address, mail_command, rcpt_command};
use super::reply::{failure_disposition, recipient_failure_disposition};
use super::{Attempt, ClientError, Disposition, OutboundMessage, RecipientOutcome, RemoteReply};

const FINAL_STAGE: &str = "waiting for reply to end of data";

/// Per recipient: `None` while undecided, which after the RCPT replies
/// means "accepted, waiting for the end of data".
type Outcomes = [Option<RecipientOutcome>];

/// How a transaction ended on a connection that is still open: whether it
/// may carry another one.
type Usable = bool;

impl Connection {
    /// One transaction for `message` to all its recipients. `body` is the
    /// stored message (CRLF lines); it is dot-stuffed while streaming and
    /// terminated with CRLF.CRLF (after a CRLF of its own if it lacks one).
    ///
    /// Every recipient gets an outcome. Timeouts and a lost connection defer
    /// the recipients still undecided with a local 4.4.2 reply; no reply to
    /// the final dot is also a deferral, so that message may be delivered
    /// twice (RFC 1047).
    pub async fn deliver<R: AsyncRead + Unpin>(
        &mut self,
        message: &OutboundMessage<'_>,
        body: R,
    ) -> Attempt {
        if let Some(refusal) = self.refusal(message) {
            return Attempt {
                outcomes: vec![refusal; message.recipients.len()],
                connection_usable: true,
                nothing_sent: true,
            };
        }
        let mut outcomes = vec![None; message.recipients.len()];
        self.mail_answered = false;
        let connection_usable = match self.transaction(message, body, &mut outcomes).await {
            Ok(usable) => usable,
            Err(error) => {
                tracing::debug!(relay = %self.target, "transaction abandoned: {error}");
                settle(&mut outcomes, &error.reply(), Disposition::Deferred);
                false
            }
        };
        let fallback = RemoteReply::local("4.5.0", "no reply recorded");
        Attempt {
            outcomes: outcomes
                .into_iter()
                .map(|outcome| outcome.unwrap_or_else(|| deferred(fallback.clone())))
                .collect(),
            connection_usable,
            nothing_sent: !self.mail_answered,
        }
    }

    /// Reasons to send nothing: the same outcome for every recipient.
    fn refusal(&self, message: &OutboundMessage<'_>) -> Option<RecipientOutcome> {
        let bounce = |status: &str, text: String| RecipientOutcome {
            disposition: Disposition::Bounced,
            reply: RemoteReply::local(status, text),
        };
        if !is_safe_address(message.reverse_path) {
            return Some(bounce("5.1.7", "invalid reverse-path".to_owned()));
        }
        if message.smtputf8 && !self.capabilities.offers(EXT_SMTP_UTF8) {
            return Some(bounce(
                "5.6.7",
                format!(
                    "message needs SMTPUTF8, which {} does not offer",
                    self.target.host
                ),
            ));
        }
        let limit = self.capabilities.max_size;
        if limit > 0 && message.size > limit {
            return Some(bounce(
                "5.3.4",
                format!(
                    "message size {} exceeds the limit of {limit} octets of {}",
                    message.size, self.target.host
                ),
            ));
        }
        None
    }

    async fn transaction<R: AsyncRead + Unpin>(
        &mut self,
        message: &OutboundMessage<'_>,
        body: R,
        outcomes: &mut Outcomes,
    ) -> Result<Usable, ClientError> {
        let mut sent = Vec::with_capacity(message.recipients.len());
        let mut rcpt_lines = Vec::with_capacity(message.recipients.len());
        for (index, recipient) in message.recipients.iter().enumerate() {
            if is_safe_address(&recipient.address) {
                sent.push(index);
                rcpt_lines.push(rcpt_command(recipient, &self.capabilities));
            } else {
                outcomes[index] = Some(RecipientOutcome {
                    disposition: Disposition::Bounced,
                    reply: RemoteReply::local("5.1.3", "invalid recipient address"),
                });
            }
        }
        if sent.is_empty() {
            return Ok(true);
        }
        let mail = mail_command(message, &self.capabilities);

        let data_reply = if self.capabilities.offers(EXT_PIPELINING) {
            match self
                .pipelined_envelope(&mail, &rcpt_lines, &sent, outcomes)
                .await?
            {
                Some(reply) => reply,
                None => return Ok(false),
            }
        } else {
            match self
                .stepwise_envelope(&mail, &rcpt_lines, &sent, outcomes)
                .await?
            {
                Envelope::Done(usable) => return Ok(usable),
                Envelope::DataReply(reply) => reply,
            }
        };

        let accepted = outcomes.iter().filter(|outcome| outcome.is_none()).count();
        if accepted == 0 {
            // Only when pipelining: every RCPT (or MAIL) was refused.
            if data_reply.code == 354 {
                self.abandon_data().await?;
            }
            return Ok(self.reset().await.is_ok());
        }
        if data_reply.code != 354 {
            settle(outcomes, &data_reply, failure_disposition(&data_reply));
            return Ok(data_reply.code != 421);
        }

        send_body(&mut self.transport, body, self.settings.data_timeout).await?;
        let final_reply = match self
            .transport
            .read_reply(self.settings.final_timeout, FINAL_STAGE)
            .await
        {
            Ok(reply) => reply,
            Err(error) => {
                tracing::warn!(
                    relay = %self.target,
                    "{error}: the message may have been accepted and will be sent again (RFC 1047)"
                );
                return Err(error);
            }
        };
        self.completed_transactions += 1;
        let disposition = if final_reply.is_positive() {
            Disposition::Delivered
        } else {
            failure_disposition(&final_reply)
        };
        settle(outcomes, &final_reply, disposition);
        Ok(final_reply.code != 421)
    }

    /// MAIL, every RCPT and DATA in one write, then the replies in order.
    /// Returns the reply to DATA, or `None` when a 421 ended the session
    /// (every recipient then has its outcome). A refused MAIL decides every
    /// recipient; the DATA reply is then one that refuses too.
    async fn pipelined_envelope(
        &mut self,
        mail: &str,
        rcpt_lines: &[String],
        sent: &[usize],
        outcomes: &mut Outcomes,
    ) -> Result<Option<RemoteReply>, ClientError> {
        let command_limit = self.settings.command_timeout;
        let rset = std::mem::take(&mut self.rset_pending);
        let length = mail.len() + rcpt_lines.iter().map(String::len).sum::<usize>() + 12;
        let mut batch = String::with_capacity(length);
        if rset {
            batch.push_str("RSET\r\n");
        }
        batch.push_str(mail);
        for line in rcpt_lines {
            batch.push_str(line);
        }
        batch.push_str("DATA\r\n");
        self.transport
            .send(
                batch.as_bytes(),
                command_limit,
                "sending MAIL, RCPT and DATA",
            )
            .await?;

        if rset {
            let reply = self
                .transport
                .read_reply(command_limit, "waiting for reply to RSET")
                .await?;
            if reply.code == 421 {
                // The server closes the session: MAIL and the rest were not
                // read. Nothing was attempted; a new connection may do.
                return Err(ClientError::ConnectionLost {
                    stage: "waiting for reply to RSET",
                    detail: reply.to_string(),
                });
            }
        }
        let mail_reply = self
            .transport
            .read_reply(command_limit, "waiting for reply to MAIL FROM")
            .await?;
        self.mail_answered = true;
        if mail_reply.code == 421 {
            settle(outcomes, &mail_reply, Disposition::Deferred);
            return Ok(None);
        }
        for &index in sent {
            let reply = self
                .transport
                .read_reply(command_limit, "waiting for reply to RCPT TO")
                .await?;
            if reply.code == 421 {
                settle(outcomes, &reply, Disposition::Deferred);
                return Ok(None);
            }
            if mail_reply.is_positive() {
                record_rcpt(outcomes, index, reply);
            }
        }
        let data_reply = self
            .transport
            .read_reply(self.settings.data_timeout, "waiting for reply to DATA")
            .await?;
        if !mail_reply.is_positive() {
            settle(outcomes, &mail_reply, failure_disposition(&mail_reply));
        }
        if data_reply.code == 421 {
            settle(outcomes, &data_reply, Disposition::Deferred);
            return Ok(None);
        }
        Ok(Some(data_reply))
    }

    /// MAIL, each RCPT and DATA, one at a time.
    async fn stepwise_envelope(
        &mut self,
        mail: &str,
        rcpt_lines: &[String],
        sent: &[usize],
        outcomes: &mut Outcomes,
    ) -> Result<Envelope, ClientError> {
        let command_limit = self.settings.command_timeout;
        self.transport
            .send(mail.as_bytes(), command_limit, "sending MAIL FROM")
            .await?;
        let mail_reply = self
            .transport
            .read_reply(command_limit, "waiting for reply to MAIL FROM")
            .await?;
        if mail_reply.code == 421 && self.reused {
            // The server ended the session while it sat idle and said so
            // (RFC 5321 §3.8; Postfix on its idle timeout): the reply is not
            // about this message, nothing was attempted, and the caller
            // tries a fresh connection, as for any reused one found closed.
            return Err(ClientError::ConnectionLost {
                stage: "waiting for reply to MAIL FROM",
                detail: mail_reply.to_string(),
            });
        }
        self.mail_answered = true;
        if !mail_reply.is_positive() {
            settle(outcomes, &mail_reply, failure_disposition(&mail_reply));
            return Ok(Envelope::Done(mail_reply.code != 421));
        }
        for (line, &index) in rcpt_lines.iter().zip(sent) {
            self.transport
                .send(line.as_bytes(), command_limit, "sending RCPT TO")
                .await?;
            let reply = self
                .transport
                .read_reply(command_limit, "waiting for reply to RCPT TO")
                .await?;
            if reply.code == 421 {
                settle(outcomes, &reply, Disposition::Deferred);
                return Ok(Envelope::Done(false));
            }
            record_rcpt(outcomes, index, reply);
        }
        if outcomes.iter().all(Option::is_some) {
            return Ok(Envelope::Done(self.reset().await.is_ok()));
        }
        self.transport
            .send(b"DATA\r\n", command_limit, "sending DATA")
            .await?;
        let data_reply = self
            .transport
            .read_reply(self.settings.data_timeout, "waiting for reply to DATA")
            .await?;
        Ok(Envelope::DataReply(data_reply))
    }

    /// A server that answered DATA with 354 although no recipient was
    /// accepted gets an empty message, whose reply does not matter.
    async fn abandon_data(&mut self) -> Result<(), ClientError> {
        self.transport
            .send(b".\r\n", self.settings.data_timeout, "writing message data")
            .await?;
        self.transport
            .read_reply(self.settings.final_timeout, FINAL_STAGE)
            .await?;
        Ok(())
    }
}

enum Envelope {
    /// Every recipient has its outcome.
    Done(Usable),
    DataReply(RemoteReply),
}

/// Records a RCPT reply: accepted recipients stay undecided until the end
/// of data.
fn record_rcpt(outcomes: &mut Outcomes, index: usize, reply: RemoteReply) {
    if !reply.is_positive() {
        outcomes[index] = Some(RecipientOutcome {
            disposition: recipient_failure_disposition(&reply),
            reply,
        });
    }
}

/// Gives every undecided recipient `reply` with `disposition`.
fn settle(outcomes: &mut Outcomes, reply: &RemoteReply, disposition: Disposition) {
    for outcome in outcomes.iter_mut().filter(|outcome| outcome.is_none()) {
        *outcome = Some(RecipientOutcome {
            disposition,
            reply: reply.clone(),
        });
    }
}

fn deferred(reply: RemoteReply) -> RecipientOutcome {
    RecipientOutcome {
        disposition: Disposition::Deferred,
        reply,
    }
}
