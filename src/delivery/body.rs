//! A stored body as an `AsyncRead`, without loading large bodies whole:
//! small ones are copied out at once, large ones are read in chunks on the
//! blocking pool and handed over through a bounded channel.

use std::io::{self, Cursor, Read};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use relayq_spool::{BodyReader, QueueId, Spool, SpoolError};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

/// Bodies up to this size are read into memory in one go.
const READ_WHOLE: u64 = 256 * 1024;
const CHUNK: usize = 64 * 1024;
/// Chunks in flight between the reading thread and the connection.
const CHUNKS_IN_FLIGHT: usize = 4;

pub type AsyncBody = Pin<Box<dyn AsyncRead + Send>>;

/// Message `id`'s body when it is small enough to be read whole (blocking;
/// `None` for a larger one, which is streamed by [`open`] instead). A delivery
/// pass reads it with the envelope, in one trip to the blocking pool.
pub fn read_small(spool: &Spool, id: QueueId) -> Result<Option<Bytes>, SpoolError> {
    let mut reader = spool.read_body(id)?;
    if reader.len() > READ_WHOLE {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(reader.len() as usize);
    reader.read_to_end(&mut bytes).map_err(SpoolError::Io)?;
    Ok(Some(Bytes::from(bytes)))
}

/// A body read whole, as the stream the client sends.
pub fn from_bytes(bytes: Bytes) -> AsyncBody {
    Box::pin(Cursor::new(bytes))
}

/// Opens message `id`'s body for streaming. The open (and the read of a
/// small body) runs on the blocking pool, never on an async worker.
pub async fn open(spool: &Spool, id: QueueId) -> Result<AsyncBody, SpoolError> {
    let spool = spool.clone();
    let opened = tokio::task::spawn_blocking(move || -> Result<Opened, SpoolError> {
        let mut reader = spool.read_body(id)?;
        if reader.len() <= READ_WHOLE {
            let mut bytes = Vec::with_capacity(reader.len() as usize);
            reader.read_to_end(&mut bytes).map_err(SpoolError::Io)?;
            return Ok(Opened::Whole(bytes));
        }
        Ok(Opened::Large(reader))
    })
    .await
    .map_err(|error| SpoolError::Io(io::Error::other(error)))??;
    let mut reader = match opened {
        Opened::Whole(bytes) => return Ok(Box::pin(Cursor::new(bytes))),
        Opened::Large(reader) => reader,
    };
    let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        loop {
            let mut chunk = vec![0u8; CHUNK];
            let item = match reader.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => {
                    chunk.truncate(n);
                    Ok(Bytes::from(chunk))
                }
                Err(error) => Err(error),
            };
            let failed = item.is_err();
            if sender.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    Ok(Box::pin(ChannelReader {
        receiver,
        current: Bytes::new(),
    }))
}

enum Opened {
    Whole(Vec<u8>),
    Large(BodyReader),
}

struct ChannelReader {
    receiver: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.current.is_empty() {
            match self.receiver.poll_recv(context) {
                Poll::Ready(Some(Ok(chunk))) => self.current = chunk,
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = self.current.len().min(buf.remaining());
        let chunk = self.current.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}
