//! SMTP on the wire, for both directions: reply framing and parsing, EHLO
//! capabilities, dot-stuffing of message content, and the one-line form of
//! text received from elsewhere. Pure: bytes in, values or bytes out, no I/O.
//!
//! Users: the outbound client (`delivery::client`), the local submission
//! client (`submission`), DSN building (`dsn`), and the test
//! harness. Code map: `reply` frames and parses (multi-line) replies with
//! their enhanced status codes; `ehlo` reads the extensions an EHLO reply
//! offers; `dot` dot-stuffs content, whole or chunk by chunk; `text` turns
//! outside text into one safe line.
//!
//! Invariant: nothing here panics on any input; malformed input is a typed
//! error or, where a best effort is the contract, a value.

pub mod dot;
pub mod ehlo;
pub mod reply;
pub(crate) mod text;
