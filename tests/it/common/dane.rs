//! Shared setup of the DANE tests (`dane`, `dane_refusals`): certificates
//! and the TLSA data naming them, fake MX scripts, signed zones with the
//! senders' domain, a relay with `[delivery] dane = true` and the test
//! root as `[dns] trust_anchor`, and what to read back (delivery log lines,
//! `relayq_dane_results_total`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest as _, Sha256};

use super::TestRelay;
pub use super::delivery::wait_for_delivery;
use super::fake_mx::{FakeMx, Script, TlsIdentity};
use super::policy_server;
use super::signed_dns::{Security, SignedDns, SignedZones};

pub const WITHIN: Duration = Duration::from_secs(15);

/// The DER certificates of a PEM chain, end entity first.
pub fn chain(identity: &TlsIdentity) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM chain")
}

/// `3 1 1`: SHA-256 of the server certificate's public key.
pub fn dane_ee(identity: &TlsIdentity) -> Vec<u8> {
    let spki = relayq::dane::public_key_info(&chain(identity)[0]).expect("SPKI");
    Sha256::digest(spki).to_vec()
}

/// `2 0 1`: SHA-256 of the issuing CA's certificate.
pub fn dane_ta(identity: &TlsIdentity) -> Vec<u8> {
    let ca = CertificateDer::from_pem_slice(identity.ca_pem.as_bytes()).expect("CA PEM");
    Sha256::digest(ca.as_ref()).to_vec()
}

/// An MX offering STARTTLS with `identity`.
pub fn tls_script(identity: TlsIdentity) -> Script {
    Script {
        tls: Some(identity),
        ..Script::default()
    }
}

/// A certificate for `host` from the MTA-STS test CA, the CA's certificate
/// sent along (DANE-TA needs the anchor in the chain, RFC 7672 §3.1.2).
pub fn ca_issued(host: &str) -> TlsIdentity {
    let mut identity = policy_server::identity(host);
    identity.cert_pem = format!("{}{}", identity.cert_pem, identity.ca_pem);
    identity
}

/// Signed zones with the senders' domain (bounces go there, no TLSA).
pub fn zones(sender_mx_ip: &str) -> SignedZones {
    SignedZones::new()
        .zone("dane.test", Security::Signed)
        .mx("sender.test", 10, "mx.sender.test")
        .a("mx.sender.test", sender_mx_ip)
}

pub fn relay_config(
    dns: &SignedDns,
    anchor_dir: &std::path::Path,
    port: u16,
    extra: &str,
) -> String {
    let anchor = dns.trust_anchor_file(anchor_dir);
    format!(
        "[delivery]\nport = {port}\ndane = true\nconnect_timeout = \"2s\"\ngreeting_timeout = \"5s\"\n\
         command_timeout = \"5s\"\ndata_timeout = \"5s\"\nfinal_timeout = \"5s\"\n\
         tls_ca_file = \"{}\"\n\
         [dns]\nnameservers = [\"{}\"]\ntrust_anchor = \"{}\"\n\
         [retry]\ninitial = \"1s\"\nfactor = 1.0\nmax = \"1s\"\nmax_age = \"1h\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n{extra}\n",
        policy_server::ca_file().display(),
        dns.address,
        anchor.display()
    )
}

pub fn assert_no_transaction(server: &FakeMx) {
    let commands = server.commands();
    assert!(
        commands
            .iter()
            .all(|command| !command.to_ascii_uppercase().starts_with("MAIL")),
        "no MAIL FROM may reach a host DANE refuses: {commands:?}"
    );
    assert!(server.messages().is_empty());
}

/// `relayq_dane_results_total{result="RESULT"}` as scraped now.
pub fn dane_count(relay: &TestRelay, result: &str) -> f64 {
    let line = relay.wait_for_log("metrics on ");
    let address: SocketAddr = line
        .split("metrics on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|address| address.parse().ok())
        .expect("metrics address");
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("metrics");
    let series = format!("relayq_dane_results_total{{result=\"{result}\"}} ");
    response
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{response}"))
}
