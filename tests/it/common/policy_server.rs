//! MTA-STS test fixtures: a test CA (written to a file for
//! `delivery.tls_ca_file`) that issues certificates for any host name, and
//! an HTTPS server answering every request with one canned response, the
//! way `https://mta-sts.DOMAIN/.well-known/mta-sts.txt` would. The server
//! listens on port 443 (the port RFC 8461 fixes) of its own 127.0.0.0/8
//! address, so tests running in parallel do not meet.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::fake_mx::TlsIdentity;

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    file: PathBuf,
}

fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "relayq MTA-STS test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("relayq-mta-sts-ca-{}.pem", std::process::id()));
        std::fs::write(&file, issuer.pem()).expect("write the MTA-STS test CA");
        Ca { issuer, file }
    })
}

/// The test CA's certificate file (for `delivery.tls_ca_file`).
pub fn ca_file() -> PathBuf {
    ca().file.clone()
}

/// A server certificate for `host`, issued by the test CA.
pub fn identity(host: &str) -> TlsIdentity {
    let mut params = CertificateParams::new(vec![host.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, host);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let certificate = params.signed_by(&key, &ca().issuer).unwrap();
    TlsIdentity {
        cert_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
        ca_pem: ca().issuer.pem(),
    }
}

/// A policy file served as RFC 8461 §3.3 asks: 200, text/plain.
pub fn policy_response(policy: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{policy}",
        policy.len()
    )
}

/// An HTTPS server on `ip`:443 with a certificate for `host`; stops on drop.
pub struct PolicyServer {
    requests: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl PolicyServer {
    /// Answers every request with `response` (status line, headers, body).
    pub fn start(ip: &str, host: &str, response: String) -> PolicyServer {
        let address: SocketAddr = format!("{ip}:443").parse().expect("address");
        let listener = std::net::TcpListener::bind(address)
            .unwrap_or_else(|error| panic!("bind {address} (tests run as root): {error}"));
        listener.set_nonblocking(true).unwrap();
        let acceptor = acceptor(&identity(host));
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let serve = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let acceptor = acceptor.clone();
                        let response = response.clone();
                        let counted = counted.clone();
                        tokio::spawn(async move {
                            let Ok(mut stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let mut head = Vec::new();
                            let mut buffer = [0u8; 1024];
                            while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                                match stream.read(&mut buffer).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(read) => head.extend_from_slice(&buffer[..read]),
                                }
                            }
                            counted.fetch_add(1, Ordering::SeqCst);
                            let _ = stream.write_all(response.as_bytes()).await;
                            let _ = stream.shutdown().await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
        });
        PolicyServer {
            requests,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn acceptor(identity: &TlsIdentity) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
