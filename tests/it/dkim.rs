//! DKIM signing at acceptance, checked by an independent verifier (dkimpy)
//! on what the fake MX received; and `check-config` on unusable key files.
//! Keys are made at test time with the openssl command line tool.

use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::common::delivery::{config, expect_messages, submit};
use crate::common::dkim::{
    Setup, WITHIN, dkim_block, make_key, passes, start, verify, with_subject,
};
use crate::common::fake_mx::Script;

#[test]
fn mail_is_signed_by_the_closest_domain_of_its_author_and_verifies() {
    let directory = tempfile::tempdir().unwrap();
    let rsa = make_key(directory.path(), "example.com", "rsa", Some(2048));
    let ed25519 = make_key(directory.path(), "example.com", "ed", None);
    let mail = make_key(directory.path(), "mail.example.com", "m1024", Some(1024));
    let blocks = [
        dkim_block("example.com", "rsa", &rsa),
        dkim_block("example.com", "ed", &ed25519),
        dkim_block("mail.example.com", "m1024", &mail),
    ]
    .concat();
    let Setup {
        relay,
        mx: servers,
        dns: _dns,
        ..
    } = start(61, Script::default(), &blocks);

    // Large enough to be stored as a file body (over 128 KiB).
    let large_body = "a line of a large message, with  spaces  \r\n".repeat(8000);
    let cases = [
        ("top", "Ann <ann@Example.COM>", large_body.as_str()),
        ("sub", "bob@sub.example.com", "hello\r\n"),
        ("closest", "cy@x.mail.example.com", "hello\r\n"),
        ("other", "dee@other.test", "hello\r\n"),
    ];
    for (subject, from, body) in &cases {
        submit(
            &relay,
            "app@sender.test",
            &["rcpt@dest.test"],
            &format!("From: {from}\r\nTo: rcpt@dest.test\r\nSubject: {subject}\r\n\r\n{body}"),
        );
    }
    let received = expect_messages(&relay, &servers[0], cases.len(), WITHIN);
    let keys = [&rsa, &ed25519, &mail];

    let top = with_subject(&received, "top");
    assert!(top.starts_with(b"DKIM-Signature: v=1; a=rsa-sha256; s=rsa; d=example.com;"));
    let text = String::from_utf8_lossy(top);
    let second = text
        .find("\r\nDKIM-Signature: v=1; a=ed25519-sha256; s=ed;")
        .unwrap();
    assert!(
        text[second..].contains("\r\nReceived: from "),
        "after the trace headers"
    );
    assert_eq!(
        verify(top, &keys),
        vec![passes("example.com", "rsa"), passes("example.com", "ed")]
    );
    assert_eq!(
        verify(with_subject(&received, "sub"), &keys),
        vec![passes("example.com", "rsa"), passes("example.com", "ed")],
        "a subdomain's mail is signed with d= the configured domain"
    );
    assert_eq!(
        verify(with_subject(&received, "closest"), &keys),
        vec![passes("mail.example.com", "m1024")],
        "the most specific domain wins"
    );
    let other = with_subject(&received, "other");
    assert!(other.starts_with(b"Received: "), "unsigned");
    assert_eq!(verify(other, &keys), vec![]);

    // The verifier is not fooled: a changed body fails.
    let tampered =
        String::from_utf8_lossy(with_subject(&received, "sub")).replace("hello", "jello");
    assert!(
        verify(tampered.as_bytes(), &keys)
            .iter()
            .all(|verdict| !verdict.pass)
    );
}

#[test]
fn a_deferred_message_still_verifies_when_delivered() {
    let directory = tempfile::tempdir().unwrap();
    let key = make_key(directory.path(), "example.com", "sel", Some(2048));
    let script = Script {
        final_reply: Arc::new(|index| match index {
            0 => "451 4.3.0 try again later".to_owned(),
            _ => format!("250 2.0.0 Ok: queued as FAKE{index}"),
        }),
        ..Script::default()
    };
    let Setup {
        relay,
        mx: servers,
        dns: _dns,
        ..
    } = start(62, script, &dkim_block("example.com", "sel", &key));
    let id = submit(
        &relay,
        "app@sender.test",
        &["rcpt@dest.test"],
        "From: app@example.com\r\nSubject: retried\r\n\r\nbody\r\n",
    );
    relay.wait_for_log(&format!("{id}: DKIM-signed by example.com/sel"));
    let deferred = relay.wait_for_log("status=deferred");
    assert!(deferred.contains("451 4.3.0"), "{deferred}");
    let received = expect_messages(&relay, &servers[0], 1, WITHIN);
    assert_eq!(received.len(), 1);
    let message = &received[0].data;
    assert_eq!(
        String::from_utf8_lossy(message)
            .matches("DKIM-Signature:")
            .count(),
        1,
        "signed once, at acceptance"
    );
    assert_eq!(verify(message, &[&key]), vec![passes("example.com", "sel")]);
}

