//! A scripted SMTP server standing in for a remote MX or smarthost: runs on
//! its own thread and tokio runtime (so sync tests and tests driving the
//! real relayq binary can use it alike), records what it receives, and
//! misbehaves on request (delays, disconnects, silence, broken TLS).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The most a fake MX buffers of one message.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A point in the SMTP dialogue where a script can delay or hang up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Greeting,
    Ehlo,
    Mail,
    Rcpt,
    Data,
    FinalDot,
}

/// What the server does. `Script::default()` accepts everything.
#[derive(Clone)]
pub struct Script {
    /// Sent as is, CRLF appended ("220 mx.test ESMTP", or a 4xx/5xx).
    pub greeting: String,
    /// EHLO keywords after the host name. STARTTLS and AUTH are added when
    /// `tls`/`broken_tls` and `auth` ask for them.
    pub extensions: Vec<String>,
    /// Offer STARTTLS (or, with `implicit_tls`, speak TLS at once) with
    /// this certificate.
    pub tls: Option<TlsIdentity>,
    pub implicit_tls: bool,
    /// Offer STARTTLS, answer 220, then send garbage instead of a handshake.
    pub broken_tls: bool,
    /// Answer EHLO with 502 (the client should fall back to HELO).
    pub reject_ehlo: bool,
    /// Require AUTH PLAIN or LOGIN with this username and password before
    /// MAIL.
    pub auth: Option<(String, String)>,
    /// The reply to RCPT for an address (without angle brackets).
    pub rcpt_reply: Arc<dyn Fn(&str) -> String + Send + Sync>,
    /// The reply to DATA; content is read only after a 354.
    pub data_reply: String,
    /// The reply to the final dot of the n-th message (0-based, counted
    /// over all sessions). A 2xx records the message.
    pub final_reply: Arc<dyn Fn(usize) -> String + Send + Sync>,
    /// Sleep before replying at these stages.
    pub delay_before: Vec<(Stage, Duration)>,
    /// Close the connection instead of replying at this stage.
    pub disconnect_at: Option<Stage>,
    /// Never reply to DATA (nor to anything after it in that session).
    pub never_answer_data: bool,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            greeting: "220 mx.test ESMTP fake".to_owned(),
            extensions: [
                "PIPELINING",
                "SIZE 10000000",
                "8BITMIME",
                "DSN",
                "SMTPUTF8",
                "ENHANCEDSTATUSCODES",
            ]
            .map(str::to_owned)
            .to_vec(),
            tls: None,
            implicit_tls: false,
            broken_tls: false,
            reject_ehlo: false,
            auth: None,
            rcpt_reply: Arc::new(|_| "250 2.1.5 Ok".to_owned()),
            data_reply: "354 End data with <CR><LF>.<CR><LF>".to_owned(),
            final_reply: Arc::new(|index| format!("250 2.0.0 Ok: queued as FAKE{index}")),
            delay_before: Vec::new(),
            disconnect_at: None,
            never_answer_data: false,
        }
    }
}

/// One accepted transaction.
#[derive(Debug, Clone)]
pub struct Received {
    pub helo: String,
    /// The raw `MAIL FROM:<...> params` line.
    pub mail_from: String,
    /// The raw RCPT lines that were accepted.
    pub rcpt_to: Vec<String>,
    /// The content, dot-unstuffed, byte for byte (ends with the CRLF before
    /// the final dot).
    pub data: Vec<u8>,
    pub tls: bool,
    pub auth_user: Option<String>,
    /// Which session (1-based, in accept order) carried it.
    pub session: usize,
}

#[derive(Debug, Clone)]
pub struct TlsIdentity {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

#[derive(Default)]
struct State {
    messages: Vec<Received>,
    commands: Vec<String>,
    sessions: usize,
    active: usize,
    max_concurrent: usize,
    command_batches: usize,
    final_dots: usize,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let result = change(&mut self.state.lock().unwrap());
        self.changed.notify_all();
        result
    }
}

