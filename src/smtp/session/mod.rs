//! One SMTP server session (RFC 5321 §4): reads command lines, keeps the
//! session and transaction state, writes replies. Generic over the stream so
//! tests can drive it in memory.
//!
//! Replies are buffered and flushed only when no complete command is left in
//! the input, which is what makes PIPELINING (RFC 2920) cheap for clients.

mod auth;
mod content;
mod idempotent;
mod pace;
mod starttls;
mod transaction;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use relayq_spool::Spool;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::auth::sasl::Exchange;
use super::auth::{AuthFailures, Users};
use super::command::{self, Command, ParseContext};
use super::credentials::Current;
use super::pressure::{Interruption, Lease};
use super::reply::{self, Reply};
use super::stream::StartTls;
use crate::dkim::SigningKeys;
use crate::events::Events;
use crate::live::{Live, Settings};
use crate::metrics::{Metrics, RefusalReason, ShedReason};
use crate::queue::{Lane, Queue};
use crate::storage::FreeSpace;
use crate::suppression::Suppression;
use content::BdatState;
use pace::Request;
use transaction::Transaction;

pub use starttls::Security;

/// RFC 5321 allows 512 octets; DSN parameters push RCPT past that, so up to
/// 2048 octets (without CRLF) are accepted.
pub const MAX_COMMAND_LINE: usize = 2048;

/// Read granularity; also the most input buffered beyond one command line.
const READ_CHUNK: usize = 16 * 1024;

/// The most a closing session waits to hand its last reply (a 421) to a
/// client that does not read, so that a shed session frees its permit fast.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// Everything sessions share; built once by the daemon. The settings a
/// reload may change are in [`Settings`]: each session takes a snapshot at
/// connect and keeps it (ARCHITECTURE.md, "Live settings and reload").
pub struct SessionShared {
    pub settings: Settings,
    pub spool: Spool,
    pub queue: Arc<Queue>,
    pub free_space: FreeSpace,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    /// The accounts for AUTH; `None` when no listener offers it.
    pub users: Option<Arc<Current<Users>>>,
    /// Failed AUTH attempts per client address, across sessions.
    pub auth_failures: Arc<AuthFailures>,
    /// Password checks running at once on the blocking pool, at most one
    /// per core: a flood of AUTH must not starve the pool's other users.
    pub password_checks: Arc<tokio::sync::Semaphore>,
    /// The DKIM keys; a reload replaces their contents.
    pub dkim: Arc<SigningKeys>,
    /// `accepted` events go into the outbox with the message.
    pub webhooks: Arc<crate::webhook::Webhooks>,
    /// The suppression list, checked at RCPT.
    pub suppression: Arc<Suppression>,
    /// The idempotency claims, taken before a keyed message's commit.
    pub claims: Arc<crate::smtp::idempotency::claims::Claims>,
}

/// What the loop does after a command.
enum Next {
    Continue,
    Close,
}

pub struct Session<S> {
    stream: S,
    shared: Arc<SessionShared>,
    /// The live settings as they were when the session began.
    live: Arc<Live>,
    client: SocketAddr,
    /// The listener's lane: the last rule of lane selection.
    listener_lane: Lane,
    input: BytesMut,
    output: Vec<u8>,
    helo: Option<String>,
    /// The client used EHLO (ESMTP parameters allowed).
    extended: bool,
    transaction: Option<Transaction>,
    bdat: Option<BdatState>,
    /// Octets of refused BDAT chunks read and thrown away (RFC 3030 §2);
    /// at most `spool.max_message_size` per session.
    discarded: u64,
    errors: u32,
    /// Inside an over-long command line: discard until its end.
    discarding_line: bool,
    /// The connection permit and the registry entry the pressure logic
    /// sheds by.
    lease: Lease,
    /// When the wait for the next command line began.
    command_since: Instant,
    /// What the listener offers beyond plain SMTP: TLS, AUTH.
    security: Security,
    /// The session runs under TLS (implicit, or after STARTTLS).
    secure: bool,
    /// The user the client authenticated as (RFC 4954); such a client may
    /// relay from any address.
    auth_user: Option<String>,
    /// An AUTH exchange waiting for the client's next response line, which
    /// is not a command.
    sasl: Option<Exchange>,
    /// The maildrop file this session imports: its message claims the file
    /// (docs/idempotency.md), so it is stored once however often it is
    /// offered.
    maildrop_file: Option<String>,
}

