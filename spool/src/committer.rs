//! The committer: the one OS thread that writes to the spool, in group commits.
//!
//! Callers send a [`Request`] and wait for its answer. The committer blocks for the first
//! request, takes every other one already waiting (up to the batch caps), writes them all in
//! one transaction, commits once (one fsync), and answers all of them. A lone request is
//! committed at once, with no timer; under load the batches grow by themselves. After
//! [`CHECKPOINT_IDLE`] without a request it records redb's allocator state once (see
//! [`checkpoint`]); after [`compaction::IDLE`] more it may compact the database (see
//! `compaction`).
//!
//! The channel has no capacity limit of its own: each caller has at most one request in it
//! and waits for the answer, so it is bounded by the number of callers (sessions, delivery
//! workers), which the daemon bounds.

use std::io;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use redb::ReadableDatabase;

use crate::batch::{self, Slot};
use crate::change::Work;
use crate::compaction::{self, Compactor};
use crate::database::{self, BODIES};
use crate::spool::Shared;
use crate::{QueueId, SpoolError};

/// How long the committer waits without a request before a checkpoint.
const CHECKPOINT_IDLE: Duration = Duration::from_secs(1);

/// On success, how many requests the commit held.
pub(crate) type Answer = Result<usize, SpoolError>;

/// Where the answer goes: an async caller awaits a oneshot; a blocking caller (such as
/// `quarantine`, which may run inside a runtime) waits on a std channel.
#[derive(Debug)]
pub(crate) enum Reply {
    Async(tokio::sync::oneshot::Sender<Answer>),
    Blocking(SyncSender<Answer>),
}

impl Reply {
    fn send(self, answer: Answer) {
        // A caller that stopped waiting (a cancelled session) does not need the answer.
        let _ = match self {
            Reply::Async(sender) => sender.send(answer).ok(),
            Reply::Blocking(sender) => sender.send(answer).ok(),
        };
    }
}

#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) work: Work,
    pub(crate) reply: Reply,
}

#[derive(Debug)]
pub(crate) enum Message {
    Request(Request),
    /// Finish what is queued, then exit.
    Shutdown,
}

pub(crate) fn spawn(shared: Arc<Shared>, inbox: Receiver<Message>) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("spool-committer".to_owned())
        .spawn(move || run(&shared, &inbox))
}

