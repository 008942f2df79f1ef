//! TLS reporting (RFC 8460) of sessions under DANE (RFC 7672): with
//! `[delivery] dane = true` against the signed test root, an MX host whose
//! certificate does not match its TLSA records counts a failure of its
//! `tlsa` policy, and the host that matches counts a success; the report
//! goes to the `rua` of the domain's `_smtp._tls` record.

use std::io::Read;
use std::time::Duration;

use mail_parser::MessageParser;
use serde_json::Value;

use crate::common::TestRelay;
use crate::common::dane::*;
use crate::common::delivery::{expect_messages, start_mx, submit};
use crate::common::fake_mx::{Script, test_ca};

const REPORT_WITHIN: Duration = Duration::from_secs(45);

#[test]
fn dane_sessions_are_reported_under_their_tlsa_records() {
    let bad_ip = "127.0.95.1";
    let good_ip = "127.0.95.2";
    let reports_ip = "127.0.95.9";
    let expected = test_ca().0;
    // The first MX presents another key than its TLSA record names.
    let other = ca_issued("mx1.rpt.dane.test");
    let (port, servers) = start_mx(vec![
        (bad_ip, tls_script(other)),
        (good_ip, tls_script(expected.clone())),
        (reports_ip, Script::default()),
    ]);
    let record = dane_ee(&expected);
    let dns = zones("127.0.95.99")
        .mx("rpt.dane.test", 10, "mx1.rpt.dane.test")
        .mx("rpt.dane.test", 20, "mx2.rpt.dane.test")
        .a("mx1.rpt.dane.test", bad_ip)
        .a("mx2.rpt.dane.test", good_ip)
        .tlsa(&format!("_{port}._tcp.mx1.rpt.dane.test"), 3, 1, 1, &record)
        .tlsa(&format!("_{port}._tcp.mx2.rpt.dane.test"), 3, 1, 1, &record)
        .txt(
            "_smtp._tls.rpt.dane.test",
            "v=TLSRPTv1; rua=mailto:tls@reports.dane.test",
        )
        .mx("reports.dane.test", 10, "mx.reports.dane.test")
        .a("mx.reports.dane.test", reports_ip)
        .start();
    let anchors = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(&relay_config(
        &dns,
        anchors.path(),
        port,
        "[tls_rpt]\nenabled = true\ninterval = \"10s\"\norganization = \"Example Inc\"\n",
    ));
    let id = submit(
        &relay,
        "app@sender.test",
        &["user@rpt.dane.test"],
        "Subject: dane\r\n\r\n",
    );
    let line = wait_for_delivery(&relay, &id, "sent");
    assert!(line.contains("tls=dane"), "{line}");

    let reports = expect_messages(&relay, &servers[2], 1, REPORT_WITHIN);
    let message = MessageParser::new()
        .parse(&reports[0].data)
        .expect("parses");
    assert_eq!(
        message.header_raw("TLS-Report-Domain").map(str::trim),
        Some("rpt.dane.test")
    );
    let attachment = message.attachment(0).expect("the report is attached");
    let mut json = String::new();
    flate2::read::GzDecoder::new(attachment.contents())
        .read_to_string(&mut json)
        .expect("gzip");
    let report: Value = serde_json::from_str(&json).expect("JSON");
    let policies = report["policies"].as_array().expect("policies");
    let of_host = |host: &str| {
        policies
            .iter()
            .find(|policy| policy["policy"]["mx-host"][0] == host)
            .unwrap_or_else(|| panic!("no policy of {host}: {report:#}"))
    };
    let record_text = format!(
        "3 1 1 {}",
        record
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>()
    );
    for host in ["mx1.rpt.dane.test", "mx2.rpt.dane.test"] {
        let policy = &of_host(host)["policy"];
        assert_eq!(policy["policy-type"], "tlsa", "{report:#}");
        assert_eq!(policy["policy-domain"], "rpt.dane.test");
        assert_eq!(policy["policy-string"][0], record_text.as_str());
    }
    let bad = of_host("mx1.rpt.dane.test");
    assert_eq!(
        bad["summary"]["total-successful-session-count"], 0,
        "{report:#}"
    );
    assert_eq!(
        bad["summary"]["total-failure-session-count"], 1,
        "{report:#}"
    );
    let detail = &bad["failure-details"][0];
    assert_eq!(
        detail["result-type"], "certificate-not-trusted",
        "{report:#}"
    );
    assert_eq!(detail["receiving-ip"], bad_ip);
    let good = of_host("mx2.rpt.dane.test");
    assert_eq!(
        good["summary"]["total-successful-session-count"], 1,
        "{report:#}"
    );
    assert_eq!(
        good["summary"]["total-failure-session-count"], 0,
        "{report:#}"
    );
}
