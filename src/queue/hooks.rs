//! What a committed transition implies outside the queue: records that
//! must be committed with it (webhook events, suppression entries) and
//! work once that commit returned (waking a sender, updating an in-memory
//! set). The components that need it implement [`TransitionHook`], so the
//! queue knows nothing of them.

use std::any::Any;

use relayq_spool::Change;

use super::transition::Transition;

/// What a hook staged for one commit, handed back to it afterwards.
pub type Staged = Box<dyn Any + Send>;

/// Called by [`super::handle::QueueHandle::apply_all`] for every batch of
/// transitions: `stage` before the commit, `committed` once it returned.
/// Neither may block or await: `stage` runs on the path of every delivery
/// commit.
pub trait TransitionHook: Send + Sync {
    /// Adds to `changes` the records `transitions` imply, so they are
    /// committed with them (all or nothing); returns what
    /// [`TransitionHook::committed`] needs to know of them.
    fn stage(&self, transitions: &[Transition], changes: &mut Vec<Change>) -> Staged;

    /// The commit holding what `stage` added returned successfully.
    fn committed(&self, transitions: &[Transition], staged: Staged);
}
