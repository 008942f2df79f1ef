//! The one outbound HTTP client (webhooks, MTA-STS policy files): reqwest
//! over rustls configured by relayq itself (the `ring` provider, the trust
//! anchors the caller chooses), with host names resolved by relayq's own
//! resolver (the `[dns]` settings, absolute names), no proxy from the
//! environment, no redirects, HTTP/1.1, and every response body read up to a
//! limit. A request's whole exchange, connecting included, has one deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use rustls::ClientConfig;

use crate::dns::MxResolver;

/// Where a client gets the resolver for each request: the live one, so a
/// reload's `[dns]` applies to requests made after it.
pub type ResolverSource = Arc<dyn Fn() -> MxResolver + Send + Sync>;

/// A client. Cheap to clone: clones share connections.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
}

/// What a request got back: the status, the media type and the body (at
/// most the caller's limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The `Content-Type` field as sent, or empty.
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("not a usable URL: {0}")]
    Url(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The server's certificate did not verify (for the host name, against
    /// the trust anchors, or in time).
    #[error("certificate not accepted: {0}")]
    Certificate(String),
    #[error("response body larger than {0} octets")]
    TooLarge(usize),
    #[error("{0}")]
    Other(String),
}

/// How a client finds a host's addresses.
pub enum Resolution {
    /// Through relayq's resolver, taken afresh for each connection.
    Resolver(ResolverSource),
    /// One host's addresses, already resolved; any other host is refused.
    Pinned {
        host: String,
        addresses: Vec<std::net::IpAddr>,
    },
}

impl HttpClient {
    /// A client verifying servers with `tls` (its ALPN list is left as
    /// given: HTTP/1.1 is spoken) and finding hosts by `resolution`.
    /// `connect_timeout` bounds the connection attempts of one request.
    pub fn new(
        tls: &ClientConfig,
        resolution: Resolution,
        connect_timeout: Duration,
    ) -> anyhow::Result<HttpClient> {
        let builder = reqwest::Client::builder();
        let builder = match resolution {
            Resolution::Resolver(source) => builder.dns_resolver(LiveResolver(source)),
            Resolution::Pinned { host, addresses } => {
                let addresses: Vec<SocketAddr> = addresses
                    .into_iter()
                    .map(|address| SocketAddr::new(address, 0))
                    .collect();
                builder
                    .dns_resolver(NoResolver)
                    .resolve_to_addrs(&host, &addresses)
            }
        };
        let client = builder
            .tls_backend_preconfigured(tls.clone())
            .no_proxy()
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .user_agent(concat!("relayq/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(HttpClient { client })
    }

    /// `GET url`, accepting `accept`, within `limit`; the body is read up to
    /// `max_body` octets (more is an error).
    pub async fn get(
        &self,
        url: &str,
        accept: &str,
        limit: Duration,
        max_body: usize,
    ) -> Result<Response, HttpError> {
        let request = self.client.get(url).header(reqwest::header::ACCEPT, accept);
        self.send(request, limit, max_body).await
    }

    /// `POST url` with `body` of `content_type` and extra `headers`, within
    /// `limit`; the response body is read up to `max_body` octets.
    pub async fn post(
        &self,
        url: &str,
        content_type: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
        limit: Duration,
        max_body: usize,
    ) -> Result<Response, HttpError> {
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        self.send(request, limit, max_body).await
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        limit: Duration,
        max_body: usize,
    ) -> Result<Response, HttpError> {
        let exchange = async {
            let mut response = request.send().await.map_err(classify)?;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            if response
                .content_length()
                .is_some_and(|length| length > max_body as u64)
            {
                return Err(HttpError::TooLarge(max_body));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(classify)? {
                if body.len() + chunk.len() > max_body {
                    return Err(HttpError::TooLarge(max_body));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Response {
                status,
                content_type,
                body,
            })
        };
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| HttpError::Timeout(limit))?
    }
}

/// reqwest's errors as ours, with the whole chain of causes in the text
/// (reqwest's own message alone says only "error sending request").
fn classify(error: reqwest::Error) -> HttpError {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if error.is_builder() {
        HttpError::Url(text)
    } else if is_certificate_error(&error) {
        HttpError::Certificate(text)
    } else if error.is_connect() {
        HttpError::Connect(text)
    } else if error.is_timeout() {
        HttpError::Other(format!("timed out: {text}"))
    } else {
        HttpError::Other(text)
    }
}

/// Whether rustls refused the server's certificate somewhere in the chain
/// of causes.
fn is_certificate_error(error: &reqwest::Error) -> bool {
    matches!(
        rustls_error(error, 0),
        Some(rustls::Error::InvalidCertificate(_))
    )
}

/// The rustls error among `error`'s causes. An `io::Error` hides the error
/// it carries from `source()` (and tokio-rustls's may carry another
/// `io::Error`), so each one is opened. `depth` bounds the walk.
fn rustls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
    depth: usize,
) -> Option<&'a rustls::Error> {
    if depth > 16 {
        return None;
    }
    if let Some(found) = error.downcast_ref::<rustls::Error>() {
        return Some(found);
    }
    let opened: Option<&'a (dyn std::error::Error + 'static)> = error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .map(|inner| inner as &(dyn std::error::Error + 'static));
    opened
        .and_then(|inner| rustls_error(inner, depth + 1))
        .or_else(|| {
            error
                .source()
                .and_then(|source| rustls_error(source, depth + 1))
        })
}

/// Refuses every name: a pinned client knows its one host's addresses.
struct NoResolver;

impl Resolve for NoResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(
            async move { Err(format!("{host}: not the host this client was made for").into()) },
        )
    }
}

/// reqwest's name resolution through relayq's resolver.
struct LiveResolver(ResolverSource);

impl Resolve for LiveResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = (self.0)();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses = resolver
                .host_addresses(&host)
                .await
                .map_err(|error| Box::new(error) as Box<dyn std::error::Error + Send + Sync>)?;
            // Port 0: reqwest puts the URL's (or the scheme's) port in.
            let addrs: Addrs = Box::new(
                addresses
                    .into_iter()
                    .map(|address| SocketAddr::new(address, 0))
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
            Ok(addrs)
        })
    }
}