/// How a wait on the client ended.
enum Waited {
    Read(std::io::Result<usize>),
    Expired,
    Shed,
    Shutdown,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub fn new(
        stream: S,
        client: SocketAddr,
        listener_lane: Lane,
        shared: Arc<SessionShared>,
    ) -> Session<S> {
        Session {
            stream,
            live: shared.settings.snapshot(),
            shared,
            client,
            listener_lane,
            input: BytesMut::with_capacity(READ_CHUNK),
            output: Vec::with_capacity(512),
            helo: None,
            extended: false,
            transaction: None,
            bdat: None,
            discarded: 0,
            errors: 0,
            discarding_line: false,
            lease: Lease::unregistered(),
            command_since: Instant::now(),
            security: Security::plain(),
            secure: false,
            auth_user: None,
            sasl: None,
            maildrop_file: None,
        }
    }

    /// The session imports the maildrop file `name` (one message).
    pub fn with_maildrop_file(mut self, name: &str) -> Session<S> {
        self.maildrop_file = Some(name.to_owned());
        self
    }

    /// Offers what the listener offers beyond plain SMTP.
    pub fn with_security(mut self, security: Security) -> Session<S> {
        self.security = security;
        self
    }

    /// Puts the session under the server's connection pressure logic.
    pub fn with_lease(mut self, lease: Lease) -> Session<S> {
        self.lease = lease;
        self
    }
}

impl<S: AsyncRead + AsyncWrite + StartTls + Unpin> Session<S> {
    /// Runs the session to its end. I/O errors end it quietly: the client
    /// went away, and nothing it sent was acknowledged without being stored.
    pub async fn run(mut self) {
        if let Err(error) = self.serve().await {
            tracing::debug!(client = %self.client, "session ended: {error}");
        }
        let _ = self.stream.shutdown().await;
    }

    async fn serve(&mut self) -> std::io::Result<()> {
        // RFC 8314 §3.3: the handshake comes before anything else, the
        // greeting included.
        if self.security.is_implicit() && !self.handshake().await {
            return Ok(());
        }
        if !self.shared.free_space.is_sufficient() {
            let metrics = &self.shared.metrics;
            metrics.message_refused(self.listener_lane, RefusalReason::Disk);
            self.reply(reply::insufficient_storage_at_connect());
            return self.flush().await;
        }
        let greeting = format!("{} ESMTP relayq", self.live.config.hostname);
        self.reply(Reply::new(220, "", greeting));
        loop {
            let mut handled = false;
            while let Some(line) = self.next_line() {
                handled = true;
                if let Next::Close = self.handle_line(&line).await? {
                    return self.flush().await;
                }
            }
            self.flush().await?;
            if handled {
                self.command_since = Instant::now();
            }
            // Between BDAT chunks the transfer's deadline runs on.
            let request = match &self.bdat {
                Some(state) => state.transfer,
                None => Request::command(self.command_since),
            };
            if !self.read_more(request, true).await? {
                return Ok(());
            }
        }
    }

    /// Takes the next complete command line out of the input, handling
    /// over-long lines: one `500 5.5.2` per such line, its rest discarded.
    fn next_line(&mut self) -> Option<Vec<u8>> {
        loop {
            let newline = memchr::memchr(b'\n', &self.input);
            if self.discarding_line {
                match newline {
                    Some(position) => {
                        self.input.advance(position + 1);
                        self.discarding_line = false;
                        self.reply_error(reply::line_too_long());
                        continue;
                    }
                    None => {
                        self.input.clear();
                        return None;
                    }
                }
            }
            let Some(position) = newline else {
                if self.input.len() > MAX_COMMAND_LINE + 2 {
                    self.discarding_line = true;
                    continue;
                }
                return None;
            };
            let mut line = self.input.split_to(position + 1);
            line.truncate(position);
            if line.last() == Some(&b'\r') {
                line.truncate(position - 1);
            }
            if line.len() > MAX_COMMAND_LINE {
                self.reply_error(reply::line_too_long());
                continue;
            }
            return Some(line.to_vec());
        }
    }

