//! SMTP intake: listener, session state machine, command parsing, content
//! framing and message assembly.

pub mod address;
pub mod command;
pub mod data;
pub mod long_lines;
pub mod message;
pub mod pressure;
pub mod reply;
pub mod server;
pub mod session;
