//! Key loading and signer selection.

use std::process::Command;

use super::*;

/// Writes a key made by the openssl command line tool.
fn openssl_key(directory: &Path, name: &str, arguments: &[&str]) -> PathBuf {
    let path = directory.join(name);
    let output = Command::new("openssl")
        .arg("genpkey")
        .args(arguments)
        .arg("-out")
        .arg(&path)
        .output()
        .expect("the openssl command line tool runs");
    assert!(
        output.status.success(),
        "openssl genpkey {arguments:?}: {output:?}"
    );
    path
}

#[test]
fn most_specific_domain_wins() {
    let configured = |domain: &str| ["example.com", "mail.example.com"].contains(&domain);
    assert_eq!(
        closest_domain("example.com", configured),
        Some("example.com")
    );
    assert_eq!(
        closest_domain("a.b.example.com", configured),
        Some("example.com")
    );
    assert_eq!(
        closest_domain("x.mail.example.com", configured),
        Some("mail.example.com")
    );
    assert_eq!(closest_domain("example.org", configured), None);
    assert_eq!(closest_domain("notexample.com", configured), None);
}

#[test]
fn loads_rsa_and_ed25519_keys_in_each_format_and_signs() {
    let directory = tempfile::tempdir().unwrap();
    let rsa1024 = openssl_key(
        directory.path(),
        "rsa1024.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
    );
    let rsa2048 = openssl_key(
        directory.path(),
        "rsa2048.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    // The 2048-bit key again as PKCS#1 ("BEGIN RSA PRIVATE KEY").
    let pkcs1 = directory.path().join("rsa2048-pkcs1.pem");
    let output = Command::new("openssl")
        .args(["rsa", "-traditional", "-in"])
        .arg(&rsa2048)
        .arg("-out")
        .arg(&pkcs1)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(
        std::fs::read_to_string(&pkcs1)
            .unwrap()
            .contains("BEGIN RSA PRIVATE KEY")
    );
    let ed25519 = openssl_key(directory.path(), "ed.pem", &["-algorithm", "ed25519"]);
    for (path, ring, algorithm) in [
        (&rsa1024, false, "rsa-sha256"),
        (&rsa2048, true, "rsa-sha256"),
        (&pkcs1, true, "rsa-sha256"),
        (&ed25519, false, "ed25519-sha256"),
    ] {
        let key = key::read(path).unwrap();
        assert_eq!(matches!(key, PrivateKey::RingRsa(_)), ring, "{path:?}");
        let signers = Arc::new(load_one(path, "example.com", "s").unwrap());
        let pending = signers.start("example.com", &[b"From: a@example.com\r\n"]);
        let signed = pending.unwrap().finish(SystemTime::now()).unwrap();
        assert!(
            signed.fields.contains(&format!("a={algorithm};")),
            "{}",
            signed.fields
        );
    }
}

#[test]
fn refuses_unusable_key_files_naming_them() {
    let directory = tempfile::tempdir().unwrap();
    let missing = directory.path().join("missing.pem");
    let error = load_one(&missing, "example.com", "s").err().unwrap();
    assert!(
        error
            .to_string()
            .starts_with(&format!("{}: cannot read", missing.display()))
    );

    let text = directory.path().join("text.pem");
    std::fs::write(&text, "hello\n").unwrap();
    let error = load_one(&text, "example.com", "s").err().unwrap();
    assert!(matches!(error.source, KeyError::NotPem), "{error}");

    let short = openssl_key(
        directory.path(),
        "short.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512"],
    );
    let error = load_one(&short, "example.com", "s").err().unwrap();
    assert!(
        matches!(error.source, KeyError::RsaTooShort(512)),
        "{error}"
    );
    assert!(error.to_string().contains("short.pem"));

    let ec = openssl_key(
        directory.path(),
        "ec.pem",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let error = load_one(&ec, "example.com", "s").err().unwrap();
    assert!(
        matches!(error.source, KeyError::UnknownAlgorithm | KeyError::Ec),
        "{error}"
    );
}

#[test]
fn signs_only_covered_authors() {
    let directory = tempfile::tempdir().unwrap();
    let ed25519 = openssl_key(directory.path(), "ed.pem", &["-algorithm", "ed25519"]);
    let signers = Arc::new(load_one(&ed25519, "example.com", "s").unwrap());
    let section: &[&[u8]] = &[b"From: a@Sub.Example.COM\r\n", b"Subject: x\r\n"];
    assert!(signers.start("other.org", section).is_none());
    assert!(!signers.covers("other.org") && !signers.covers("notexample.com"));
    assert!(signers.covers("Sub.Example.COM.") && signers.covers("example.com"));
    let mut pending = signers.start("Sub.Example.COM.", section).unwrap();
    pending.update(b"\r\nbody\r\n");
    let signed = pending.finish(SystemTime::now()).unwrap();
    assert_eq!(signed.signatures, vec!["example.com/s".to_string()]);
    assert!(
        signed
            .fields
            .starts_with("DKIM-Signature: v=1; a=ed25519-sha256; s=s; d=example.com;")
    );
    let unfolded = signed.fields.replace("\r\n\t", "");
    assert!(
        unfolded.contains(
            "h=From:From:Reply-To:Subject:Subject:Date:To:Cc:List-Unsubscribe:Message-ID:\
             MIME-Version:Content-Type:List-Unsubscribe-Post;"
        ),
        "{unfolded}"
    );
    assert!(
        !signed.fields.ends_with(";\r\n"),
        "b= is last, with no ; after it"
    );
}

#[test]
fn a_whole_message_is_signed_with_the_extra_fields_asked_for() {
    let directory = tempfile::tempdir().unwrap();
    let ed25519 = openssl_key(directory.path(), "ed.pem", &["-algorithm", "ed25519"]);
    let signers = Arc::new(load_one(&ed25519, "example.com", "s").unwrap());
    let message = b"From: <r@example.com>\r\nTLS-Report-Domain: example.org\r\n\
        Subject: x\r\n\r\nbody\r\n";
    let signed = signers
        .sign_message(message, &["TLS-Report-Domain"], SystemTime::now())
        .expect("a key covers example.com")
        .unwrap();
    let unfolded = signed.fields.replace("\r\n\t", "");
    assert!(unfolded.contains(":TLS-Report-Domain;"), "{unfolded}");
    // The same body hash as intake's streamed signature of the message.
    let mut pending = signers
        .start("example.com", &[&message[..message.len() - 8]])
        .unwrap();
    pending.update(b"\r\nbody\r\n");
    let streamed = pending.finish(SystemTime::now()).unwrap();
    let body_hash = |fields: &str| {
        let start = fields.find("bh=").unwrap();
        fields[start..start + fields[start..].find(';').unwrap()].to_owned()
    };
    assert_eq!(
        body_hash(&unfolded),
        body_hash(&streamed.fields.replace("\r\n\t", ""))
    );
    let other = b"From: <r@example.org>\r\n\r\nbody\r\n";
    assert!(
        signers
            .sign_message(other, &[], SystemTime::now())
            .is_none()
    );
}

#[test]
fn author_domain_is_the_first_from_address() {
    let parsed = mail_parser::MessageParser::new()
        .parse_headers(&b"From: \"A\" <a@Example.COM>, b@other.org\r\n\r\n"[..])
        .unwrap();
    assert_eq!(
        author_domain(parsed.from()),
        Some("example.com".to_string())
    );
    let parsed = mail_parser::MessageParser::new()
        .parse_headers(&b"Subject: x\r\n\r\n"[..])
        .unwrap();
    assert_eq!(author_domain(parsed.from()), None);
    let parsed = mail_parser::MessageParser::new()
        .parse_headers("From: a@Bücher.example\r\n\r\n".as_bytes())
        .unwrap();
    assert_eq!(
        author_domain(parsed.from()),
        Some("xn--bcher-kva.example".to_string())
    );
}
