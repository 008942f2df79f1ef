//! SMTP intake over real TCP: commands, pipelining, DATA and BDAT, and the
//! message stored byte for byte.

use crate::common;
use crate::common::{TestRelay, dot_stuff, queued_id};

const CONTENT: &[u8] = b"From: app@example.com\r\nTo: user@example.org\r\n\
Subject: test\r\nMessage-ID: <m1@example.com>\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\n\r\n\
Hello.\r\n.leading dot\r\n..two dots\r\n.\r\nlast line\r\n";

#[test]
fn greeting_ehlo_and_simple_commands() {
    let relay = TestRelay::start("");
    let mut client = relay.client();
    let greeting = client.read();
    assert_eq!(greeting.code, 220);
    assert!(greeting.text().contains("relay.test.example"));
    let ehlo = client.command("EHLO client.test.example");
    assert_eq!(ehlo.code, 250);
    for keyword in [
        "PIPELINING",
        "SIZE 26214400",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "DSN",
        "MT-PRIORITY",
    ] {
        assert!(
            ehlo.lines.iter().any(|line| line.starts_with(keyword)),
            "{keyword} in {ehlo:?}"
        );
    }
    assert_eq!(client.command("HELO client.test.example").code, 250);
    assert_eq!(client.command("NOOP").text(), "2.0.0 Ok");
    assert_eq!(client.command("RSET").text(), "2.0.0 Ok");
    let vrfy = client.command("VRFY root");
    assert_eq!((vrfy.code, &vrfy.lines[0][..5]), (252, "2.5.0"));
    assert_eq!(client.command("HELP").code, 214);
    let starttls = client.command("STARTTLS");
    assert_eq!((starttls.code, &starttls.lines[0][..5]), (502, "5.5.1"));
    let quit = client.command("QUIT");
    assert_eq!((quit.code, quit.text().as_str()), (221, "2.0.0 Bye"));
    assert!(client.try_read().is_none(), "connection closes after QUIT");
}

#[test]
fn message_is_stored_byte_for_byte_with_trace_headers() {
    let mut relay = TestRelay::start("");
    let mut client = relay.client();
    client.greet();
    let id = queued_id(&client.send_message(
        "app@example.com",
        &["user@example.org", "other@example.net"],
        CONTENT,
    ));
    client.command("QUIT");
    relay.wait_for_log(&format!("{id}: accepted from=<app@example.com>, nrcpt=2"));
    relay.stop();

    let messages = relay.spooled_messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.id, id);
    let body = String::from_utf8(message.body.clone()).unwrap();
    assert!(body.starts_with("Received: from client.test.example ([127.0.0.1])\r\n\tby relay.test.example (relayq) with ESMTP id "), "{body}");
    assert!(
        body.ends_with(std::str::from_utf8(CONTENT).unwrap()),
        "{body}"
    );
    // The client's Message-ID and Date are kept, none added.
    assert_eq!(body.matches("Message-ID:").count(), 1);
    assert_eq!(message.envelope.size, message.body.len() as u64);
    assert_eq!(message.envelope.reverse_path, "app@example.com");
    let recipients: Vec<_> = message
        .envelope
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(recipients, ["user@example.org", "other@example.net"]);
}

#[test]
fn missing_message_id_and_date_are_added() {
    let mut relay = TestRelay::start("");
    let mut client = relay.client();
    client.greet();
    let id = queued_id(&client.send_message(
        "a@example.com",
        &["b@example.org"],
        b"Subject: bare\r\n\r\nx\r\n",
    ));
    relay.stop();
    let body = String::from_utf8(relay.spooled_messages().remove(0).body).unwrap();
    assert!(
        body.contains(&format!("Message-ID: <{id}@relay.test.example>\r\n")),
        "{body}"
    );
    assert!(body.contains("\r\nDate: "), "{body}");
    assert!(body.ends_with("Subject: bare\r\n\r\nx\r\n"));
}

