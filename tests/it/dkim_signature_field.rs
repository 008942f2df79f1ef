//! The `DKIM-Signature:` field verifies with dkimpy whatever its length.
//! Where the folds of the `b=` value fall depends on what comes before it
//! in the field, mostly the `h=` list; a fold between the value and a
//! following `;` made dkimpy hash `b= ;` where relayq had signed `b=;`
//! (with the old field writer: every RSA-2048 signature over a message
//! with From, Reply-To, Subject, Date, To and Cc).

use crate::common::delivery::{expect_messages, submit};
use crate::common::dkim::{Setup, TestKey, WITHIN, dkim_block, make_key, start, verify};
use crate::common::fake_mx::Script;

/// More than a line (78 characters) of lengths, so that the field's length
/// before `b=` takes every value modulo the line width.
const LENGTHS: usize = 80;

/// The name signed first by the block of `length`: `X-Sweep` and `length`
/// more characters.
fn sweep_name(length: usize) -> String {
    format!("X-Sweep{}", "s".repeat(length))
}

/// A `[[dkim]]` block signing From and [`sweep_name`]`(length)`, so that
/// the rest of the field is pushed one column further per length.
fn sweep_block(selector: &str, key: &TestKey, length: usize) -> String {
    format!(
        "[[dkim]]\ndomain = \"example.com\"\nselector = \"{selector}\"\nprivate_key = \"{}\"\n\
         headers = [\"From\", \"{}\"]\n",
        key.path.display(),
        sweep_name(length)
    )
}

#[test]
fn signatures_verify_wherever_the_folds_of_b_fall() {
    let directory = tempfile::tempdir().unwrap();
    let rsa = make_key(directory.path(), "example.com", "rsa", Some(2048));
    let ed25519 = make_key(directory.path(), "example.com", "ed", None);
    // The default header set, then the sweep.
    let mut blocks =
        dkim_block("example.com", "rsa", &rsa) + &dkim_block("example.com", "ed", &ed25519);
    let mut published = vec![rsa.clone(), ed25519.clone()];
    for (prefix, key) in [("rsa", &rsa), ("ed", &ed25519)] {
        for length in 0..LENGTHS {
            let selector = format!("{prefix}{length}");
            blocks.push_str(&sweep_block(&selector, key, length));
            published.push(key.under("example.com", &selector));
        }
    }
    let Setup {
        relay,
        mx: servers,
        dns: _dns,
        ..
    } = start(65, Script::default(), &blocks);

    // The reported case: Cc and Reply-To.
    let mut content = String::from(
        "From: Ann <ann@example.com>\r\nTo: rcpt@dest.test\r\nCc: copy@dest.test\r\n\
         Reply-To: replies@example.com\r\nSubject: every fold\r\n",
    );
    for length in 0..LENGTHS {
        content.push_str(&format!("{}: {length}\r\n", sweep_name(length)));
    }
    content.push_str("\r\nbody\r\n");
    submit(&relay, "app@sender.test", &["rcpt@dest.test"], &content);
    let received = expect_messages(&relay, &servers[0], 1, WITHIN);
    let message = &received[0].data;

    let keys: Vec<&TestKey> = published.iter().collect();
    let verdicts = verify(message, &keys);
    assert_eq!(verdicts.len(), 2 + 2 * LENGTHS);
    let failed: Vec<&str> = verdicts
        .iter()
        .filter(|verdict| !verdict.pass)
        .map(|verdict| verdict.selector.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "dkimpy rejects the signatures of selectors {failed:?}:\n{}",
        String::from_utf8_lossy(message)
    );
    // Each field ends with the value of b=: no white space, no `;` after it.
    let text = String::from_utf8_lossy(message);
    let header = text.split("\r\n\r\n").next().unwrap();
    let mut fields: Vec<String> = Vec::new();
    for line in header.split("\r\n") {
        match fields.last_mut() {
            Some(field) if line.starts_with([' ', '\t']) => field.push_str(line),
            _ => fields.push(line.to_owned()),
        }
    }
    let signatures = fields
        .iter()
        .filter(|field| field.starts_with("DKIM-Signature:"));
    for field in signatures {
        assert!(
            field.ends_with(|c: char| c.is_ascii_alphanumeric() || "+/=".contains(c)),
            "{field}"
        );
    }
}
