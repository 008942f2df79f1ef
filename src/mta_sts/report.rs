//! What a TLS report (RFC 8460) says of MTA-STS: the `policy` member for a
//! policy (§4.4), and the result type of a policy that could not be had
//! (§4.3.2.1). Pure.

use mail_auth::report::tlsrpt::{PolicyDetails, PolicyType, ResultType};

use super::ActivePolicy;
use super::http::FetchError;
use super::policy::Policy;
use crate::http::HttpError;

impl ActivePolicy {
    /// The `policy` member of this policy's entry in a report.
    pub fn report_details(&self) -> PolicyDetails {
        report_details(&self.domain, &self.policy)
    }
}

/// RFC 8460 §4.4 for an MTA-STS policy: `policy-string` is the policy
/// file's lines, `mx-host` its `mx` patterns.
pub(super) fn report_details(domain: &str, policy: &Policy) -> PolicyDetails {
    let mut lines = Vec::with_capacity(policy.mx.len() + 3);
    lines.push("version: STSv1".to_owned());
    lines.push(format!("mode: {}", policy.mode.as_str()));
    lines.extend(policy.mx.iter().map(|mx| format!("mx: {mx}")));
    lines.push(format!("max_age: {}", policy.max_age.as_secs()));
    PolicyDetails {
        policy_type: PolicyType::Sts,
        policy_string: lines,
        policy_domain: domain.to_owned(),
        mx_host: policy.mx.clone(),
    }
}

/// Why a domain's policy could not be had, in RFC 8460's terms.
#[derive(Debug)]
pub(super) enum Unavailable {
    /// The policy host's name did not resolve.
    Lookup,
    Fetch(FetchError),
    /// The file did not parse as a policy.
    Invalid,
}

impl Unavailable {
    pub(super) fn result_type(&self) -> ResultType {
        match self {
            Unavailable::Fetch(FetchError::Http(HttpError::Certificate(_))) => {
                ResultType::StsWebpkiInvalid
            }
            Unavailable::Fetch(FetchError::ContentType(_) | FetchError::NotText)
            | Unavailable::Invalid => ResultType::StsPolicyInvalid,
            Unavailable::Lookup | Unavailable::Fetch(_) => ResultType::StsPolicyFetchError,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mta_sts::policy::parse_policy;

    #[test]
    fn a_policy_is_reported_as_its_file_lines() {
        let text = "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.example.net\nmax_age: 604800\n";
        let active = ActivePolicy {
            domain: "example.com".into(),
            policy: parse_policy(text).unwrap(),
        };
        let details = active.report_details();
        assert_eq!(details.policy_type, PolicyType::Sts);
        assert_eq!(details.policy_domain, "example.com");
        assert_eq!(
            details.policy_string,
            [
                "version: STSv1",
                "mode: enforce",
                "mx: mx1.example.com",
                "mx: *.example.net",
                "max_age: 604800"
            ]
        );
        assert_eq!(details.mx_host, ["mx1.example.com", "*.example.net"]);
    }

    #[test]
    fn unavailable_policies_have_their_result_types() {
        let certificate = FetchError::Http(HttpError::Certificate("expired".into()));
        assert_eq!(
            Unavailable::Fetch(certificate).result_type(),
            ResultType::StsWebpkiInvalid
        );
        let refused = FetchError::Http(HttpError::Connect("refused".into()));
        assert_eq!(
            Unavailable::Fetch(refused).result_type(),
            ResultType::StsPolicyFetchError
        );
        assert_eq!(
            Unavailable::Fetch(FetchError::Status(404)).result_type(),
            ResultType::StsPolicyFetchError
        );
        assert_eq!(
            Unavailable::Fetch(FetchError::ContentType("text/html".into())).result_type(),
            ResultType::StsPolicyInvalid
        );
        assert_eq!(
            Unavailable::Invalid.result_type(),
            ResultType::StsPolicyInvalid
        );
        assert_eq!(
            Unavailable::Lookup.result_type(),
            ResultType::StsPolicyFetchError
        );
    }
}
