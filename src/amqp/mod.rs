//! Everything that speaks AMQP: connecting, the topology, the wire contract,
//! confirmed publishing, lifecycle events and the dead-letter tools.

pub mod broker;
pub mod dlq;
pub mod envelope;
pub mod events;
pub mod migrate;
pub mod publish;
pub mod topology;
