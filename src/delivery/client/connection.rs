//! Opening a session (connect, greeting, EHLO/HELO, STARTTLS, AUTH) and
//! ending it (RSET, QUIT).

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use smtp_proto::{EXT_DSN, EXT_PIPELINING, EXT_START_TLS};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::auth::authenticate;
use super::transport::{HandshakeFailure, Transport};
use super::{
    ClientError, ClientSettings, ConnectError, ConnectErrorKind, Credentials, RemoteReply, Target,
    TlsInfo, TlsMode,
};
use crate::dane::{DaneVerifier, SessionDane};
use crate::tls::{TlsConfigs, server_name};
use crate::wire::ehlo::Capabilities;

/// An open SMTP session with one host, ready for transactions.
pub struct Connection {
    pub(super) target: Target,
    pub(super) settings: ClientSettings,
    pub(super) transport: Transport,
    pub(super) capabilities: Capabilities,
    tls: Option<TlsInfo>,
    pub(super) completed_transactions: u32,
    /// An RSET is owed before the next transaction: with PIPELINING it goes
    /// in the same write as that transaction's MAIL, RCPT and DATA.
    pub(super) rset_pending: bool,
    /// The server has answered the current transaction's MAIL FROM.
    pub(super) mail_answered: bool,
    /// Reset for reuse at least once: the server may since have ended the
    /// idle session (with a 421 still waiting in the input).
    pub(super) reused: bool,
    /// How DANE applied when the session was opened; `None` when it was
    /// not asked (DANE off, a route).
    dane: Option<SessionDane>,
}

/// How long QUIT waits for its 221 (and the close for its close_notify).
const QUIT_WAIT: Duration = Duration::from_secs(5);

impl Connection {
    /// Connects and opens a session per `tls`, authenticating when
    /// `credentials` are given (never without TLS). In opportunistic mode a
    /// failed TLS handshake is retried once on a new connection without
    /// STARTTLS.
    pub async fn open(
        target: &Target,
        settings: &ClientSettings,
        tls: TlsMode,
        credentials: Option<&Credentials>,
        tls_configs: &TlsConfigs,
    ) -> Result<Connection, ConnectError> {
        let first = open_once(target, settings, tls, credentials, tls_configs, None).await;
        match first {
            Err(error) if tls == TlsMode::Opportunistic && error.kind == ConnectErrorKind::Tls => {
                tracing::warn!(
                    relay = %target,
                    "{}; retrying once without STARTTLS",
                    error.detail
                );
                open_once(
                    target,
                    settings,
                    TlsMode::Disabled,
                    credentials,
                    tls_configs,
                    None,
                )
                .await
            }
            other => other,
        }
    }

