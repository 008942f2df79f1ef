//! Message content: DATA and BDAT reception, then the commit that makes the
//! `250` true (ARCHITECTURE.md, "durable before 250": the reply is sent only
//! after the spool's fsync returned).
//!
//! Nothing is read for long that cannot be accepted: DATA content past
//! `spool.max_message_size` is answered `552 5.3.4` at once and only searched
//! for its end, for at most [`OVERSIZE_DISCARD`] octets; a BDAT chunk that
//! would take the message past the limit, or that comes without a
//! transaction, is read and discarded only while the session's discarded
//! octets stay within the limit (RFC 3030 §2), and otherwise answered and
//! the session closed without reading it.

use std::time::SystemTime;

use bytes::Buf;
use relayq_spool::QueueId;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::super::data::{DataReader, LineEndings};
use super::super::idempotency::{
    self,
    claims::{StillLoading, Taken},
};
use super::super::message::{Assembly, MessageBuilder, TraceHeaders};
use super::super::reply::{self, Reply};
use super::pace::Request;
use super::{Next, Session};
use crate::events::{Event, EventKind};
use crate::queue::Lane;
use crate::queue::envelope::{Envelope, Meta};
use crate::timefmt;
use crate::webhook::{self, EventType, Staged};

/// How much DATA content past the size limit is still read in search of its
/// end, so that a client that does not read replies before its final dot
/// (most do not) sees the `552` and keeps its session. Beyond it the client
/// is sending for nothing, and the session is closed.
const OVERSIZE_DISCARD: u64 = 1024 * 1024;

/// A BDAT transfer in progress (RFC 3030): the message so far.
pub struct BdatState {
    id: QueueId,
    builder: MessageBuilder,
    line_endings: LineEndings,
    /// The whole transfer, from the first BDAT, has one deadline.
    pub(super) transfer: Request,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn data(&mut self) -> std::io::Result<Next> {
        if let Some(refusal) = self.content_precondition() {
            self.reply_error(refusal);
            return Ok(self.after_error());
        }
        let (id, mut builder) = self.start_message();
        self.reply(Reply::new(354, "", "End data with <CR><LF>.<CR><LF>"));
        self.flush().await?;

        let mut reader = DataReader::new();
        let mut content = Vec::with_capacity(super::READ_CHUNK);
        let mut write_failed = None;
        let mut transfer = Request::content(Instant::now());
        // Octets read since the content passed the size limit and was
        // answered; `None` before.
        let mut discarded: Option<u64> = None;
        loop {
            content.clear();
            let (consumed, finished) = reader.feed(&self.input, &mut content);
            self.input.advance(consumed);
            if let Some(discarded) = discarded.as_mut() {
                *discarded += consumed as u64;
                if !finished && *discarded > OVERSIZE_DISCARD {
                    self.reply(reply::content_not_read());
                    return Ok(Next::Close);
                }
            } else {
                self.count_received(&mut transfer, consumed);
                if write_failed.is_none()
                    && let Err(error) = builder.push(&content)
                {
                    write_failed = Some(error);
                }
                if builder.over_limit() {
                    // Answered now rather than after the final dot: the
                    // client learns it is sending for nothing, and what
                    // follows earns no credit (`session::pace`).
                    self.transaction = None;
                    self.reply_error(reply::message_too_big());
                    self.flush().await?;
                    discarded = Some(0);
                    transfer = Request::content(Instant::now());
                }
            }
            if finished {
                break;
            }
            if !self.read_more(transfer, false).await? {
                // The client left (or fell behind its deadline) mid-message:
                // nothing was acknowledged, and dropping the builder removes
                // its file.
                return Ok(Next::Close);
            }
        }
        if discarded.is_some() {
            // Answered already; dropping the builder removes its file.
            return Ok(self.after_error());
        }
        if let Some(error) = write_failed {
            tracing::error!(%id, "cannot write message body: {error}");
            self.transaction = None;
            self.reply(reply::spool_unavailable());
            return Ok(Next::Continue);
        }
        self.commit(id, builder).await;
        Ok(Next::Continue)
    }

