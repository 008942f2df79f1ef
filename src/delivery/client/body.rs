//! Streaming message content to the server (RFC 5321 §4.5.2): the stored
//! body read chunk by chunk, dot-stuffed and terminated by
//! `wire::dot::DotStuffer`, so a body is never held in memory whole.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::ClientError;
use super::transport::Transport;
use crate::wire::dot::DotStuffer;

/// How much of the stored message is read and written at a time.
const CHUNK: usize = 64 * 1024;

/// Streams `body` to the server, dot-stuffed and terminated; each write
/// must complete within `limit`.
pub(super) async fn send_body<R: AsyncRead + Unpin>(
    transport: &mut Transport,
    mut body: R,
    limit: Duration,
) -> Result<(), ClientError> {
    const STAGE: &str = "writing message data";
    let mut stuffer = DotStuffer::new();
    let mut input = vec![0; CHUNK];
    // At most CHUNK bytes wait here (plus their stuffing); the last of the
    // content goes out in one write with the terminator, so a small message
    // is one write.
    let mut output = Vec::with_capacity(2 * CHUNK + CHUNK / 4);
    loop {
        let read = body.read(&mut input).await.map_err(ClientError::Body)?;
        if read == 0 {
            break;
        }
        stuffer.stuff(&input[..read], &mut output);
        if output.len() >= CHUNK {
            transport.send(&output, limit, STAGE).await?;
            output.clear();
        }
    }
    stuffer.finish(&mut output);
    transport.send(&output, limit, STAGE).await
}
