//! TLS reporting (RFC 8460): the sessions relayq had with the MX hosts of
//! an MTA-STS domain are counted, and at the end of the (10 s) interval the
//! domain's `_smtp._tls` TXT record gets a report: mailed through the low
//! lane to a fake MX, or posted to a local HTTPS receiver trusted through
//! `delivery.tls_ca_file`. Counts committed before a kill -9 are reported
//! after the restart.

use std::io::Read;
use std::time::{Duration, Instant};

use mail_parser::{MessageParser, MimeHeaders};
use relayq_spool::{RecordTable, Spool, SpoolOptions};
use serde_json::Value;

use crate::common::delivery::{config, expect_messages, start_mx, submit, zone_with_sender_mx};
use crate::common::dkim::{dkim_block, make_key, passes, verify};
use crate::common::dns_server::{TestDns, Zone};
use crate::common::fake_mx::{FakeMx, Received, Script};
use crate::common::policy_server::{self, PolicyServer, policy_response};
use crate::common::report_receiver::ReportReceiver;
use crate::common::{TestRelay, WAIT};

/// A report comes at the end of a 10 s interval: up to two intervals after
/// the delivery, plus the delivery of the report itself.
const REPORT_WITHIN: Duration = Duration::from_secs(45);
const SUBMITTER: &str = "relay.test.example";
const FROM: &str = "tlsrpt-noreply@relay.test.example";

/// A recipient domain with an MTA-STS policy: its MX host at `127.0.92.N`
/// and its policy host at `127.0.93.N`; its reports go to the MX of
/// `reports.N.rpt.test` at `127.0.92.(100 + N)`, or to
/// `https://tlsrpt.N.rpt.test/v1` at `127.0.94.N`.
struct Site {
    number: u8,
    domain: String,
}

impl Site {
    fn new(number: u8) -> Site {
        Site {
            number,
            domain: format!("site{number}.rpt.test"),
        }
    }

    fn mx_host(&self) -> String {
        format!("mx.{}", self.domain)
    }

    fn mx_ip(&self) -> String {
        format!("127.0.92.{}", self.number)
    }

    fn reports_mx_ip(&self) -> String {
        format!("127.0.92.{}", 100 + self.number)
    }

    fn reports_domain(&self) -> String {
        format!("reports.{}.rpt.test", self.number)
    }

    fn reports_address(&self) -> String {
        format!("tls-reports@{}", self.reports_domain())
    }

    fn https_host(&self) -> String {
        format!("tlsrpt.{}.rpt.test", self.number)
    }

    fn https_ip(&self) -> String {
        format!("127.0.94.{}", self.number)
    }

    /// DNS with the MX, the MTA-STS TXT record and policy host, the report
    /// destinations' hosts, and no `_smtp._tls` record yet.
    fn base_zone(&self) -> Zone {
        let reports = self.reports_domain();
        zone_with_sender_mx("127.0.92.250")
            .mx(&self.domain, 10, &self.mx_host())
            .a(&self.mx_host(), &self.mx_ip())
            .txt(&format!("_mta-sts.{}", self.domain), "v=STSv1; id=r1;")
            .a(
                &format!("mta-sts.{}", self.domain),
                &format!("127.0.93.{}", self.number),
            )
            .mx(&reports, 10, &format!("mx.{reports}"))
            .a(&format!("mx.{reports}"), &self.reports_mx_ip())
            .a(&self.https_host(), &self.https_ip())
    }

    /// The base zone with `_smtp._tls` TXT `rua`.
    fn zone(&self, rua: &str) -> Zone {
        self.base_zone().txt(
            &format!("_smtp._tls.{}", self.domain),
            &format!("v=TLSRPTv1; rua={rua}"),
        )
    }

    fn policy_server(&self) -> PolicyServer {
        self.policy_server_in("enforce")
    }

    fn policy_server_in(&self, mode: &str) -> PolicyServer {
        let policy = format!(
            "version: STSv1\r\nmode: {mode}\r\nmx: {}\r\nmax_age: 86400\r\n",
            self.mx_host()
        );
        PolicyServer::start(
            &format!("127.0.93.{}", self.number),
            &format!("mta-sts.{}", self.domain),
            policy_response(&policy),
        )
    }

