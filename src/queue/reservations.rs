//! What delivery keeps for a queued message outside the schedule (a rate
//! slot a destination promised to it), and the moment it is given back:
//! when a transition takes the message out of waiting for delivery.

use relayq_spool::QueueId;

/// Told by [`super::handle::QueueHandle::apply`] of every message a
/// committed transition removed or held; delivery implements it, so the
/// queue needs to know nothing of destinations.
pub trait Reservations: Send + Sync {
    /// Message `id` waits for delivery no more: whatever was kept for it
    /// goes to other mail. Called after the commit; must not block.
    fn release(&self, id: QueueId);
}
