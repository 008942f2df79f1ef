//! Delivery: the engine (lanes, destinations, passes), the outbound SMTP
//! client, and delivery status notifications.

pub(crate) mod body;
pub mod client;
pub(crate) mod cluster;
pub(crate) mod destination;
pub(crate) mod engine;
pub(crate) mod job;
pub(crate) mod pass;
pub(crate) mod workers;