#[test]
fn pipelined_transactions() {
    let mut relay = TestRelay::start("");
    let mut client = relay.client();
    client.read();
    // All of it in one write: each DATA then needs its content.
    client.send_raw(b"EHLO client.test.example\r\nMAIL FROM:<s0@example.com>\r\nRCPT TO:<r0@example.org>\r\nRCPT TO:<bad@>\r\nDATA\r\n");
    assert_eq!(client.read().code, 250);
    assert_eq!(client.read().code, 250);
    assert_eq!(client.read().code, 250);
    assert_eq!(client.read().code, 501);
    assert_eq!(client.read().code, 354);
    client.send_raw(b"Subject: one\r\n\r\nbody\r\n.\r\nMAIL FROM:<s1@example.com>\r\nRCPT TO:<r1@example.org>\r\nDATA\r\n");
    let first = queued_id(&client.read());
    assert_eq!(client.read().code, 250);
    assert_eq!(client.read().code, 250);
    assert_eq!(client.read().code, 354);
    client.send_raw(b"Subject: two\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    let second = queued_id(&client.read());
    assert_eq!(client.read().code, 221);
    assert_ne!(first, second);
    relay.stop();
    let messages = relay.spooled_messages();
    assert_eq!(messages.len(), 2);
    assert_eq!(
        messages[0].envelope.recipients.len(),
        1,
        "the refused recipient is not stored"
    );
}

#[test]
fn bdat_chunks_and_data_equivalence() {
    let mut relay = TestRelay::start("");
    let mut client = relay.client();
    client.greet();
    assert_eq!(
        client
            .command("MAIL FROM:<a@example.com> BODY=8BITMIME")
            .code,
        250
    );
    assert_eq!(client.command("RCPT TO:<b@example.org>").code, 250);
    let (first, second) = CONTENT.split_at(40);
    client.send_raw(format!("BDAT {}\r\n", first.len()).as_bytes());
    client.send_raw(first);
    let reply = client.read();
    assert_eq!(reply.code, 250, "{reply:?}");
    client.send_raw(format!("BDAT {} LAST\r\n", second.len()).as_bytes());
    client.send_raw(second);
    let id = queued_id(&client.read());

    // BDAT without a transaction: the octets are consumed, then 503.
    client.send_raw(b"BDAT 5 LAST\r\nhello");
    assert_eq!(client.read().code, 503);
    assert_eq!(client.command("NOOP").code, 250, "session still in sync");
    relay.stop();
    let message = relay
        .spooled_messages()
        .into_iter()
        .find(|m| m.id == id)
        .unwrap();
    assert!(
        message.body.ends_with(CONTENT),
        "BDAT content is not unstuffed"
    );
    assert!(message.envelope.eight_bit_mime);
}

#[test]
fn empty_body_and_dot_stuffing() {
    let mut relay = TestRelay::start("");
    let mut client = relay.client();
    client.greet();
    client.command("MAIL FROM:<a@example.com>");
    client.command("RCPT TO:<b@example.org>");
    assert_eq!(client.command("DATA").code, 354);
    client.send_raw(b".\r\n");
    let empty = queued_id(&client.read());
    let stuffed =
        queued_id(&client.send_message("a@example.com", &["b@example.org"], b"..\r\n.x\r\n"));
    relay.stop();
    let messages = relay.spooled_messages();
    let find = |id| messages.iter().find(|m| m.id == id).unwrap();
    assert!(find(empty).body.starts_with(b"Received: "));
    assert!(find(stuffed).body.ends_with(b"\r\n..\r\n.x\r\n"));
    assert_eq!(dot_stuff(b"..\r\n.x\r\n"), b"...\r\n..x\r\n");
}

#[test]
fn bare_lf_lines_are_normalised_and_do_not_end_data() {
    let mut relay = TestRelay::start("");
    let mut client = relay.client();
    client.greet();
    client.command("MAIL FROM:<a@example.com>");
    client.command("RCPT TO:<b@example.org>");
    assert_eq!(client.command("DATA").code, 354);
    // A smuggling attempt: LF.LF followed by a second transaction.
    client.send_raw(b"Subject: lf\n\nline\n.\nMAIL FROM:<evil@example.com>\nRCPT TO:<victim@example.org>\nDATA\nsmuggled\n\r\n.\r\n");
    let id = queued_id(&client.read());
    assert_eq!(client.command("NOOP").code, 250);
    relay.stop();
    let messages = relay.spooled_messages();
    assert_eq!(
        messages.len(),
        1,
        "only one message: the smuggled one is content"
    );
    assert_eq!(messages[0].id, id);
    assert!(messages[0].body.ends_with(b"Subject: lf\r\n\r\nline\r\n.\r\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nsmuggled\r\n\r\n"));
}

#[test]
fn lane_selection() {
    let mut relay = TestRelay::start("");
    let mut client = relay.client();
    client.greet();
    let mut send = |mail: &str, content: &[u8]| {
        assert_eq!(client.command(mail).code, 250);
        client.command("RCPT TO:<b@example.org>");
        client.command("DATA");
        client.send_raw(content);
        client.send_raw(b".\r\n");
        queued_id(&client.read())
    };
    let low_priority = send(
        "MAIL FROM:<a@example.com> MT-PRIORITY=-4",
        b"Subject: x\r\n\r\n",
    );
    let bulk = send(
        "MAIL FROM:<a@example.com>",
        b"Precedence: bulk\r\n\r\nnews\r\n",
    );
    let bulk_but_urgent = send(
        "MAIL FROM:<a@example.com> MT-PRIORITY=2",
        b"Precedence: list\r\n\r\n",
    );
    let plain = send("MAIL FROM:<a@example.com>", b"Subject: y\r\n\r\n");
    relay.stop();
    let messages = relay.spooled_messages();
    let lane = |id| {
        messages
            .iter()
            .find(|m| m.id == id)
            .unwrap()
            .envelope
            .lane
            .as_str()
    };
    assert_eq!(lane(low_priority), "low");
    assert_eq!(lane(bulk), "low");
    assert_eq!(lane(bulk_but_urgent), "high");
    assert_eq!(lane(plain), "high");
}

#[test]
fn dsn_parameters_and_local_names_are_kept() {
    let mut relay = TestRelay::start("[smtp]\norigin = \"host.test.example\"\n");
    let mut client = relay.client();
    client.greet();
    assert_eq!(
        client
            .command("MAIL FROM:<www-data> RET=HDRS ENVID=env+2B1")
            .code,
        250
    );
    assert_eq!(
        client
            .command("RCPT TO:<root> NOTIFY=FAILURE,DELAY ORCPT=rfc822;root@host.test.example")
            .code,
        250
    );
    assert_eq!(
        client.command("RCPT TO:<\"quoted name\"@example.org>").code,
        250
    );
    client.command("DATA");
    client.send_raw(b"Subject: cron\r\n\r\n.\r\n");
    queued_id(&client.read());
    relay.stop();
    let envelope = relay.spooled_messages().remove(0).envelope;
    assert_eq!(envelope.reverse_path, "www-data@host.test.example");
    assert_eq!(envelope.envid.as_deref(), Some("env+1"));
    let root = &envelope.recipients[0];
    assert_eq!(root.address, "root@host.test.example");
    assert!(root.notify.failure && root.notify.delay && !root.notify.success);
    assert_eq!(root.orcpt.as_deref(), Some("root@host.test.example"));
    assert_eq!(
        envelope.recipients[1].address,
        "\"quoted name\"@example.org"
    );
}

#[test]
fn several_listeners_ipv4_and_ipv6_with_their_lanes() {
    let mut relay = TestRelay::start(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[listener]]\naddress = \"[::1]:0\"\nlane = \"low\"\n",
    );
    assert_eq!(relay.addresses.len(), 2);
    assert!(relay.addresses[1].is_ipv6());
    let mut ids = Vec::new();
    for address in relay.addresses.clone() {
        let mut client = common::SmtpClient::connect(address);
        client.greet();
        ids.push(queued_id(&client.send_message(
            "a@example.com",
            &["b@example.org"],
            b"Subject: x\r\n\r\n",
        )));
    }
    relay.stop();
    let messages = relay.spooled_messages();
    let lane = |id| {
        messages
            .iter()
            .find(|m| m.id == id)
            .unwrap()
            .envelope
            .lane
            .as_str()
    };
    assert_eq!((lane(ids[0]), lane(ids[1])), ("high", "low"));
    let v6 = messages.iter().find(|m| m.id == ids[1]).unwrap();
    assert_eq!(v6.envelope.client_address, Some("::1".parse().unwrap()));
    assert!(String::from_utf8_lossy(&v6.body).contains("([::1])"));
}
