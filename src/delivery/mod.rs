//! Delivery: the outbound SMTP client (and, as they land, lanes,
//! destinations, outcomes and bounces).

pub mod client;
