//! One aggregate report (RFC 8460 §4): mail-auth's `TlsReport` made from a
//! domain's stored counts, its JSON (mail-auth's serialization) and the
//! gzip of it that every destination gets. Pure.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use mail_auth::report::tlsrpt::{DateRange, Policy, TlsReport};

use super::counts::Window;

/// The JSON report is posted and attached compressed (RFC 8460 §5.3).
pub const MEDIA_TYPE: &str = "application/tlsrpt+gzip";

/// Who reports, on what.
#[derive(Debug, Clone, Copy)]
pub struct Reporter<'a> {
    pub organization: &'a str,
    pub contact: &'a str,
    /// The submitter's domain: the domain of `tls_rpt.from`.
    pub submitter: &'a str,
}

/// The report on `domain`'s sessions in `window`.
pub fn build(
    reporter: Reporter<'_>,
    window: Window,
    domain: &str,
    policies: Vec<Policy>,
) -> TlsReport {
    TlsReport {
        organization_name: Some(reporter.organization.to_owned()),
        date_range: date_range(window),
        contact_info: Some(reporter.contact.to_owned()),
        report_id: report_id(window, domain, reporter.submitter),
        policies,
    }
}

/// RFC 8460 §4.4 writes a day's range as `00:00:00Z` to `23:59:59Z`: the
/// end is the window's last second.
fn date_range(window: Window) -> DateRange {
    let start = i64::try_from(window.start).unwrap_or(i64::MAX);
    let end = i64::try_from(window.end.saturating_sub(1).max(window.start)).unwrap_or(i64::MAX);
    DateRange::from_timestamps(start, end)
}

/// `START.END.DOMAIN@SUBMITTER`: the same for every sending of one report
/// (a destination that gets it twice, after a crash, can tell), different
/// for every window and domain, and in the `id-left@id-right` form the
/// `Report-ID:` of the subject (RFC 8460 §5.3) takes.
pub fn report_id(window: Window, domain: &str, submitter: &str) -> String {
    format!("{}.{}.{domain}@{submitter}", window.start, window.end)
}

/// The report's JSON (RFC 8460 §4.4): mail-auth's serialization, less the
/// members it writes as `null` for an optional field without a value
/// (`receiving-mx-helo` and the like): RFC 8460 gives each a string or
/// number type, and leaves an unknown one out.
pub fn json(report: &TlsReport) -> String {
    let mut value = serde_json::to_value(report).expect("a report serializes");
    drop_nulls(&mut value);
    value.to_string()
}

fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(members) => {
            members.retain(|_, member| !member.is_null());
            members.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// The report's [`json`], compressed with gzip.
pub fn gzip(report: &TlsReport) -> Vec<u8> {
    let json = json(report);
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(json.len() / 4 + 64),
        Compression::default(),
    );
    encoder
        .write_all(json.as_bytes())
        .and_then(|()| encoder.finish())
        .expect("gzip into memory does not fail")
}