#[test]
fn check_config_names_unusable_key_files() {
    let directory = tempfile::tempdir().unwrap();
    let not_a_key = directory.path().join("notes.pem");
    std::fs::write(&not_a_key, "these are not the keys\n").unwrap();
    let short = make_key(directory.path(), "example.com", "short", Some(512));
    let cases = [
        (directory.path().join("missing.pem"), "cannot read"),
        (not_a_key, "not a PEM private key"),
        (short.path, "512 bits is too short"),
    ];
    for (index, (key_file, reason)) in cases.iter().enumerate() {
        let config = directory.path().join(format!("relayq{index}.toml"));
        std::fs::write(
            &config,
            format!(
                "[[dkim]]\ndomain = \"example.com\"\nselector = \"s\"\nprivate_key = \"{}\"\n",
                key_file.display()
            ),
        )
        .unwrap();
        for command in [&["check-config"][..], &["serve", "--config"]] {
            let output = Command::new(env!("CARGO_BIN_EXE_relayq"))
                .args(command)
                .arg(&config)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(64), "{command:?}: {stderr}");
            for needle in [
                config.to_str().unwrap(),
                "dkim[0].private_key",
                key_file.to_str().unwrap(),
                reason,
            ] {
                assert!(
                    stderr.contains(needle),
                    "{command:?}: {needle:?} in {stderr}"
                );
            }
        }
    }
}

#[test]
fn mail_imported_from_the_maildrop_is_signed_too() {
    let directory = tempfile::tempdir().unwrap();
    let key = make_key(directory.path(), "example.com", "ed", None);
    let Setup {
        relay,
        mx: servers,
        dns: _dns,
        ..
    } = start(
        63,
        Script::default(),
        &dkim_block("example.com", "ed", &key),
    );
    // What `relayq sendmail` leaves while the daemon is down.
    let maildrop = relay.spool_path().join("maildrop");
    let dropped = "relayq-maildrop 1\nsender app@example.com\nrecipient rcpt@dest.test\n\n\
                   From: cron@example.com\r\nSubject: from cron\r\n\r\nreport\r\n";
    std::fs::write(maildrop.join(".tmp-x"), dropped).unwrap();
    std::fs::rename(maildrop.join(".tmp-x"), maildrop.join("1.x")).unwrap();
    relay.wait_for_log("imported from maildrop file 1.x");
    let received = expect_messages(&relay, &servers[0], 1, WITHIN);
    assert_eq!(
        verify(&received[0].data, &[&key]),
        vec![passes("example.com", "ed")]
    );
}

#[test]
fn a_reload_reads_the_keys_again_and_keeps_them_when_a_file_is_bad() {
    let directory = tempfile::tempdir().unwrap();
    let first = make_key(directory.path(), "example.com", "one", None);
    let Setup {
        relay,
        mx: servers,
        dns,
        port,
    } = start(
        64,
        Script::default(),
        &dkim_block("example.com", "one", &first),
    );
    let send = |subject: &str| {
        let content = format!("From: app@example.com\r\nSubject: {subject}\r\n\r\nbody\r\n");
        submit(&relay, "app@sender.test", &["rcpt@dest.test"], &content)
    };
    send("before");

    // Another selector with a new RSA key: signed with it after the reload.
    let second = make_key(directory.path(), "example.com", "two", Some(2048));
    relay.rewrite_config(&config(
        &dns,
        port,
        "",
        &dkim_block("example.com", "two", &second),
    ));
    let output = relay.reload();
    assert!(output.status.success(), "{output:?}");
    send("after");

    // The key file is damaged: the reload is refused and names the key;
    // signing goes on with the key loaded before.
    std::fs::write(&second.path, "not a key\n").unwrap();
    let output = relay.reload();
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    let said = crate::common::output_text(&output);
    assert!(said.contains("dkim[0].private_key"), "{said}");
    send("kept");

    let received = expect_messages(&relay, &servers[0], 3, WITHIN);
    assert_eq!(
        verify(with_subject(&received, "before"), &[&first]),
        vec![passes("example.com", "one")]
    );
    assert_eq!(
        verify(with_subject(&received, "after"), &[&second]),
        vec![passes("example.com", "two")]
    );
    assert_eq!(
        verify(with_subject(&received, "kept"), &[&second]),
        vec![passes("example.com", "two")]
    );
}
