//! The built-in handlers every worker has: `builtin.noop` and `builtin.sleep`.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{Handler, TaskContext};
use crate::amqp::envelope::Task;
use crate::outcome::TaskError;

/// The task's payload as `T`; a payload that does not fit is a permanent failure.
pub(crate) fn payload<T: for<'de> Deserialize<'de>>(task: &Task) -> Result<T, TaskError> {
    serde_json::from_value(task.payload.clone())
        .map_err(|e| TaskError::permanent(format!("invalid payload for {}: {e}", task.kind)))
}

/// `builtin.noop`: succeeds at once.
#[derive(Debug)]
pub struct Noop;

#[async_trait]
impl Handler for Noop {
    async fn handle(&self, _: &Task, _: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// `builtin.sleep`: payload `{"ms": N}`; sleeps without blocking the runtime.
#[derive(Debug)]
pub struct Sleep;

#[async_trait]
impl Handler for Sleep {
    async fn handle(&self, task: &Task, _: &TaskContext) -> Result<(), TaskError> {
        #[derive(Deserialize)]
        struct P {
            ms: u64,
        }
        let p: P = payload(task)?;
        tokio::time::sleep(Duration::from_millis(p.ms)).await;
        Ok(())
    }
}