/// Sessions and failures a report counts, for log lines.
pub fn totals(report: &TlsReport) -> (u64, u64) {
    report
        .policies
        .iter()
        .fold((0, 0), |(success, failure), policy| {
            (
                success + u64::from(policy.summary.total_success),
                failure + u64::from(policy.summary.total_failure),
            )
        })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::GzDecoder;
    use mail_auth::report::tlsrpt::{FailureDetails, PolicyDetails, PolicyType, ResultType};
    use serde_json::Value;

    use super::*;
    use crate::tls_rpt::counts::{self, SessionResult};

    fn sample() -> TlsReport {
        let policy = PolicyDetails {
            policy_type: PolicyType::Sts,
            policy_string: vec![
                "version: STSv1".into(),
                "mode: enforce".into(),
                "mx: mx.example.com".into(),
                "max_age: 86400".into(),
            ],
            policy_domain: "example.com".into(),
            mx_host: vec!["mx.example.com".into()],
        };
        let mut policies = Vec::new();
        for _ in 0..3 {
            counts::add(&mut policies, &policy, &SessionResult::Success);
        }
        let failure = FailureDetails {
            sending_mta_ip: Some("192.0.2.1".parse().unwrap()),
            receiving_ip: Some("198.51.100.7".parse().unwrap()),
            additional_information: Some("the certificate expired".into()),
            failure_reason_code: Some("X509_V_ERR_CERT_HAS_EXPIRED".into()),
            ..FailureDetails::new(ResultType::CertificateExpired)
                .with_receiving_mx_hostname("mx.example.com")
        };
        counts::add(&mut policies, &policy, &SessionResult::Failure(failure));
        build(
            Reporter {
                organization: "Example Inc",
                contact: "tlsrpt@sender.example",
                submitter: "relay.sender.example",
            },
            Window {
                start: 1_459_468_800,
                end: 1_459_555_200,
            },
            "example.com",
            policies,
        )
    }

    fn unzip(compressed: &[u8]) -> Value {
        let mut json = String::new();
        GzDecoder::new(compressed)
            .read_to_string(&mut json)
            .expect("valid gzip");
        serde_json::from_str(&json).expect("valid JSON")
    }

    fn string<'a>(value: &'a Value, field: &str) -> &'a str {
        value[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} is not a string in {value}"))
    }

    /// RFC 8460 §4.4: the fields, their names and their JSON types.
    #[test]
    fn the_gzip_holds_a_report_with_the_fields_and_types_of_rfc_8460() {
        let report = unzip(&gzip(&sample()));
        assert_eq!(string(&report, "organization-name"), "Example Inc");
        assert_eq!(string(&report, "contact-info"), "tlsrpt@sender.example");
        assert_eq!(
            string(&report, "report-id"),
            "1459468800.1459555200.example.com@relay.sender.example"
        );
        let range = &report["date-range"];
        assert_eq!(string(range, "start-datetime"), "2016-04-01T00:00:00Z");
        assert_eq!(string(range, "end-datetime"), "2016-04-01T23:59:59Z");

        let policies = report["policies"].as_array().expect("policies is an array");
        assert_eq!(policies.len(), 1);
        let policy = &policies[0]["policy"];
        assert_eq!(string(policy, "policy-type"), "sts");
        assert_eq!(string(policy, "policy-domain"), "example.com");
        let lines: Vec<&str> = policy["policy-string"]
            .as_array()
            .expect("policy-string is an array")
            .iter()
            .map(|line| line.as_str().expect("policy-string holds strings"))
            .collect();
        assert_eq!(lines[1], "mode: enforce");
        assert_eq!(policy["mx-host"][0].as_str(), Some("mx.example.com"));

        let summary = &policies[0]["summary"];
        assert_eq!(summary["total-successful-session-count"].as_u64(), Some(3));
        assert_eq!(summary["total-failure-session-count"].as_u64(), Some(1));

        let details = policies[0]["failure-details"]
            .as_array()
            .expect("failure-details is an array");
        assert_eq!(details.len(), 1);
        let detail = &details[0];
        assert_eq!(string(detail, "result-type"), "certificate-expired");
        assert_eq!(string(detail, "sending-mta-ip"), "192.0.2.1");
        assert_eq!(string(detail, "receiving-mx-hostname"), "mx.example.com");
        assert_eq!(string(detail, "receiving-ip"), "198.51.100.7");
        assert_eq!(detail["failed-session-count"].as_u64(), Some(1));
        assert_eq!(
            string(detail, "additional-information"),
            "the certificate expired"
        );
        assert_eq!(
            string(detail, "failure-reason-code"),
            "X509_V_ERR_CERT_HAS_EXPIRED"
        );
        // Every member a report has is one RFC 8460 §4.4 defines.
        for (object, names) in [
            (
                &report,
                &[
                    "organization-name",
                    "date-range",
                    "contact-info",
                    "report-id",
                    "policies",
                ][..],
            ),
            (&policies[0], &["policy", "summary", "failure-details"][..]),
            (
                detail,
                &[
                    "result-type",
                    "sending-mta-ip",
                    "receiving-mx-hostname",
                    "receiving-mx-helo",
                    "receiving-ip",
                    "failed-session-count",
                    "additional-information",
                    "failure-reason-code",
                ][..],
            ),
        ] {
            let keys: Vec<&String> = object.as_object().unwrap().keys().collect();
            assert!(
                keys.iter().all(|key| names.contains(&key.as_str())),
                "unexpected members in {keys:?}"
            );
        }
    }

    #[test]
    fn absent_optional_fields_are_left_out_not_null() {
        let mut report = sample();
        report.policies[0].failure_details[0].sending_mta_ip = None;
        let json = unzip(&gzip(&report));
        let detail = &json["policies"][0]["failure-details"][0];
        assert!(detail.get("sending-mta-ip").is_none(), "{detail}");
        assert!(detail.get("receiving-mx-helo").is_none(), "{detail}");
        assert!(!json.to_string().contains("null"), "{json}");
    }

    #[test]
    fn every_result_type_of_rfc_8460_has_its_name() {
        for (result, name) in [
            (ResultType::StartTlsNotSupported, "starttls-not-supported"),
            (
                ResultType::CertificateHostMismatch,
                "certificate-host-mismatch",
            ),
            (ResultType::CertificateExpired, "certificate-expired"),
            (ResultType::CertificateNotTrusted, "certificate-not-trusted"),
            (ResultType::ValidationFailure, "validation-failure"),
            (ResultType::TlsaInvalid, "tlsa-invalid"),
            (ResultType::DnssecInvalid, "dnssec-invalid"),
            (ResultType::DaneRequired, "dane-required"),
            (ResultType::StsPolicyFetchError, "sts-policy-fetch-error"),
            (ResultType::StsPolicyInvalid, "sts-policy-invalid"),
            (ResultType::StsWebpkiInvalid, "sts-webpki-invalid"),
        ] {
            assert_eq!(serde_json::to_value(result).unwrap(), Value::from(name));
        }
        for (policy, name) in [
            (PolicyType::Sts, "sts"),
            (PolicyType::Tlsa, "tlsa"),
            (PolicyType::NoPolicyFound, "no-policy-found"),
        ] {
            assert_eq!(serde_json::to_value(policy).unwrap(), Value::from(name));
        }
    }

    #[test]
    fn totals_add_every_policy() {
        assert_eq!(totals(&sample()), (3, 1));
    }
}
