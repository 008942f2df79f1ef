//! The idempotency side of the commit (docs/idempotency.md): which claims a
//! message makes, and the answer to a repeat.

use relayq_spool::QueueId;
use tokio::io::{AsyncRead, AsyncWrite};

use super::super::consumed_headers::ConsumedHeaders;
use super::super::idempotency::{Claim, Repeat, Scope};
use super::super::message::Fingerprinting;
use super::super::reply;
use super::Session;
use crate::metrics::RefusalReason;
use crate::queue::Lane;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Which messages of this session get a content hash.
    pub(super) fn fingerprinting(&self) -> Fingerprinting {
        if self.maildrop_file.is_some() {
            Fingerprinting::Always
        } else {
            Fingerprinting::Keyed {
                message_id: self.live.config.smtp.dedupe_message_id,
            }
        }
    }

    /// The claims of a message: its key in the session's scope (the
    /// authenticated user, else the client's host), and the maildrop file
    /// it comes from.
    pub(super) fn claims(&self, consumed: &ConsumedHeaders) -> Vec<Claim> {
        let mut claims = Vec::new();
        if let Some(key) = consumed.key(self.live.config.smtp.dedupe_message_id) {
            let scope = Scope::of(self.auth_user.as_deref(), self.client_ip());
            claims.push(Claim::key(scope, key));
        }
        if let Some(name) = &self.maildrop_file {
            claims.push(Claim::maildrop_file(name));
        }
        claims
    }

    /// Answers a message whose claim is taken, and counts it.
    pub(super) fn answer_repeat(&mut self, id: QueueId, repeat: Repeat, lane: Lane) {
        let metrics = &self.shared.metrics;
        match repeat {
            Repeat::Duplicate(original) => {
                metrics.duplicate_submission();
                tracing::info!(
                    queue_id = %original,
                    "{original}: repeated submission answered as a duplicate, not stored (would have been {id}), client=[{}]",
                    self.client_ip(),
                );
                self.reply(reply::duplicate(original));
            }
            Repeat::Conflict(original) => {
                metrics.message_refused(lane, RefusalReason::IdempotencyConflict);
                tracing::info!(
                    queue_id = %original,
                    "{original}: another message under its idempotency key refused with 554 (would have been {id}), client=[{}]",
                    self.client_ip(),
                );
                self.reply(reply::idempotency_conflict(original));
            }
        }
    }
}
