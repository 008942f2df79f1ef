//! What a hostile or broken MX can do to a delivery: reset the connection
//! in DATA, send a 2 MB reply line, say 421 in the middle of a transaction,
//! greet with garbage, fail the TLS handshake, or (its DNS) never answer.
//! Each time the recipient is deferred with a last reply saying what
//! happened, the daemon keeps serving, the lane and destination slots come
//! back (the gauges return to 0), and the message is delivered, once, when
//! the MX behaves again.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::TestRelay;
use crate::common::delivery::{config, start_mx, submit, zone_with_sender_mx};
use crate::common::dns_server::{TestDns, Zone};
use crate::common::fake_mx::{FakeMx, Script, Stage, test_ca};

/// Any single wait; the DNS test overrides it (the resolver gives up on a
/// silent name server only after its own timeouts and retries).
const WITHIN: Duration = Duration::from_secs(20);
const METRICS: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";
const RECIPIENT: &str = "user@dest.test";

/// A relay delivering `dest.test` to one fake MX, with retries an hour
/// apart: a deferred message stays deferred until the test retries it.
struct Fault {
    relay: TestRelay,
    mx: FakeMx,
    dns: TestDns,
    metrics: SocketAddr,
}

/// `mx_host`: the MX name `dest.test` points to (the TLS test needs one
/// the test certificate covers).
fn zone(ip: &str, mx_host: &str) -> Zone {
    zone_with_sender_mx(ip)
        .mx("dest.test", 10, mx_host)
        .a(mx_host, ip)
}

fn start(
    ip: &str,
    script: Script,
    zone: Zone,
    delivery_extra: &str,
    env: &[(&str, &str)],
) -> Fault {
    let (port, mut servers) = start_mx(vec![(ip, script)]);
    let dns = TestDns::start(zone);
    let relay_config = config(&dns, port, delivery_extra, METRICS)
        .replace("initial = \"1s\"", "initial = \"1h\"")
        .replace("max = \"1s\"", "max = \"1h\"");
    let relay = TestRelay::start_with_env(&relay_config, env);
    let metrics = metrics_address(&relay);
    Fault {
        relay,
        mx: servers.pop().expect("one MX"),
        dns,
        metrics,
    }
}

impl Fault {
    fn submit(&self, subject: &str) -> String {
        submit(
            &self.relay,
            "app@sender.test",
            &[RECIPIENT],
            &format!("Subject: {subject}\r\n\r\nbody of {subject}\r\n"),
        )
    }