fn run(shared: &Shared, inbox: &Receiver<Message>) {
    let max_messages = shared.options.max_batch_messages.max(1);
    let max_bytes = shared.options.max_batch_bytes;
    // A request taken from the channel that did not fit the previous batch.
    let mut carried: Option<Request> = None;
    let mut draining = false;
    let mut compactor = Compactor::default();
    // Commits were made since the last checkpoint (see `checkpoint`).
    let mut unchecked = false;
    loop {
        let first = match carried.take() {
            Some(request) => request,
            None => {
                let next = if draining {
                    inbox.try_recv().ok()
                } else {
                    let idle = if unchecked {
                        CHECKPOINT_IDLE
                    } else {
                        compaction::IDLE
                    };
                    match inbox.recv_timeout(idle) {
                        Ok(message) => Some(message),
                        Err(RecvTimeoutError::Timeout) => {
                            if unchecked {
                                checkpoint(shared);
                                unchecked = false;
                            } else {
                                unchecked = compactor.run_if_worth_it(shared);
                            }
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => None,
                    }
                };
                match next {
                    Some(Message::Request(request)) => request,
                    Some(Message::Shutdown) => {
                        draining = true;
                        continue;
                    }
                    None => break,
                }
            }
        };
        let mut bytes = first.work.bytes();
        let mut batch = vec![first];
        while batch.len() < max_messages {
            match inbox.try_recv() {
                Ok(Message::Request(request)) => {
                    let size = request.work.bytes();
                    if bytes.saturating_add(size) > max_bytes {
                        carried = Some(request);
                        break;
                    }
                    bytes += size;
                    batch.push(request);
                }
                Ok(Message::Shutdown) => draining = true,
                Err(_) => break,
            }
        }
        commit(shared, batch);
        unchecked = true;
    }
    tracing::debug!("spool committer stopped");
}

/// Writes an empty commit that records redb's allocator state ("quick repair"), so that
/// opening the file after a crash of an idle spool loads that state instead of walking the
/// whole file (seconds with a million messages: the start's first `250` would wait for it).
/// Recording it on every commit would cost intake about a third of its commits per second
/// (`database::QUICK_REPAIR`); once per idle spell costs one fsync. A crash under load, after
/// commits that did not record it, still repairs in full.
fn checkpoint(shared: &Shared) {
    let guard = shared
        .database
        .read()
        .unwrap_or_else(PoisonError::into_inner);
    let Some(database) = guard.as_ref() else {
        return;
    };
    let written = database::begin_write(database).and_then(|mut txn| {
        txn.set_quick_repair(true);
        txn.commit().map_err(SpoolError::from)
    });
    match written {
        Ok(()) => tracing::debug!("spool checkpoint written"),
        Err(error) => {
            tracing::warn!(%error, "spool checkpoint failed; a crash now would need a full repair");
        }
    }
}

fn commit(shared: &Shared, batch: Vec<Request>) {
    let (mut slots, replies): (Vec<Slot>, Vec<Reply>) = batch
        .into_iter()
        .map(|request| {
            let slot = Slot {
                work: request.work,
                rejection: None,
            };
            (slot, request.reply)
        })
        .unzip();

    let unavailable = shared
        .database
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .is_none();
    if unavailable {
        reopen(shared);
    }
    let outcome = {
        let database = shared
            .database
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match database.as_ref() {
            Some(database) => batch::write(database, &shared.bodies, &shared.ids, &mut slots),
            None => Err(SpoolError::Database(
                "the spool database could not be reopened after a failed commit".to_owned(),
            )),
        }
    };

    match outcome {
        Ok(committed) => {
            let accepted = slots.iter().filter(|slot| slot.rejection.is_none()).count();
            let stored: usize = slots
                .iter()
                .filter(|slot| slot.rejection.is_none())
                .map(|slot| slot.work.inserts())
                .sum();
            if committed.committed {
                shared.stats.record_commit(accepted, stored);
            }
            for id in committed.unlink {
                let path = shared.bodies.stored_path(id);
                if let Err(error) = std::fs::remove_file(&path)
                    && error.kind() != io::ErrorKind::NotFound
                {
                    tracing::warn!(queue_id = %id, path = %path.display(), %error, "could not delete body file");
                }
            }
            for (slot, reply) in slots.into_iter().zip(replies) {
                match slot.rejection {
                    Some(rejection) => {
                        slot.work.settle_bodies(|_| false);
                        reply.send(Err(rejection));
                    }
                    None => {
                        slot.work.settle_bodies(|_| true);
                        reply.send(Ok(accepted));
                    }
                }
            }
        }
        Err(error) => {
            tracing::error!(%error, requests = slots.len(), "spool commit failed");
            // redb refuses further writes after a failed commit until the database is
            // reopened; reopening also tells which inserts a commit that failed part way
            // made durable after all, whose body files must stay.
            let reopened = reopen(shared);
            for (slot, reply) in slots.into_iter().zip(replies) {
                match slot.rejection {
                    // The record that took the key may have been an earlier request of this
                    // very batch, which is not stored: the caller must try again.
                    Some(SpoolError::RecordExists { .. }) => {
                        slot.work.settle_bodies(|_| false);
                        reply.send(Err(error.duplicate()));
                    }
                    Some(rejection) => {
                        slot.work.settle_bodies(|_| false);
                        reply.send(Err(rejection));
                    }
                    None => {
                        // Unknown (not reopened): keep the files; the next open sweeps
                        // those no record owns.
                        slot.work
                            .settle_bodies(|id| !reopened || is_stored(shared, id));
                        reply.send(Err(error.duplicate()));
                    }
                }
            }
        }
    }
}

/// Closes and reopens the database (repairing it). Waits for running reads to end.
fn reopen(shared: &Shared) -> bool {
    let mut database = shared
        .database
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    // The old handle goes first: it holds the file lock.
    *database = None;
    match database::open(&shared.options.path) {
        Ok(reopened) => {
            tracing::info!("spool database reopened after a failed commit");
            *database = Some(reopened);
            true
        }
        Err(error) => {
            tracing::error!(%error, "could not reopen the spool database; retrying with the next request");
            false
        }
    }
}

/// Whether a body record for `id` is stored; when that cannot be told, assume it is (so its
/// file is kept, and swept at the next open if no record owns it).
fn is_stored(shared: &Shared, id: QueueId) -> bool {
    let database = shared
        .database
        .read()
        .unwrap_or_else(PoisonError::into_inner);
    let Some(database) = database.as_ref() else {
        return true;
    };
    let lookup = || -> Result<bool, SpoolError> {
        let txn = database.begin_read()?;
        Ok(txn.open_table(BODIES)?.get(id.0)?.is_some())
    };
    lookup().unwrap_or(true)
}
