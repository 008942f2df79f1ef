//! Connection pressure as a client sees it: sessions that idle or trickle
//! cannot lock a real client out, nor can transfers that banked credit with
//! a fast burst or that keep pace, a whole command line and a whole
//! DATA/BDAT transfer have deadlines however their octets trickle, and
//! `smtp.max_connections` sessions are served whatever the number of
//! listeners.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{SmtpClient, TestRelay, WAIT, queued_id};

const METRICS: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// A connection that says nothing after reading the greeting.
fn idle_session(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&address, WAIT).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut greeting = String::new();
    BufReader::new(&stream)
        .read_line(&mut greeting)
        .expect("greeting");
    assert!(greeting.starts_with("220 "), "{greeting:?}");
    stream
}

/// Everything the server sent until it closed (or `WAIT` passed).
fn rest_of(mut stream: TcpStream) -> String {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut text = Vec::new();
    let _ = stream.read_to_end(&mut text);
    String::from_utf8_lossy(&text).into_owned()
}

/// Writes one octet of `line` every `interval` until the server answers
/// (or `WAIT` passes); returns the answer.
fn trickle(stream: &mut TcpStream, line: &[u8], interval: Duration) -> String {
    stream.set_read_timeout(Some(interval)).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut answer = Vec::new();
    let mut buffer = [0; 512];
    for &octet in line.iter().cycle() {
        assert!(Instant::now() < deadline, "no answer while trickling");
        if stream.write_all(&[octet]).is_err() {
            break;
        }
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => {
                answer.extend_from_slice(&buffer[..read]);
                if answer.ends_with(b"\r\n") {
                    break;
                }
            }
            Err(_) => {} // Nothing yet: send the next octet.
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

pub(crate) fn metrics_address(relay: &TestRelay) -> SocketAddr {
    let line = relay.wait_for_log("metrics on ");
    let rest = line.split("metrics on ").nth(1).unwrap();
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// The value of `series` in a scrape of the metrics endpoint.
pub(crate) fn metric(address: SocketAddr, series: &str) -> f64 {
    let mut stream = TcpStream::connect_timeout(&address, WAIT).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{response}"))
        .parse()
        .expect("sample value")
}

/// Scrapes until `series` has `expected` (or `WAIT` passed).
fn wait_for_metric(address: SocketAddr, series: &str, expected: f64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = metric(address, series);
        if value == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{series} stays {value}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn idle_and_trickling_sessions_make_room_for_a_real_client() {
    // Idle deadlines as long as the default, in and out of stress mode:
    // only shedding can let the real client in within the test's wait.
    let relay = TestRelay::start(&format!(
        "[smtp]\nmax_connections = 20\nidle_timeout = \"5m\"\nstress_idle_timeout = \"5m\"\n{METRICS}"
    ));
    let metrics = metrics_address(&relay);
    let idle: Vec<TcpStream> = (0..10).map(|_| idle_session(relay.address)).collect();
    let trickling: Vec<TcpStream> = (0..10).map(|_| idle_session(relay.address)).collect();

    // Ten sessions send one octet of a command line that never ends every
    // 200 ms, until the server closes them or the test is over.
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = std::thread::spawn({
        let stop = stop.clone();
        let mut streams: Vec<TcpStream> = trickling
            .iter()
            .map(|stream| stream.try_clone().unwrap())
            .collect();
        move || {
            let deadline = Instant::now() + WAIT * 2;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                streams.retain_mut(|stream| stream.write_all(b"x").is_ok());
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    });

    // Fifty more clients connect and wait, then the real one.
    let waiting: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect_timeout(&relay.address, WAIT).expect("connect"))
        .collect();
    let mut client = SmtpClient::connect(relay.address);
    client.greet();
    let reply = client.send_message(
        "app@example.com",
        &["user@example.org"],
        b"Subject: under pressure\r\n\r\nstill taken\r\n",
    );
    queued_id(&reply);
    assert_eq!(client.command("QUIT").code, 221);
    stop.store(true, Ordering::Relaxed);
    trickler.join().unwrap();

    // The clients that found every permit in use shed sessions; the first
    // shed are the idle and trickling ones, with 421. (Later arrivals may
    // shed the waiting clients or be refused, as timing decides: only the
    // twenty are certain.)
    assert!(
        metric(
            metrics,
            "relayq_smtp_sessions_shed_total{reason=\"pressure\"}"
        ) >= 20.0,
        "{}",
        relay.logs_text()
    );
    for (n, stream) in idle.into_iter().chain(trickling).enumerate() {
        let said = rest_of(stream);
        assert!(
            said.contains("421 4.4.2 "),
            "session {n} (0-9 idle, 10-19 trickling): {said:?}\n{}",
            relay.logs_text()
        );
    }
    drop(waiting);
}

/// A session in the middle of a BDAT transfer it may make, well ahead of
/// its pace: after MAIL and RCPT, a first chunk of `burst` octets sent at
/// once (and acknowledged), then the command of a last chunk of 20 MB.
fn transfer_session(address: SocketAddr, burst: usize) -> SmtpClient {
    let mut client = SmtpClient::connect(address);
    client.greet();
    assert_eq!(client.command("MAIL FROM:<flood@example.com>").code, 250);
    assert_eq!(client.command("RCPT TO:<user@example.org>").code, 250);
    client.send_raw(format!("BDAT {burst}\r\n").as_bytes());
    client.send_raw(&vec![b'x'; burst]);
    assert_eq!(client.read().code, 250);
    client.send_raw(b"BDAT 20000000 LAST\r\n");
    client
}

/// Fills every permit with transfers that send a first chunk of `burst`
/// octets, then `per_tick` octets every 100 ms until the test is over; then
/// a real client must be greeted and its message taken.
fn transfers_make_room_for_a_real_client(burst: usize, per_tick: usize) {
    // Without shedding, the transfers would keep every permit far longer
    // than the test's wait: a long idle timeout, stress mode or not.
    let relay = TestRelay::start(
        "[smtp]\nmax_connections = 10\nidle_timeout = \"5m\"\nstress_idle_timeout = \"3s\"\n",
    );
    let mut flood: Vec<SmtpClient> = (0..10)
        .map(|_| transfer_session(relay.address, burst))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = std::thread::spawn({
        let stop = stop.clone();
        let mut streams: Vec<TcpStream> = flood
            .iter_mut()
            .map(|client| client.writer().try_clone().unwrap())
            .collect();
        move || {
            let deadline = Instant::now() + WAIT * 2;
            let tick = vec![b'y'; per_tick];
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                streams.retain_mut(|stream| stream.write_all(&tick).is_ok());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });

    let mut client = SmtpClient::connect(relay.address);
    client.greet();
    let reply = client.send_message(
        "app@example.com",
        &["user@example.org"],
        b"Subject: under a flood\r\n\r\nstill taken\r\n",
    );
    queued_id(&reply);
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();

    // The client got in because a transfer was closed, with 421 4.4.2.
    let closed: Vec<String> = flood
        .iter_mut()
        .filter_map(|client| {
            client
                .writer()
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let said = client.try_read()?;
            Some(format!("{} {}", said.code, said.text()))
        })
        .collect();
    assert!(
        closed.iter().any(|said| said.starts_with("421 4.4.2 ")),
        "{closed:?}\n{}",
        relay.logs_text()
    );
}

#[test]
fn credit_banked_by_a_burst_runs_out() {
    // A megabyte at once is worth over half an hour at 500 octets/s, then a
    // trickle of one octet every 100 ms.
    transfers_make_room_for_a_real_client(1_000_000, 1);
}

#[test]
fn transfers_that_keep_pace_yield_the_oldest_to_a_waiting_client() {
    // 10 kB/s each: twenty times smtp.min_data_rate, for half an hour.
    transfers_make_room_for_a_real_client(50_000, 1_000);
}

#[test]
fn max_connections_sessions_are_served_with_two_listeners() {
    let relay = TestRelay::start(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[listener]]\naddress = \"127.0.0.1:0\"\n\
         lane = \"low\"\n[smtp]\nmax_connections = 3\n",
    );
    assert_eq!(relay.addresses.len(), 2);
    // Every session on the first listener; the second one's accept loop
    // must not hold a permit while it waits.
    let mut clients: Vec<SmtpClient> = (0..3).map(|_| relay.client()).collect();
    for client in &mut clients {
        client.greet();
    }
    for client in &mut clients {
        assert_eq!(client.command("NOOP").code, 250, "no session was shed");
    }
}

#[test]
fn stress_mode_shortens_the_idle_timeout() {
    let relay = TestRelay::start(&format!(
        "[smtp]\nmax_connections = 10\nidle_timeout = \"5m\"\nstress_idle_timeout = \"3s\"\n{METRICS}"
    ));
    let metrics = metrics_address(&relay);
    // Nine of ten sessions in use: stress mode. Six say nothing; three send
    // a NOOP every 100 ms, far more often than the stress timeout.
    let silent: Vec<TcpStream> = (0..6).map(|_| idle_session(relay.address)).collect();
    let mut active: Vec<SmtpClient> = (0..3).map(|_| relay.client()).collect();
    for client in &mut active {
        assert_eq!(client.read().code, 220);
    }
    wait_for_metric(metrics, "relayq_smtp_stress", 1.0);
    // Silent sessions are closed once they idled for the stress timeout,
    // until fewer than 75% of the permits are in use; the active ones stay.
    let mut closed = 0;
    let deadline = Instant::now() + WAIT;
    while closed < 2 {
        assert!(
            Instant::now() < deadline,
            "only {closed} idle sessions closed"
        );
        for client in &mut active {
            assert_eq!(client.command("NOOP").code, 250);
        }
        std::thread::sleep(Duration::from_millis(100));
        for mut stream in silent.iter() {
            stream
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let mut said = [0; 512];
            if let Ok(read @ 1..) = stream.read(&mut said) {
                let said = String::from_utf8_lossy(&said[..read]).into_owned();
                assert!(said.starts_with("421 4.4.2 "), "{said:?}");
                assert!(said.contains("timeout"), "{said:?}");
                closed += 1;
            }
        }
    }
    wait_for_metric(metrics, "relayq_smtp_stress", 0.0);
    for client in &mut active {
        assert_eq!(client.command("NOOP").code, 250);
    }
    assert!(
        metric(
            metrics,
            "relayq_smtp_sessions_shed_total{reason=\"command_timeout\"}"
        ) >= 2.0
    );
}

#[test]
fn a_trickled_command_line_has_a_deadline() {
    let relay = TestRelay::start("[smtp]\nidle_timeout = \"2s\"\n");
    let mut stream = idle_session(relay.address);
    // An octet every 300 ms: never silent for 2 s, but the line never ends.
    let said = trickle(&mut stream, b"NOOP", Duration::from_millis(300));
    assert!(said.starts_with("421 4.4.2 "), "{said:?}");
}

#[test]
fn a_trickled_transfer_has_a_deadline_and_a_slow_link_does_not() {
    let relay = TestRelay::start("[smtp]\nidle_timeout = \"2s\"\nmin_data_rate = 500\n");

    // DATA at 10 octets a second: far below 500 octets/s.
    let mut client = relay.client();
    client.greet();
    assert_eq!(client.command("MAIL FROM:<a@example.com>").code, 250);
    assert_eq!(client.command("RCPT TO:<b@example.org>").code, 250);
    assert_eq!(client.command("DATA").code, 354);
    let said = trickle(client.writer(), b"line ", Duration::from_millis(100));
    assert!(said.starts_with("421 4.4.2 "), "{said:?}");

    // A BDAT chunk at the same rate.
    let mut client = relay.client();
    client.greet();
    assert_eq!(client.command("MAIL FROM:<a@example.com>").code, 250);
    assert_eq!(client.command("RCPT TO:<b@example.org>").code, 250);
    client.send_raw(b"BDAT 100000 LAST\r\n");
    let said = trickle(client.writer(), b"chunk ", Duration::from_millis(100));
    assert!(said.starts_with("421 4.4.2 "), "{said:?}");

    // A slow but real link: 1,000 octets a second for 4 s, twice the idle
    // timeout in all.
    let mut client = relay.client();
    client.greet();
    assert_eq!(client.command("MAIL FROM:<a@example.com>").code, 250);
    assert_eq!(client.command("RCPT TO:<b@example.org>").code, 250);
    assert_eq!(client.command("DATA").code, 354);
    client.send_raw(b"Subject: slow\r\n\r\n");
    for _ in 0..40 {
        client.send_raw(&[b'y'; 98]);
        client.send_raw(b"\r\n");
        std::thread::sleep(Duration::from_millis(100));
    }
    client.send_raw(b".\r\n");
    queued_id(&client.read());
}