    pub(super) async fn bdat(&mut self, chunk_size: usize, last: bool) -> std::io::Result<Next> {
        if self.bdat.is_none()
            && let Some(refusal) = self.content_precondition()
        {
            return self.refuse_chunk(refusal, chunk_size).await;
        }
        let so_far = self
            .bdat
            .as_ref()
            .map_or(0, |state| state.builder.received());
        if so_far.saturating_add(chunk_size as u64) > self.live.config.spool.max_message_size {
            // RFC 3030 §2: a refused chunk fails the transaction.
            self.bdat = None;
            self.transaction = None;
            return self
                .refuse_chunk(reply::message_too_big(), chunk_size)
                .await;
        }
        if self.bdat.is_none() {
            let (id, builder) = self.start_message();
            self.bdat = Some(BdatState {
                id,
                builder,
                line_endings: LineEndings::default(),
                transfer: Request::content(Instant::now()),
            });
        }

        // The chunk's octets follow the command: read exactly chunk_size.
        let mut remaining = chunk_size;
        let mut normalised = Vec::new();
        let mut write_failed = None;
        let mut transfer = self
            .bdat
            .as_ref()
            .map_or_else(|| Request::content(Instant::now()), |state| state.transfer);
        while remaining > 0 {
            if self.input.is_empty() && !self.read_more(transfer, false).await? {
                return Ok(Next::Close);
            }
            let take = remaining.min(self.input.len());
            self.count_received(&mut transfer, take);
            if let Some(state) = self.bdat.as_mut() {
                normalised.clear();
                state
                    .line_endings
                    .normalise(&self.input[..take], &mut normalised);
                if write_failed.is_none()
                    && let Err(error) = state.builder.push(&normalised)
                {
                    write_failed = Some(error);
                }
            }
            self.input.advance(take);
            remaining -= take;
        }
        if let Some(state) = self.bdat.as_mut() {
            state.transfer = transfer;
        }

        if let Some(error) = write_failed {
            tracing::error!("cannot write message body: {error}");
            self.bdat = None;
            self.transaction = None;
            self.reply(reply::spool_unavailable());
            return Ok(Next::Continue);
        }
        if !last {
            self.reply(Reply::new(
                250,
                "2.0.0",
                format!("{chunk_size} octets received"),
            ));
            return Ok(Next::Continue);
        }
        let Some(state) = self.bdat.take() else {
            return Ok(Next::Continue);
        };
        self.commit(state.id, state.builder).await;
        Ok(Next::Continue)
    }

    /// Answers a BDAT chunk that cannot be accepted. RFC 3030 §2 has the
    /// server discard the chunks a pipelining client sent after a failed
    /// one, so a refused chunk is read and discarded while the session's
    /// discarded octets stay within `spool.max_message_size`; a larger one
    /// is answered, and the session closed with `421` without reading it
    /// (what follows the command is then no command).
    async fn refuse_chunk(&mut self, refusal: Reply, chunk_size: usize) -> std::io::Result<Next> {
        let limit = self.live.config.spool.max_message_size;
        let allowance = limit.saturating_sub(self.discarded);
        if chunk_size as u64 > allowance {
            self.reply_error(refusal);
            self.reply(reply::chunk_not_read());
            return Ok(Next::Close);
        }
        self.discarded += chunk_size as u64;
        let mut transfer = Request::content(Instant::now());
        let mut remaining = chunk_size;
        while remaining > 0 {
            if self.input.is_empty() && !self.read_more(transfer, false).await? {
                return Ok(Next::Close);
            }
            let take = remaining.min(self.input.len());
            self.count_received(&mut transfer, take);
            self.input.advance(take);
            remaining -= take;
        }
        self.reply_error(refusal);
        Ok(self.after_error())
    }

    /// DATA/BDAT need a transaction with at least one accepted recipient.
    fn content_precondition(&self) -> Option<Reply> {
        match &self.transaction {
            None => Some(reply::bad_sequence("Error: need MAIL command")),
            Some(transaction) if transaction.recipients.is_empty() => {
                Some(reply::bad_sequence("Error: need RCPT command"))
            }
            Some(_) => None,
        }
    }

