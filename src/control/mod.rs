//! The control API: HTTP/1.1 with JSON bodies on a Unix socket
//! (`control.socket`), for the `queue` commands and for
//! `curl --unix-socket`. One request per connection.
//!
//! - `http`: the request/response framing (pure);
//! - `api`: the routes and their JSON;
//! - `select`: the filters of lists and bulk operations (pure);
//! - `operations`: retry, hold, release, delete, bounce, one by one or in
//!   chunks;
//! - `view`: the JSON documents, shared with the CLI;
//! - `suppression`: the suppression list's routes and its JSON.
//!
//! `GET /queue`, `GET /suppression` and bulk operations stream their
//! answers (chunked): the daemon never holds a whole list of a large queue
//! or suppression list, and a client that goes away stops the work at the
//! next write.
//!
//! Invariant: connections are bounded (`MAX_CONNECTIONS`, a permit taken
//! before accept), request heads and bodies are capped, and reading a
//! request has a timeout.

pub mod api;
pub mod http;
pub mod operations;
pub mod select;
pub mod suppression;
pub mod view;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::queue::handle::QueueHandle;
use crate::reload::Reloader;
use crate::suppression::Suppression;
use crate::webhook::Webhooks;
use api::Reply;

/// Control connections served at once (event streams included).
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long writing one response (or one event) may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound control socket; removes its file when dropped.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path` (mode 0660), creating its directory if needed and replacing
/// a stale socket file; refuses if a live daemon answers on it.
pub fn bind(path: &Path) -> anyhow::Result<ControlSocket> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "control socket {} is in use by another process",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot replace stale control socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot bind control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    Ok(ControlSocket {
        listener,
        path: path.to_owned(),
    })
}

/// Messages per chunk of a streamed `GET /queue`: one spool read
/// transaction and one write each.
const LIST_CHUNK: usize = 256;

/// What the control API works on: the queue (through its handle, which
/// the context dereferences to), the webhooks and the suppression list.
#[derive(Clone)]
pub struct Context {
    pub handle: QueueHandle,
    pub webhooks: Arc<Webhooks>,
    pub suppression: Arc<Suppression>,
}

impl std::ops::Deref for Context {
    type Target = QueueHandle;

    fn deref(&self) -> &QueueHandle {
        &self.handle
    }
}

/// What the control API serves besides the queue.
#[derive(Debug, Clone, Copy)]
pub struct ControlOptions {
    /// Messages per commit of a bulk operation.
    pub bulk_chunk: usize,
}

/// Serves the control API until `shutdown`; then the socket file is removed.
pub fn spawn(
    socket: ControlSocket,
    context: Context,
    reloader: Arc<Reloader>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    let connections = tracker.clone();
    tracker.spawn(async move {
        let limit_connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let permit = tokio::select! {
                permit = limit_connections.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                _ = shutdown.cancelled() => break,
            };
            let stream = tokio::select! {
                accepted = socket.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!("control socket: accept failed: {error}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let context = context.clone();
            let reloader = reloader.clone();
            let shutdown = shutdown.clone();
            connections.spawn(async move {
                if let Err(error) = serve_connection(stream, &context, &reloader, &shutdown).await {
                    tracing::debug!("control connection: {error}");
                }
                drop(permit);
            });
        }
        drop(socket);
    });
}

async fn serve_connection(
    mut stream: UnixStream,
    context: &Context,
    reloader: &Reloader,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let (request, body) =
        match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await {
            Ok(Ok(Ok(read))) => read,
            Ok(Ok(Err(reply))) => return write_reply(&mut stream, reply).await,
            Ok(Err(error)) => return Err(error),
            Err(_) => return write_reply(&mut stream, Reply::error(408, "request timeout")).await,
        };
    let reply = match request.path.trim_matches('/') {
        "reload" => api::reload(reloader, &request).await,
        _ => api::handle(context, &request, &body).await,
    };
    match reply {
        Reply::Events { text } => stream_events(stream, context, shutdown, text).await,
        Reply::List { filter, limit } => {
            let listed = stream_list(stream, context, &filter, limit).await;
            if limit.is_none_or(|limit| limit >= LARGE_QUEUE) && context.queue.len() >= LARGE_QUEUE
            {
                release_free_memory().await;
            }
            listed
        }
        Reply::Bulk { bulk, progress } => {
            let options = ControlOptions {
                bulk_chunk: reloader.settings.snapshot().config.control.bulk_chunk,
            };
            let done = stream_bulk(stream, context, &bulk, progress, options, shutdown).await;
            release_free_memory().await;
            done
        }
        Reply::Suppressions { class, limit } => {
            suppression::stream_list(stream, context, class, limit).await
        }
        reply => write_reply(&mut stream, reply).await,
    }
}

/// Queue length from which a listing is followed by
/// [`release_free_memory`]: below it there is little to give back, and a
/// script polling `queue list` should not pay for a walk of the heap.
const LARGE_QUEUE: usize = 10_000;

/// After a listing of a large queue or a bulk operation, which decode
/// envelopes (or free schedule entries) in chunks on blocking-pool threads,
/// each its own allocator arena, and refill redb's page cache from them:
/// the allocator's free pages go back to the system (src/memory.rs), on the
/// blocking pool since it takes a while.
async fn release_free_memory() {
    let _ = tokio::task::spawn_blocking(crate::memory::release_free_memory).await;
}

/// Reads one request; `Ok(Err(reply))` for a request to refuse.
async fn read_request(
    stream: &mut UnixStream,
) -> std::io::Result<Result<(http::Request, Vec<u8>), Reply>> {
    let mut buffer = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(end) = http::head_end(&buffer) {
            break end;
        }
        if buffer.len() > http::MAX_HEAD {
            return Ok(Err(Reply::error(431, "request head too large")));
        }
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let request = match http::parse_request(&buffer[..head_end]) {
        Ok(request) => request,
        Err(http::HeadError::BodyTooLarge) => {
            return Ok(Err(Reply::error(413, "request body too large")));
        }
        Err(error) => return Ok(Err(Reply::error(400, &error.to_string()))),
    };
    let mut body = buffer.split_off(head_end);
    if body.len() < request.content_length {
        let missing = request.content_length - body.len();
        let start = body.len();
        body.resize(request.content_length, 0);
        stream.read_exact(&mut body[start..start + missing]).await?;
    }
    body.truncate(request.content_length);
    Ok(Ok((request, body)))
}

async fn write_reply(stream: &mut UnixStream, reply: Reply) -> std::io::Result<()> {
    let Reply::Json { status, body } = reply else {
        return Ok(());
    };
    let bytes = http::response(status, "application/json", &body);
    write_all(stream, &bytes).await?;
    stream.shutdown().await
}

async fn write_all(
    stream: &mut (impl tokio::io::AsyncWrite + Unpin),
    bytes: &[u8],
) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(bytes)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// `GET /queue`: the messages `filter` selects, in queue id order, as one
/// JSON array written in chunks. Each chunk is chosen from the schedule and
/// its envelopes read in one short read transaction on the blocking pool,
/// so memory stays that of one chunk whatever the queue's length. A write
/// that fails (the client went away: `queue list | head`) ends the work.
async fn stream_list(
    mut stream: UnixStream,
    context: &Context,
    filter: &select::Filter,
    limit: Option<usize>,
) -> std::io::Result<()> {
    write_all(&mut stream, &http::streaming_head("application/json")).await?;
    write_all(&mut stream, &http::chunk(b"[")).await?;
    let matcher = filter.at(std::time::SystemTime::now());
    let mut remaining = limit.unwrap_or(usize::MAX);
    let mut after = None;
    let mut first = true;
    let mut sent = 0usize;
    while remaining > 0 {
        let mut batch: Vec<(relayq_spool::QueueId, crate::queue::Entry)> = Vec::new();
        let mut last = after;
        let mut more = false;
        let wanted = remaining.min(LIST_CHUNK);
        context.queue.visit(after, |id, entry, domains| {
            last = Some(id);
            if matcher.matches(entry, domains) {
                batch.push((id, *entry));
            }
            more = batch.len() >= wanted;
            !more
        });
        after = last;
        if !batch.is_empty() {
            let ids: Vec<_> = batch.iter().map(|(id, _)| *id).collect();
            let spool = context.spool.clone();
            let envelopes = tokio::task::spawn_blocking(move || spool.envelopes(&ids))
                .await
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)?;
            let mut out = Vec::with_capacity(batch.len() * 512);
            for ((id, entry), bytes) in batch.iter().zip(envelopes) {
                // Gone since the walk (delivered, deleted): not listed.
                let Some(Ok(envelope)) = bytes.map(|bytes| crate::queue::Envelope::decode(&bytes))
                else {
                    continue;
                };
                if !first {
                    out.extend_from_slice(b",\n");
                }
                first = false;
                let view = view::MessageView::new(*id, entry, &envelope);
                serde_json::to_writer(&mut out, &view).map_err(std::io::Error::other)?;
                remaining = remaining.saturating_sub(1);
                sent += 1;
            }
            if !out.is_empty()
                && let Err(error) = write_all(&mut stream, &http::chunk(&out)).await
            {
                tracing::info!("queue list: the client went away after {sent} messages ({error})");
                return Err(error);
            }
        }
        if !more {
            break;
        }
    }
    write_all(&mut stream, &http::chunk(b"]\n")).await?;
    write_all(&mut stream, &http::chunk(b"")).await?;
    stream.shutdown().await
}

/// A bulk operation: JSON lines, with `progress` one `{"progress": COUNTS}`
/// per chunk, then the report. A client that goes away does not stop the
/// operation (it was asked for); shutdown does, between two chunks.
async fn stream_bulk(
    mut stream: UnixStream,
    context: &Context,
    bulk: &operations::Bulk,
    progress: bool,
    options: ControlOptions,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    write_all(&mut stream, &http::streaming_head("application/x-ndjson")).await?;
    let (progress_sender, mut progress_receiver) = watch::channel(view::OperationCounts::default());
    let operation = operations::run_bulk(
        context,
        bulk,
        options.bulk_chunk,
        shutdown,
        &progress_sender,
    );
    tokio::pin!(operation);
    let mut connected = true;
    let report = loop {
        tokio::select! {
            report = &mut operation => break report,
            changed = progress_receiver.changed(), if progress && connected => {
                if changed.is_err() {
                    continue;
                }
                let counts = *progress_receiver.borrow_and_update();
                let line = api::to_json(&serde_json::json!({ "progress": counts }));
                connected = write_all(&mut stream, &http::chunk(&line)).await.is_ok();
            }
        }
    };
    write_all(&mut stream, &http::chunk(&api::to_json(&report))).await?;
    write_all(&mut stream, &http::chunk(b"")).await?;
    stream.shutdown().await
}

/// `GET /events`: one JSON object (with `?format=text`, one text line) per line, as events happen, until the
/// client goes away or the daemon shuts down. A client too slow for the
/// event rate gets `{"lagged": N}` for the N events it missed.
async fn stream_events(
    mut stream: UnixStream,
    context: &Context,
    shutdown: &CancellationToken,
    text: bool,
) -> std::io::Result<()> {
    let mut events = context.events.subscribe();
    let (mut reader, mut stream) = stream.split();
    write_all(&mut stream, &http::streaming_head("application/x-ndjson")).await?;
    // An empty line first, so the client knows the subscription is live.
    write_all(&mut stream, &http::chunk(b"\n")).await?;
    tracing::info!("control: a client follows the events (queue tail)");
    let mut ignored = [0u8; 512];
    loop {
        let line = tokio::select! {
            // The client sends nothing more; end of stream means it left.
            read = reader.read(&mut ignored) => match read {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => continue,
            },
            received = events.recv() => match received {
                Ok(event) if text => event.to_text().into_bytes(),
                Ok(event) => serde_json::to_vec(&event).unwrap_or_default(),
                Err(broadcast::error::RecvError::Lagged(missed)) if text => {
                    format!("-- {missed} events missed (too slow)").into_bytes()
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    serde_json::to_vec(&serde_json::json!({ "lagged": missed })).unwrap_or_default()
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let mut line = line;
        line.push(b'\n');
        write_all(&mut stream, &http::chunk(&line)).await?;
    }
    write_all(&mut stream, &http::chunk(b"")).await?;
    stream.shutdown().await
}
