//! Entry points for the fuzz targets in `fuzz/` (hidden, not a stable API):
//! the pure parsers that read network or disk input, gathered in one place
//! so the modules they live in can keep their items crate-private.

use std::path::Path;

pub use crate::cli::sendmail::{Prepared, ReadError, prepare, read_message};
pub use crate::config::{Config, ConfigError};
pub use crate::control::http::{
    HeadError, MAX_BODY, MAX_HEAD, Request, ResponseHead, head_end, parse_chunk_size,
    parse_request, parse_response, percent_decode, percent_encode,
};
pub use crate::delivery::dsn::{
    Action, MAX_RETURNED_MESSAGE, Report, ReportedRecipient, build as build_dsn,
};
pub use crate::maildrop::{
    Dropped, MaildropError, encode as encode_maildrop, parse as parse_maildrop,
};
pub use crate::queue::Lane;
pub use crate::queue::envelope::{
    ENVELOPE_VERSION, Envelope, EnvelopeError, Notify, Recipient, RecipientStatus, Ret,
};
pub use crate::smtp::command::{Command, ParseContext, parse as parse_command};
pub use crate::smtp::data::{DataReader, LineEndings};
pub use crate::submission::Submission;

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
