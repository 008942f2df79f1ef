//! Unit tests of the DANE verifier: DANE-EE and DANE-TA verdicts over certificate chains made for the test.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use sha2::{Digest as _, Sha256};

use super::*;
use crate::dane::Tlsa;
use crate::dane::tlsa::public_key_info;

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "DANE test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A server certificate for `names`, valid from `days_from_now` for
    /// `days` days.
    fn issue(&self, names: &[&str], days_from_now: i64, days: i64) -> CertificateDer<'static> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let start = time::OffsetDateTime::now_utc() + time::Duration::days(days_from_now);
        params.not_before = start;
        params.not_after = start + time::Duration::days(days);
        let key = KeyPair::generate().unwrap();
        params.signed_by(&key, &self.issuer).unwrap().der().clone()
    }
}

fn verifier(records: Vec<Tlsa>, reference_ids: &[&str]) -> Arc<DaneVerifier> {
    let records = records
        .into_iter()
        .map(|record| (record.usable().expect("usable"), record))
        .collect();
    let expectation = Expectation {
        base: "mx.example.com".to_owned(),
        records,
        reference_ids: reference_ids.iter().map(|n| n.to_string()).collect(),
    };
    DaneVerifier::new(Arc::new(expectation))
}

fn spki_sha256(usage: u8, certificate: &CertificateDer<'_>) -> Tlsa {
    Tlsa {
        usage,
        selector: 1,
        matching: 1,
        data: Sha256::digest(public_key_info(certificate).unwrap()).to_vec(),
    }
}

fn cert_sha256(usage: u8, certificate: &CertificateDer<'_>) -> Tlsa {
    Tlsa {
        usage,
        selector: 0,
        matching: 1,
        data: Sha256::digest(certificate.as_ref()).to_vec(),
    }
}

fn now() -> UnixTime {
    UnixTime::now()
}

fn failure(verdict: Verdict) -> CertificateFailure {
    match verdict {
        Verdict::Failed { failure, .. } => failure,
        matched => panic!("expected a failure, got {matched:?}"),
    }
}

#[test]
fn dane_ee_matches_the_key_whatever_the_name_and_dates() {
    let ca = Ca::new();
    let expired_elsewhere = ca.issue(&["other.example"], -30, 1);
    let verifier = verifier(
        vec![spki_sha256(3, &expired_elsewhere)],
        &["mx.example.com"],
    );
    let verdict = verifier.judge(&expired_elsewhere, &[], now());
    assert!(
        matches!(
            verdict,
            Verdict::Matched {
                usage: Usage::EndEntity,
                name: None,
                ..
            }
        ),
        "{verdict:?}"
    );
}

#[test]
fn dane_ee_of_another_key_does_not_match() {
    let ca = Ca::new();
    let presented = ca.issue(&["mx.example.com"], -1, 30);
    let published = ca.issue(&["mx.example.com"], -1, 30);
    let verifier = verifier(
        vec![spki_sha256(3, &published), cert_sha256(3, &published)],
        &["mx.example.com"],
    );
    let verdict = verifier.judge(&presented, &[ca.der()], now());
    assert_eq!(failure(verdict), CertificateFailure::NotTrusted);
}

#[test]
fn dane_ta_needs_the_chain_and_a_reference_identifier() {
    let ca = Ca::new();
    let good = ca.issue(&["mx.example.com"], -1, 30);
    let records = vec![cert_sha256(2, &ca.der())];
    let verifier = verifier(records.clone(), &["mx.example.com", "example.com"]);
    let verdict = verifier.judge(&good, &[ca.der()], now());
    assert_eq!(
        verdict,
        Verdict::Matched {
            usage: Usage::TrustAnchor,
            record: records[0].to_string(),
            name: Some("mx.example.com".into()),
        }
    );

    // The next-hop domain is a reference identifier too (when given).
    let for_domain = ca.issue(&["example.com"], -1, 30);
    let verdict = verifier.judge(&for_domain, &[ca.der()], now());
    assert!(
        matches!(&verdict, Verdict::Matched { name: Some(name), .. } if name == "example.com"),
        "{verdict:?}"
    );

    let elsewhere = ca.issue(&["www.example.net"], -1, 30);
    assert_eq!(
        failure(verifier.judge(&elsewhere, &[ca.der()], now())),
        CertificateFailure::HostMismatch
    );

    let expired = ca.issue(&["mx.example.com"], -30, 1);
    assert_eq!(
        failure(verifier.judge(&expired, &[ca.der()], now())),
        CertificateFailure::Expired
    );

    // The anchor must be in the presented chain.
    assert_eq!(
        failure(verifier.judge(&good, &[], now())),
        CertificateFailure::NotTrusted
    );
}

#[test]
fn dane_ta_of_another_ca_does_not_match() {
    let ca = Ca::new();
    let other_ca = Ca::new();
    let presented = ca.issue(&["mx.example.com"], -1, 30);
    let verifier = verifier(vec![spki_sha256(2, &other_ca.der())], &["mx.example.com"]);
    assert_eq!(
        failure(verifier.judge(&presented, &[ca.der()], now())),
        CertificateFailure::NotTrusted
    );
    // A chain that names the other CA's certificate without being issued by it.
    assert_eq!(
        failure(verifier.judge(&presented, &[other_ca.der()], now())),
        CertificateFailure::NotTrusted
    );
}

#[test]
fn the_verdict_is_kept() {
    let ca = Ca::new();
    let certificate = ca.issue(&["mx.example.com"], -1, 30);
    let expectation = Expectation {
        base: "mx.example.com".to_owned(),
        records: vec![(Usage::EndEntity, spki_sha256(3, &certificate))],
        reference_ids: vec!["mx.example.com".to_owned()],
    };
    let verifier = DaneVerifier::new(Arc::new(expectation));
    verifier.client_config().unwrap();
    assert!(verifier.verdict().is_none());
    let name = ServerName::try_from("mx.example.com").unwrap();
    assert!(
        verifier
            .verify_server_cert(&certificate, &[], &name, &[], now())
            .is_ok()
    );
    assert!(matches!(verifier.verdict(), Some(Verdict::Matched { .. })));
    let other = ca.issue(&["mx.example.com"], -1, 30);
    let error = verifier
        .verify_server_cert(&other, &[], &name, &[], now())
        .unwrap_err();
    assert!(error.to_string().contains("DANE"), "{error}");
    assert!(matches!(verifier.verdict(), Some(Verdict::Failed { .. })));
}
