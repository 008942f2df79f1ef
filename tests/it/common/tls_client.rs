//! A blocking SMTP client that can use TLS: STARTTLS (RFC 3207) or TLS from
//! the first byte (RFC 8314), trusting the test CA; and the files a relay
//! listener with TLS and AUTH needs (certificate, key, users file).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;

use base64::Engine as _;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::fake_mx::test_ca;
use super::{Response, WAIT, dot_stuff, read_reply};

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Upgrading,
}

impl Read for Stream {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buffer),
            Stream::Tls(tls) => tls.read(buffer),
            Stream::Upgrading => unreachable!(),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(data),
            Stream::Tls(tls) => tls.write(data),
            Stream::Upgrading => unreachable!(),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
            Stream::Upgrading => unreachable!(),
        }
    }
}

pub struct TlsClient {
    stream: Stream,
    input: Vec<u8>,
}

fn client_config() -> Arc<ClientConfig> {
    let (identity, _) = test_ca();
    let mut roots = RootCertStore::empty();
    for certificate in rustls::pki_types::CertificateDer::pem_slice_iter(identity.ca_pem.as_bytes())
    {
        roots.add(certificate.unwrap()).unwrap();
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    Arc::new(config)
}

fn secure(tcp: TcpStream) -> Stream {
    let name = ServerName::try_from("localhost").unwrap();
    let connection = ClientConnection::new(client_config(), name).expect("TLS client");
    let mut tls = StreamOwned::new(connection, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .expect("TLS handshake with the relay");
    }
    Stream::Tls(Box::new(tls))
}

impl TlsClient {
    /// A plain connection (STARTTLS later).
    pub fn connect(address: SocketAddr) -> TlsClient {
        let tcp = TcpStream::connect_timeout(&address, WAIT).expect("connect");
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        tcp.set_nodelay(true).unwrap();
        TlsClient {
            stream: Stream::Plain(tcp),
            input: Vec::new(),
        }
    }

    /// A plain connection from `local`, another loopback address than the
    /// one the system would pick.
    pub fn connect_from(local: IpAddr, address: SocketAddr) -> TlsClient {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let tcp = runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.bind(SocketAddr::new(local, 0)).expect("bind");
            tokio::time::timeout(WAIT, socket.connect(address))
                .await
                .expect("connect in time")
                .expect("connect")
                .into_std()
                .unwrap()
        });
        tcp.set_nonblocking(false).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        tcp.set_nodelay(true).unwrap();
        TlsClient {
            stream: Stream::Plain(tcp),
            input: Vec::new(),
        }
    }

    /// TLS from the first byte: the handshake completes before the greeting.
    pub fn connect_implicit(address: SocketAddr) -> TlsClient {
        let mut client = TlsClient::connect(address);
        let Stream::Plain(tcp) = std::mem::replace(&mut client.stream, Stream::Upgrading) else {
            unreachable!()
        };
        client.stream = secure(tcp);
        client
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Reads one reply; `None` at end of stream (or a TLS close).
    pub fn try_read(&mut self) -> Option<Response> {
        read_reply(&mut self.stream, &mut self.input)
    }

    pub fn read(&mut self) -> Response {
        self.try_read()
            .expect("connection closed while waiting for a reply")
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
        self.stream.flush().expect("flush");
    }

    pub fn command(&mut self, line: &str) -> Response {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.read()
    }

    /// Reads the greeting and sends EHLO; returns the EHLO reply.
    pub fn greet(&mut self) -> Response {
        let greeting = self.read();
        assert_eq!(greeting.code, 220, "{greeting:?}");
        self.ehlo()
    }

    pub fn ehlo(&mut self) -> Response {
        let ehlo = self.command("EHLO client.test.example");
        assert_eq!(ehlo.code, 250, "{ehlo:?}");
        ehlo
    }

    /// STARTTLS, then the handshake. Panics unless the relay said 220.
    pub fn starttls(&mut self) {
        let reply = self.command("STARTTLS");
        assert_eq!(
            (reply.code, reply.text()),
            (220, "2.0.0 Ready to start TLS".into())
        );
        self.upgrade();
    }

    /// The handshake, after a 220 to STARTTLS was read.
    pub fn upgrade(&mut self) {
        assert!(
            self.input.is_empty(),
            "plaintext after the 220: {:?}",
            self.input
        );
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Upgrading) else {
            panic!("already under TLS")
        };
        self.stream = secure(tcp);
    }

    /// `AUTH PLAIN` with an initial response.
    pub fn auth_plain(&mut self, user: &str, password: &str) -> Response {
        let message = format!("\0{user}\0{password}");
        let encoded = base64::engine::general_purpose::STANDARD.encode(message);
        self.command(&format!("AUTH PLAIN {encoded}"))
    }

    /// A full transaction; returns the reply to the final dot.
    pub fn send_message(&mut self, from: &str, to: &[&str], content: &[u8]) -> Response {
        let reply = self.command(&format!("MAIL FROM:<{from}>"));
        assert_eq!(reply.code, 250, "MAIL: {reply:?}");
        for recipient in to {
            let reply = self.command(&format!("RCPT TO:<{recipient}>"));
            assert_eq!(reply.code, 250, "RCPT: {reply:?}");
        }
        let reply = self.command("DATA");
        assert_eq!(reply.code, 354, "DATA: {reply:?}");
        self.send_raw(&dot_stuff(content));
        self.send_raw(b".\r\n");
        self.read()
    }
}

