//! Bounce classes (docs/events.md, "Bounce classes"): every permanent
//! failure, expiry and deferral gets a [`BounceClass`], so that an
//! application can tell "this address does not exist" from "the provider
//! thinks you are a spammer".
//!
//! - [`class`]: the classes and their names (a contract).
//! - [`Classifier`]: a reply → its class, by the operator's rules
//!   ([`OperatorRules`], from `bounce.rules_file`), then the built-in ones:
//!   enhanced status codes (`status`) and the providers' wordings (`rules`).
//!
//! Pure: no I/O. The rules file is read and checked by `config`; the
//! classifier is built by `live::Live::build` and used by the queue's
//! transitions, which store the class with the recipient.

pub mod class;
mod classify;
mod operator;
mod rules;
mod status;

pub use class::{BounceClass, UnknownClass};
pub use classify::{BuiltinRules, Classifier};
pub use operator::{InvalidPattern, OperatorRules};
