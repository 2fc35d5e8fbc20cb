//! warden: a crash-proof RabbitMQ task worker.
//!
//! # Layout
//!
//! (filled in as the modules land)
pub mod store;
