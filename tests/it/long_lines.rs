//! Lines longer than 998 octets (RFC 5322 §2.1.1): a message with a 1 MB
//! line, sent by DATA or by BDAT, reaches an MX that refuses over-long
//! lines, and a long header line arrives folded into the same field.

use std::time::Duration;

use crate::common::TestRelay;
use crate::common::delivery::{config, expect_messages, start_mx, zone_with_sender_mx};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::Script;
use crate::common::queued_id;

const WITHIN: Duration = Duration::from_secs(15);

fn zone() -> crate::common::dns_server::Zone {
    zone_with_sender_mx("127.0.41.9")
        .mx("dest.test", 10, "mx.dest.test")
        .a("mx.dest.test", "127.0.41.1")
}

/// The MX refuses what a conforming MX refuses.
fn strict_mx() -> Script {
    Script {
        max_line_length: Some(998),
        extensions: [
            "PIPELINING",
            "SIZE 10000000",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
        ]
        .map(str::to_owned)
        .to_vec(),
        ..Script::default()
    }
}

fn assert_lines_fit(data: &[u8]) {
    for line in data.split(|&octet| octet == b'\n') {
        let content = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(content.len() <= 998, "a line of {} octets", content.len());
    }
}

/// A message whose body is one line of 1 MB, unwrapped base64 style, and
/// whose Subject is a 3,000-octet line of words.
fn message() -> (Vec<u8>, Vec<u8>, String) {
    let subject: String = (0..500).map(|word| format!(" w{word:03}")).collect();
    let body: Vec<u8> = (0..1_000_000u32)
        .map(|index| {
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[index as usize % 64]
        })
        .collect();
    let mut content = format!("From: app@sender.test\r\nSubject:{subject}\r\n\r\n").into_bytes();
    content.extend_from_slice(&body);
    content.extend_from_slice(b"\r\n");
    (content, body, subject)
}

#[test]
fn a_one_megabyte_line_is_delivered_to_a_strict_mx() {
    let (port, servers) = start_mx(vec![
        ("127.0.41.1", strict_mx()),
        ("127.0.41.9", Script::default()),
    ]);
    let dns = TestDns::start(zone());
    let relay = TestRelay::start(&config(&dns, port, "", ""));
    let (content, body, subject) = message();

    let mut client = relay.client();
    client.greet();
    let id = queued_id(&client.send_message("app@sender.test", &["user@dest.test"], &content));
    // The same message in BDAT chunks whose boundaries fall mid-line.
    assert_eq!(client.command("MAIL FROM:<app@sender.test>").code, 250);
    assert_eq!(client.command("RCPT TO:<user@dest.test>").code, 250);
    let chunks: Vec<&[u8]> = content.chunks(100_003).collect();
    for (index, chunk) in chunks.iter().enumerate() {
        let last = if index + 1 == chunks.len() {
            " LAST"
        } else {
            ""
        };
        client.send_raw(format!("BDAT {}{last}\r\n", chunk.len()).as_bytes());
        client.send_raw(chunk);
        let reply = client.read();
        assert_eq!(reply.code, 250, "{reply:?}");
    }
    client.command("QUIT");

    let messages = expect_messages(&relay, &servers[0], 2, WITHIN);
    for received in &messages {
        assert_lines_fit(&received.data);
        let text = String::from_utf8(received.data.clone()).unwrap();
        let (header_section, delivered_body) = text.split_once("\r\n\r\n").unwrap();
        // The body lost nothing but gained line breaks.
        let rejoined: Vec<u8> = delivered_body
            .bytes()
            .filter(|&octet| octet != b'\r' && octet != b'\n')
            .collect();
        assert_eq!(rejoined, body);
        // The Subject was folded: unfolded (RFC 5322 §2.2.3) it is the same.
        let unfolded = format!("{header_section}\r\n").replace("\r\n ", " ");
        assert!(
            unfolded.contains(&format!("\r\nSubject:{subject}\r\n")),
            "{header_section}"
        );
    }
    assert!(servers[1].messages().is_empty(), "no bounce");
    let logged = relay.wait_for_log("line breaks inserted into lines longer than 998 octets");
    assert!(logged.contains(&id.to_string()), "{logged}");
}