    /// `zone` where the reports' domain has an enforced MTA-STS policy too
    /// (served at `127.0.93.(100 + N)`), which its MX (no STARTTLS) fails.
    fn with_enforced_reports_domain(&self, zone: Zone) -> (Zone, PolicyServer) {
        let reports = self.reports_domain();
        let ip = format!("127.0.93.{}", 100 + self.number);
        let zone = zone
            .txt(&format!("_mta-sts.{reports}"), "v=STSv1; id=r1;")
            .a(&format!("mta-sts.{reports}"), &ip);
        let policy =
            format!("version: STSv1\r\nmode: enforce\r\nmx: mx.{reports}\r\nmax_age: 86400\r\n");
        let server =
            PolicyServer::start(&ip, &format!("mta-sts.{reports}"), policy_response(&policy));
        (zone, server)
    }

    /// The site's MX, offering STARTTLS with a certificate for
    /// `certificate_name`, and the MX of its reports.
    fn mx_servers(&self, certificate_name: &str) -> (u16, Vec<FakeMx>) {
        start_mx(vec![
            (
                &self.mx_ip(),
                Script {
                    tls: Some(policy_server::identity(certificate_name)),
                    ..Script::default()
                },
            ),
            (&self.reports_mx_ip(), Script::default()),
        ])
    }

    fn submit(&self, relay: &TestRelay) -> String {
        submit(
            relay,
            "app@sender.test",
            &[&format!("user@{}", self.domain)],
            "Subject: protected\r\n\r\nhello\r\n",
        )
    }
}

/// The relay's configuration: the test CA trusted, reports every 10 s.
fn relay_config(dns: &TestDns, port: u16, extra: &str) -> String {
    config(
        dns,
        port,
        &format!("tls_ca_file = \"{}\"", policy_server::ca_file().display()),
        &format!(
            "[tls_rpt]\nenabled = true\ninterval = \"10s\"\norganization = \"Example Inc\"\n\
             contact = \"tlsrpt@sender.test\"\nfrom = \"{FROM}\"\n{extra}"
        ),
    )
}

