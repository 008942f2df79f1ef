//! Every intake limit and every error reply, each with the reply a user sees.

use std::time::Duration;

use crate::common;
use crate::common::{TestRelay, queued_id};

fn status(response: &common::Response) -> (u16, String) {
    (
        response.code,
        response.lines[0].split(' ').next().unwrap_or("").to_owned(),
    )
}

#[test]
fn sequence_and_syntax_errors() {
    let relay = TestRelay::start("");
    let mut client = relay.client();
    client.read();
    assert_eq!(
        status(&client.command("MAIL FROM:<a@example.com>")),
        (503, "5.5.1".into())
    );
    client.command("EHLO client.test.example");
    assert_eq!(
        status(&client.command("RCPT TO:<b@example.org>")),
        (503, "5.5.1".into())
    );
    assert_eq!(status(&client.command("DATA")), (503, "5.5.1".into()));
    assert_eq!(status(&client.command("FROBNICATE")), (500, "5.5.2".into()));
    let bad_sender = client.command("MAIL FROM:<a@>");
    assert_eq!(status(&bad_sender), (501, "5.1.7".into()));
    assert!(
        bad_sender.text().contains("domain missing after @"),
        "{bad_sender:?}"
    );
    assert_eq!(client.command("MAIL FROM:<a@example.com>").code, 250);
    assert_eq!(
        status(&client.command("MAIL FROM:<a@example.com>")),
        (503, "5.5.1".into())
    );
    let bad_rcpt = client.command("RCPT TO:<b..c@example.org>");
    assert_eq!(status(&bad_rcpt), (501, "5.1.3".into()));
    assert_eq!(
        status(&client.command("DATA")),
        (503, "5.5.1".into()),
        "no valid recipient yet"
    );
    assert_eq!(client.command("RCPT TO:<b@example.org>").code, 250);
    assert_eq!(client.command("RSET").code, 250);
    assert_eq!(
        status(&client.command("DATA")),
        (503, "5.5.1".into()),
        "RSET ended the transaction"
    );
}

#[test]
fn unadvertised_parameters_and_utf8() {
    let relay = TestRelay::start("");
    let mut client = relay.client();
    client.greet();
    for parameter in [
        "BODY=BINARYMIME",
        "REQUIRETLS",
        "AUTH=<>",
        "HOLDFOR=10",
        "XFOO=1",
    ] {
        let reply = client.command(&format!("MAIL FROM:<a@example.com> {parameter}"));
        assert_eq!(
            status(&reply),
            (555, "5.5.4".into()),
            "{parameter}: {reply:?}"
        );
    }
    assert_eq!(
        status(&client.command("MAIL FROM:<jörg@example.com>")),
        (553, "5.6.7".into())
    );
    assert_eq!(
        client
            .command("MAIL FROM:<a@example.com> MT-PRIORITY=10")
            .code,
        501
    );
    assert_eq!(
        client
            .command("MAIL FROM:<a@example.com> MT-PRIORITY=-10")
            .code,
        501
    );
    assert_eq!(client.command("MAIL FROM:<a@example.com>").code, 250);
    assert_eq!(
        status(&client.command("RCPT TO:<ü@example.org>")),
        (553, "5.6.7".into())
    );
    client.command("RSET");
    assert_eq!(
        client
            .command("MAIL FROM:<jörg@bücher.example> SMTPUTF8")
            .code,
        250
    );
    assert_eq!(client.command("RCPT TO:<ü@example.org>").code, 250);
}

#[test]
fn long_command_lines() {
    let relay = TestRelay::start("");
    let mut client = relay.client();
    client.greet();
    // A 2048-octet RCPT line (DSN parameters make such lines real) is fine.
    let local = "a".repeat(64);
    let orcpt = format!("ORCPT=rfc822;{}", "x".repeat(200));
    let mut line = format!("RCPT TO:<{local}@example.org> NOTIFY=FAILURE {orcpt}");
    client.command("MAIL FROM:<a@example.com>");
    line.push_str(&" ".repeat(2048 - line.len()));
    assert_eq!(line.len(), 2048);
    assert_eq!(client.command(&line).code, 250);
    // Longer: 500 5.5.2, and the tail is not read as a command.
    let too_long = format!("NOOP {}QUIT", "x".repeat(5000));
    let reply = client.command(&too_long);
    assert_eq!(status(&reply), (500, "5.5.2".into()));
    assert_eq!(
        client.command("NOOP").code,
        250,
        "session continues in sync"
    );
}

