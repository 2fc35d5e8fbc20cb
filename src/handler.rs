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
            r.register("builtin.segfault", Segfault);
            r.register("builtin.membomb", MemoryBomb);
            r.register("builtin.spin", Spin);
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

/// `builtin.abort`: kills the whole process (SIGABRT), to prove that a message
/// which crashes every process it reaches costs the worker at most one crash
/// and ends dead as `crashed`.
#[derive(Debug)]
pub struct Abort;

#[async_trait]
impl Handler for Abort {
    async fn handle(&self, task: &Task, _: &TaskContext) -> Result<(), TaskError> {
        tracing::error!(task.id = %task.id, "builtin.abort: aborting the process on purpose");
        std::process::abort();
    }
}

/// `builtin.segfault`: kills the process with SIGSEGV, as a fault in a native
/// library would.
#[derive(Debug)]
pub struct Segfault;

#[async_trait]
impl Handler for Segfault {
    async fn handle(&self, task: &Task, _: &TaskContext) -> Result<(), TaskError> {
        tracing::error!(task.id = %task.id, "builtin.segfault: raising SIGSEGV on purpose");
        // Rust's runtime handles SIGSEGV to report stack overflows; for a
        // signal that is not a guard-page fault its handler restores the
        // default action and returns, so the second one kills the process.
        loop {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSEGV);
        }
    }
}

/// `builtin.membomb`: payload `{"mib": N}` (default 65536); allocates and
/// touches N MiB in 16 MiB steps, holding all of it, then returns. Under a
/// memory limit the allocation fails first and the process aborts.
#[derive(Debug)]
pub struct MemoryBomb;

#[async_trait]
impl Handler for MemoryBomb {
    async fn handle(&self, task: &Task, _: &TaskContext) -> Result<(), TaskError> {
        #[derive(Deserialize)]
        struct P {
            #[serde(default = "default_mib")]
            mib: usize,
        }
        fn default_mib() -> usize {
            64 * 1024
        }
        let p: P = payload(task)?;
        let mut held: Vec<Vec<u8>> = Vec::new();
        for _ in 0..p.mib.div_ceil(16) {
            // Non-zero bytes: every page is written, so it is really resident.
            held.push(vec![1; 16 << 20]);
        }
        tracing::info!(task.id = %task.id, mib = held.len() * 16, "builtin.membomb: allocated everything it asked for");
        Ok(())
    }
}

/// `builtin.spin`: payload `{"ms": N}` (default: for ever); burns its thread
/// in a loop that never yields, as a stuck native call or a runaway regex
/// would. Only killing the process stops it.
#[derive(Debug)]
pub struct Spin;

#[async_trait]
impl Handler for Spin {
    async fn handle(&self, task: &Task, _: &TaskContext) -> Result<(), TaskError> {
        #[derive(Deserialize)]
        struct P {
            #[serde(default)]
            ms: Option<u64>,
        }
        let p: P = payload(task)?;
        let until =
            p.ms.map(|ms| std::time::Instant::now() + Duration::from_millis(ms));
        while until.is_none_or(|t| std::time::Instant::now() < t) {
            std::hint::spin_loop();
        }
        Ok(())
    }
}