    /// Waits until `id`'s recipient is deferred in the spool and returns its
    /// last reply, after checking that the delivery log line says the same.
    fn deferred_reply(&self, id: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let reply = loop {
            let detail = self.show(id);
            let recipient = &detail["recipients"][0];
            if detail["state"] == "deferred"
                && let Some(reply) = recipient["last_reply"].as_str()
            {
                assert_eq!(recipient["status"], "deferred", "{detail}");
                break reply.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "{id} never deferred: {detail}\nrelay log:\n{}",
                self.relay.logs_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let line = self.relay.wait_for_log(&format!("{id}: to=<{RECIPIENT}>"));
        assert!(
            line.contains("status=deferred") && line.contains(&reply),
            "log line {line:?} does not report {reply:?}"
        );
        reply
    }

    fn show(&self, id: &str) -> serde_json::Value {
        let output = self.queue(&["show", id, "--json"]);
        serde_json::from_str(&output).expect("queue show JSON")
    }

    fn queue(&self, args: &[&str]) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_relayq"))
            .arg("queue")
            .args(args)
            .arg("--config")
            .arg(&self.relay.config_path)
            .stdin(Stdio::null())
            .output()
            .expect("run relayq queue");
        assert!(
            output.status.success(),
            "relayq queue {args:?}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    /// The daemon still takes mail and reports healthy; the message this
    /// submits (deferred like the first) is returned for the final check.
    fn still_serving(&self) -> String {
        assert_eq!(
            get(self.metrics, "/healthz").0,
            200,
            "healthy after the fault"
        );
        self.submit("after the fault")
    }

    /// Lane slots and destination connections in use all return to 0.
    fn slots_come_back(&self) {
        wait_for_scrape(self.metrics, WITHIN, "no delivery slot in use", |text| {
            slots_in_use(text) == 0 && active_connections(text).iter().all(|(_, n)| *n == 0)
        });
    }

    /// The MX behaves (`script`), the deferred mail is retried, and each of
    /// `subjects` arrives exactly once; then the queue is empty.
    fn recovers(&self, script: Script, ids: &[String], subjects: &[&str]) {
        self.mx.set_script(script).expect("new script");
        self.queue(&["retry", "--all"]);
        for id in ids {
            self.relay.wait_for_log(&format!("{id}: removed"));
        }
        let received = self.mx.messages();
        for subject in subjects {
            let copies = received
                .iter()
                .filter(|message| {
                    String::from_utf8_lossy(&message.data)
                        .contains(&format!("Subject: {subject}\r\n"))
                })
                .count();
            assert_eq!(copies, 1, "{subject:?} delivered once");
        }
        self.slots_come_back();
    }
}

/// The whole scenario for a fault the MX shows from the first session:
/// deferred with a last reply containing each of `expected`, slots back,
/// daemon serving, delivered once the MX behaves (`good`).
fn fault_then_recovery(fault: &Fault, expected: &[&str], good: Script) {
    let first = fault.submit("first");
    let reply = fault.deferred_reply(&first, WITHIN);
    eprintln!("deferred with: {reply}");
    for needle in expected {
        assert!(
            reply.contains(needle),
            "last reply {reply:?} lacks {needle:?}"
        );
    }
    assert!(
        fault.mx.messages().is_empty(),
        "nothing was accepted by the failing MX"
    );
    fault.slots_come_back();
    let second = fault.still_serving();
    fault.deferred_reply(&second, WITHIN);
    fault.slots_come_back();
    fault.recovers(good, &[first, second], &["first", "after the fault"]);
}

#[test]
fn connection_reset_in_data_defers_and_recovers() {
    let ip = "127.0.32.1";
    let script = Script {
        reset_in_data: true,
        ..Script::default()
    };
    let fault = start(ip, script, zone(ip, "mx.dest.test"), "", &[]);
    fault_then_recovery(&fault, &["4.4.2 connection lost while"], Script::default());
}

#[test]
fn overlong_reply_line_defers_and_recovers() {
    let ip = "127.0.32.2";
    let script = Script {
        overlong_reply_at: Some(Stage::Mail),
        ..Script::default()
    };
    let fault = start(ip, script, zone(ip, "mx.dest.test"), "", &[]);
    fault_then_recovery(
        &fault,
        &["4.5.0 protocol error: reply longer than"],
        Script::default(),
    );
}

#[test]
fn reply_421_after_rcpt_defers_and_recovers() {
    let ip = "127.0.32.3";
    let script = Script {
        rcpt_reply: Arc::new(|_| "421 4.3.2 Service shutting down".to_owned()),
        ..Script::default()
    };
    let fault = start(ip, script, zone(ip, "mx.dest.test"), "", &[]);
    fault_then_recovery(
        &fault,
        &["421 4.3.2 Service shutting down"],
        Script::default(),
    );
}

#[test]
fn reply_421_after_rcpt_without_pipelining_defers_and_recovers() {
    let ip = "127.0.32.4";
    let stepwise = || Script {
        extensions: vec!["8BITMIME".to_owned(), "ENHANCEDSTATUSCODES".to_owned()],
        ..Script::default()
    };
    let script = Script {
        rcpt_reply: Arc::new(|_| "421 4.3.2 Service shutting down".to_owned()),
        ..stepwise()
    };
    let fault = start(ip, script, zone(ip, "mx.dest.test"), "", &[]);
    fault_then_recovery(&fault, &["421 4.3.2 Service shutting down"], stepwise());
}

#[test]
fn garbage_greeting_defers_and_recovers() {
    let ip = "127.0.32.5";
    let script = Script {
        // Port 25 forwarded to the wrong service.
        greeting: "SSH-2.0-OpenSSH_9.6p1".to_owned(),
        ..Script::default()
    };
    let fault = start(ip, script, zone(ip, "mx.dest.test"), "", &[]);
    fault_then_recovery(
        &fault,
        &["4.5.0", "malformed reply line", "SSH-2.0"],
        Script::default(),
    );
}

#[test]
fn tls_handshake_failure_defers_required_tls_and_recovers() {
    let ip = "127.0.32.6";
    let script = Script {
        broken_tls: true,
        ..Script::default()
    };
    let ca_file = test_ca().1;
    let fault = start(
        ip,
        script,
        zone(ip, "mx.test"),
        "tls = \"required\"",
        &[("SSL_CERT_FILE", ca_file.to_str().expect("UTF-8 path"))],
    );
    let good = Script {
        tls: Some(test_ca().0),
        ..Script::default()
    };
    fault_then_recovery(&fault, &["4.7.5", "TLS handshake failed"], good);
    assert!(
        fault.mx.messages().iter().all(|message| message.tls),
        "delivered over TLS only"
    );
}

#[test]
fn dns_timeout_defers_and_recovers() {
    let ip = "127.0.32.7";
    // Longer than the resolver's own limit for a whole lookup: the relay
    // must give up, not wait.
    let silent = zone(ip, "mx.dest.test").delay("dest.test", Duration::from_secs(600));
    let fault = start(ip, Script::default(), silent, "", &[]);
    let first = fault.submit("first");
    // While the lookup hangs it holds one high-lane slot and one connection
    // place at its destination: the gauges show it.
    wait_for_scrape(
        fault.metrics,
        WITHIN,
        "a slot in use during the lookup",
        |text| slots_in_use(text) == 1 && active_connections(text) == [("dest.test".to_owned(), 1)],
    );
    let reply = fault.deferred_reply(&first, Duration::from_secs(90));
    eprintln!("deferred with: {reply}");
    assert!(
        reply.contains("timeout") && reply.starts_with('4'),
        "last reply {reply:?} says the lookup timed out"
    );
    fault.slots_come_back();
    fault.dns.set_zone(zone(ip, "mx.dest.test"));
    fault.recovers(Script::default(), &[first], &["first"]);
    fault.still_serving();
}

/// A server that closes idle sessions says so first (Postfix: `421 4.4.2
/// ... timeout exceeded`). When the relay takes such a connection from its
/// pool, that 421 is not about the next message: nothing was attempted, so
/// the message goes out on a fresh connection instead of being deferred.
/// Without PIPELINING the relay sends RSET right after a transaction, so the
/// 421 comes as the reply to the next MAIL; with it, the RSET travels with
/// the next MAIL and the 421 answers the RSET.
#[test]
fn idle_421_on_a_pooled_connection_does_not_defer_the_next_message() {
    let stepwise = Script {
        extensions: vec!["8BITMIME".to_owned(), "ENHANCEDSTATUSCODES".to_owned()],
        idle_close: Some(Duration::from_millis(300)),
        ..Script::default()
    };
    idle_close_then_second_message("127.0.32.8", stepwise);
}

#[test]
fn idle_421_on_a_pooled_pipelining_connection_does_not_defer_the_next_message() {
    let pipelining = Script {
        idle_close: Some(Duration::from_millis(300)),
        ..Script::default()
    };
    idle_close_then_second_message("127.0.32.9", pipelining);
}

fn idle_close_then_second_message(ip: &str, script: Script) {
    let fault = start(ip, script, zone(ip, "mx.dest.test"), "", &[]);
    let first = fault.submit("first");
    fault.relay.wait_for_log(&format!("{first}: removed"));
    // The connection waits in the pool (for up to 5 s); the server says
    // 421 after its idle time and closes its end.
    let deadline = Instant::now() + WITHIN;
    while fault.mx.active_sessions() > 0 {
        assert!(
            Instant::now() < deadline,
            "the server never closed its idle session"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = fault.submit("second");
    let outcome = fault
        .relay
        .wait_for_log(&format!("{second}: to=<{RECIPIENT}>"));
    assert!(
        outcome.contains("status=sent"),
        "the second message went out on a fresh connection: {outcome}"
    );
    // It was the pooled connection that met the 421 (not a pool emptied
    // by its idle timeout): the relay says so before opening a new one.
    let reused = fault
        .relay
        .wait_for_log(&format!("{second}: pooled connection to "));
    assert!(reused.contains("421 4.4.2"), "{reused}");
    assert_eq!(fault.mx.messages().len(), 2);
    assert_eq!(fault.mx.sessions(), 2, "one session per message");
    fault.slots_come_back();
}

/// The endpoint's address, from the "metrics on ADDR" log line.
fn metrics_address(relay: &TestRelay) -> SocketAddr {
    let line = relay.wait_for_log("metrics on ");
    let rest = line.split("metrics on ").nth(1).expect("address");
    rest.split_whitespace()
        .next()
        .and_then(|address| address.parse().ok())
        .expect("metrics address")
}

/// `GET path`: the status code and the body.
fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status code");
    (status, body.to_owned())
}

/// Scrapes `/metrics` until `condition` holds, failing with the last scrape.
fn wait_for_scrape(
    address: SocketAddr,
    within: Duration,
    what: &str,
    condition: impl Fn(&str) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        let (status, text) = get(address, "/metrics");
        assert_eq!(status, 200);
        if condition(&text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {what}; last scrape:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Both lanes' `relayq_delivery_slots_in_use` added up; each must be there.
fn slots_in_use(text: &str) -> u64 {
    ["high", "low"]
        .iter()
        .map(|lane| {
            let series = format!("relayq_delivery_slots_in_use{{lane=\"{lane}\"}} ");
            text.lines()
                .find_map(|line| line.strip_prefix(&series))
                .and_then(|value| value.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {series}in:\n{text}"))
        })
        .sum()
}

/// Every `relayq_destination_active_connections` series: destination and
/// value. A destination with nothing queued, running or idle has none.
fn active_connections(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("relayq_destination_active_connections{destination=\"")?;
            let (destination, value) = rest.split_once("\"} ")?;
            Some((destination.to_owned(), value.parse().ok()?))
        })
        .collect()
}
