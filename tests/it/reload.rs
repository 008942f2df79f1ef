//! Live reload: `relayq reload` and SIGHUP apply a new configuration file
//! to the running daemon (relay networks, lane widths, destination rates),
//! refuse a file that does not validate without changing anything, report
//! what needs a restart, and disturb no mail in flight.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::delivery::{config, expect_messages, start_mx, submit, zone_with_sender_mx};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::{FakeMx, Script, Stage};
use crate::common::shaping::{metrics_address, queue_json, queue_text, sample, scrape, wait_until};
use crate::common::{SmtpClient, TestRelay};

const WITHIN: Duration = Duration::from_secs(30);

fn relay_config(networks: &str) -> String {
    format!("[smtp]\nrelay_networks = [{networks}]\n[metrics]\nlisten = \"127.0.0.1:0\"\n")
}

fn rcpt_reply(client: &mut SmtpClient) -> u16 {
    let mail = client.command("MAIL FROM:<app@sender.test>");
    assert_eq!(mail.code, 250, "{mail:?}");
    let code = client.command("RCPT TO:<user@example.org>").code;
    client.command("RSET");
    code
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn relay_networks_change_on_reload_and_a_bad_file_changes_nothing() {
    let relay = TestRelay::start(&relay_config("\"10.0.0.0/8\""));
    let metrics = metrics_address(&relay);
    let mut before = relay.client();
    before.greet();
    assert_eq!(rcpt_reply(&mut before), 554, "outside relay_networks");

    relay.rewrite_config(&relay_config("\"127.0.0.0/8\""));
    let output = relay.reload();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("changed: smtp"),
        "{}",
        stdout(&output)
    );
    let mut after = relay.client();
    after.greet();
    assert_eq!(
        rcpt_reply(&mut after),
        250,
        "relaying allowed after the reload"
    );
    // A session keeps the settings it began with.
    assert_eq!(rcpt_reply(&mut before), 554);

    relay.rewrite_config(&relay_config("\"not-a-network\""));
    let output = relay.reload();
    assert_eq!(output.status.code(), Some(64), "{}", stdout(&output));
    let error = stderr(&output);
    assert!(error.contains("smtp.relay_networks"), "{error}");
    assert!(
        error.contains(&relay.config_path.display().to_string()),
        "{error}"
    );
    relay.wait_for_log("reload failed, configuration unchanged");
    let mut unchanged = relay.client();
    unchanged.greet();
    assert_eq!(rcpt_reply(&mut unchanged), 250, "the valid settings stay");

    let text = scrape(metrics);
    assert_eq!(
        sample(&text, "relayq_config_reloads_total{result=\"ok\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "relayq_config_reloads_total{result=\"error\"}"),
        Some(1.0)
    );
}

#[test]
fn a_listener_change_is_reported_as_needing_a_restart_and_not_applied() {
    let relay = TestRelay::start("");
    relay.rewrite_config("[[listener]]\naddress = \"127.0.0.1:0\"\nlane = \"low\"\n");
    let output = relay.reload();
    assert!(output.status.success(), "{}", stderr(&output));
    let report = stdout(&output);
    assert!(
        report.contains("needs a restart (not applied): listener"),
        "{report}"
    );
    relay.wait_for_log("listener changed: needs a restart, not applied");

    submit(
        &relay,
        "app@sender.test",
        &["user@example.org"],
        "Subject: x\r\n\r\n",
    );
    let list = queue_json(&relay, &["list"]);
    assert_eq!(
        list[0]["lane"], "high",
        "the running listener's lane: {list}"
    );
    // Reported again until the restart: the daemon still runs the old one.
    let again = relay.reload();
    assert!(stdout(&again).contains("needs a restart (not applied): listener"));
}

/// A relay whose MX for `slow.test` never answers DATA (deliveries stay in
/// flight) and one for `fast.test` that accepts everything.
fn stuck_setup(lanes: &str) -> (String, Vec<FakeMx>, TestDns) {
    let stuck = Script {
        never_answer_data: true,
        ..Script::default()
    };
    let (port, servers) = start_mx(vec![("127.0.24.1", stuck)]);
    let dns = TestDns::start(
        zone_with_sender_mx("127.0.24.9")
            .mx("slow.test", 10, "mx.slow.test")
            .a("mx.slow.test", "127.0.24.1"),
    );
    let settings = config(&dns, port, "", lanes)
        .replace("data_timeout = \"5s\"", "data_timeout = \"60s\"")
        .replace("final_timeout = \"5s\"", "final_timeout = \"60s\"");
    (settings, servers, dns)
}

#[test]
fn a_wider_lane_starts_more_deliveries_at_once() {
    let (settings, servers, _dns) = stuck_setup("[lanes.low]\nconcurrency = 1\n");
    let relay = TestRelay::start(&settings);
    for n in 0..4 {
        submit(
            &relay,
            "news@sender.test",
            &[&format!("reader{n}@slow.test")],
            "Precedence: bulk\r\nSubject: newsletter\r\n\r\n",
        );
    }
    wait_until("one delivery in flight", WITHIN, || {
        servers[0].active_sessions() >= 1
    });
    assert_eq!(servers[0].max_concurrent_sessions(), 1, "one low-lane slot");

    relay.rewrite_config(&settings.replace(
        "[lanes.low]\nconcurrency = 1\n",
        "[lanes.low]\nconcurrency = 3\n",
    ));
    let output = relay.reload();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("lanes.low"), "{}", stdout(&output));
    wait_until("three deliveries in flight", WITHIN, || {
        servers[0].active_sessions() >= 3
    });
    assert!(servers[0].max_concurrent_sessions() <= 3);
}

