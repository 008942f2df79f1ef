//! A listener's connection: plain TCP, or TLS from the first byte (RFC 8314)
//! or after STARTTLS (RFC 3207). An enum rather than a boxed trait object, so
//! a plain session's reads and writes cost one branch, not an allocation or
//! an indirect call.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A stream a session can secure in place.
pub trait StartTls {
    /// Runs the TLS handshake as the server over this stream. On error the
    /// stream is unusable and the session must end.
    fn start_tls(&mut self, acceptor: &TlsAcceptor) -> impl Future<Output = io::Result<()>> + Send;
}

pub enum InboundStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// A handshake took the plain stream and failed.
    Closed,
}

impl StartTls for InboundStream {
    async fn start_tls(&mut self, acceptor: &TlsAcceptor) -> io::Result<()> {
        match std::mem::replace(self, InboundStream::Closed) {
            InboundStream::Plain(tcp) => {
                let secured = acceptor.accept(tcp).await?;
                *self = InboundStream::Tls(Box::new(secured));
                Ok(())
            }
            already => {
                *self = already;
                Err(io::Error::other("the connection is not plain TCP"))
            }
        }
    }
}

/// In-process sessions (the maildrop importer) never offer TLS.
impl StartTls for DuplexStream {
    async fn start_tls(&mut self, _acceptor: &TlsAcceptor) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

fn closed() -> io::Error {
    io::ErrorKind::NotConnected.into()
}

impl AsyncRead for InboundStream {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            InboundStream::Plain(tcp) => Pin::new(tcp).poll_read(context, buffer),
            InboundStream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(context, buffer),
            InboundStream::Closed => Poll::Ready(Err(closed())),
        }
    }
}

impl AsyncWrite for InboundStream {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            InboundStream::Plain(tcp) => Pin::new(tcp).poll_write(context, data),
            InboundStream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(context, data),
            InboundStream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            InboundStream::Plain(tcp) => Pin::new(tcp).poll_flush(context),
            InboundStream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(context),
            InboundStream::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            InboundStream::Plain(tcp) => Pin::new(tcp).poll_shutdown(context),
            InboundStream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(context),
            InboundStream::Closed => Poll::Ready(Ok(())),
        }
    }
}
