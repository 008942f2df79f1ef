//! MTA-STS (RFC 8461) for MX delivery: a domain's `_mta-sts` TXT record
//! and policy file (served over HTTPS by a local server with a test CA
//! trusted through `delivery.tls_ca_file`) decide whether mail may go to
//! an MX host, and over what; log lines and events say how each delivery
//! was protected.

use std::time::{Duration, Instant};

use crate::common::delivery::{
    config, expect_messages, start_mx, submit, wait_for_delivery, zone_with_sender_mx,
};
use crate::common::dns_server::{TestDns, Zone};
use crate::common::fake_mx::{FakeMx, Script};
use crate::common::policy_server::{self, PolicyServer, policy_response};
use crate::common::shaping::{queue_json, wait_until};
use crate::common::silent::{BlackHole, SilentServer};
use crate::common::{TestRelay, WAIT, spawn_tail};

const WITHIN: Duration = Duration::from_secs(15);

/// One recipient domain with an MTA-STS policy: its MX host `mx.DOMAIN` at
/// `127.0.88.N` and its policy host `mta-sts.DOMAIN` at `127.0.89.N`.
struct Site {
    domain: String,
    mx_ip: String,
    policy_ip: String,
}

impl Site {
    fn new(name: &str, number: u8) -> Site {
        Site {
            domain: format!("{name}.sts.test"),
            mx_ip: format!("127.0.88.{number}"),
            policy_ip: format!("127.0.89.{number}"),
        }
    }

    fn mx_host(&self) -> String {
        format!("mx.{}", self.domain)
    }

    fn recipient(&self) -> String {
        format!("user@{}", self.domain)
    }

    /// DNS with the MX, the TXT record announcing policy `id`, and the
    /// policy host.
    fn zone(&self, id: &str) -> Zone {
        zone_with_sender_mx("127.0.88.250")
            .mx(&self.domain, 10, &self.mx_host())
            .a(&self.mx_host(), &self.mx_ip)
            .txt(
                &format!("_mta-sts.{}", self.domain),
                &format!("v=STSv1; id={id};"),
            )
            .a(&format!("mta-sts.{}", self.domain), &self.policy_ip)
    }

    fn policy_server(&self, policy: &str) -> PolicyServer {
        PolicyServer::start(
            &self.policy_ip,
            &format!("mta-sts.{}", self.domain),
            policy_response(policy),
        )
    }

    /// An MX offering STARTTLS with a certificate for `certificate_name`.
    fn mx_script(&self, certificate_name: &str) -> Script {
        Script {
            tls: Some(policy_server::identity(certificate_name)),
            ..Script::default()
        }
    }

    /// Submits one message to the site; returns its queue id.
    fn submit(&self, relay: &TestRelay) -> String {
        submit(
            relay,
            "app@sender.test",
            &[&self.recipient()],
            "Subject: protected\r\n\r\n",
        )
    }
}

fn policy(mode: &str, mx: &str, max_age: u64) -> String {
    format!("version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: {max_age}\r\n")
}

fn relay_config(dns: &TestDns, port: u16) -> String {
    let ca = policy_server::ca_file();
    config(
        dns,
        port,
        &format!("tls_ca_file = \"{}\"", ca.display()),
        "",
    )
}

fn assert_no_transaction(server: &FakeMx) {
    let commands = server.commands();
    assert!(
        commands
            .iter()
            .all(|command| !command.to_ascii_uppercase().starts_with("MAIL")),
        "no MAIL FROM may reach a host the policy refuses: {commands:?}"
    );
    assert!(server.messages().is_empty());
}

#[test]
fn enforce_delivers_over_verified_starttls_and_says_so() {
    let site = Site::new("enforce", 1);
    let (port, servers) = start_mx(vec![(&site.mx_ip, site.mx_script(&site.mx_host()))]);
    let dns = TestDns::start(site.zone("e1"));
    let policy_host = site.policy_server(&policy("enforce", &site.mx_host(), 86400));
    let relay = TestRelay::start(&relay_config(&dns, port));
    let (mut tail, lines) = spawn_tail(&relay, &["--json"]);

    // The tail shows only events after its subscription: submit until it
    // shows a delivery.
    let deadline = Instant::now() + WAIT;
    let event = loop {
        let id = site.submit(&relay);
        let line = wait_for_delivery(&relay, &id, "sent");
        assert!(
            line.contains("tls=verified") && line.contains("policy=mta-sts,"),
            "{line}"
        );
        std::thread::sleep(Duration::from_millis(300));
        let shown = lines.lock().unwrap().iter().find_map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).ok()?;
            (event["id"] == id.as_str() && event["event"] == "delivered").then_some(event)
        });
        if let Some(event) = shown {
            break event;
        }
        assert!(Instant::now() < deadline, "tail showed no delivery");
    };
    let _ = tail.kill();
    let _ = tail.wait();
    assert_eq!(event["tls"], "verified", "{event}");
    assert_eq!(event["policy"], "mta-sts", "{event}");
    let received = expect_messages(&relay, &servers[0], 1, WITHIN);
    assert!(received[0].tls);
    assert_eq!(policy_host.requests(), 1, "the policy is fetched once");
}

