//! `delivery.dane` and `dns.trust_anchor`.

use super::*;
use crate::dns::{Anchor, TrustAnchorSource};

/// A DNSKEY line that parses: a P-256 key's 64 octets.
const ANCHOR: &str = ". 3600 IN DNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==";

fn anchor_file(contents: &str) -> tempfile::TempPath {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), contents).unwrap();
    file.into_temp_path()
}

#[test]
fn dane_is_off_by_default_and_validates_from_the_root() {
    let config = parse("").unwrap();
    assert!(!config.delivery.dane);
    assert!(!config.dns.dnssec);
    assert_eq!(config.dns.trust_anchors, TrustAnchorSource::Root);

    let config = parse("[delivery]\ndane = true\n").unwrap();
    assert!(config.delivery.dane);
    assert!(config.dns.dnssec, "the resolver validates with DANE on");
}

#[test]
fn dane_needs_tls() {
    let message = error("[delivery]\ndane = true\ntls = \"disabled\"\n");
    assert!(
        message.starts_with("relayq.toml: delivery.dane: DANE needs TLS"),
        "{message}"
    );
    assert!(parse("[delivery]\ndane = true\ntls = \"required\"\n").is_ok());
}

#[test]
fn trust_anchor_file_is_read_at_load() {
    let path = anchor_file(&format!("; private root\n{ANCHOR}\n"));
    let config = parse(&format!(
        "[delivery]\ndane = true\n[dns]\ntrust_anchor = {:?}\n",
        path.to_str().unwrap()
    ))
    .unwrap();
    let TrustAnchorSource::File {
        path: read,
        anchors,
    } = &config.dns.trust_anchors
    else {
        panic!("the file replaces the root anchor");
    };
    assert_eq!(read, &path.to_path_buf());
    assert!(matches!(&anchors[..], [Anchor::Dnskey { .. }]));
}

#[test]
fn trust_anchor_errors_name_the_key_the_file_and_the_line() {
    let path = anchor_file(&format!("{ANCHOR}\nexample. IN DS 1 13 2 00\n"));
    let message = error(&format!(
        "[dns]\ntrust_anchor = {:?}\n",
        path.to_str().unwrap()
    ));
    assert!(
        message.starts_with(&format!(
            "relayq.toml: dns.trust_anchor: {}: line 2: DS digest has 1 octets",
            path.display()
        )),
        "{message}"
    );

    let message = error("[dns]\ntrust_anchor = \"/nonexistent/anchors\"\n");
    assert!(
        message.contains("dns.trust_anchor: cannot read /nonexistent/anchors"),
        "{message}"
    );
    let message = error("[dns]\ntrust_anchor = \"\"\n");
    assert!(message.contains("dns.trust_anchor"), "{message}");
}
