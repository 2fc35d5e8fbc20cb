//! Handlers: the code that does the work of one task type.
//!
//! A [`Registry`] maps task types to handlers. Users build their own binary on
//! the library and register their handlers next to (or instead of) the
//! built-ins; see `examples/custom_handler.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use crate::envelope::Task;
use crate::outcome::{ErrorKind, TaskError};

/// What a handler knows about the delivery besides the task itself.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// 1 on the first delivery; retries count up.
    pub attempt: u32,
    /// True when the broker redelivered it (a previous consumer died or lost its
    /// connection): a hint that the side effects may already have happened.
    pub redelivered: bool,
    /// The task's channel token, when the task names a channel the token store knows.
    pub token: Option<crate::channels::ChannelToken>,
}

/// The work for one task type. Implementations must be `Send + Sync`: one
/// instance serves every concurrent task of its type.
///
/// Return a [`TaskError`] whose [`ErrorKind`] says what went wrong; the worker
/// decides from that alone whether to retry, park or dead-letter. Panics and
/// timeouts are caught and count as transient failures.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Runs one task.
    async fn handle(&self, task: &Task, ctx: &TaskContext) -> Result<(), TaskError>;
}

/// Task type → handler.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut types: Vec<_> = self.handlers.keys().collect();
        types.sort();
        f.debug_struct("Registry").field("types", &types).finish()
    }
}

impl Registry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in handlers; the fault-injection ones only when asked for.
    #[must_use]
    pub fn builtin(fault_handlers: bool) -> Self {
        let mut r = Self::new();
        r.register("builtin.noop", Noop);
        r.register("builtin.sleep", Sleep);
        if fault_handlers {
            r.register("builtin.fail", Fail);
            r.register("builtin.panic", Panic);
            r.register("builtin.abort", Abort);
            r.register("builtin.stall", crate::admin::StallLoop);
        }
        r
    }

    /// The built-ins plus one HTTP handler per `[handlers]` entry of `settings`.
    ///
    /// # Errors
    /// An HTTP handler whose method or URL is invalid (validated at load, so
    /// this does not happen with loaded settings).
    pub fn from_settings(settings: &crate::config::Settings) -> Result<Self, String> {
        let mut r = Self::builtin(settings.fault_handlers);
        let client = crate::outbound::client_builder()
            .build()
            .map_err(|e| e.to_string())?;
        for (kind, config) in &settings.handlers {
            r.register(
                kind.clone(),
                crate::http_handler::HttpHandler::new(config.clone(), client.clone())?,
            );
        }
        Ok(r)
    }

    /// Registers (or replaces) the handler of `task_type`.
    pub fn register(&mut self, task_type: impl Into<String>, handler: impl Handler) -> &mut Self {
        self.handlers.insert(task_type.into(), Arc::new(handler));
        self
    }

    /// The handler of `task_type`, if any.
    #[must_use]
    pub fn get(&self, task_type: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(task_type)
    }

    /// Registered types, sorted.
    #[must_use]
    pub fn types(&self) -> Vec<&str> {
        let mut t: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        t.sort_unstable();
        t
    }
}

fn payload<T: for<'de> Deserialize<'de>>(task: &Task) -> Result<T, TaskError> {
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

#[derive(Deserialize)]
struct Times {
    times: u32,
    #[serde(default)]
    kind: Option<String>,
}

/// `builtin.fail`: payload `{"times": N, "kind": "transient"|"permanent"}`;
/// fails the first N attempts, then succeeds.
#[derive(Debug)]
pub struct Fail;

#[async_trait]
impl Handler for Fail {
    async fn handle(&self, task: &Task, ctx: &TaskContext) -> Result<(), TaskError> {
        let p: Times = payload(task)?;
        if ctx.attempt > p.times {
            return Ok(());
        }
        let kind = match p.kind.as_deref() {
            None | Some("transient") => ErrorKind::Transient,
            Some("permanent") => ErrorKind::Permanent,
            Some(other) => {
                return Err(TaskError::permanent(format!(
                    "unknown failure kind {other:?}"
                )));
            }
        };
        Err(TaskError::new(
            kind,
            format!(
                "injected {} failure {} of {}",
                kind.as_str(),
                ctx.attempt,
                p.times
            ),
        ))
    }
}

/// `builtin.panic`: payload `{"times": N}`; panics on the first N attempts.
#[derive(Debug)]
pub struct Panic;

#[async_trait]
impl Handler for Panic {
    async fn handle(&self, task: &Task, ctx: &TaskContext) -> Result<(), TaskError> {
        let p: Times = payload(task)?;
        assert!(
            ctx.attempt > p.times,
            "injected panic on attempt {} of {}",
            ctx.attempt,
            p.times
        );
        Ok(())
    }
}

/// `builtin.abort`: kills the whole process, to prove that the broker's delivery
/// limit dead-letters a message that crashes every consumer it reaches.
#[derive(Debug)]
pub struct Abort;

#[async_trait]
impl Handler for Abort {
    async fn handle(&self, task: &Task, _: &TaskContext) -> Result<(), TaskError> {
        tracing::error!(task.id = %task.id, "builtin.abort: aborting the process on purpose");
        std::process::abort();
    }
}
