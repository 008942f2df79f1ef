//! One transaction of a job: the envelope's part for a batch of
//! recipients, the body (from memory or the spool), the start gate, then
//! the client's MAIL, RCPT, DATA.

use crate::delivery::client::{
    Attempt, Connection, Disposition, OutboundMessage, OutboundRecipient, RecipientOutcome,
    RemoteReply,
};
use crate::delivery::destination::Wait;

use super::Job;
use super::context::DeliveryContext;
use super::gate::gate;

/// One transaction for `batch` over `connection`, once the destination
/// lets it start (checked right before MAIL, after the body is opened, so a
/// rate spaces the starts the remote end sees); `Err` when it must wait.
pub(super) async fn transaction(
    context: &DeliveryContext,
    job: &Job,
    connection: &mut Connection,
    batch: &[usize],
) -> Result<Attempt, Wait> {
    let envelope = job.pass.snapshot();
    let recipients: Vec<OutboundRecipient> = batch
        .iter()
        .map(|&index| {
            let recipient = &envelope.recipients[index];
            OutboundRecipient {
                address: recipient.address.clone(),
                notify: recipient.notify,
                orcpt: recipient.orcpt.clone(),
            }
        })
        .collect();
    let message = OutboundMessage {
        reverse_path: &envelope.reverse_path,
        recipients: &recipients,
        size: envelope.size,
        eight_bit_mime: envelope.eight_bit_mime,
        smtputf8: envelope.smtputf8,
        ret: envelope.ret,
        envid: envelope.envid.as_deref(),
        mt_priority: envelope.mt_priority,
    };
    let opened = match job.pass.body() {
        Some(bytes) => Ok(crate::delivery::body::from_bytes(bytes)),
        None => crate::delivery::body::open(&context.handle.spool, job.pass.id).await,
    };
    let body = match opened {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(queue_id = %job.pass.id, "{}: cannot read body: {error}", job.pass.id);
            let reply = RemoteReply::local("4.3.0", "queue file read error");
            return Ok(Attempt {
                outcomes: batch
                    .iter()
                    .map(|_| RecipientOutcome {
                        disposition: Disposition::Deferred,
                        reply: reply.clone(),
                    })
                    .collect(),
                connection_usable: true,
                nothing_sent: true,
            });
        }
    };
    gate(context, job).await?;
    Ok(connection.deliver(&message, body).await)
}