#[test]
fn size_limits() {
    let mut relay = TestRelay::start("[spool]\nmax_message_size = 100000\n");
    let mut client = relay.client();
    let ehlo = client.greet();
    assert!(ehlo.lines.contains(&"SIZE 100000".to_owned()), "{ehlo:?}");
    assert_eq!(
        status(&client.command("MAIL FROM:<a@example.com> SIZE=100001")),
        (552, "5.3.4".into())
    );
    assert_eq!(
        client.command("MAIL FROM:<a@example.com> SIZE=1000").code,
        250
    );
    client.command("RCPT TO:<b@example.org>");
    client.command("DATA");
    let line = format!("{}\r\n", "y".repeat(998));
    for _ in 0..150 {
        client.send_raw(line.as_bytes());
    }
    client.send_raw(b".\r\n");
    assert_eq!(status(&client.read()), (552, "5.3.4".into()));
    // The session goes on, and a message within the limit is accepted.
    queued_id(&client.send_message(
        "a@example.com",
        &["b@example.org"],
        b"Subject: small\r\n\r\nok\r\n",
    ));
    relay.stop();
    assert_eq!(
        relay.spooled_messages().len(),
        1,
        "the oversized message left nothing behind"
    );
    let leftovers: Vec<_> = std::fs::read_dir(relay.spool_path().join("bodies"))
        .map(|entries| entries.filter_map(Result::ok).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "no body file left: {leftovers:?}");
}

/// Everything the server sends until it closes the connection (or `WAIT`
/// passes), as text; a reset after the last reply ends it too.
fn rest_of(client: &mut common::SmtpClient) -> String {
    let mut said = String::new();
    while let Some(reply) = client.try_read() {
        said.push_str(&format!("{} {}\n", reply.code, reply.text()));
    }
    said
}

#[test]
fn data_over_the_size_limit_is_answered_before_its_end() {
    let mut relay = TestRelay::start("[spool]\nmax_message_size = 100000\n");
    let mut client = relay.client();
    client.greet();
    client.command("MAIL FROM:<a@example.com>");
    client.command("RCPT TO:<b@example.org>");
    assert_eq!(client.command("DATA").code, 354);
    let line = format!("{}\r\n", "y".repeat(998));
    for _ in 0..120 {
        client.send_raw(line.as_bytes());
    }
    // No final dot yet: the answer comes all the same.
    let reply = client.read();
    assert_eq!(status(&reply), (552, "5.3.4".into()), "{reply:?}");
    // A client that ends its data soon after keeps its session.
    client.send_raw(b"more\r\n.\r\n");
    assert_eq!(client.command("NOOP").code, 250);
    assert_eq!(client.command("MAIL FROM:<a@example.com>").code, 250);

    // One that goes on sending is cut off, and nothing is stored.
    client.command("RCPT TO:<b@example.org>");
    assert_eq!(client.command("DATA").code, 354);
    client
        .writer()
        .set_write_timeout(Some(common::WAIT))
        .unwrap();
    let deadline = std::time::Instant::now() + common::WAIT;
    let mut sent = 0;
    while std::time::Instant::now() < deadline && sent < 8_000 {
        if std::io::Write::write_all(client.writer(), line.as_bytes()).is_err() {
            break;
        }
        sent += 1;
    }
    assert!(sent < 8_000, "8 MB of content read past the limit");
    let said = rest_of(&mut client);
    assert!(
        said.starts_with("552 5.3.4 ") && said.contains("\n421 4.5.0 "),
        "{said:?}"
    );
    relay.stop();
    assert!(relay.spooled_messages().is_empty());
}

#[test]
fn a_bdat_chunk_that_cannot_be_accepted_is_not_read() {
    let mut relay = TestRelay::start("[spool]\nmax_message_size = 100000\n");
    // Without a transaction, a chunk within the size limit is read and
    // discarded, as RFC 3030 asks for chunks a client pipelined after a
    // refused command; the session goes on.
    let mut client = relay.client();
    client.greet();
    client.send_raw(b"BDAT 5 LAST\r\nhello");
    assert_eq!(status(&client.read()), (503, "5.5.1".into()));
    assert_eq!(client.command("NOOP").code, 250);
    // A larger one is refused, not read: the session is closed.
    client.send_raw(b"BDAT 999999999999\r\n");
    let said = rest_of(&mut client);
    assert!(
        said.starts_with("503 5.5.1 ") && said.contains("\n421 4.5.0 "),
        "{said:?}"
    );

    // A chunk that would take the message past the size limit fails the
    // transaction; the session goes on while what it discarded stays
    // within the limit.
    let mut client = relay.client();
    client.greet();
    client.command("MAIL FROM:<a@example.com>");
    client.command("RCPT TO:<b@example.org>");
    client.send_raw(b"BDAT 60000\r\n");
    client.send_raw(&[b'z'; 60_000]);
    assert_eq!(client.read().code, 250);
    client.send_raw(b"BDAT 60000 LAST\r\n");
    client.send_raw(&[b'z'; 60_000]);
    assert_eq!(status(&client.read()), (552, "5.3.4".into()));
    assert_eq!(client.command("RSET").code, 250);
    client.command("MAIL FROM:<a@example.com>");
    client.command("RCPT TO:<b@example.org>");
    client.send_raw(b"BDAT 999999 LAST\r\n");
    let said = rest_of(&mut client);
    assert!(
        said.starts_with("552 5.3.4 ") && said.contains("\n421 4.5.0 "),
        "{said:?}"
    );
    relay.stop();
    assert!(relay.spooled_messages().is_empty());
}