    /// Connects to a host with usable TLSA records (RFC 7672): STARTTLS is
    /// mandatory, the certificate is judged by `dane` (whose verdict the
    /// caller reads, success or not), the SNI is the TLSA base domain, and
    /// nothing is retried without TLS.
    pub async fn open_dane(
        target: &Target,
        settings: &ClientSettings,
        dane: &Arc<DaneVerifier>,
        tls_configs: &TlsConfigs,
    ) -> Result<Connection, ConnectError> {
        let mode = TlsMode::StartTls { verify: true };
        open_once(target, settings, mode, None, tls_configs, Some(dane)).await
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The TLS session, if the connection is encrypted.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// How DANE applied to this session, as recorded by the caller that
    /// opened it.
    pub fn dane(&self) -> Option<&SessionDane> {
        self.dane.as_ref()
    }

    pub fn set_dane(&mut self, dane: SessionDane) {
        self.dane = Some(dane);
    }

    /// Whether the server offers DSN (RFC 3461): if not, NOTIFY=SUCCESS
    /// recipients get a "relayed" DSN from relayq.
    pub fn offers_dsn(&self) -> bool {
        self.capabilities.offers(EXT_DSN)
    }

    /// Transactions on this connection that got a reply to their final dot.
    pub fn completed_transactions(&self) -> u32 {
        self.completed_transactions
    }

    /// RSET before reusing the connection for the next message; an error
    /// means the connection must not be reused. When the server offers
    /// PIPELINING the RSET is sent with the next transaction (RFC 2920 §3.1
    /// allows it anywhere in a group), saving a round trip per message; a
    /// server that dropped the idle connection meanwhile is then found out by
    /// that transaction, which the caller retries on a new connection.
    pub async fn reset(&mut self) -> Result<(), ClientError> {
        self.reused = true;
        if self.capabilities.offers(EXT_PIPELINING) {
            self.rset_pending = true;
            return Ok(());
        }
        self.send_rset().await
    }

    /// RSET now, and its reply.
    async fn send_rset(&mut self) -> Result<(), ClientError> {
        let limit = self.settings.command_timeout;
        self.transport
            .send(b"RSET\r\n", limit, "sending RSET")
            .await?;
        let reply = self
            .transport
            .read_reply(limit, "waiting for reply to RSET")
            .await?;
        if reply.is_positive() {
            Ok(())
        } else {
            Err(ClientError::Rejected(reply))
        }
    }

    /// QUIT, a short wait for the 221, close. Never fails: the server may
    /// already be gone.
    pub async fn quit(mut self) {
        let limit = self.settings.command_timeout.min(QUIT_WAIT);
        if self
            .transport
            .send(b"QUIT\r\n", limit, "sending QUIT")
            .await
            .is_ok()
        {
            let _ = self
                .transport
                .read_reply(limit, "waiting for reply to QUIT")
                .await;
        }
        self.transport.shutdown(limit).await;
    }
}

async fn open_once(
    target: &Target,
    settings: &ClientSettings,
    tls: TlsMode,
    credentials: Option<&Credentials>,
    tls_configs: &TlsConfigs,
    dane: Option<&Arc<DaneVerifier>>,
) -> Result<Connection, ConnectError> {
    let stream = connect(target, settings.connect_timeout).await?;
    let name = match dane {
        // RFC 7672 §8.1: the TLSA base domain as SNI.
        Some(dane) => server_name(&dane.expectation().base, target.address.ip()),
        None => server_name(&target.host, target.address.ip()),
    };
    let (mut transport, mut tls_info) = match tls {
        TlsMode::Implicit { verify } => {
            let config = choose_config(tls_configs, verify);
            let transport =
                Transport::handshake(stream, config, name.clone(), settings.greeting_timeout)
                    .await
                    .map_err(|failure| handshake_error(target, failure))?;
            let info = tls_established(target, &transport, tls_configs, &name, verify);
            (transport, info)
        }
        _ => (Transport::plain(stream), None),
    };

    let greeting = transport
        .read_reply(settings.greeting_timeout, "waiting for the greeting")
        .await
        .map_err(|error| session_error(target, error))?;
    if !greeting.is_positive() {
        polite_quit(&mut transport).await;
        return Err(ConnectError::refused(
            ConnectErrorKind::Greeting,
            format!("{target} refused the session: {greeting}"),
            greeting,
        ));
    }

    let mut capabilities = hello(&mut transport, target, settings).await?;

    let starttls = match tls {
        TlsMode::Disabled | TlsMode::Implicit { .. } => None,
        TlsMode::Opportunistic => capabilities.offers(EXT_START_TLS).then_some(false),
        TlsMode::Required | TlsMode::StartTls { .. } if !capabilities.offers(EXT_START_TLS) => {
            polite_quit(&mut transport).await;
            return Err(ConnectError::new(
                ConnectErrorKind::TlsRequired,
                format!("{target} does not offer STARTTLS, which is required"),
            ));
        }
        TlsMode::Required => Some(true),
        TlsMode::StartTls { verify } => Some(verify),
    };
    if let Some(verify) = starttls {
        let limit = settings.command_timeout;
        transport
            .send(b"STARTTLS\r\n", limit, "sending STARTTLS")
            .await
            .map_err(|error| session_error(target, error))?;
        let reply = transport
            .read_reply(limit, "waiting for reply to STARTTLS")
            .await
            .map_err(|error| session_error(target, error))?;
        if reply.code == 220 {
            let stream = transport
                .into_tcp_for_upgrade()
                .map_err(|detail| tls_error(target, detail))?;
            let config = match dane {
                Some(dane) => dane
                    .client_config()
                    .map_err(|error| tls_error(target, error.to_string()))?,
                None => choose_config(tls_configs, verify),
            };
            transport = Transport::handshake(stream, config, name.clone(), limit)
                .await
                .map_err(|failure| handshake_error(target, failure))?;
            tls_info = tls_established(target, &transport, tls_configs, &name, verify);
            capabilities = hello(&mut transport, target, settings).await?;
        } else if tls == TlsMode::Opportunistic {
            tracing::info!(relay = %target, "STARTTLS refused ({reply}); continuing without TLS");
        } else {
            polite_quit(&mut transport).await;
            return Err(ConnectError::refused(
                ConnectErrorKind::Tls,
                format!("{target} refused STARTTLS: {reply}"),
                reply,
            ));
        }
    }

    if let Some(credentials) = credentials {
        if tls_info.is_none() {
            polite_quit(&mut transport).await;
            return Err(ConnectError::new(
                ConnectErrorKind::Auth,
                format!("{target}: refusing to send credentials without TLS"),
            ));
        }
        authenticate(&mut transport, target, settings, &capabilities, credentials).await?;
    }

    Ok(Connection {
        target: target.clone(),
        settings: settings.clone(),
        transport,
        capabilities,
        tls: tls_info,
        completed_transactions: 0,
        rset_pending: false,
        mail_answered: false,
        reused: false,
        dane: None,
    })
}

async fn connect(target: &Target, limit: Duration) -> Result<TcpStream, ConnectError> {
    let stream = match timeout(limit, TcpStream::connect(target.address)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            return Err(ConnectError::new(
                ConnectErrorKind::Connect,
                format!("connect to {target}: {error}"),
            ));
        }
        Err(_) => {
            return Err(ConnectError::new(
                ConnectErrorKind::Connect,
                format!("connect to {target}: timed out after {limit:?}"),
            ));
        }
    };
    // Pipelined commands go out in one write already; no need to wait for
    // acknowledgements of small segments.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// EHLO, or HELO when EHLO is refused with 5xx (RFC 5321 §3.2).
async fn hello(
    transport: &mut Transport,
    target: &Target,
    settings: &ClientSettings,
) -> Result<Capabilities, ConnectError> {
    let limit = settings.command_timeout;
    let ehlo = format!("EHLO {}\r\n", settings.helo_name);
    transport
        .send(ehlo.as_bytes(), limit, "sending EHLO")
        .await
        .map_err(|error| session_error(target, error))?;
    let reply = transport
        .read_raw_reply(limit, "waiting for reply to EHLO")
        .await
        .map_err(|error| session_error(target, error))?;
    let remote = RemoteReply::from(&reply);
    if remote.is_positive() {
        return Ok(
            Capabilities::from_ehlo(reply.raw()).unwrap_or_else(|problem| {
                tracing::warn!(relay = %target, "{problem}; using no extensions");
                Capabilities::default()
            }),
        );
    }
    if !remote.is_permanent() {
        return Err(hello_refused(target, "EHLO", remote));
    }
    let helo = format!("HELO {}\r\n", settings.helo_name);
    transport
        .send(helo.as_bytes(), limit, "sending HELO")
        .await
        .map_err(|error| session_error(target, error))?;
    let reply = transport
        .read_reply(limit, "waiting for reply to HELO")
        .await
        .map_err(|error| session_error(target, error))?;
    if reply.is_positive() {
        Ok(Capabilities::default())
    } else {
        Err(hello_refused(target, "HELO", reply))
    }
}

fn hello_refused(target: &Target, verb: &str, reply: RemoteReply) -> ConnectError {
    ConnectError::refused(
        ConnectErrorKind::Greeting,
        format!("{target} refused {verb}: {reply}"),
        reply,
    )
}

fn choose_config(configs: &TlsConfigs, verify: bool) -> Arc<ClientConfig> {
    if verify {
        configs.verifying()
    } else {
        configs.permissive()
    }
}

/// Describes and logs a fresh TLS session. With the permissive config the
/// certificate is checked now, only to record whether it would have passed.
fn tls_established(
    target: &Target,
    transport: &Transport,
    configs: &TlsConfigs,
    name: &ServerName<'static>,
    verified_in_handshake: bool,
) -> Option<TlsInfo> {
    let session = transport.tls_session()?;
    let protocol = match session.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => "unknown".to_owned(),
    };
    let cipher = session
        .negotiated_cipher_suite()
        .map(|suite| {
            let suite = suite.suite();
            suite
                .as_str()
                .map_or_else(|| format!("{suite:?}"), str::to_owned)
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let problem = if verified_in_handshake {
        None
    } else {
        match session.peer_certificates() {
            Some(chain) => configs.verification_error(name, chain),
            None => Some(rustls::Error::NoCertificatesPresented),
        }
    };
    let verified = problem.is_none();
    tracing::info!(relay = %target, protocol, cipher, verified, "TLS established");
    Some(TlsInfo {
        protocol,
        cipher,
        verified,
        certificate_failure: problem
            .as_ref()
            .map(crate::tls_rpt::results::certificate_failure),
    })
}

fn tls_error(target: &Target, detail: String) -> ConnectError {
    ConnectError::new(ConnectErrorKind::Tls, format!("{target}: {detail}"))
}

/// A failed handshake; one that failed on the server's certificate says
/// why in RFC 8460's terms.
fn handshake_error(target: &Target, failure: HandshakeFailure) -> ConnectError {
    let mut error = tls_error(target, failure.detail);
    error.certificate_failure = failure
        .tls
        .as_ref()
        .filter(|tls| matches!(tls, rustls::Error::InvalidCertificate(_)))
        .map(crate::tls_rpt::results::certificate_failure);
    error
}

/// A failure after the TCP connection was established, before the session
/// was ready.
pub(super) fn session_error(target: &Target, error: ClientError) -> ConnectError {
    let kind = match error {
        ClientError::Timeout(_) => ConnectErrorKind::Timeout,
        _ => ConnectErrorKind::Protocol,
    };
    ConnectError::new(kind, format!("{target}: {error}"))
}

/// QUIT without waiting for the reply, before dropping a session that will
/// not be used (RFC 5321 §3.1 asks for it after a refused greeting).
async fn polite_quit(transport: &mut Transport) {
    let _ = transport
        .send(b"QUIT\r\n", Duration::from_secs(1), "sending QUIT")
        .await;
}
