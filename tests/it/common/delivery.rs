//! Delivery test setup: fake MX servers sharing one port on several
//! 127.0.0.0/8 addresses, an in-process DNS server, and a relay configured
//! to use both with short timeouts and retries.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::dns_server::{TestDns, Zone};
use super::fake_mx::{FakeMx, Received, Script};
use super::{TestRelay, WAIT};

/// Starts one fake MX per `(ip, script)`, all on the same port (the relay's
/// `delivery.port`). Retries with another port if one is taken.
pub fn start_mx(servers: Vec<(&str, Script)>) -> (u16, Vec<FakeMx>) {
    for attempt in 0..50u64 {
        let port = pick_port(attempt);
        let mut started = Vec::new();
        for (ip, script) in &servers {
            let address: SocketAddr = format!("{ip}:{port}").parse().expect("address");
            match FakeMx::start(address, script.clone()) {
                Ok(server) => started.push(server),
                Err(_) => break,
            }
        }
        if started.len() == servers.len() {
            return (port, started);
        }
    }
    panic!("no free port for the fake MX servers");
}

fn pick_port(attempt: u64) -> u16 {
    use std::hash::{BuildHasher, RandomState};
    let random = RandomState::new().hash_one((std::process::id(), attempt));
    20_000 + (random % 40_000) as u16
}

/// A free port on 127.0.0.1 nobody listens on (for "connection refused").
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// Relay configuration for delivery tests; `extra` adds keys in sections
/// not used here (or replaces none: keep delivery keys in `delivery_extra`).
pub fn config(dns: &TestDns, port: u16, delivery_extra: &str, extra: &str) -> String {
    format!(
        "[delivery]\nport = {port}\nconnect_timeout = \"2s\"\ngreeting_timeout = \"5s\"\n\
         command_timeout = \"5s\"\ndata_timeout = \"5s\"\nfinal_timeout = \"5s\"\n{delivery_extra}\n\
         [dns]\nnameservers = [\"{}\"]\n\
         [retry]\ninitial = \"1s\"\nfactor = 1.0\nmax = \"1s\"\nmax_age = \"1h\"\n{extra}\n",
        dns.address
    )
}

/// A zone where `sender.test` (the senders' domain) has an MX at `ip`, so
/// bounces have somewhere to go.
pub fn zone_with_sender_mx(ip: &str) -> Zone {
    Zone::default()
        .mx("sender.test", 10, "mx.sender.test")
        .a("mx.sender.test", ip)
}

/// Submits a message to the relay over SMTP; returns its queue id string.
pub fn submit(relay: &TestRelay, from: &str, to: &[&str], content: &str) -> String {
    let mut client = relay.client();
    client.greet();
    let reply = client.send_message(from, to, content.as_bytes());
    client.command("QUIT");
    super::queued_id(&reply).to_string()
}

/// Waits for `n` messages at `server`, failing with the relay's log.
pub fn expect_messages(
    relay: &TestRelay,
    server: &FakeMx,
    n: usize,
    within: Duration,
) -> Vec<Received> {
    let messages = server.wait_for_messages(n, within);
    assert!(
        messages.len() >= n,
        "expected {n} messages at {}, got {}; relay log:\n{}",
        server.address,
        messages.len(),
        relay.logs_text()
    );
    messages
}

/// The first delivery log line of message `id` with `status`.
pub fn wait_for_delivery(relay: &TestRelay, id: &str, status: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(line) = relay
            .log_lines(&format!("{id}: to="))
            .into_iter()
            .find(|line| line.contains(&format!("status={status}")))
        {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no {status} line for {id}; logs:\n{}",
            relay.logs_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
