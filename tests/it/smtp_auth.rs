//! SMTP AUTH on intake (RFC 4954): offered only under TLS, `auth =
//! "required"`, PLAIN and LOGIN against each hash format of the users file,
//! 535 for bad credentials, the lockout after three failures of a client
//! network (loopback is one), concurrent guesses counted as sequential ones,
//! relaying by authenticated clients, and the user recorded with the
//! message.

use std::net::IpAddr;
use std::sync::{Arc, Barrier};

use crate::common::tls_client::{ListenerFiles, TlsClient, b64};
use crate::common::{TestRelay, queue_json, queue_ok, queued_id};
use crate::connection_pressure::{metric, metrics_address};
use crate::inbound_tls::received_header;

const CONTENT: &[u8] =
    b"From: app@example.com\r\nTo: user@example.org\r\nSubject: auth\r\n\r\nHello.\r\n";

/// `openssl passwd -6 -salt saltsalt secret`.
const SHA512_SECRET: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

/// A relay whose listener takes STARTTLS and AUTH, and whose relay networks
/// do not include the loopback the tests connect from.
fn start(auth: &str) -> (TestRelay, ListenerFiles) {
    let files = ListenerFiles::new(&format!("alice:{SHA512_SECRET}\n"));
    let relay = TestRelay::start(&format!(
        "{}[smtp]\n{}relay_networks = [\"192.0.2.0/24\"]\n",
        files.listener("starttls", auth),
        files.users_file()
    ));
    (relay, files)
}

/// Connected, under TLS, after EHLO.
fn secured(relay: &TestRelay) -> TlsClient {
    let mut client = TlsClient::connect(relay.address);
    client.greet();
    client.starttls();
    client.ehlo();
    client
}

/// As `secured`, from the loopback address `local`.
fn secured_from(relay: &TestRelay, local: &str) -> TlsClient {
    let local: IpAddr = local.parse().unwrap();
    let mut client = TlsClient::connect_from(local, relay.address);
    client.greet();
    client.starttls();
    client.ehlo();
    client
}

/// A reply as `CODE STATUS`.
fn status(reply: &crate::common::Response) -> String {
    format!(
        "{} {}",
        reply.code,
        reply.lines[0].split(' ').next().unwrap_or("")
    )
}

#[test]
fn auth_is_offered_only_under_tls() {
    let (relay, _files) = start("required");
    let mut client = TlsClient::connect(relay.address);
    let ehlo = client.greet();
    assert!(
        !ehlo.lines.iter().any(|line| line.starts_with("AUTH")),
        "{ehlo:?}"
    );
    let auth = client.auth_plain("alice", "secret");
    assert_eq!(
        (auth.code, &auth.lines[0][..6]),
        (538, "5.7.11"),
        "{auth:?}"
    );
    let mail = client.command("MAIL FROM:<app@example.com>");
    assert_eq!(
        (mail.code, mail.text()),
        (530, "5.7.0 Authentication required".into())
    );

    client.starttls();
    let ehlo = client.ehlo();
    assert!(
        ehlo.lines.iter().any(|line| line == "AUTH PLAIN LOGIN"),
        "{ehlo:?}"
    );
}

#[test]
fn required_auth_refuses_mail_until_authenticated_and_records_the_user() {
    let (relay, _files) = start("required");
    let mut client = secured(&relay);
    let mail = client.command("MAIL FROM:<app@example.com>");
    assert_eq!(
        (mail.code, mail.text()),
        (530, "5.7.0 Authentication required".into())
    );
    let auth = client.auth_plain("alice", "secret");
    assert_eq!(
        (auth.code, auth.text()),
        (235, "2.7.0 Authentication successful".into())
    );
    let again = client.auth_plain("alice", "secret");
    assert_eq!((again.code, &again.lines[0][..5]), (503, "5.5.1"));
    // 127.0.0.1 is outside relay_networks: authenticated, it relays anyway.
    let id = queued_id(&client.send_message("app@example.com", &["user@example.org"], CONTENT))
        .to_string();

    let detail = queue_json(&relay, &["show", &id]);
    assert_eq!(detail["auth_user"], "alice", "{detail}");
    let text = queue_ok(&relay, &["show", &id]);
    assert!(
        text.lines()
            .any(|line| line.contains("Auth user") && line.ends_with("alice")),
        "{text}"
    );
    let received = received_header(&relay, &id);
    assert!(received.contains(" with ESMTPSA id "), "{received}");
}

