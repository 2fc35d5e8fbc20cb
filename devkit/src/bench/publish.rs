//! Publishing `n` tasks with confirms: warden's [`Publisher::publish_all`]
//! against a raw lapin publisher keeping as many confirms in flight.
//!
//! [`Publisher::publish_all`]: warden::amqp::publish::Publisher::publish_all

use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use warden::amqp::envelope::Task;
use warden::amqp::publish::task_properties;

use super::env::{BenchEnv, NOOP};

/// Confirms in flight, for both publishers: what `warden publish` uses.
pub const WINDOW: usize = 256;

fn tasks(n: u64) -> Vec<Task> {
    (0..n)
        .map(|_| Task::new(NOOP, serde_json::json!({})))
        .collect()
}

fn rate(n: u64, started: Instant) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let n = n as f64;
    n / started.elapsed().as_secs_f64().max(1e-9)
}

/// `Publisher::publish_all` of `n` ready-made tasks (serialising them is its
/// job, so it is timed); returns messages per second.
///
/// # Errors
/// The broker refuses a message.
pub async fn warden(env: &BenchEnv, n: u64, mut progress: impl FnMut()) -> anyhow::Result<f64> {
    env.purge().await?;
    let tasks = tasks(n);
    let started = Instant::now();
    env.publisher()
        .publish_all(tasks, WINDOW, &mut progress)
        .await?;
    let r = rate(n, started);
    env.purge().await?;
    Ok(r)
}

/// The least a confirming publisher can do: pre-serialised bodies, the same
/// properties, [`WINDOW`] confirms in flight; returns messages per second.
///
/// # Errors
/// The broker refuses a message.
pub async fn raw(env: &BenchEnv, n: u64, mut progress: impl FnMut()) -> anyhow::Result<f64> {
    env.purge().await?;
    let ch = env.conn().create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let messages: Vec<(String, Vec<u8>)> = tasks(n)
        .into_iter()
        .map(|t| (t.id.clone(), t.to_body()))
        .collect();
    let exchange = env.topology.tasks();
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    for (id, body) in &messages {
        if pending.len() >= WINDOW
            && let Some(r) = pending.next().await
        {
            anyhow::ensure!(r?, "the broker refused a message");
            progress();
        }
        let ch = &ch;
        let exchange = exchange.as_str();
        pending.push(async move {
            let confirm = ch
                .basic_publish(
                    exchange.into(),
                    NOOP.into(),
                    BasicPublishOptions::default(),
                    body,
                    task_properties(id, FieldTable::default()),
                )
                .await?
                .await?;
            anyhow::Ok(confirm.is_ack())
        });
    }
    while let Some(r) = pending.next().await {
        anyhow::ensure!(r?, "the broker refused a message");
        progress();
    }
    let r = rate(n, started);
    let _ = ch.close(200, "done".into()).await;
    env.purge().await?;
    Ok(r)
}