/// A running fake MX; stops (closing every session) on drop.
pub struct FakeMx {
    pub address: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeMx {
    pub fn start(bind: SocketAddr, script: Script) -> std::io::Result<FakeMx> {
        let listener = std::net::TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let acceptor = match &script.tls {
            Some(identity) => Some(acceptor(identity)?),
            None => None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = oneshot::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fake-mx-{address}"))
            .spawn(move || {
                runtime.block_on(serve(listener, script, acceptor, thread_shared, stopped));
                // Dropping the runtime cancels the sessions still running.
            })?;
        Ok(FakeMx {
            address,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn messages(&self) -> Vec<Received> {
        self.shared.state.lock().unwrap().messages.clone()
    }

    /// Waits until at least `n` messages arrived or `timeout` passed, and
    /// returns what arrived.
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.state.lock().unwrap();
        while state.messages.len() < n {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap()
                .0;
        }
        state.messages.clone()
    }

    pub fn sessions(&self) -> usize {
        self.shared.state.lock().unwrap().sessions
    }

    pub fn max_concurrent_sessions(&self) -> usize {
        self.shared.state.lock().unwrap().max_concurrent
    }

    pub fn active_sessions(&self) -> usize {
        self.shared.state.lock().unwrap().active
    }

    /// Every command line received, in order (AUTH exchanges included).
    pub fn commands(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().commands.clone()
    }

    /// How many socket reads carried at least one command line: with
    /// pipelining, MAIL, the RCPTs and DATA arrive in one.
    pub fn command_batches(&self) -> usize {
        self.shared.state.lock().unwrap().command_batches
    }
}

impl Drop for FakeMx {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    script: Script,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("register listener");
    let script = Arc::new(script);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let number = shared.update(|state| {
                    state.sessions += 1;
                    state.active += 1;
                    state.max_concurrent = state.max_concurrent.max(state.active);
                    state.sessions
                });
                let session = Session {
                    stream: ServerStream::Plain(stream),
                    input: Vec::new(),
                    start: 0,
                    script: script.clone(),
                    acceptor: acceptor.clone(),
                    shared: shared.clone(),
                    number,
                    helo: String::new(),
                    auth_user: None,
                    mail_from: None,
                    rcpt_to: Vec::new(),
                };
                tokio::spawn(session.run());
            }
        }
    }
}

fn acceptor(identity: &TlsIdentity) -> std::io::Result<TlsAcceptor> {
    let invalid = |error: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, error);
    let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(error.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .map_err(|error| invalid(error.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| invalid(error.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|error| invalid(error.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

enum ServerStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// After a failed upgrade.
    Gone,
}

impl ServerStream {
    async fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        match self {
            ServerStream::Plain(stream) => stream.read(buffer).await,
            ServerStream::Tls(stream) => stream.read(buffer).await,
            ServerStream::Gone => Ok(0),
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            ServerStream::Plain(stream) => stream.write_all(bytes).await,
            ServerStream::Tls(stream) => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
            ServerStream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    fn is_tls(&self) -> bool {
        matches!(self, ServerStream::Tls(_))
    }
}

struct Session {
    stream: ServerStream,
    /// Received bytes; those before `start` are consumed.
    input: Vec<u8>,
    start: usize,
    script: Arc<Script>,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    number: usize,
    helo: String,
    auth_user: Option<String>,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
}

/// Why a session ends early; the connection is simply dropped.
struct Hangup;

type Step = Result<(), Hangup>;

impl Session {
    async fn run(mut self) {
        let shared = self.shared.clone();
        let _ = self.dialogue().await;
        shared.update(|state| state.active -= 1);
    }

    async fn dialogue(&mut self) -> Step {
        if self.script.implicit_tls {
            self.upgrade().await?;
        }
        let greeting = self.script.greeting.clone();
        self.reply_at(Stage::Greeting, &greeting).await?;
        if !greeting.starts_with('2') {
            return Ok(());
        }
        loop {
            let line = self.command_line().await?;
            let verb = line
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            let argument = line.get(verb.len()..).unwrap_or_default().trim().to_owned();
            match verb.as_str() {
                "EHLO" => self.ehlo(argument).await?,
                "HELO" => {
                    self.helo = argument;
                    self.reset();
                    self.reply_at(Stage::Ehlo, "250 mx.test").await?;
                }
                "STARTTLS" => self.starttls().await?,
                "AUTH" => self.auth(&argument).await?,
                "MAIL" => self.mail(line).await?,
                "RCPT" => self.rcpt(line).await?,
                "DATA" => self.data().await?,
                "RSET" => {
                    self.reset();
                    self.reply("250 2.0.0 Ok").await?;
                }
                "NOOP" => self.reply("250 2.0.0 Ok").await?,
                "QUIT" => {
                    self.reply("221 2.0.0 Bye").await?;
                    return Ok(());
                }
                _ => {
                    self.reply("502 5.5.2 Error: command not recognized")
                        .await?
                }
            }
        }
    }

    fn offers_starttls(&self) -> bool {
        (self.script.tls.is_some() || self.script.broken_tls)
            && !self.script.implicit_tls
            && !self.stream.is_tls()
    }

    async fn ehlo(&mut self, argument: String) -> Step {
        if self.script.reject_ehlo {
            return self
                .reply_at(Stage::Ehlo, "502 5.5.2 Error: command not recognized")
                .await;
        }
        self.helo = argument;
        self.reset();
        let mut lines = vec!["mx.test".to_owned()];
        lines.extend(self.script.extensions.iter().cloned());
        if self.offers_starttls() {
            lines.push("STARTTLS".to_owned());
        }
        let lists_auth = lines.iter().any(|line| line.starts_with("AUTH"));
        if self.script.auth.is_some() && !lists_auth {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        let last = lines.len() - 1;
        let reply: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(index, line)| format!("250{}{line}", if index == last { ' ' } else { '-' }))
            .collect();
        self.reply_at(Stage::Ehlo, &reply.join("\r\n")).await
    }

    async fn starttls(&mut self) -> Step {
        if !self.offers_starttls() {
            return self.reply("454 4.7.0 TLS not available").await;
        }
        self.reply("220 2.0.0 Ready to start TLS").await?;
        if self.script.broken_tls {
            let _ = self
                .stream
                .write_all(b"this is not a TLS handshake\r\n")
                .await;
            return Err(Hangup);
        }
        self.upgrade().await?;
        self.helo.clear();
        self.auth_user = None;
        self.reset();
        Ok(())
    }

    async fn upgrade(&mut self) -> Step {
        let acceptor = self.acceptor.clone().ok_or(Hangup)?;
        let ServerStream::Plain(tcp) = std::mem::replace(&mut self.stream, ServerStream::Gone)
        else {
            return Err(Hangup);
        };
        // Bytes pipelined after STARTTLS are discarded (RFC 3207 §4.2).
        self.input.clear();
        self.start = 0;
        let stream = acceptor.accept(tcp).await.map_err(|_| Hangup)?;
        self.stream = ServerStream::Tls(Box::new(stream));
        Ok(())
    }

    async fn auth(&mut self, argument: &str) -> Step {
        let Some((username, password)) = self.script.auth.clone() else {
            return self
                .reply("503 5.5.1 Error: authentication not enabled")
                .await;
        };
        let mut words = argument.split_whitespace();
        let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
        let initial = words.next().map(str::to_owned);
        let given = match mechanism.as_str() {
            "PLAIN" => {
                let token = match initial {
                    Some(token) => token,
                    None => {
                        self.reply("334 ").await?;
                        self.command_line().await?
                    }
                };
                let decoded = BASE64.decode(token.trim()).unwrap_or_default();
                let parts: Vec<&[u8]> = decoded.split(|&byte| byte == 0).collect();
                match parts.as_slice() {
                    [_, user, pass] => Some((
                        String::from_utf8_lossy(user).into_owned(),
                        String::from_utf8_lossy(pass).into_owned(),
                    )),
                    _ => None,
                }
            }
            "LOGIN" => {
                self.reply("334 VXNlcm5hbWU6").await?;
                let user = self.command_line().await?;
                self.reply("334 UGFzc3dvcmQ6").await?;
                let pass = self.command_line().await?;
                let decode = |text: &str| {
                    String::from_utf8_lossy(&BASE64.decode(text.trim()).unwrap_or_default())
                        .into_owned()
                };
                Some((decode(&user), decode(&pass)))
            }
            _ => {
                return self
                    .reply("504 5.5.4 Unrecognized authentication type")
                    .await;
            }
        };
        if given == Some((username.clone(), password)) {
            self.auth_user = Some(username);
            self.reply("235 2.7.0 Authentication successful").await
        } else {
            self.reply("535 5.7.8 Error: authentication failed").await
        }
    }

    async fn mail(&mut self, line: String) -> Step {
        if self.script.auth.is_some() && self.auth_user.is_none() {
            return self.reply("530 5.7.0 Authentication required").await;
        }
        self.reset();
        self.mail_from = Some(line);
        self.reply_at(Stage::Mail, "250 2.1.0 Ok").await
    }

    async fn rcpt(&mut self, line: String) -> Step {
        if self.mail_from.is_none() {
            return self.reply("503 5.5.1 Error: need MAIL command").await;
        }
        let address = line
            .split_once('<')
            .and_then(|(_, rest)| rest.split_once('>'))
            .map(|(address, _)| address.to_owned())
            .unwrap_or_default();
        let reply = (self.script.rcpt_reply)(&address);
        if reply.starts_with('2') {
            self.rcpt_to.push(line);
        }
        self.reply_at(Stage::Rcpt, &reply).await
    }

    async fn data(&mut self) -> Step {
        if self.mail_from.is_none() || self.rcpt_to.is_empty() {
            return self.reply("554 5.5.1 Error: no valid recipients").await;
        }
        if self.script.never_answer_data {
            // Stay silent until the client gives up and closes.
            let mut sink = vec![0; 8192];
            while self.stream.read(&mut sink).await.map_err(|_| Hangup)? > 0 {}
            return Err(Hangup);
        }
        let data_reply = self.script.data_reply.clone();
        self.reply_at(Stage::Data, &data_reply).await?;
        if !data_reply.starts_with("354") {
            return Ok(());
        }
        let mut data = Vec::new();
        loop {
            let line = self.raw_line().await?;
            if line == b".\r\n" {
                break;
            }
            let line = line.strip_prefix(b".").unwrap_or(&line);
            if data.len() + line.len() > MAX_MESSAGE {
                return Err(Hangup);
            }
            data.extend_from_slice(line);
        }
        let index = self.shared.update(|state| {
            state.final_dots += 1;
            state.final_dots - 1
        });
        let reply = (self.script.final_reply)(index);
        if reply.starts_with('2') {
            let received = Received {
                helo: self.helo.clone(),
                mail_from: self.mail_from.clone().unwrap_or_default(),
                rcpt_to: self.rcpt_to.clone(),
                data,
                tls: self.stream.is_tls(),
                auth_user: self.auth_user.clone(),
                session: self.number,
            };
            self.reply_at(Stage::FinalDot, &reply).await?;
            self.shared.update(|state| state.messages.push(received));
        } else {
            self.reply_at(Stage::FinalDot, &reply).await?;
        }
        self.reset();
        Ok(())
    }

    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
    }

    /// Applies the script's delay and disconnect for `stage`, then replies.
    async fn reply_at(&mut self, stage: Stage, reply: &str) -> Step {
        let delay: Duration = self
            .script
            .delay_before
            .iter()
            .filter(|(at, _)| *at == stage)
            .map(|(_, delay)| *delay)
            .sum();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.script.disconnect_at == Some(stage) {
            return Err(Hangup);
        }
        self.reply(reply).await
    }

    async fn reply(&mut self, reply: &str) -> Step {
        let wire = format!("{reply}\r\n");
        self.stream
            .write_all(wire.as_bytes())
            .await
            .map_err(|_| Hangup)
    }

    /// The next command line without its CRLF, recorded; counts a command
    /// batch for every socket read that completes at least one line.
    async fn command_line(&mut self) -> Result<String, Hangup> {
        let line = self.next_line(true).await?;
        let line = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        self.shared
            .update(|state| state.commands.push(line.clone()));
        Ok(line)
    }

    /// The next content line with its line end.
    async fn raw_line(&mut self) -> Result<Vec<u8>, Hangup> {
        self.next_line(false).await
    }

    async fn next_line(&mut self, counts_as_command: bool) -> Result<Vec<u8>, Hangup> {
        loop {
            if let Some(offset) = memchr::memchr(b'\n', &self.input[self.start..]) {
                let end = self.start + offset + 1;
                let line = self.input[self.start..end].to_vec();
                self.start = end;
                if self.start > 64 * 1024 && self.start * 2 > self.input.len() {
                    self.input.drain(..self.start);
                    self.start = 0;
                }
                return Ok(line);
            }
            if self.input.len() - self.start > MAX_MESSAGE {
                return Err(Hangup);
            }
            let mut chunk = vec![0; 64 * 1024];
            let read = self.stream.read(&mut chunk).await.map_err(|_| Hangup)?;
            if read == 0 {
                return Err(Hangup);
            }
            if counts_as_command && chunk[..read].contains(&b'\n') {
                self.shared.update(|state| state.command_batches += 1);
            }
            self.input.extend_from_slice(&chunk[..read]);
        }
    }
}

/// A test CA and a server certificate it issued for `mx.test`, `localhost`,
/// `127.0.0.1` and `::1`, plus a file holding the CA certificate (for
/// `SSL_CERT_FILE`). Made once per test process.
pub fn test_ca() -> (TlsIdentity, PathBuf) {
    static CA: OnceLock<(TlsIdentity, PathBuf)> = OnceLock::new();
    CA.get_or_init(|| {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "relayq test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let names = ["mx.test", "localhost", "127.0.0.1", "::1"].map(str::to_owned);
        let mut leaf_params = CertificateParams::new(names.to_vec()).unwrap();
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "mx.test");
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();

        let identity = TlsIdentity {
            cert_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
            ca_pem: ca.pem(),
        };
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("relayq-test-ca-{}.pem", std::process::id()));
        std::fs::write(&path, &identity.ca_pem).expect("write test CA file");
        (identity, path)
    })
    .clone()
}
