//! DANE input: a `dns.trust_anchor` file (disk) and a server certificate
//! matched against TLSA records (network). Neither panics; an accepted
//! anchor file has absolute owners and gives a trust anchor set, and a
//! certificate matches the `3 0 0` record of its own bytes.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use relayq::fuzzing::{Anchor, CertificateDer, Tlsa, TrustAnchorSource, public_key_info};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(source) = TrustAnchorSource::from_text(Path::new("anchors"), &text) {
        let TrustAnchorSource::File { anchors, .. } = &source else {
            panic!("a file gives file anchors");
        };
        assert!(!anchors.is_empty());
        assert!(anchors.iter().all(|anchor| anchor.owner().is_fqdn()));
        if !anchors.iter().any(|anchor| matches!(anchor, Anchor::Ds { .. })) {
            assert!(source.trusted_keys(&[]).is_ok());
        }
    }

    let certificate = CertificateDer::from(data.to_vec());
    let full = Tlsa {
        usage: 3,
        selector: 0,
        matching: 0,
        data: data.to_vec(),
    };
    assert!(full.matches(&certificate));
    if let Some(spki) = public_key_info(&certificate) {
        let by_key = Tlsa {
            usage: 3,
            selector: 1,
            matching: 0,
            data: spki,
        };
        assert!(by_key.matches(&certificate));
    }
});