#[test]
fn optional_auth_leaves_unauthenticated_clients_to_relay_networks() {
    let (relay, _files) = start("optional");
    let mut client = secured(&relay);
    assert_eq!(client.command("MAIL FROM:<app@example.com>").code, 250);
    let rcpt = client.command("RCPT TO:<user@example.org>");
    assert_eq!((rcpt.code, &rcpt.lines[0][..5]), (554, "5.7.1"), "{rcpt:?}");
    assert_eq!(client.command("RSET").code, 250);
    assert_eq!(client.auth_plain("alice", "secret").code, 235);
    let id = queued_id(&client.send_message("app@example.com", &["user@example.org"], CONTENT))
        .to_string();
    assert_eq!(queue_json(&relay, &["show", &id])["auth_user"], "alice");

    // Within relay_networks, no AUTH is needed and none is recorded.
    let files = ListenerFiles::new(&format!("alice:{SHA512_SECRET}\n"));
    let local = TestRelay::start(&format!(
        "{}[smtp]\n{}",
        files.listener("starttls", "optional"),
        files.users_file()
    ));
    let mut client = secured(&local);
    let id = queued_id(&client.send_message("app@example.com", &["user@example.org"], CONTENT))
        .to_string();
    let detail = queue_json(&local, &["show", &id]);
    assert!(detail["auth_user"].is_null(), "{detail}");
    assert!(received_header(&local, &id).contains(" with ESMTPS id "));
}

#[test]
fn every_hash_format_and_both_mechanisms_authenticate() {
    use argon2::password_hash::PasswordHasher as _;
    let bcrypt = bcrypt::hash("bcrypt-pw", 4).unwrap();
    let params = argon2::Params::new(8, 1, 1, None).unwrap();
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_with_salt(b"argon-pw", b"0123456789abcdef")
        .unwrap()
        .to_string();
    let files = ListenerFiles::new(&format!(
        "# accounts\nsha:{SHA512_SECRET}\nblow:{bcrypt}\nargon:{argon2}\n"
    ));
    let relay = TestRelay::start(&format!(
        "{}[smtp]\n{}",
        files.listener("implicit", "required"),
        files.users_file()
    ));
    let connect = || {
        let mut client = TlsClient::connect_implicit(relay.address);
        let ehlo = client.greet();
        assert!(
            ehlo.lines.iter().any(|line| line == "AUTH PLAIN LOGIN"),
            "{ehlo:?}"
        );
        client
    };

    // PLAIN with an initial response, $6$.
    let mut client = connect();
    assert_eq!(client.auth_plain("sha", "secret").code, 235);

    // PLAIN with an empty challenge, bcrypt.
    let mut client = connect();
    let challenge = client.command("AUTH PLAIN");
    assert_eq!((challenge.code, challenge.text()), (334, String::new()));
    assert_eq!(client.command(&b64("\0blow\0bcrypt-pw")).code, 235);

    // LOGIN, argon2id.
    let mut client = connect();
    let user = client.command("AUTH LOGIN");
    assert_eq!((user.code, user.text()), (334, b64("Username:")));
    let password = client.command(&b64("argon"));
    assert_eq!((password.code, password.text()), (334, b64("Password:")));
    let done = client.command(&b64("argon-pw"));
    assert_eq!(done.code, 235, "{done:?}");
    let id = queued_id(&client.send_message("app@example.com", &["user@example.org"], CONTENT))
        .to_string();
    assert_eq!(queue_json(&relay, &["show", &id])["auth_user"], "argon");

    // LOGIN with the user as initial response; `*` cancels.
    let mut client = connect();
    let password = client.command(&format!("AUTH LOGIN {}", b64("sha")));
    assert_eq!(password.code, 334);
    let cancelled = client.command("*");
    assert_eq!(
        (cancelled.code, cancelled.text()),
        (501, "5.7.0 Authentication cancelled".into())
    );
    let unknown = client.command("AUTH CRAM-MD5");
    assert_eq!((unknown.code, &unknown.lines[0][..5]), (504, "5.5.4"));
    let garbage = client.command("AUTH PLAIN %%%");
    assert_eq!((garbage.code, &garbage.lines[0][..5]), (501, "5.5.2"));
    // The cancelled exchange and the errors are not failures: still allowed.
    assert_eq!(client.auth_plain("sha", "secret").code, 235);
    assert!(
        !relay.logs_text().contains("secret"),
        "a password was logged"
    );
}

