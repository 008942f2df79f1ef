//! The socket under a connection, plain or TLS, with a read-ahead buffer
//! for pipelined replies. Every read and write here has a deadline.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{ClientError, RemoteReply};
use crate::wire::reply::{Reply, parse_reply};

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Why a TLS handshake failed: the words for logs and replies, and the
/// error rustls gave (a certificate that did not verify, a protocol
/// error), when it gave one.
pub(super) struct HandshakeFailure {
    pub(super) detail: String,
    pub(super) tls: Option<rustls::Error>,
}

pub(super) struct Transport {
    stream: Stream,
    /// Bytes received and not yet consumed as replies.
    input: Vec<u8>,
}

impl Transport {
    pub fn plain(stream: TcpStream) -> Transport {
        Transport {
            stream: Stream::Plain(stream),
            input: Vec::with_capacity(4096),
        }
    }

    /// Wraps a fresh TCP stream in TLS (implicit TLS, or after STARTTLS's
    /// 220). The handshake is bounded by `limit`.
    pub async fn handshake(
        stream: TcpStream,
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        limit: Duration,
    ) -> Result<Transport, HandshakeFailure> {
        let connect = TlsConnector::from(config).connect(server_name, stream);
        match timeout(limit, connect).await {
            Ok(Ok(stream)) => Ok(Transport {
                stream: Stream::Tls(Box::new(stream)),
                input: Vec::with_capacity(4096),
            }),
            Ok(Err(error)) => Err(HandshakeFailure {
                detail: format!("TLS handshake failed: {error}"),
                // tokio-rustls hands rustls's own error over inside the
                // io::Error.
                tls: error
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .cloned(),
            }),
            Err(_) => Err(HandshakeFailure {
                detail: format!("timeout in TLS handshake after {limit:?}"),
                tls: None,
            }),
        }
    }

    /// The TCP stream, to be wrapped in TLS after STARTTLS. Refused when
    /// the server sent anything after its 220: those bytes were not
    /// protected and must not be read as if they were (CVE-2011-0411).
    pub fn into_tcp_for_upgrade(self) -> Result<TcpStream, String> {
        if !self.input.is_empty() {
            return Err("server sent data after its reply to STARTTLS".to_owned());
        }
        match self.stream {
            Stream::Plain(stream) => Ok(stream),
            Stream::Tls(_) => Err("STARTTLS on a connection that already uses TLS".to_owned()),
        }
    }

    pub fn tls_session(&self) -> Option<&rustls::ClientConnection> {
        match &self.stream {
            Stream::Plain(_) => None,
            Stream::Tls(stream) => Some(stream.get_ref().1),
        }
    }

    /// Writes `bytes` completely within `limit`.
    pub async fn send(
        &mut self,
        bytes: &[u8],
        limit: Duration,
        stage: &'static str,
    ) -> Result<(), ClientError> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match timeout(limit, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(ClientError::ConnectionLost {
                stage,
                detail: error.to_string(),
            }),
            Err(_) => Err(ClientError::Timeout(stage)),
        }
    }

    /// Reads the next reply; all of it must arrive within `limit`.
    pub async fn read_reply(
        &mut self,
        limit: Duration,
        stage: &'static str,
    ) -> Result<RemoteReply, ClientError> {
        Ok(RemoteReply::from(&self.read_raw_reply(limit, stage).await?))
    }

    /// Reads the next reply as parsed, its raw form included (EHLO needs
    /// the raw lines).
    pub async fn read_raw_reply(
        &mut self,
        limit: Duration,
        stage: &'static str,
    ) -> Result<Reply, ClientError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((reply, length)) = parse_reply(&self.input)
                .map_err(|error| ClientError::Protocol(error.to_string()))?
            {
                self.input.drain(..length);
                return Ok(reply);
            }
            self.input.reserve(4096);
            match timeout_at(deadline, self.stream.read_buf(&mut self.input)).await {
                Ok(Ok(0)) => {
                    return Err(ClientError::ConnectionLost {
                        stage,
                        detail: "connection closed by the server".to_owned(),
                    });
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    return Err(ClientError::ConnectionLost {
                        stage,
                        detail: error.to_string(),
                    });
                }
                Err(_) => return Err(ClientError::Timeout(stage)),
            }
        }
    }

    /// Closes the connection (TLS close_notify, TCP FIN) within `limit`.
    pub async fn shutdown(&mut self, limit: Duration) {
        let _ = timeout(limit, self.stream.shutdown()).await;
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_read(context, buffer),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(context, buffer),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write(context, buffer),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(context, buffer),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(context),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(context),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_shutdown(context),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(context),
        }
    }
}
