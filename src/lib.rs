//! relayq: a local SMTP relay and durable outbound mail spooler.
//!
//! The binary (`src/main.rs`) is a thin command-line front; everything lives
//! in these modules so integration tests can drive the real components.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod delivery;
pub mod dns;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod logging;
pub mod maildrop;
pub mod metrics;
pub mod queue;
pub mod smtp;
pub mod storage;
pub mod submission;
pub mod systemd;
pub mod timefmt;
pub mod tls;
