//! A scripted SMTP server standing in for a remote MX or smarthost: runs on
//! its own thread and tokio runtime (so sync tests and tests driving the
//! real relayq binary can use it alike), records what it receives, and
//! misbehaves on request (delays, disconnects, resets, silence, overlong
//! replies, broken TLS), until told to behave (`set_script`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use session::Session;

mod session;

/// The most a fake MX buffers of one message.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// The length of the reply line `Script::overlong_reply_at` sends: far
/// beyond any limit a client should accept (RFC 5321 §4.5.3.1.5 sets 512).
pub const OVERLONG_REPLY: usize = 2 * 1024 * 1024;

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
    /// Offer STARTTLS, answer 220, then answer the ClientHello with garbage.
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
    /// After the first line of message content, abort the connection with
    /// a TCP reset (SO_LINGER 0) instead of reading on.
    pub reset_in_data: bool,
    /// At this stage, send one reply line of `OVERLONG_REPLY` octets (the
    /// normal reply's code, then filler) instead of the normal reply.
    pub overlong_reply_at: Option<Stage>,
    /// After this long without a command, say `421 4.4.2` and close, as
    /// Postfix's smtpd does when its idle timeout expires.
    pub idle_close: Option<Duration>,
    /// Refuse a message with a content line longer than this many octets
    /// (without CRLF) with `500 5.5.0`, as a conforming MX does for 998.
    pub max_line_length: Option<usize>,
    /// Serve at most this many sessions at once: a connection beyond them
    /// is greeted with `421 4.7.0 Too many connections` and closed, and is
    /// counted in `refused_sessions` rather than `sessions`.
    pub max_sessions: Option<usize>,
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
            reset_in_data: false,
            overlong_reply_at: None,
            idle_close: None,
            max_line_length: None,
            max_sessions: None,
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
    /// When each MAIL command arrived.
    mail_times: Vec<Instant>,
    refused_sessions: usize,
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

/// The script new sessions follow, with the TLS acceptor built from it.
type Current = Arc<Mutex<(Arc<Script>, Option<TlsAcceptor>)>>;

/// A running fake MX; stops (closing every session) on drop.
pub struct FakeMx {
    pub address: SocketAddr,
    shared: Arc<Shared>,
    current: Current,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeMx {
    pub fn start(bind: SocketAddr, script: Script) -> std::io::Result<FakeMx> {
        let listener = std::net::TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let current = Arc::new(Mutex::new(with_acceptor(script)?));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = oneshot::channel();
        let thread_shared = shared.clone();
        let thread_current = current.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fake-mx-{address}"))
            .spawn(move || {
                runtime.block_on(serve(listener, thread_current, thread_shared, stopped));
                // Dropping the runtime cancels the sessions still running.
            })?;
        Ok(FakeMx {
            address,
            shared,
            current,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Sessions accepted from now on follow `script` (e.g. the MX behaves
    /// again); sessions already open keep the script they started with.
    pub fn set_script(&self, script: Script) -> std::io::Result<()> {
        let next = with_acceptor(script)?;
        *self.current.lock().unwrap() = next;
        Ok(())
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

    /// When each MAIL command arrived, in order: a transaction's start.
    pub fn mail_times(&self) -> Vec<Instant> {
        self.shared.state.lock().unwrap().mail_times.clone()
    }

    /// Connections refused with 421 because `max_sessions` were open.
    pub fn refused_sessions(&self) -> usize {
        self.shared.state.lock().unwrap().refused_sessions
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
    current: Current,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("register listener");
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                let Ok((mut stream, _)) = accepted else { continue };
                let (script, acceptor) = current.lock().unwrap().clone();
                let full = shared.update(|state| {
                    let full = script.max_sessions.is_some_and(|max| state.active >= max);
                    state.refused_sessions += usize::from(full);
                    full
                });
                if full {
                    tokio::spawn(async move {
                        use tokio::io::AsyncWriteExt;
                        let _ = stream.write_all(b"421 4.7.0 Too many connections\r\n").await;
                        let _ = stream.shutdown().await;
                    });
                    continue;
                }
                let number = shared.update(|state| {
                    state.sessions += 1;
                    state.active += 1;
                    state.max_concurrent = state.max_concurrent.max(state.active);
                    state.sessions
                });
                let session = Session::new(stream, script, acceptor, shared.clone(), number);
                tokio::spawn(session.run());
            }
        }
    }
}

fn with_acceptor(script: Script) -> std::io::Result<(Arc<Script>, Option<TlsAcceptor>)> {
    let acceptor = match &script.tls {
        Some(identity) => Some(acceptor(identity)?),
        None => None,
    };
    Ok((Arc::new(script), acceptor))
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