    /// Allocates the queue id and starts the body with the trace headers.
    fn start_message(&self) -> (QueueId, MessageBuilder) {
        let shared = &self.shared;
        let id = shared.spool.allocate_id();
        let transaction = self.transaction.as_ref();
        let protocol = self.received_protocol();
        let now = SystemTime::now();
        let date = timefmt::rfc5322(now);
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let for_clause = match transaction.map(|t| t.recipients.as_slice()) {
            Some([only]) => format!("\r\n\tfor <{}>", only.address),
            _ => String::new(),
        };
        let received = format!(
            "Received: from {helo} ([{ip}])\r\n\tby {host} (relayq) with {protocol} id {id}{for_clause};\r\n\t{date}\r\n",
            ip = self.client_ip(),
            host = self.live.config.hostname,
        );
        let trace = TraceHeaders {
            received,
            message_id: format!("<{id}@{}>", self.live.config.hostname),
            date,
        };
        let builder = MessageBuilder::new(
            shared.spool.body_writer(),
            trace,
            self.live.config.spool.max_message_size,
        )
        .with_signers(shared.dkim.current())
        .with_fingerprinting(self.fingerprinting());
        (id, builder)
    }

    /// Stores the message and answers: 250 only once it is on disk. A
    /// message with an idempotency key (docs/idempotency.md) is stored with
    /// its claim in the same commit; a repeat is answered from the claim it
    /// collides with, and nothing is stored.
    async fn commit(&mut self, id: QueueId, builder: MessageBuilder) {
        let Some(transaction) = self.transaction.take() else {
            self.reply(reply::bad_sequence("Error: need MAIL command"));
            return;
        };
        let finished = if builder.signs() {
            // Signing takes milliseconds of CPU (RSA): other sessions'
            // intake must not wait for it.
            tokio::task::spawn_blocking(move || builder.finish())
                .await
                .unwrap_or_else(|panicked| Err(std::io::Error::other(panicked)))
        } else {
            builder.finish()
        };
        let mut assembled = match finished {
            Ok(Assembly::Message(assembled)) => *assembled,
            Ok(Assembly::TooBig) => {
                self.reply_error(reply::message_too_big());
                return;
            }
            Ok(Assembly::NotSigned(error)) => {
                tracing::error!(queue_id = %id, "{id}: refused, not DKIM-signed: {error}");
                self.reply(reply::not_signed(&error));
                return;
            }
            Err(error) => {
                tracing::error!(%id, "cannot write message body: {error}");
                self.reply(reply::spool_unavailable());
                return;
            }
        };
        if let Some(refusal) = &assembled.consumed.refusal {
            tracing::info!(queue_id = %id, "{id}: refused after the data: {refusal}");
            self.reply(reply::header_refused(refusal));
            return;
        }
        let claims = self.claims(&assembled.consumed);
        // Every claiming message has its content hashed (`fingerprinting`).
        let fingerprint = assembled.content_hash.map_or(0, |content| {
            idempotency::fingerprint(
                &transaction.reverse_path,
                transaction
                    .recipients
                    .iter()
                    .map(|recipient| recipient.address.as_str()),
                content,
            )
        });
        let line_breaks = assembled.line_breaks;
        let mail = transaction.mail;
        let lane = Lane::select(
            mail.mt_priority,
            assembled.facts.bulk_precedence,
            self.listener_lane,
        );
        // A repeat is answered before anything else (even when the lane is
        // full now): its original is queued. Claims that are free are this
        // message's until its commit is over; a repeat arriving meanwhile
        // waits for the outcome.
        let pending = if claims.is_empty() {
            None
        } else {
            match self.shared.claims.take(&claims, fingerprint).await {
                Ok(Taken::Free(pending)) => Some(pending),
                Ok(Taken::Repeat(repeat)) => {
                    self.answer_repeat(id, repeat, lane);
                    return;
                }
                Err(StillLoading) => {
                    tracing::warn!(queue_id = %id, "{id}: refused with 451, the idempotency keys are still loading");
                    self.reply(reply::claims_loading());
                    return;
                }
            }
        };
        // The lane is final now: reserve room in it before storing, so that
        // sessions committing at the same time cannot overfill it. A refused
        // message is dropped here, its body file with it: nothing is stored.
        let admission = &self.live.admission;
        let reservation = match admission.reserve(&self.shared.queue, lane) {
            Ok(reservation) => reservation,
            Err(full) => {
                admission.refused(full, &self.shared.queue, &self.shared.metrics);
                self.reply(reply::lane_full(full));
                return;
            }
        };
        let mut envelope = Envelope::new(
            transaction.reverse_path,
            transaction.recipients,
            lane,
            SystemTime::now(),
            assembled.size,
        );
        envelope.client_address = Some(self.client_ip());
        envelope.helo = self.helo.clone();
        envelope.auth_user = self.auth_user.clone();
        envelope.eight_bit_mime = mail.eight_bit_mime;
        envelope.smtputf8 = mail.smtputf8;
        envelope.ret = mail.ret;
        envelope.envid = mail.envid;
        envelope.mt_priority = mail.mt_priority;
        envelope.meta = Meta::new(std::mem::take(&mut assembled.consumed.meta));
        envelope.message_id = assembled.facts.message_id.take();
        let mut changes = idempotency::claim_changes(&claims, fingerprint, id, envelope.arrival_ms);
        // `accepted` events are committed with the message (announce only
        // what is stored), and built only when a webhook takes them.
        let webhooks = &self.shared.webhooks;
        let staged = if webhooks.wants(EventType::Accepted) {
            let events = webhook::event::accepted(id, &envelope, webhooks.ids());
            webhooks.stage(&events, &mut changes)
        } else {
            Staged::default()
        };
        // A small body is kept for the first delivery pass, which then needs
        // no read of the spool (queue::fresh).
        let fresh_body = assembled
            .body
            .inline_bytes()
            .filter(|body| body.len() <= crate::queue::fresh::MAX_BODY)
            .map(bytes::Bytes::copy_from_slice);
        let storing = Instant::now();
        let stored = self
            .shared
            .spool
            .store_with(id, envelope.encode(), assembled.body, changes)
            .await;
        // A session is never dropped while it awaits its commit (nothing
        // cancels a command half-way), so the claims learn the outcome:
        // held when stored, freed (by the drop) when not.
        if let Some(pending) = pending
            && stored.is_ok()
        {
            pending.committed(fingerprint, id, envelope.arrival_ms);
        }
        match stored {
            Ok(stored) => {
                webhooks.committed(staged);
                let metrics = &self.shared.metrics;
                metrics.message_accepted(lane, storing.elapsed(), stored.batch_size);
                tracing::info!(
                    queue_id = %id,
                    "{id}: accepted from=<{}>, nrcpt={}, size={}, lane={lane}, batch={}, client=[{}]",
                    envelope.reverse_path,
                    envelope.recipients.len(),
                    envelope.size,
                    stored.batch_size,
                    self.client_ip(),
                );
                if !assembled.dkim.signatures.is_empty() {
                    tracing::info!(
                        queue_id = %id,
                        "{id}: DKIM-signed by {}",
                        assembled.dkim.signatures.join(", ")
                    );
                }
                if line_breaks > 0 {
                    tracing::info!(
                        queue_id = %id,
                        "{id}: {line_breaks} line breaks inserted into lines longer than 998 octets"
                    );
                }
                self.shared
                    .queue
                    .insert_accepted(id, &envelope, fresh_body, reservation);
                let mut event = Event::new(EventKind::Accepted, id, lane);
                event.sender = Some(envelope.reverse_path.clone());
                event.recipients = Some(envelope.recipients.len());
                event.size = Some(envelope.size);
                event.client = envelope.client_address;
                self.shared.events.publish(event);
                self.reply(Reply::new(250, "2.0.0", format!("Ok: queued as {id}")));
            }
            Err(error) => {
                tracing::error!(queue_id = %id, "spool refused the message: {error}");
                self.reply(reply::spool_unavailable());
            }
        }
    }
}
