//! What delivery finds, in RFC 8460's terms: the result type (§4.3) of a
//! certificate that did not verify. Pure.

use mail_auth::report::tlsrpt::ResultType;
use rustls::CertificateError;

/// The result type of a server certificate that did not verify, from the
/// verifier's error (RFC 8460 §4.3.1).
pub fn certificate_failure(error: &rustls::Error) -> ResultType {
    match error {
        rustls::Error::InvalidCertificate(problem) => match problem {
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => ResultType::CertificateExpired,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                ResultType::CertificateHostMismatch
            }
            CertificateError::UnknownIssuer
            | CertificateError::BadSignature
            | CertificateError::Revoked
            | CertificateError::InvalidPurpose
            | CertificateError::InvalidPurposeContext { .. } => ResultType::CertificateNotTrusted,
            _ => ResultType::ValidationFailure,
        },
        _ => ResultType::ValidationFailure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_have_their_result_types() {
        let invalid = rustls::Error::InvalidCertificate;
        assert_eq!(
            certificate_failure(&invalid(CertificateError::Expired)),
            ResultType::CertificateExpired
        );
        assert_eq!(
            certificate_failure(&invalid(CertificateError::NotValidForName)),
            ResultType::CertificateHostMismatch
        );
        assert_eq!(
            certificate_failure(&invalid(CertificateError::UnknownIssuer)),
            ResultType::CertificateNotTrusted
        );
        assert_eq!(
            certificate_failure(&invalid(CertificateError::BadEncoding)),
            ResultType::ValidationFailure
        );
        assert_eq!(
            certificate_failure(&rustls::Error::HandshakeNotComplete),
            ResultType::ValidationFailure
        );
    }
}
