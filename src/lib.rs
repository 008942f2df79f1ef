//! relayq: a local SMTP relay and durable outbound mail spooler.
//!
//! The binary (`src/main.rs`) is a thin command-line front; everything lives
//! in these modules so integration tests can drive the real components.
// One measured exception, `memory` (a call into glibc): see that module.
#![deny(unsafe_code)]

pub mod bounce;
pub mod cli;
pub mod config;
pub(crate) mod control;
pub mod daemon;
pub mod dane;
pub mod delivery;
pub mod dkim;
pub mod dns;
pub(crate) mod dsn;
pub(crate) mod events;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod http;
pub(crate) mod keyed_hash;
pub(crate) mod live;
pub mod logging;
pub(crate) mod maildrop;
pub(crate) mod memory;
pub(crate) mod metrics;
pub(crate) mod mta_sts;
pub(crate) mod outcome;
pub mod queue;
pub(crate) mod records;
pub(crate) mod reload;
pub mod smtp;
pub(crate) mod storage;
pub(crate) mod submission;
pub(crate) mod suppression;
pub(crate) mod systemd;
pub(crate) mod timefmt;
pub mod tls;
pub(crate) mod tls_rpt;
pub mod webhook;
pub mod wire;
