//! Entry points for the fuzz targets in `fuzz/` (hidden, not a stable API):
//! the pure parsers that read network or disk input, gathered in one place
//! so the modules they live in can keep their items crate-private.

use std::path::Path;

pub use crate::bounce::{BounceClass, BuiltinRules, Classifier, OperatorRules};
pub use crate::cli::sendmail::{Prepared, ReadError, prepare, read_message};
pub use crate::config::{Config, ConfigError};
pub use crate::control::http::{
    HeadError, MAX_BODY, MAX_HEAD, Request, ResponseHead, head_end, parse_chunk_size,
    parse_request, parse_response, percent_decode, percent_encode,
};
pub use crate::dane::{Tlsa, public_key_info};
pub use crate::dns::{Anchor, TrustAnchorSource};
pub use crate::dsn::{Action, MAX_RETURNED_MESSAGE, Report, ReportedRecipient, build as build_dsn};
pub use crate::maildrop::{
    Dropped, MaildropError, encode as encode_maildrop, parse as parse_maildrop,
};
pub use crate::mta_sts::policy::{parse_policy as parse_sts_policy, policy_id as sts_policy_id};
pub use crate::queue::Lane;
pub use crate::queue::envelope::{
    ENVELOPE_VERSION, Envelope, EnvelopeError, Meta, Notify, Recipient, RecipientStatus, Ret,
};
pub use crate::smtp::auth::Users;
pub use crate::smtp::auth::sasl::{Exchange, Mechanism, Progress, SaslError, start as start_sasl};
pub use crate::smtp::command::{Command, ParseContext, parse as parse_command};
pub use crate::smtp::consumed_headers::{
    ConsumedHeaders, HeaderRefusal, MAX_IDEMPOTENCY_KEY, MAX_META_FIELDS, MAX_META_KEY,
    MAX_META_VALUE, Scan, scan as scan_consumed_headers,
};
pub use crate::smtp::data::{DataReader, LineEndings};
pub use crate::submission::Submission;
pub use crate::tls_rpt::counts::{
    CountKey, MAX_FAILURE_DETAILS, MAX_POLICIES, decode as decode_tls_rpt_counts,
    merge as merge_tls_rpt_counts,
};
pub use crate::tls_rpt::rua::{MAX_DESTINATIONS, Rua, parse as parse_tls_rpt_record};
pub use rustls::pki_types::CertificateDer;

/// Validates configuration text the way `Config::parse` does, but against
/// fixed machine defaults (host name, state directory), so that the outcome
/// depends on the text alone and no file is read per input.
pub fn parse_config(text: &str) -> Result<Config, ConfigError> {
    crate::config::parse_with_fixed_defaults(
        text,
        Path::new("relayq.toml"),
        "relay.example",
        Path::new("/var/lib/relayq"),
    )
}

/// Checks and compiles a `bounce.rules_file`'s text as loading the
/// configuration does.
pub fn parse_bounce_rules(text: &str) -> Result<OperatorRules, String> {
    crate::config::parse_bounce_rules(text)
}

/// The longest reply the outbound client accepts.
pub const MAX_REPLY_LENGTH: usize = crate::wire::reply::MAX_REPLY_LENGTH;

pub use crate::delivery::client::RemoteReply;

/// The length of the first complete reply a remote server sent, as the
/// outbound client frames it (`None`: more input needed).
pub fn reply_length(buffer: &[u8]) -> Result<Option<usize>, String> {
    crate::wire::reply::reply_length(buffer).map_err(|error| error.to_string())
}

/// A reply framed by [`reply_length`], parsed as the outbound client does
/// (the server's text made one line).
pub fn parse_reply(raw: &[u8]) -> RemoteReply {
    match crate::wire::reply::parse_reply(raw) {
        Ok(Some((reply, _))) => RemoteReply::from(&reply),
        Ok(None) => RemoteReply::local("4.5.0", "incomplete reply"),
        Err(error) => RemoteReply::local("4.5.0", error.to_string()),
    }
}

/// What an EHLO reply offers, as the outbound client reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EhloCapabilities {
    /// smtp-proto's `EXT_*` flags.
    pub extensions: u32,
    /// SIZE; 0 when absent or unlimited.
    pub max_size: u64,
    /// smtp-proto's `AUTH_*` flags.
    pub auth_mechanisms: u64,
}

/// Parses a complete EHLO reply as the outbound client does.
pub fn ehlo_capabilities(raw: &[u8]) -> Result<EhloCapabilities, String> {
    let parsed =
        crate::wire::ehlo::Capabilities::from_ehlo(raw).map_err(|error| error.to_string())?;
    Ok(EhloCapabilities {
        extensions: parsed.extensions,
        max_size: parsed.max_size,
        auth_mechanisms: parsed.auth_mechanisms,
    })
}
