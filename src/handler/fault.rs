//! Fault injection (`WARDEN_FAULT_HANDLERS=true`): handlers that fail, panic,
//! crash, exhaust memory, spin or hang the consumer loop, so that tests and
//! the demo can show that none of it stops the worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::builtin::payload;
use super::{Handler, TaskContext};
use crate::amqp::envelope::Task;
use crate::outcome::{ErrorKind, TaskError};

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

/// The switch between `builtin.stall` and the consumer loop that owns the
/// registry: thrown by the handler, checked by the loop on every turn.
#[derive(Debug, Clone, Default)]
pub struct LoopStall(Arc<AtomicBool>);

impl LoopStall {
    /// Returns at once, unless `builtin.stall` ran, in which case it never
    /// returns: the loop hangs as a deadlocked `select!` would.
    pub async fn point(&self) {
        if self.0.load(Ordering::Relaxed) {
            tracing::error!("builtin.stall: the consumer loop hangs here on purpose");
            std::future::pending::<()>().await;
        }
    }
}

/// `builtin.stall`: makes the consumer loop of this process hang for good, so
/// that a test can watch `/livez` fail within `WARDEN_LIVENESS_LIMIT`. The
/// task itself succeeds; the loop stops at its next turn (a delivery or a
/// heartbeat tick) and never beats again.
#[derive(Debug)]
pub struct StallLoop(pub LoopStall);

#[async_trait]
impl Handler for StallLoop {
    async fn handle(&self, _: &Task, _: &TaskContext) -> Result<(), TaskError> {
        self.0.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}