    async fn handle_line(&mut self, line: &[u8]) -> std::io::Result<Next> {
        if let Some(exchange) = self.sasl.take() {
            return Ok(self.auth_response(exchange, line).await);
        }
        let context = ParseContext {
            extended: self.extended,
            smtputf8: self.transaction.as_ref().is_some_and(|t| t.mail.smtputf8),
        };
        let command = match command::parse(line, context) {
            Ok(command) => command,
            Err(reply) => {
                self.reply_error(reply);
                return Ok(self.after_error());
            }
        };
        if self.bdat.is_some()
            && !matches!(
                command,
                Command::Bdat { .. } | Command::Rset | Command::Noop | Command::Quit
            )
        {
            self.bdat = None;
            self.transaction = None;
            self.reply_error(reply::bad_sequence(
                "Error: BDAT sequence interrupted, transaction aborted",
            ));
            return Ok(self.after_error());
        }
        match command {
            Command::Ehlo(host) => self.ehlo(host, true),
            Command::Helo(host) => self.ehlo(host, false),
            Command::Mail(mail) => self.mail(mail),
            Command::Rcpt(rcpt) => self.rcpt(rcpt).await,
            Command::Data => return self.data().await,
            Command::Bdat { chunk_size, last } => return self.bdat(chunk_size, last).await,
            Command::Rset => {
                self.transaction = None;
                self.bdat = None;
                self.reply(reply::ok());
            }
            Command::Noop => self.reply(reply::ok()),
            Command::Quit => {
                self.reply(Reply::new(221, "2.0.0", "Bye"));
                return Ok(Next::Close);
            }
            Command::Vrfy => self.reply(Reply::new(
                252,
                "2.5.0",
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Command::StartTls => return self.starttls().await,
            Command::Auth {
                mechanism,
                initial_response,
            } => return Ok(self.auth(mechanism, initial_response.as_deref()).await),
            Command::Help => self.reply(Reply::new(
                214,
                "2.0.0",
                "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP",
            )),
            Command::NotImplemented(verb) => self.reply_error(Reply::new(
                502,
                "5.5.1",
                format!("Error: {verb} not implemented"),
            )),
        }
        Ok(self.after_error())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Sends the buffered replies. A client that does not read them is
    /// waiting like any other: the write is bounded by the idle timeout and
    /// the session can be shed meanwhile (both end it with an error). A
    /// reply the socket takes at once (the usual case) never makes the
    /// session a candidate: it would be shed for a client waiting for a slot
    /// in the instant between its write and its next wait.
    async fn flush(&mut self) -> std::io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let deadline = started + self.timeout();
        let (stream, output, lease) = (&mut self.stream, &self.output, &mut self.lease);
        let write = async move {
            stream.write_all(output).await?;
            stream.flush().await
        };
        tokio::pin!(write);
        let at_once = tokio::select! {
            biased;
            written = &mut write => Some(written),
            () = std::future::ready(()) => None,
        };
        let result = match at_once {
            Some(written) => written,
            None => {
                lease.waiting(started);
                loop {
                    tokio::select! {
                        written = &mut write => break written,
                        _ = tokio::time::sleep_until(deadline) => {
                            self.shared.metrics.session_shed(ShedReason::CommandTimeout);
                            break Err(std::io::ErrorKind::TimedOut.into());
                        }
                        interruption = lease.interrupted() => {
                            if interruption == Interruption::Shed {
                                self.shared.metrics.session_shed(ShedReason::Pressure);
                                break Err(std::io::ErrorKind::TimedOut.into());
                            }
                        }
                    }
                }
            }
        };
        self.lease.working();
        self.output.clear();
        result
    }

    /// Sends a last reply, waiting at most `GOODBYE_TIMEOUT` for a client
    /// that does not read.
    async fn say_goodbye(&mut self, reply: Reply) {
        self.reply(reply);
        let write = async {
            self.stream.write_all(&self.output).await?;
            self.stream.flush().await
        };
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, write).await;
        self.output.clear();
    }

    /// Reads more input for `request`. Returns false at end of stream, and
    /// after closing the session with `421` when the request's deadline
    /// passed or the session was shed. Between commands (`interruptible`) a
    /// shutdown answers 421 and ends the session; in the middle of message
    /// content the session is allowed to finish.
    async fn read_more(&mut self, request: Request, interruptible: bool) -> std::io::Result<bool> {
        self.input.reserve(READ_CHUNK);
        let shutdown = self.shared.shutdown.clone();
        let started = Instant::now();
        let waited = loop {
            // Again after stress mode began or ended: the timeout changed.
            let timeout = self.timeout();
            self.publish_wait(&request, started, timeout);
            let deadline = request.deadline(timeout, started);
            tokio::select! {
                read = self.stream.read_buf(&mut self.input) => break Waited::Read(read),
                _ = tokio::time::sleep_until(deadline) => break Waited::Expired,
                interruption = self.lease.interrupted() => {
                    if interruption == Interruption::Shed {
                        break Waited::Shed;
                    }
                }
                _ = shutdown.cancelled(), if interruptible => break Waited::Shutdown,
            }
        };
        self.lease.working();
        match waited {
            Waited::Read(Ok(0)) => Ok(false),
            Waited::Read(Ok(_)) => Ok(true),
            Waited::Read(Err(error)) => Err(error),
            Waited::Expired => {
                let reason = if request.is_content() {
                    ShedReason::DataTimeout
                } else {
                    ShedReason::CommandTimeout
                };
                self.shared.metrics.session_shed(reason);
                tracing::debug!(client = %self.client, "session closed: {}", reason.as_str());
                self.say_goodbye(reply::idle_timeout()).await;
                Ok(false)
            }
            Waited::Shed => {
                self.shared.metrics.session_shed(ShedReason::Pressure);
                tracing::debug!(client = %self.client, "session shed for a waiting client");
                self.say_goodbye(reply::shed()).await;
                Ok(false)
            }
            Waited::Shutdown => {
                self.say_goodbye(reply::shutting_down()).await;
                Ok(false)
            }
        }
    }

    /// Tells the pressure logic what the session waits for since `started`:
    /// its idle mark and, in a transfer, from when the transfer may be shed
    /// although it keeps pace (one stress idle timeout after it began: the
    /// timeout in force whenever every permit is in use).
    fn publish_wait(&self, request: &Request, started: Instant, timeout: Duration) {
        let mark = request.mark(started, timeout);
        if request.is_content() {
            let seniority = request.since() + self.live.config.smtp.stress_idle_timeout;
            self.lease.waiting_in_transfer(mark, seniority);
        } else {
            self.lease.waiting(mark);
        }
    }

    /// Counts `octets` of a transfer's content that just arrived.
    fn count_received(&mut self, transfer: &mut Request, octets: usize) {
        let min_data_rate = self.live.config.smtp.min_data_rate;
        let timeout = self.timeout();
        transfer.add_received(octets, min_data_rate, Instant::now(), timeout);
    }

    /// The idle timeout in force: shorter in stress mode.
    fn timeout(&mut self) -> Duration {
        if self.lease.stressed() {
            self.live.config.smtp.stress_idle_timeout
        } else {
            self.live.config.smtp.idle_timeout
        }
    }
}

/// State helpers that need no I/O.
impl<S> Session<S> {
    /// Closes the session once the client made too many errors.
    fn after_error(&mut self) -> Next {
        if self.errors >= self.live.config.smtp.max_errors {
            self.reply(reply::too_many_errors());
            Next::Close
        } else {
            Next::Continue
        }
    }

