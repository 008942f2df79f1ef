//! SMTP intake: listener, session state machine, command parsing, content
//! framing, message assembly, and the header fields intake consumes
//! (idempotency keys, metadata).

pub(crate) mod address;
pub(crate) mod admission;
pub(crate) mod auth;
pub mod command;
pub(crate) mod consumed_headers;
pub mod credentials;
pub mod data;
pub(crate) mod idempotency;
pub(crate) mod long_lines;
pub(crate) mod message;
pub(crate) mod pressure;
pub(crate) mod reply;
pub(crate) mod server;
pub(crate) mod session;
pub(crate) mod stream;