#[test]
fn enforce_defers_when_the_mx_offers_no_starttls() {
    let site = Site::new("plain", 2);
    let (port, servers) = start_mx(vec![(&site.mx_ip, Script::default())]);
    let dns = TestDns::start(site.zone("p1"));
    let _policy_host = site.policy_server(&policy("enforce", &site.mx_host(), 86400));
    let relay = TestRelay::start(&relay_config(&dns, port));
    let id = site.submit(&relay);
    let line = wait_for_delivery(&relay, &id, "deferred");
    assert!(
        line.contains("dsn=4.7.5") && line.contains("MTA-STS") && line.contains("STARTTLS"),
        "{line}"
    );
    assert!(line.contains("policy=mta-sts,"), "{line}");
    assert!(servers[0].sessions() >= 1, "the MX was asked for STARTTLS");
    assert_no_transaction(&servers[0]);
}

#[test]
fn past_retry_max_age_the_refusal_bounces_naming_mta_sts() {
    let site = Site::new("bounce", 11);
    let (port, servers) = start_mx(vec![
        (&site.mx_ip, Script::default()),
        ("127.0.88.250", Script::default()),
    ]);
    let dns = TestDns::start(site.zone("b1"));
    let _policy_host = site.policy_server(&policy("enforce", &site.mx_host(), 86400));
    let relay =
        TestRelay::start(&relay_config(&dns, port).replace("max_age = \"1h\"", "max_age = \"2s\""));
    let id = site.submit(&relay);
    let bounces = expect_messages(&relay, &servers[1], 1, WITHIN);
    let report = String::from_utf8_lossy(&bounces[0].data).into_owned();
    assert!(
        report.contains("Action: failed") && report.contains("MTA-STS policy of bounce.sts.test"),
        "{report}"
    );
    relay.wait_for_log(&format!("{id}: removed"));
    assert_no_transaction(&servers[0]);
}

#[test]
fn enforce_defers_when_the_certificate_names_another_host() {
    let site = Site::new("wrongname", 3);
    let (port, servers) = start_mx(vec![(&site.mx_ip, site.mx_script("other.sts.test"))]);
    let dns = TestDns::start(site.zone("w1"));
    let _policy_host = site.policy_server(&policy("enforce", &site.mx_host(), 86400));
    let relay = TestRelay::start(&relay_config(&dns, port));
    let id = site.submit(&relay);
    let line = wait_for_delivery(&relay, &id, "deferred");
    assert!(
        line.contains("dsn=4.7.5") && line.contains("MTA-STS"),
        "{line}"
    );
    assert_no_transaction(&servers[0]);
}

#[test]
fn enforce_defers_when_no_mx_host_matches_the_policy() {
    let site = Site::new("mismatch", 4);
    let (port, servers) = start_mx(vec![(&site.mx_ip, site.mx_script(&site.mx_host()))]);
    let dns = TestDns::start(site.zone("m1"));
    let _policy_host = site.policy_server(&policy("enforce", "*.elsewhere.test", 86400));
    let relay = TestRelay::start(&relay_config(&dns, port));
    let id = site.submit(&relay);
    let line = wait_for_delivery(&relay, &id, "deferred");
    assert!(
        line.contains("dsn=4.7.5") && line.contains("MTA-STS") && line.contains("mx"),
        "{line}"
    );
    assert_eq!(
        servers[0].sessions(),
        0,
        "a host the policy does not name is not contacted"
    );
}

#[test]
fn testing_mode_delivers_and_logs_what_enforcement_would_refuse() {
    let site = Site::new("testing", 5);
    let (port, servers) = start_mx(vec![(&site.mx_ip, Script::default())]);
    let dns = TestDns::start(site.zone("t1"));
    let _policy_host = site.policy_server(&policy("testing", &site.mx_host(), 86400));
    let relay = TestRelay::start(&relay_config(&dns, port));
    let id = site.submit(&relay);
    let line = wait_for_delivery(&relay, &id, "sent");
    assert!(
        line.contains("tls=none") && line.contains("policy=mta-sts-testing"),
        "{line}"
    );
    let warning = relay.wait_for_log("would refuse");
    assert!(
        warning.contains("WARN") && warning.contains("policy=mta-sts-testing"),
        "{warning}"
    );
    assert!(warning.contains("STARTTLS"), "{warning}");
    expect_messages(&relay, &servers[0], 1, WITHIN);
}