    fn reply(&mut self, reply: Reply) {
        reply.write_to(&mut self.output);
    }

    fn reply_error(&mut self, reply: Reply) {
        self.errors += 1;
        self.reply(reply);
    }

    /// The client's address with IPv4-mapped IPv6 shown as IPv4.
    fn client_ip(&self) -> IpAddr {
        self.client.ip().to_canonical()
    }

    /// The `with` protocol of the `Received:` header: RFC 3848 adds `S`
    /// under TLS and `A` once authenticated, and RFC 6531 §3.7.3 does the
    /// same to `UTF8SMTP`.
    fn received_protocol(&self) -> &'static str {
        let smtputf8 = self.transaction.as_ref().is_some_and(|t| t.mail.smtputf8);
        let authenticated = self.auth_user.is_some();
        match (self.extended, smtputf8, self.secure, authenticated) {
            (false, false, ..) => "SMTP",
            (_, true, false, false) => "UTF8SMTP",
            (_, true, true, false) => "UTF8SMTPS",
            (_, true, false, true) => "UTF8SMTPA",
            (_, true, true, true) => "UTF8SMTPSA",
            (true, false, false, false) => "ESMTP",
            (true, false, true, false) => "ESMTPS",
            (true, false, false, true) => "ESMTPA",
            (true, false, true, true) => "ESMTPSA",
        }
    }
}
