//! Delivery: the engine (lanes, destinations, passes), the outbound SMTP
//! client, and delivery status notifications.
//!
//! Dependencies point one way: `engine` → `workers` → `job` → `destination`
//! (and `pass`, `client`, `cluster` below them); see ARCHITECTURE.md.

pub(crate) mod body;
pub mod client;
pub(crate) mod cluster;
pub(crate) mod destination;
pub(crate) mod engine;
pub(crate) mod job;
pub(crate) mod pass;
pub(crate) mod settings;
pub(crate) mod workers;

pub use engine::Engine;
pub use job::DeliveryContext;