#[test]
fn the_cached_policy_outlives_a_restart_and_a_policy_host_outage() {
    let site = Site::new("cached", 6);
    // The MX refuses nothing: only the log says whether a policy applied.
    let (port, servers) = start_mx(vec![(&site.mx_ip, site.mx_script(&site.mx_host()))]);
    let dns = TestDns::start(site.zone("c1"));
    let policy_host = site.policy_server(&policy("enforce", &format!("*.{}", site.domain), 86400));
    let mut relay = TestRelay::start(&relay_config(&dns, port));
    let first = site.submit(&relay);
    let line = wait_for_delivery(&relay, &first, "sent");
    assert!(line.contains("policy=mta-sts,"), "{line}");
    relay.stop();
    assert!(
        relay.spool_path().join("mta-sts-policies.json").exists(),
        "the policy is kept in the spool directory"
    );

    // A new policy id is announced, but its host is down: the cached
    // policy stays in force.
    drop(policy_host);
    dns.set_zone(site.zone("c2"));
    relay.launch();
    let second = site.submit(&relay);
    let line = wait_for_delivery(&relay, &second, "sent");
    assert!(
        line.contains("tls=verified") && line.contains("policy=mta-sts,"),
        "{line}"
    );
    relay.wait_for_log("cannot fetch policy c2");
    expect_messages(&relay, &servers[0], 2, WITHIN);
}

#[test]
fn an_expired_policy_is_no_longer_used() {
    let site = Site::new("expiring", 7);
    let (port, servers) = start_mx(vec![(&site.mx_ip, site.mx_script(&site.mx_host()))]);
    let dns = TestDns::start(site.zone("x1"));
    let policy_host = site.policy_server(&policy("enforce", &site.mx_host(), 1));
    let relay = TestRelay::start(&relay_config(&dns, port));
    let first = site.submit(&relay);
    let line = wait_for_delivery(&relay, &first, "sent");
    assert!(line.contains("policy=mta-sts,"), "{line}");

    // Past max_age, with the policy host gone, there is no policy at all.
    drop(policy_host);
    std::thread::sleep(Duration::from_millis(1500));
    let second = site.submit(&relay);
    let line = wait_for_delivery(&relay, &second, "sent");
    assert!(line.contains("policy=none"), "{line}");
    expect_messages(&relay, &servers[0], 2, WITHIN);
}

#[test]
fn redirects_are_not_followed() {
    let site = Site::new("redirect", 8);
    let (port, servers) = start_mx(vec![(&site.mx_ip, Script::default())]);
    let dns = TestDns::start(site.zone("r1"));
    let _policy_host = PolicyServer::start(
        &site.policy_ip,
        &format!("mta-sts.{}", site.domain),
        "HTTP/1.1 301 Moved Permanently\r\nLocation: https://elsewhere.test/\r\n\
         Content-Length: 0\r\n\r\n"
            .to_owned(),
    );
    let relay = TestRelay::start(&relay_config(&dns, port));
    let id = site.submit(&relay);
    let line = wait_for_delivery(&relay, &id, "sent");
    assert!(
        line.contains("tls=none") && line.contains("policy=none"),
        "{line}"
    );
    let warning = relay.wait_for_log("cannot fetch policy r1");
    assert!(warning.contains("301"), "{warning}");
    expect_messages(&relay, &servers[0], 1, WITHIN);
}

#[test]
fn routes_are_exempt() {
    let site = Site::new("routed", 10);
    let (port, servers) = start_mx(vec![(&site.mx_ip, Script::default())]);
    let dns = TestDns::start(site.zone("o1"));
    let policy_host = site.policy_server(&policy("enforce", "mx.elsewhere.test", 86400));
    let route = format!(
        "[[route]]\ndomains = [\"{}\"]\nhost = \"{}\"\nport = {port}\ntls = \"none\"\n",
        site.domain,
        site.mx_host()
    );
    let ca = policy_server::ca_file();
    let relay = TestRelay::start(&config(
        &dns,
        port,
        &format!("tls_ca_file = \"{}\"", ca.display()),
        &route,
    ));
    let id = site.submit(&relay);
    let line = wait_for_delivery(&relay, &id, "sent");
    assert!(
        line.contains("tls=none") && line.contains("policy=none"),
        "{line}"
    );
    assert_eq!(
        policy_host.requests(),
        0,
        "no policy is fetched for a route"
    );
    expect_messages(&relay, &servers[0], 1, WITHIN);
}

