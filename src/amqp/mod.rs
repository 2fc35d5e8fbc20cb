//! Everything that speaks AMQP: connecting, the topology, the wire contract,
//! confirmed publishing, lifecycle events and the dead-letter tools.

pub mod broker;
pub mod dlq;
pub mod envelope;
pub mod events;
pub mod migrate;
pub mod publish;
pub mod topology;

use std::time::Duration;

use lapin::options::ConfirmSelectOptions;

use crate::config::Settings;

/// What a command-line tool works with: a connection made without retrying
/// (a person wants an answer), the topology ensured, and one channel.
#[derive(Debug)]
pub struct ToolSession {
    /// The connection; close it when done.
    pub conn: lapin::Connection,
    /// One channel, in confirm mode when asked for.
    pub ch: lapin::Channel,
    /// The prefix's names.
    pub topology: topology::Topology,
}

impl ToolSession {
    /// Connects as `role` (5 s per address), ensures the topology
    /// ([`topology::Topology::ensure`]) and opens a channel, confirming
    /// publishes when `confirms` is set.
    ///
    /// # Errors
    /// The broker is unreachable or refused the declarations.
    pub async fn open(settings: &Settings, role: &str, confirms: bool) -> anyhow::Result<Self> {
        let conn = broker::connect(settings, role, Duration::from_secs(5)).await?;
        let topology = topology::Topology::new(settings);
        topology.ensure(&conn).await?;
        let ch = conn.create_channel().await?;
        if confirms {
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
        }
        Ok(Self { conn, ch, topology })
    }
}
