//! Oversigning: a field that a message has at most once is listed in `h=`
//! once more than it occurs, so a copy of a signed message with such a
//! field added (a replay with a new Subject or To on top, which a reader
//! may be shown while the verifier checks the bottom one, RFC 6376 §8.15)
//! fails under dkimpy. Default set and a configured `headers` list.

use crate::common::delivery::{expect_messages, submit};
use crate::common::dkim::{
    Setup, WITHIN, dkim_block, make_key, passes, start, verify, with_subject,
};
use crate::common::fake_mx::Script;

/// `message` with `field` (a complete line) put on top, as a replay would.
fn with_field_on_top(message: &[u8], field: &str) -> Vec<u8> {
    let mut replayed = field.as_bytes().to_vec();
    replayed.extend_from_slice(message);
    replayed
}

#[test]
fn a_replay_that_adds_a_signed_singleton_fails_verification() {
    let directory = tempfile::tempdir().unwrap();
    let default = make_key(directory.path(), "example.com", "default", None);
    let configured = make_key(directory.path(), "example.com", "listed", Some(2048));
    let blocks = format!(
        "{}{}headers = [\"From\", \"Subject\", \"To\"]\n",
        dkim_block("example.com", "default", &default),
        dkim_block("example.com", "listed", &configured),
    );
    let Setup {
        relay,
        mx: servers,
        dns: _dns,
        ..
    } = start(66, Script::default(), &blocks);
    let content = "From: news@example.com\r\nTo: rcpt@dest.test\r\nSubject: monthly news\r\n\
                   Date: Tue, 1 Dec 2026 10:00:00 +0000\r\nMessage-ID: <n1@example.com>\r\n\
                   MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
                   List-Unsubscribe: <https://example.com/u/1>\r\n\
                   List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\nnews\r\n";
    submit(&relay, "news@example.com", &["rcpt@dest.test"], content);
    let received = expect_messages(&relay, &servers[0], 1, WITHIN);
    let original = with_subject(&received, "monthly news");
    let keys = [&default, &configured];
    let both_pass = vec![
        passes("example.com", "default"),
        passes("example.com", "listed"),
    ];
    assert_eq!(verify(original, &keys), both_pass);
    // A field no signature covers may be added: the verifier is not just
    // failing every change.
    let unsigned_addition = with_field_on_top(original, "X-Spam-Score: 0\r\n");
    assert_eq!(verify(&unsigned_addition, &keys), both_pass);

    // Fields present once: both signatures (the default set, and the
    // configured list) break when one more is added.
    for field in [
        "Subject: URGENT: verify your account\r\n",
        "To: victim@dest.test\r\n",
        "From: ceo@example.com\r\n",
    ] {
        let verdicts = verify(&with_field_on_top(original, field), &keys);
        assert!(
            verdicts.iter().all(|verdict| !verdict.pass),
            "{field:?} added: {verdicts:?}"
        );
    }
    // Fields of the default set, present or absent, that the default
    // signature oversigns (the configured list does not name them).
    for field in [
        "Date: Wed, 2 Dec 2026 10:00:00 +0000\r\n",
        "Message-ID: <replayed@example.com>\r\n",
        "Content-Type: text/html\r\n",
        "List-Unsubscribe: <https://attacker.example/u>\r\n",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
        "Cc: everyone@dest.test\r\n",
        "Reply-To: attacker@elsewhere.example\r\n",
    ] {
        let verdicts = verify(&with_field_on_top(original, field), &keys);
        assert_eq!(
            verdicts
                .iter()
                .map(|verdict| verdict.pass)
                .collect::<Vec<_>>(),
            [false, true],
            "{field:?} added: {verdicts:?}"
        );
    }
}
