//! Delivery: the engine (lanes, destinations, passes), the outbound SMTP
//! client, and delivery status notifications.

mod body;
pub mod client;
pub mod destination;
pub mod engine;
pub mod job;
pub mod pass;
