//! Handlers: the code that does the work of one task type.
//!
//! A [`Registry`] maps task types to handlers. Users build their own binary on
//! the library and register their handlers next to (or instead of) the
//! built-ins; see `examples/custom_handler.rs`.

pub mod builtin;
pub mod fault;
pub mod http;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::amqp::envelope::Task;
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

/// Why [`Registry::from_settings`] could not build the handlers.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The HTTP client for the HTTP handlers could not be built (TLS roots).
    #[error("building the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// One `[handlers]` entry cannot work.
    #[error("`handlers.{kind}`: {source}")]
    Handler {
        /// The task type.
        kind: String,
        /// What is wrong with it.
        source: http::HttpConfigError,
    },
}

/// Task type → handler.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
    /// The switch `builtin.stall` throws, when the fault handlers are on.
    stall: Option<fault::LoopStall>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut types: Vec<_> = self.handlers.keys().collect();
        types.sort();
        f.debug_struct("Registry").field("types", &types).finish()
    }
}

impl Registry {
    /// The switch `builtin.stall` throws, for the consumer loop to check on
    /// every turn; `None` without the fault handlers.
    #[must_use]
    pub fn loop_stall(&self) -> Option<&fault::LoopStall> {
        self.stall.as_ref()
    }

    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in handlers; the fault-injection ones only when asked for.
    #[must_use]
    pub fn builtin(fault_handlers: bool) -> Self {
        let mut r = Self::new();
        r.register("builtin.noop", builtin::Noop);
        r.register("builtin.sleep", builtin::Sleep);
        if fault_handlers {
            r.register("builtin.fail", fault::Fail);
            r.register("builtin.panic", fault::Panic);
            r.register("builtin.abort", fault::Abort);
            r.register("builtin.segfault", fault::Segfault);
            r.register("builtin.membomb", fault::MemoryBomb);
            r.register("builtin.spin", fault::Spin);
            let stall = fault::LoopStall::default();
            r.register("builtin.stall", fault::StallLoop(stall.clone()));
            r.stall = Some(stall);
        }
        r
    }

    /// The built-ins plus one HTTP handler per `[handlers]` entry of `settings`.
    ///
    /// # Errors
    /// An HTTP handler whose method or URL is invalid (validated at load, so
    /// this does not happen with loaded settings).
    pub fn from_settings(settings: &crate::config::Settings) -> Result<Self, RegistryError> {
        let mut r = Self::builtin(settings.fault_handlers);
        let client = crate::outbound::client_builder()
            .build()
            .map_err(RegistryError::Client)?;
        for (kind, config) in &settings.handlers {
            let handler =
                http::HttpHandler::new(config.clone(), client.clone()).map_err(|source| {
                    RegistryError::Handler {
                        kind: kind.clone(),
                        source,
                    }
                })?;
            r.register(kind.clone(), handler);
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

/// Runs `handler` on `task` as the worker and the sandbox both do: a panic
/// becomes an [`ErrorKind::Panic`] and running past `timeout` an
/// [`ErrorKind::Timeout`], both transient. A handler that blocks its thread
/// without yielding cannot be stopped here; only the sandbox, by killing its
/// process, can.
pub async fn run_guarded(
    handler: &dyn Handler,
    task: &Task,
    ctx: &TaskContext,
    timeout: Duration,
) -> Result<(), TaskError> {
    use futures::FutureExt;
    let guarded = std::panic::AssertUnwindSafe(handler.handle(task, ctx)).catch_unwind();
    match tokio::time::timeout(timeout, guarded).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => Err(TaskError::new(ErrorKind::Panic, panic_message(&*panic))),
        Err(_) => Err(TaskError::new(
            ErrorKind::Timeout,
            format!("timed out after {}", humantime::format_duration(timeout)),
        )),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into());
    format!("handler panicked: {what}")
}