#[test]
fn a_destination_rate_changes_on_reload() {
    let (port, servers) = start_mx(vec![("127.0.24.11", Script::default())]);
    let dns = TestDns::start(
        zone_with_sender_mx("127.0.24.19")
            .mx("dest.test", 10, "mx.dest.test")
            .a("mx.dest.test", "127.0.24.11"),
    );
    let rule = |rate: &str| {
        config(
            &dns,
            port,
            "",
            &format!(
                "[[destination]]\nname = \"rated\"\nmatch = [\"dest.test\"]\nrate = \"{rate}\"\n"
            ),
        )
    };
    let relay = TestRelay::start(&rule("1/h"));
    for n in 0..3 {
        submit(
            &relay,
            "app@sender.test",
            &[&format!("u{n}@dest.test")],
            &format!("Subject: {n}\r\n\r\n"),
        );
    }
    expect_messages(&relay, &servers[0], 1, WITHIN);
    wait_until("two messages wait for the hourly rate", WITHIN, || {
        let list = queue_json(&relay, &["list"]);
        let waiting = list.as_array().unwrap().iter().filter(|message| {
            message["state"] == "deferred"
                && message["recipients"][0]["last_reply"]
                    .as_str()
                    .is_some_and(|reply| reply.contains("destination rated rate limit"))
        });
        waiting.count() == 2
    });

    relay.rewrite_config(&rule("50/s"));
    let output = relay.reload();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("destination"),
        "{}",
        stdout(&output)
    );
    queue_text(&relay, &["retry", "--all"]);
    expect_messages(&relay, &servers[0], 3, WITHIN);
}

#[test]
fn a_delivery_in_flight_finishes_under_its_settings() {
    let slow = Script {
        delay_before: vec![(Stage::FinalDot, Duration::from_secs(3))],
        ..Script::default()
    };
    let (port, servers) = start_mx(vec![("127.0.24.21", slow)]);
    let dns = TestDns::start(
        zone_with_sender_mx("127.0.24.29")
            .mx("dest.test", 10, "mx.dest.test")
            .a("mx.dest.test", "127.0.24.21"),
    );
    let settings = config(&dns, port, "", "");
    let relay = TestRelay::start(&settings);
    submit(
        &relay,
        "app@sender.test",
        &["user@dest.test"],
        "Subject: in flight\r\n\r\n",
    );
    wait_until("the message's content reached the MX", WITHIN, || {
        servers[0]
            .commands()
            .iter()
            .any(|command| command == "DATA")
    });

    // New deliveries would give up on the reply to the final dot after one
    // second; the one in flight keeps its five.
    relay.rewrite_config(&settings.replace("final_timeout = \"5s\"", "final_timeout = \"1s\""));
    let output = relay.reload();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("changed: delivery"),
        "{}",
        stdout(&output)
    );

    expect_messages(&relay, &servers[0], 1, WITHIN);
    wait_until("the queue is empty", WITHIN, || {
        queue_json(&relay, &["list"]).as_array().unwrap().is_empty()
    });
    assert_eq!(servers[0].messages().len(), 1, "delivered once");
    assert!(
        relay.log_lines("status=deferred").is_empty(),
        "{}",
        relay.logs_text()
    );
}