fn wait_for_sent(relay: &TestRelay, id: &str) {
    relay.wait_for_log(&format!("{id}: to=<"));
    let deadline = Instant::now() + WAIT;
    while !relay
        .log_lines(&format!("{id}: to=<"))
        .iter()
        .any(|line| line.contains("status=sent"))
    {
        assert!(
            Instant::now() < deadline,
            "{id} not sent:\n{}",
            relay.logs_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn gunzip(compressed: &[u8]) -> Value {
    let mut json = String::new();
    flate2::read::GzDecoder::new(compressed)
        .read_to_string(&mut json)
        .expect("the report is gzip");
    serde_json::from_str(&json).expect("the report is JSON")
}

/// The JSON report of a mailed report, after checking the message is one
/// (RFC 8460 §5.3).
fn mailed_report(site: &Site, received: &Received) -> Value {
    assert!(
        received.mail_from.contains(&format!("<{FROM}>")),
        "{}",
        received.mail_from
    );
    assert!(
        received.rcpt_to[0].contains(&format!("<{}>", site.reports_address())),
        "{:?}",
        received.rcpt_to
    );
    let message = MessageParser::new().parse(&received.data).expect("parses");
    let header = |name: &str| {
        message
            .header_raw(name)
            .unwrap_or_else(|| panic!("no {name} in the report"))
            .trim()
            .to_owned()
    };
    assert_eq!(header("TLS-Report-Domain"), site.domain);
    assert_eq!(header("TLS-Report-Submitter"), SUBMITTER);
    let subject = message.subject().expect("a subject");
    assert!(
        subject.starts_with(&format!(
            "Report Domain: {} Submitter: {SUBMITTER} Report-ID: <",
            site.domain
        )),
        "{subject}"
    );
    let content_type = message.content_type().expect("Content-Type");
    assert_eq!(
        (content_type.ctype(), content_type.subtype()),
        ("multipart", Some("report"))
    );
    assert_eq!(content_type.attribute("report-type"), Some("tlsrpt"));
    let attachment = message.attachment(0).expect("the report is attached");
    let attachment_type = attachment.content_type().expect("its Content-Type");
    assert_eq!(
        (attachment_type.ctype(), attachment_type.subtype()),
        ("application", Some("tlsrpt+gzip"))
    );
    let name = attachment.attachment_name().expect("a file name");
    let parts: Vec<&str> = name.trim_end_matches(".json.gz").split('!').collect();
    assert!(name.ends_with(".json.gz"), "{name}");
    assert_eq!(&parts[..2], [SUBMITTER, site.domain.as_str()], "{name}");
    assert!(parts[2].parse::<u64>().unwrap() < parts[3].parse::<u64>().unwrap());
    gunzip(attachment.contents())
}

/// The one policy of a report (in `enforce` mode), after checking the
/// report's own fields.
fn only_policy(report: &Value, site: &Site) -> Value {
    only_policy_in(report, site, "enforce")
}

fn only_policy_in(report: &Value, site: &Site, mode: &str) -> Value {
    assert_eq!(report["organization-name"], "Example Inc");
    assert_eq!(report["contact-info"], "tlsrpt@sender.test");
    assert!(
        report["report-id"]
            .as_str()
            .is_some_and(|id| id.contains(&site.domain))
    );
    assert!(report["date-range"]["start-datetime"].as_str().is_some());
    assert!(report["date-range"]["end-datetime"].as_str().is_some());
    let policies = report["policies"].as_array().expect("policies");
    assert_eq!(policies.len(), 1, "{report:#}");
    let policy = &policies[0];
    assert_eq!(policy["policy"]["policy-type"], "sts");
    assert_eq!(policy["policy"]["policy-domain"], site.domain.as_str());
    assert_eq!(policy["policy"]["mx-host"][0], site.mx_host().as_str());
    assert!(
        policy["policy"]["policy-string"]
            .as_array()
            .unwrap()
            .contains(&Value::from(format!("mode: {mode}"))),
        "{policy:#}"
    );
    policy.clone()
}

#[test]
fn a_domain_gets_its_report_by_mail_signed_and_counted() {
    let site = Site::new(1);
    let keys = tempfile::tempdir().unwrap();
    let key = make_key(keys.path(), SUBMITTER, "tlsrpt", None);
    let (port, servers) = site.mx_servers(&site.mx_host());
    // RFC 8460 §5.3: the report is delivered although the reports' domain
    // has an enforced MTA-STS policy that its MX (no STARTTLS) fails.
    let (zone, _reports_policy_host) =
        site.with_enforced_reports_domain(site.zone(&format!("mailto:{}", site.reports_address())));
    let dns = TestDns::start(zone);
    let _policy_host = site.policy_server();
    let relay = TestRelay::start(&relay_config(
        &dns,
        port,
        &dkim_block(SUBMITTER, "tlsrpt", &key),
    ));
    let id = site.submit(&relay);
    wait_for_sent(&relay, &id);

    let reports = expect_messages(&relay, &servers[1], 1, REPORT_WITHIN);
    assert!(
        !reports[0].tls,
        "delivered without STARTTLS, against the policy"
    );
    let report = mailed_report(&site, &reports[0]);
    let policy = only_policy(&report, &site);
    assert_eq!(
        policy["summary"]["total-successful-session-count"], 1,
        "{report:#}"
    );
    assert_eq!(
        policy["summary"]["total-failure-session-count"], 0,
        "{report:#}"
    );
    assert_eq!(
        verify(&reports[0].data, &[&key]),
        [passes(SUBMITTER, "tlsrpt")]
    );
    // RFC 8460 §5.3: the report's own fields are among the signed ones.
    let signature = MessageParser::new()
        .parse(&reports[0].data)
        .and_then(|message| message.header_raw("DKIM-Signature").map(str::to_owned))
        .expect("a DKIM-Signature")
        .replace(['\r', '\n', '\t', ' '], "");
    assert!(
        signature.contains("TLS-Report-Domain:TLS-Report-Submitter"),
        "{signature}"
    );
    let line = relay.wait_for_log("tls-rpt: report ");
    assert!(
        line.contains(&site.domain) && line.contains("queued as"),
        "{line}"
    );
}

#[test]
fn a_domain_gets_its_report_posted_over_https_until_taken() {
    let site = Site::new(2);
    let (port, _servers) = site.mx_servers(&site.mx_host());
    let dns = TestDns::start(site.zone(&format!("https://{}/v1", site.https_host())));
    let _policy_host = site.policy_server();
    let receiver = ReportReceiver::start(&site.https_ip(), &site.https_host());
    // The first post is refused: it is made again.
    receiver.answer(503);
    let relay = TestRelay::start(&relay_config(&dns, port, ""));
    let id = site.submit(&relay);
    wait_for_sent(&relay, &id);

    receiver.wait_for_requests(1, REPORT_WITHIN);
    receiver.answer(200);
    relay.wait_for_log("failed: 503");
    let posts = receiver.wait_for_requests(2, WAIT);
    assert_eq!(posts[0].body, posts[1].body, "the same report again");
    let post = &posts[1];
    assert_eq!((post.method.as_str(), post.path.as_str()), ("POST", "/v1"));
    assert_eq!(post.headers["content-type"], "application/tlsrpt+gzip");
    let report = gunzip(&post.body);
    let policy = only_policy(&report, &site);
    assert_eq!(
        policy["summary"]["total-successful-session-count"], 1,
        "{report:#}"
    );
    relay.wait_for_log(&format!("posted to https://{}/v1: 200", site.https_host()));
}

#[test]
fn failed_sessions_are_reported_with_their_result_type() {
    let site = Site::new(3);
    // The MX's certificate names another host: the policy refuses it.
    let (port, servers) = site.mx_servers("other.rpt.test");
    let dns = TestDns::start(site.zone(&format!("mailto:{}", site.reports_address())));
    let _policy_host = site.policy_server();
    let relay = TestRelay::start(&relay_config(&dns, port, ""));
    let id = site.submit(&relay);
    relay.wait_for_log(&format!("{id}: to=<user@{}>", site.domain));

    let reports = expect_messages(&relay, &servers[1], 1, REPORT_WITHIN);
    let report = mailed_report(&site, &reports[0]);
    let policy = only_policy(&report, &site);
    let failures = policy["summary"]["total-failure-session-count"]
        .as_u64()
        .unwrap();
    assert!(failures >= 1, "{report:#}");
    assert_eq!(policy["summary"]["total-successful-session-count"], 0);
    let details = policy["failure-details"]
        .as_array()
        .expect("failure details");
    let detail = &details[0];
    assert_eq!(
        detail["result-type"], "certificate-host-mismatch",
        "{report:#}"
    );
    assert_eq!(detail["receiving-mx-hostname"], site.mx_host().as_str());
    assert_eq!(detail["receiving-ip"], site.mx_ip().as_str());
    let counted: u64 = details
        .iter()
        .map(|detail| detail["failed-session-count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, failures, "{report:#}");
    assert!(servers[0].messages().is_empty());
}

#[test]
fn testing_mode_counts_what_enforcement_would_refuse() {
    let site = Site::new(6);
    // No STARTTLS: a policy in testing mode lets the mail go, and the
    // report says what enforcing it would have refused.
    let (port, servers) = start_mx(vec![
        (&site.mx_ip(), Script::default()),
        (&site.reports_mx_ip(), Script::default()),
    ]);
    let dns = TestDns::start(site.zone(&format!("mailto:{}", site.reports_address())));
    let _policy_host = site.policy_server_in("testing");
    let relay = TestRelay::start(&relay_config(&dns, port, ""));
    let id = site.submit(&relay);
    wait_for_sent(&relay, &id);

    let reports = expect_messages(&relay, &servers[1], 1, REPORT_WITHIN);
    let report = mailed_report(&site, &reports[0]);
    let policy = only_policy_in(&report, &site, "testing");
    assert_eq!(
        policy["summary"]["total-successful-session-count"], 0,
        "{report:#}"
    );
    assert_eq!(
        policy["summary"]["total-failure-session-count"], 1,
        "{report:#}"
    );
    let detail = &policy["failure-details"][0];
    assert_eq!(
        detail["result-type"], "starttls-not-supported",
        "{report:#}"
    );
    assert_eq!(detail["failed-session-count"], 1);
    assert_eq!(detail["receiving-mx-hostname"], site.mx_host().as_str());
    assert_eq!(servers[0].messages().len(), 1, "the mail was delivered");
}

#[test]
fn a_policy_host_with_the_wrong_certificate_is_reported_as_sts_webpki_invalid() {
    let site = Site::new(7);
    let (port, servers) = site.mx_servers(&site.mx_host());
    let dns = TestDns::start(site.zone(&format!("mailto:{}", site.reports_address())));
    // The policy host's certificate names another host: no policy can be
    // had, and the mail goes as if the domain had none (RFC 8461 §5).
    let policy = format!(
        "version: STSv1\r\nmode: enforce\r\nmx: {}\r\nmax_age: 86400\r\n",
        site.mx_host()
    );
    let _policy_host = PolicyServer::start(
        &format!("127.0.93.{}", site.number),
        "elsewhere.rpt.test",
        policy_response(&policy),
    );
    let relay = TestRelay::start(&relay_config(&dns, port, ""));
    let id = site.submit(&relay);
    wait_for_sent(&relay, &id);

    let reports = expect_messages(&relay, &servers[1], 1, REPORT_WITHIN);
    let report = mailed_report(&site, &reports[0]);
    let policies = report["policies"].as_array().expect("policies");
    assert_eq!(policies.len(), 1, "{report:#}");
    let policy = &policies[0];
    assert_eq!(
        policy["policy"]["policy-type"], "no-policy-found",
        "{report:#}"
    );
    assert_eq!(policy["policy"]["policy-domain"], site.domain.as_str());
    assert_eq!(
        policy["summary"]["total-failure-session-count"], 1,
        "{report:#}"
    );
    let detail = &policy["failure-details"][0];
    assert_eq!(detail["result-type"], "sts-webpki-invalid", "{report:#}");
    assert!(
        detail["additional-information"]
            .as_str()
            .is_some_and(|text| text.contains("certificate")),
        "{report:#}"
    );
}

#[test]
fn counts_committed_before_a_kill_are_reported_after_the_restart() {
    let site = Site::new(4);
    let (port, servers) = site.mx_servers(&site.mx_host());
    // No answer for the report record yet: the report cannot be made
    // before the kill.
    let dns = TestDns::start(
        site.base_zone()
            .servfail(&format!("_smtp._tls.{}", site.domain)),
    );
    let _policy_host = site.policy_server();
    let mut relay = TestRelay::start_with_env(
        &relay_config(&dns, port, ""),
        &[("RUST_LOG", "info,relayq::tls_rpt=debug")],
    );
    let id = site.submit(&relay);
    wait_for_sent(&relay, &id);
    relay.wait_for_log("tls-rpt: counts of 1 domains committed");
    relay.kill();
    assert!(servers[1].messages().is_empty());

    dns.set_zone(site.zone(&format!("mailto:{}", site.reports_address())));
    relay.launch();
    let reports = expect_messages(&relay, &servers[1], 1, REPORT_WITHIN);
    let report = mailed_report(&site, &reports[0]);
    let policy = only_policy(&report, &site);
    assert_eq!(
        policy["summary"]["total-successful-session-count"], 1,
        "{report:#}"
    );
    assert_eq!(servers[0].messages().len(), 1, "delivered once");
}

#[test]
fn counts_are_committed_within_seconds_not_only_when_a_window_ends() {
    let site = Site::new(5);
    let (port, _servers) = site.mx_servers(&site.mx_host());
    let dns = TestDns::start(site.zone(&format!("mailto:{}", site.reports_address())));
    let _policy_host = site.policy_server();
    // A window of a day: only the periodic commit can store the counts
    // before the kill.
    let config = relay_config(&dns, port, "").replace("interval = \"10s\"", "interval = \"24h\"");
    let mut relay =
        TestRelay::start_with_env(&config, &[("RUST_LOG", "info,relayq::tls_rpt=debug")]);
    let id = site.submit(&relay);
    wait_for_sent(&relay, &id);
    relay.wait_for_log("tls-rpt: counts of 1 domains committed");
    relay.kill();

    // What the spool holds after the kill: the day's counts of the domain.
    let spool = Spool::open(SpoolOptions::new(relay.spool_path())).expect("open the spool");
    let stored = spool
        .records(
            RecordTable::new("tls_rpt_counts"),
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            10,
        )
        .expect("read the counts");
    assert_eq!(stored.len(), 1, "one domain, one window");
    let (key, value) = &stored[0];
    let start = u64::from_be_bytes(key[..8].try_into().unwrap());
    let end = u64::from_be_bytes(key[8..16].try_into().unwrap());
    assert_eq!((end - start, start % 86_400), (86_400, 0), "a UTC day");
    assert_eq!(&key[16..], site.domain.as_bytes());
    let policies: Value = serde_json::from_slice(value).expect("JSON counts");
    assert_eq!(policies[0]["summary"]["total-successful-session-count"], 1);
    assert_eq!(policies[0]["policy"]["policy-domain"], site.domain.as_str());
}
