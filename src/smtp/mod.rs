//! SMTP intake: listener, session state machine, command parsing, content
//! framing and message assembly.

pub(crate) mod address;
pub(crate) mod admission;
pub(crate) mod auth;
pub mod command;
pub mod credentials;
pub mod data;
pub(crate) mod long_lines;
pub(crate) mod message;
pub(crate) mod pressure;
pub(crate) mod reply;
pub(crate) mod server;
pub(crate) mod session;
pub(crate) mod stream;