#[test]
fn sighup_under_load_loses_and_duplicates_nothing() {
    let (port, servers) = start_mx(vec![("127.0.24.31", Script::default())]);
    let dns = TestDns::start(
        zone_with_sender_mx("127.0.24.39")
            .mx("dest.test", 10, "mx.dest.test")
            .a("mx.dest.test", "127.0.24.31"),
    );
    let wide = config(
        &dns,
        port,
        "destination_concurrency = 8",
        "[lanes.high]\nconcurrency = 8\n",
    );
    let narrow = config(
        &dns,
        port,
        "destination_concurrency = 2",
        "[lanes.high]\nconcurrency = 2\n[smtp]\nmax_connections = 50\n",
    );
    let relay = TestRelay::start(&wide);
    let (threads, per_thread) = (6, 50);
    let senders: Vec<_> = (0..threads)
        .map(|thread| {
            let address = relay.address;
            std::thread::spawn(move || {
                let mut client = SmtpClient::connect(address);
                client.greet();
                for n in 0..per_thread {
                    let content = format!("Subject: load {thread}-{n}\r\n\r\nbody\r\n");
                    let reply = client.send_message(
                        "app@sender.test",
                        &["user@dest.test"],
                        content.as_bytes(),
                    );
                    assert_eq!(reply.code, 250, "{reply:?}");
                }
                client.command("QUIT");
            })
        })
        .collect();
    for round in 0..6 {
        relay.rewrite_config(if round % 2 == 0 { &narrow } else { &wide });
        relay.sighup();
        std::thread::sleep(Duration::from_millis(100));
    }
    for sender in senders {
        sender.join().expect("sender thread");
    }
    let total = threads * per_thread;
    expect_messages(&relay, &servers[0], total, Duration::from_secs(60));
    wait_until("the queue is empty", WITHIN, || {
        queue_json(&relay, &["list"]).as_array().unwrap().is_empty()
    });
    let received = servers[0].messages();
    let subjects: HashSet<String> = received
        .iter()
        .map(|message| {
            let data = String::from_utf8_lossy(&message.data);
            let subject = data.lines().find(|line| line.starts_with("Subject: load "));
            subject.expect("the test's subject").to_owned()
        })
        .collect();
    assert_eq!(received.len(), total, "nothing duplicated");
    assert_eq!(subjects.len(), total, "nothing lost");
    assert!(!relay.log_lines("configuration reloaded from").is_empty());
    assert!(
        relay.log_lines("reload failed").is_empty(),
        "{}",
        relay.logs_text()
    );
}

#[test]
fn the_log_level_changes_on_reload() {
    let settings =
        |level: &str| format!("[smtp]\nidle_timeout = \"1s\"\n[log]\nlevel = \"{level}\"\n");
    // Without RUST_LOG, which would win over `log.level`.
    let relay = TestRelay::start_with_env(&settings("info"), &[("RUST_LOG", "")]);
    let idle_until_closed = || {
        let mut client = relay.client();
        assert_eq!(client.read().code, 220);
        assert_eq!(client.read().code, 421, "closed for idling");
    };
    idle_until_closed();

    relay.rewrite_config(&settings("relayq=debug,info"));
    let output = relay.reload();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("log.level"), "{}", stdout(&output));
    idle_until_closed();
    relay.wait_for_log("session closed: command_timeout");
    // Logs are in order: the session before the reload logged no such line.
    assert_eq!(relay.log_lines("session closed: command_timeout").len(), 1);
}