#[test]
fn too_many_recipients() {
    let relay = TestRelay::start("[smtp]\nmax_recipients = 3\n");
    let mut client = relay.client();
    client.greet();
    client.command("MAIL FROM:<a@example.com>");
    for n in 0..3 {
        assert_eq!(
            client.command(&format!("RCPT TO:<r{n}@example.org>")).code,
            250
        );
    }
    assert_eq!(
        status(&client.command("RCPT TO:<r3@example.org>")),
        (452, "4.5.3".into())
    );
    assert_eq!(
        client.command("DATA").code,
        354,
        "the first three recipients stand"
    );
}

#[test]
fn relay_refused_outside_relay_networks() {
    let relay =
        TestRelay::start("[smtp]\nrelay_networks = [\"192.0.2.0/24\", \"::ffff:10.0.0.0/104\"]\n");
    let mut client = relay.client();
    client.greet();
    assert_eq!(client.command("MAIL FROM:<a@example.com>").code, 250);
    let refused = client.command("RCPT TO:<b@example.org>");
    assert_eq!(status(&refused), (554, "5.7.1".into()), "{refused:?}");
}

#[test]
fn idle_timeout_closes_with_421() {
    let relay = TestRelay::start("[smtp]\nidle_timeout = \"1s\"\n");
    let mut client = relay.client();
    client.greet();
    let started = std::time::Instant::now();
    let reply = client.read();
    assert_eq!(status(&reply), (421, "4.4.2".into()));
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(client.try_read().is_none(), "closed after 421");
}

#[test]
fn too_many_errors_closes_the_session() {
    let relay = TestRelay::start("[smtp]\nmax_errors = 3\n");
    let mut client = relay.client();
    client.greet();
    client.command("BAD1");
    client.command("BAD2");
    let last = client.command("BAD3");
    assert_eq!(last.code, 500);
    assert_eq!(client.read().code, 421);
    assert!(client.try_read().is_none());
}

#[test]
fn connection_cap_sheds_an_idle_session_or_makes_new_clients_wait() {
    let relay = TestRelay::start("[smtp]\nmax_connections = 2\n");
    // Two sessions in the middle of a fast BDAT transfer: both are ahead of
    // smtp.min_data_rate, so neither can be shed for a new client.
    let start_transfer = || {
        let mut client = relay.client();
        client.greet();
        assert_eq!(client.command("MAIL FROM:<a@example.com>").code, 250);
        assert_eq!(client.command("RCPT TO:<b@example.org>").code, 250);
        client.send_raw(b"BDAT 100000\r\n");
        client.send_raw(&b"01234567890123456789012345678901234567\r\n".repeat(2500));
        assert_eq!(client.read().code, 250);
        client
    };
    let mut first = start_transfer();
    let mut second = start_transfer();
    // The third connection is queued, not served.
    let third = std::net::TcpStream::connect(relay.address).unwrap();
    relay.wait_for_log("connection limit (smtp.max_connections) reached");
    third.set_nonblocking(true).unwrap();
    let mut buffer = [0u8; 64];
    let early = std::io::Read::read(&mut &third, &mut buffer);
    assert!(early.is_err(), "no greeting while at the cap: {early:?}");
    queued_id(&first.command("BDAT 0 LAST"));
    first.send_raw(b"QUIT\r\n");
    third.set_nonblocking(false).unwrap();
    third.set_read_timeout(Some(common::WAIT)).unwrap();
    let read = std::io::Read::read(&mut &third, &mut buffer).unwrap();
    assert!(
        buffer[..read].starts_with(b"220 "),
        "greeted once a slot is free"
    );
    // At the cap again; the idle third session makes room for a fourth.
    let mut fourth = relay.client();
    fourth.greet();
    let read = std::io::Read::read(&mut &third, &mut buffer).unwrap();
    let said = String::from_utf8_lossy(&buffer[..read]).into_owned();
    assert!(said.starts_with("421 4.4.2 "), "{said:?}");
    // The transfer was not disturbed.
    queued_id(&second.command("BDAT 0 LAST"));
}

#[test]
fn low_disk_space_refuses_new_mail_with_4xx() {
    // More free space than any disk has: the guard must refuse at connect.
    let relay = TestRelay::start("[spool]\nmin_free_space = 1000000000000000000\n");
    let mut client = relay.client();
    let greeting = client.read();
    assert_eq!(status(&greeting), (421, "4.3.1".into()), "{greeting:?}");
    assert!(client.try_read().is_none(), "closed after 421");
}
