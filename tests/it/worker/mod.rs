//! The worker against the real RabbitMQ, through the real binary.

mod operations;
mod outcomes;
mod poison;

use std::collections::HashMap;
use std::time::Duration;

use crate::support::TestBroker;

const READY: Duration = Duration::from_secs(20);

/// The dead letters by task id.
async fn dead_letters(broker: &TestBroker) -> HashMap<String, warden::amqp::dlq::DeadLetter> {
    let letters = broker.dead_letters().await;
    letters.into_iter().map(|d| (d.id.clone(), d)).collect()
}