#[test]
fn mta_sts_false_is_exempt() {
    let site = Site::new("exempt", 9);
    let (port, servers) = start_mx(vec![(&site.mx_ip, Script::default())]);
    let dns = TestDns::start(site.zone("n1"));
    let policy_host = site.policy_server(&policy("enforce", &site.mx_host(), 86400));
    let ca = policy_server::ca_file();
    let relay = TestRelay::start(&config(
        &dns,
        port,
        &format!("mta_sts = false\ntls_ca_file = \"{}\"", ca.display()),
        "",
    ));
    let id = site.submit(&relay);
    let line = wait_for_delivery(&relay, &id, "sent");
    assert!(
        line.contains("tls=none") && line.contains("policy=none"),
        "{line}"
    );
    assert_eq!(policy_host.requests(), 0, "no policy is fetched");
    assert!(!dns.queries().iter().any(|query| query.contains("_mta-sts")));
    expect_messages(&relay, &servers[0], 1, WITHIN);
}

#[test]
fn check_config_names_an_unusable_tls_ca_file() {
    let directory = tempfile::tempdir().unwrap();
    let missing = directory.path().join("missing-ca.pem");
    let garbage = directory.path().join("garbage-ca.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    for ca in [&missing, &garbage] {
        let config = directory.path().join("relayq.toml");
        std::fs::write(
            &config,
            format!("[delivery]\ntls_ca_file = \"{}\"\n", ca.display()),
        )
        .unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_relayq"))
            .args(["check-config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{stderr}");
        assert!(
            stderr.contains("delivery.tls_ca_file") && stderr.contains(ca.to_str().unwrap()),
            "{stderr}"
        );
    }
}

#[test]
fn json_logs_carry_tls_and_policy_fields() {
    let site = Site::new("json", 12);
    let (port, servers) = start_mx(vec![(&site.mx_ip, site.mx_script(&site.mx_host()))]);
    let dns = TestDns::start(site.zone("j1"));
    let _policy_host = site.policy_server(&policy("testing", &site.mx_host(), 86400));
    let relay = TestRelay::start(&format!(
        "{}\n[log]\nformat = \"json\"\n",
        relay_config(&dns, port)
    ));
    let id = site.submit(&relay);
    let line = wait_for_delivery(&relay, &id, "sent");
    let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(entry["tls"], "verified", "{line}");
    assert_eq!(entry["policy"], "mta-sts-testing", "{line}");
    expect_messages(&relay, &servers[0], 1, WITHIN);
}

/// A `[dns]` changed by a reload applies to MTA-STS too: policies are
/// looked up through the new name servers, like the MX hosts.
#[test]
fn a_reload_of_dns_applies_to_policy_lookups() {
    let site = Site::new("reloaded", 14);
    let (port, servers) = start_mx(vec![(&site.mx_ip, site.mx_script(&site.mx_host()))]);
    let without_policy = TestDns::start(
        zone_with_sender_mx("127.0.88.250")
            .mx(&site.domain, 10, &site.mx_host())
            .a(&site.mx_host(), &site.mx_ip),
    );
    let with_policy = TestDns::start(site.zone("d1"));
    let _policy_host = site.policy_server(&policy("enforce", &site.mx_host(), 86400));
    let relay = TestRelay::start(&relay_config(&without_policy, port));
    let first = site.submit(&relay);
    let line = wait_for_delivery(&relay, &first, "sent");
    assert!(line.contains("policy=none"), "{line}");

    relay.rewrite_config(&relay_config(&with_policy, port));
    let reload = relay.reload();
    assert!(reload.status.success(), "{reload:?}");
    let second = site.submit(&relay);
    let line = wait_for_delivery(&relay, &second, "sent");
    assert!(
        line.contains("tls=verified") && line.contains("policy=mta-sts,"),
        "the new name servers announce a policy: {line}"
    );
    expect_messages(&relay, &servers[0], 2, WITHIN);
}

/// A policy host that accepts connections and never answers (a tarpit)
/// holds no lane worker while its fetch hangs: with one worker, mail for
/// another domain goes out meanwhile. The domain's own mail waits for the
/// fetch without an attempt, then goes as without a policy (RFC 8461 §5).
#[test]
fn a_tarpit_policy_host_holds_no_delivery_slot() {
    let site = Site::new("tarpit", 15);
    let other = Site::new("bystander", 16);
    let tarpit = SilentServer::start(&format!("{}:443", site.policy_ip));
    let (port, servers) = start_mx(vec![
        (&site.mx_ip, Script::default()),
        (&other.mx_ip, Script::default()),
    ]);
    let dns = TestDns::start(
        site.zone("p1")
            .mx(&other.domain, 10, &other.mx_host())
            .a(&other.mx_host(), &other.mx_ip),
    );
    let ca = policy_server::ca_file();
    let relay = TestRelay::start(&config(
        &dns,
        port,
        &format!("tls_ca_file = \"{}\"", ca.display()),
        "[lanes.high]\nconcurrency = 1\n",
    ));
    let first = site.submit(&relay);
    wait_until("the policy fetch reaches the tarpit", WITHIN, || {
        tarpit.accepted() >= 1
    });
    let second = other.submit(&relay);
    let line = wait_for_delivery(&relay, &second, "sent");
    assert!(
        tarpit.open() >= 1,
        "the other domain's mail went out while the fetch hung: {line}"
    );
    let detail = queue_json(&relay, &["show", &first]);
    assert_eq!(detail["attempts"], 0, "{detail}");
    let reply = detail["recipients"][0]["last_reply"]
        .as_str()
        .unwrap_or_default();
    assert!(reply.contains("being fetched"), "{detail}");

    let line = wait_for_delivery(&relay, &first, "sent");
    assert!(line.contains("policy=none"), "{line}");
    relay.wait_for_log("cannot fetch policy p1");
    expect_messages(&relay, &servers[0], 1, WITHIN);
    expect_messages(&relay, &servers[1], 1, WITHIN);
}

/// A cached policy is fetched again before its max_age runs out (RFC 8461
/// §3.3: refresh proactively), in the background: deliveries go on under
/// the cached policy while the refresh hangs on a tarpit.
#[test]
fn a_policy_is_refreshed_in_the_background_before_it_expires() {
    let site = Site::new("refresh", 17);
    let (port, servers) = start_mx(vec![(&site.mx_ip, site.mx_script(&site.mx_host()))]);
    let dns = TestDns::start(site.zone("f1"));
    let policy_host = site.policy_server(&policy("enforce", &site.mx_host(), 20));
    let relay = TestRelay::start(&relay_config(&dns, port));
    let first = site.submit(&relay);
    let line = wait_for_delivery(&relay, &first, "sent");
    assert!(line.contains("policy=mta-sts,"), "{line}");
    assert_eq!(policy_host.requests(), 1);

    // The policy host now takes connections and never answers.
    drop(policy_host);
    let tarpit = SilentServer::start(&format!("{}:443", site.policy_ip));
    let mut delivered = 1;
    wait_until(
        "a refresh of the policy begins",
        Duration::from_secs(30),
        || {
            let id = site.submit(&relay);
            let line = wait_for_delivery(&relay, &id, "sent");
            assert!(line.contains("policy=mta-sts,"), "{line}");
            delivered += 1;
            tarpit.accepted() >= 1
        },
    );
    // The refresh hangs; the cached policy, still valid, keeps applying
    // and nothing waits for the refresh.
    let id = site.submit(&relay);
    let line = wait_for_delivery(&relay, &id, "sent");
    assert!(line.contains("policy=mta-sts,"), "{line}");
    assert!(tarpit.open() >= 1, "delivered while the refresh hangs");
    expect_messages(&relay, &servers[0], delivered + 1, WITHIN);
}

/// A policy host whose first address drops packets: that address gets a
/// few seconds, not the whole fetch's time, and the policy comes from the
/// second one.
#[test]
fn a_policy_host_address_that_drops_packets_is_skipped() {
    let site = Site::new("blackhole", 18);
    let second_address = "127.0.90.18";
    let _black_hole = BlackHole::start(&format!("{}:443", site.policy_ip));
    let _policy_host = PolicyServer::start(
        second_address,
        &format!("mta-sts.{}", site.domain),
        policy_response(&policy("enforce", &site.mx_host(), 86400)),
    );
    let (port, servers) = start_mx(vec![(&site.mx_ip, site.mx_script(&site.mx_host()))]);
    let dns = TestDns::start(
        site.zone("h1")
            .a(&format!("mta-sts.{}", site.domain), second_address),
    );
    let relay = TestRelay::start(&relay_config(&dns, port));
    let id = site.submit(&relay);
    let line = wait_for_delivery(&relay, &id, "sent");
    assert!(
        line.contains("tls=verified") && line.contains("policy=mta-sts,"),
        "{line}"
    );
    expect_messages(&relay, &servers[0], 1, WITHIN);
}
