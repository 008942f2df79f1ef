//! TLS in a session: STARTTLS (RFC 3207) and the handshake of implicit TLS
//! (RFC 8314), and what a listener offers beyond plain SMTP.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::super::credentials::Current;
use super::super::pressure::Interruption;
use super::super::reply::Reply;
use super::super::stream::StartTls;
use super::{Next, Session};
use crate::config::{ListenerAuth, ListenerTls};
use crate::metrics::ShedReason;

/// What a listener offers beyond plain SMTP. Cheap to clone (once per
/// connection).
#[derive(Clone)]
pub struct Security {
    pub tls: ListenerTls,
    /// Set whenever `tls` is not `None`; replaced on reload.
    pub acceptor: Option<Arc<Current<TlsAcceptor>>>,
    /// Not `None` only with TLS (RFC 4954 §4).
    pub auth: ListenerAuth,
}

impl Security {
    /// Plain SMTP, no AUTH: the maildrop importer and listeners without TLS.
    pub fn plain() -> Security {
        Security {
            tls: ListenerTls::None,
            acceptor: None,
            auth: ListenerAuth::None,
        }
    }

    pub(super) fn is_implicit(&self) -> bool {
        self.tls == ListenerTls::Implicit && self.acceptor.is_some()
    }

    pub(super) fn offers_starttls(&self) -> bool {
        self.tls == ListenerTls::Starttls && self.acceptor.is_some()
    }
}

/// How a handshake wait ended.
enum Handshake {
    Done(std::io::Result<()>),
    Expired,
    Shed,
}

impl<S: AsyncRead + AsyncWrite + StartTls + Unpin> Session<S> {
    pub(super) async fn starttls(&mut self) -> std::io::Result<Next> {
        if !self.security.offers_starttls() {
            self.reply_error(Reply::new(502, "5.5.1", "Error: STARTTLS not implemented"));
            return Ok(self.after_error());
        }
        if self.secure {
            self.reply_error(Reply::new(503, "5.5.1", "Error: TLS already active"));
            return Ok(self.after_error());
        }
        self.reply(Reply::new(220, "2.0.0", "Ready to start TLS"));
        self.flush().await?;
        // Anything the client sent after STARTTLS came in plaintext and
        // could have been injected by a man in the middle (CVE-2011-0411):
        // it is discarded, never taken as commands of the secured session.
        self.input.clear();
        self.discarding_line = false;
        if !self.handshake().await {
            return Ok(Next::Close);
        }
        // RFC 3207 §4.2: forget everything learnt before TLS.
        self.helo = None;
        self.extended = false;
        self.transaction = None;
        self.bdat = None;
        self.sasl = None;
        self.command_since = Instant::now();
        Ok(Next::Continue)
    }

    /// Secures the stream as the server, within the idle timeout; the
    /// session may be shed meanwhile. False when the session must end.
    pub(super) async fn handshake(&mut self) -> bool {
        let Some(acceptor) = self.security.acceptor.as_ref().map(|current| current.get()) else {
            return false;
        };
        let started = Instant::now();
        let deadline = started + self.timeout();
        self.lease.waiting(started);
        let (stream, lease) = (&mut self.stream, &mut self.lease);
        let handshake = stream.start_tls(&acceptor);
        tokio::pin!(handshake);
        let ended = loop {
            tokio::select! {
                done = &mut handshake => break Handshake::Done(done),
                _ = tokio::time::sleep_until(deadline) => break Handshake::Expired,
                interruption = lease.interrupted() => {
                    if interruption == Interruption::Shed {
                        break Handshake::Shed;
                    }
                }
            }
        };
        self.lease.working();
        match ended {
            Handshake::Done(Ok(())) => {
                self.secure = true;
                true
            }
            Handshake::Done(Err(error)) => {
                tracing::debug!(client = %self.client, "TLS handshake failed: {error}");
                false
            }
            Handshake::Expired => {
                self.shared.metrics.session_shed(ShedReason::CommandTimeout);
                tracing::debug!(client = %self.client, "TLS handshake timed out");
                false
            }
            Handshake::Shed => {
                self.shared.metrics.session_shed(ShedReason::Pressure);
                false
            }
        }
    }
}