#[test]
fn three_failures_close_the_session_and_lock_the_address_out() {
    let (relay, _files) = start("required");
    let mut client = secured(&relay);
    for _ in 0..2 {
        let wrong = client.auth_plain("alice", "wrong");
        assert_eq!(
            (wrong.code, wrong.text()),
            (535, "5.7.8 Authentication credentials invalid".into())
        );
    }
    let third = client.auth_plain("nobody", "wrong");
    assert_eq!(
        (third.code, &third.lines[0][..5]),
        (421, "4.7.0"),
        "{third:?}"
    );
    assert!(
        client.try_read().is_none(),
        "the session stays open after 421"
    );

    // A new session from the same address: even the right password is
    // refused, with a temporary failure.
    let mut client = secured(&relay);
    let refused = client.auth_plain("alice", "secret");
    assert_eq!(
        (refused.code, &refused.lines[0][..5]),
        (454, "4.7.0"),
        "{refused:?}"
    );
    let mail = client.command("MAIL FROM:<app@example.com>");
    assert_eq!(mail.code, 530);
    assert!(
        !relay.logs_text().contains("wrong"),
        "a password was logged"
    );
}

#[test]
fn every_loopback_address_is_one_network() {
    let (relay, _files) = start("required");
    for local in ["127.0.0.1", "127.0.0.2"] {
        let mut client = secured_from(&relay, local);
        assert_eq!(status(&client.auth_plain("alice", "wrong")), "535 5.7.8");
    }
    let mut client = secured_from(&relay, "127.0.0.3");
    let third = client.auth_plain("alice", "wrong");
    assert_eq!(status(&third), "421 4.7.0", "{third:?}");
    let mut client = secured_from(&relay, "127.0.0.4");
    let refused = client.auth_plain("alice", "secret");
    assert_eq!(status(&refused), "454 4.7.0", "{refused:?}");
}

#[test]
fn concurrent_guesses_get_no_more_than_sequential_ones() {
    // A slow hash (bcrypt, cost 10) leaves every session time to ask before
    // the first answer: only the budget can stop them.
    let hash = bcrypt::hash("secret", 10).unwrap();
    let files = ListenerFiles::new(&format!("alice:{hash}\n"));
    let relay = TestRelay::start(&format!(
        "{}[smtp]\n{}relay_networks = [\"192.0.2.0/24\"]\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        files.listener("starttls", "required"),
        files.users_file()
    ));
    let metrics = metrics_address(&relay);
    const SESSIONS: usize = 8;
    let clients: Vec<TlsClient> = (0..SESSIONS).map(|_| secured(&relay)).collect();
    let barrier = Arc::new(Barrier::new(SESSIONS));
    let guesses: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                status(&client.auth_plain("alice", "wrong"))
            })
        })
        .collect();
    let mut answers: Vec<String> = guesses
        .into_iter()
        .map(|guess| guess.join().unwrap())
        .collect();
    answers.sort();
    // Three passwords checked, as for three sessions one after another:
    // the third failure closes its session and locks loopback out; the
    // other guesses are refused without a check.
    let mut expected = vec!["421 4.7.0", "535 5.7.8", "535 5.7.8"];
    expected.extend(["454 4.7.0"; SESSIONS - 3]);
    expected.sort();
    assert_eq!(answers, expected, "{}", relay.logs_text());
    assert_eq!(
        metric(metrics, "relayq_auth_lockouts_total{scope=\"network\"}"),
        1.0
    );
    relay.wait_for_log("AUTH lockout: 3 failed attempts within 15 minutes; AUTH from network loopback refused for 15 minutes");
    // The log is read from the relay's output as it comes: wait for the
    // third failure's line, and see no fourth.
    let deadline = std::time::Instant::now() + crate::common::WAIT;
    while relay.log_lines("authentication failed").len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            relay.logs_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        relay.log_lines("authentication failed").len(),
        3,
        "{}",
        relay.logs_text()
    );
    // The right password from a new session is refused too, meanwhile.
    let mut client = secured(&relay);
    assert_eq!(status(&client.auth_plain("alice", "secret")), "454 4.7.0");
}
