//! The HTTPS GET of a policy file (RFC 8461 §3.3), through relayq's one
//! HTTP client (`crate::http`): the certificate verified for
//! `mta-sts.DOMAIN`, no redirects followed, the response bounded in size and
//! time. [`check`] (pure) says whether a response carries a policy.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use crate::http::{HttpClient, HttpError, Resolution, Response};

/// RFC 8461 §3.3 suggests senders limit policy bodies to 64 KiB.
pub const MAX_BODY: usize = 64 * 1024;
/// The path of the policy file (RFC 8461 §3.3).
pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";
/// How long connecting to the policy host may take, of the fetch's whole
/// time, so that an address that drops packets leaves time for the next.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a policy file could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("setting up the HTTPS client: {0}")]
    Client(String),
    #[error("HTTP status {0} (redirects are not followed)")]
    Redirect(u16),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("Content-Type {0:?} is not text/plain")]
    ContentType(String),
    #[error("policy is not UTF-8")]
    NotText,
}

/// GETs the policy file from `host` (`mta-sts.DOMAIN`) at `addresses`
/// (already resolved), all within `limit`, and returns its text once the
/// status (200) and media type (text/plain) are right.
pub async fn fetch(
    host: &str,
    addresses: &[IpAddr],
    tls: Arc<ClientConfig>,
    limit: Duration,
) -> Result<String, FetchError> {
    let resolution = Resolution::Pinned {
        host: host.to_owned(),
        addresses: addresses.to_vec(),
    };
    let client = HttpClient::new(&tls, resolution, CONNECT_TIMEOUT.min(limit))
        .map_err(|error| FetchError::Client(format!("{error:#}")))?;
    let url = format!("https://{host}{POLICY_PATH}");
    let response = client.get(&url, "text/plain", limit, MAX_BODY).await?;
    check(response)
}

/// A 200 response with a text/plain body, as text.
pub fn check(response: Response) -> Result<String, FetchError> {
    match response.status {
        200 => {}
        status @ 300..=399 => return Err(FetchError::Redirect(status)),
        status => return Err(FetchError::Status(status)),
    }
    let media_type = response.content_type.split(';').next().unwrap_or_default();
    if !media_type.trim().eq_ignore_ascii_case("text/plain") {
        return Err(FetchError::ContentType(response.content_type));
    }
    String::from_utf8(response.body).map_err(|_| FetchError::NotText)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, content_type: &str, body: &str) -> Response {
        Response {
            status,
            content_type: content_type.to_owned(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn only_a_plain_text_200_is_a_policy() {
        assert_eq!(
            check(response(200, "text/plain; charset=utf-8", "version: STSv1")).unwrap(),
            "version: STSv1"
        );
        assert_eq!(
            check(response(301, "text/plain", "")),
            Err(FetchError::Redirect(301))
        );
        assert_eq!(
            check(response(404, "text/plain", "")),
            Err(FetchError::Status(404))
        );
        assert!(matches!(
            check(response(200, "text/html", "")),
            Err(FetchError::ContentType(_))
        ));
        let not_text = Response {
            body: vec![0xff, 0xfe],
            ..response(200, "text/plain", "")
        };
        assert_eq!(check(not_text), Err(FetchError::NotText));
    }
}