/// The certificate (DER) a STARTTLS listener presents to a new session,
/// whoever issued it: what a reload that replaced the files serves.
pub fn presented_certificate(address: SocketAddr) -> Vec<u8> {
    let mut client = TlsClient::connect(address);
    client.greet();
    let reply = client.command("STARTTLS");
    assert_eq!(reply.code, 220, "{reply:?}");
    let Stream::Plain(mut tcp) = std::mem::replace(&mut client.stream, Stream::Upgrading) else {
        unreachable!()
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let mut connection = ClientConnection::new(Arc::new(config), name).expect("TLS client");
    while connection.is_handshaking() {
        connection
            .complete_io(&mut tcp)
            .expect("TLS handshake with the relay");
    }
    connection.peer_certificates().expect("a certificate")[0].to_vec()
}

/// Accepts any certificate (the signatures are still checked), to see which
/// one a server presents.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &rustls::pki_types::CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &rustls::pki_types::CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The test CA's server certificate and key, and a users file, in a
/// directory that lives as long as the value.
pub struct ListenerFiles {
    pub directory: tempfile::TempDir,
}

impl ListenerFiles {
    /// `users` is the users file's text (`user:HASH` lines).
    pub fn new(users: &str) -> ListenerFiles {
        let (identity, _) = test_ca();
        let directory = tempfile::tempdir().expect("temp dir");
        std::fs::write(directory.path().join("cert.pem"), &identity.cert_pem).unwrap();
        std::fs::write(directory.path().join("key.pem"), &identity.key_pem).unwrap();
        std::fs::write(directory.path().join("users"), users).unwrap();
        ListenerFiles { directory }
    }

    pub fn path(&self, name: &str) -> String {
        self.directory.path().join(name).display().to_string()
    }

    /// A `[[listener]]` table on a free loopback port with these files.
    pub fn listener(&self, tls: &str, auth: &str) -> String {
        format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\ntls = \"{tls}\"\n\
             certificate = \"{}\"\nprivate_key = \"{}\"\nauth = \"{auth}\"\n",
            self.path("cert.pem"),
            self.path("key.pem"),
        )
    }

    /// `users_file = …`, for the `[smtp]` table.
    pub fn users_file(&self) -> String {
        format!("users_file = \"{}\"\n", self.path("users"))
    }
}
