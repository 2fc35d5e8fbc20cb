//! A worker binary with a handler of your own, built on the warden library.
//!
//! Run it against the local broker, then publish a task:
//!
//! ```sh
//! cargo run --example custom_handler
//! cargo run -- publish --type email.send --payload '{"to":"ada@example.com"}'
//! ```

use warden::outcome::TaskError;
use warden::{Handler, Registry, Settings, Task, TaskContext};

/// Sends an email (here: logs it). Returns a *kind* of error, and warden
/// decides from it alone: transient → retry later, permanent → dead letter.
struct SendEmail;

#[async_trait::async_trait]
impl Handler for SendEmail {
    async fn handle(&self, task: &Task, ctx: &TaskContext) -> Result<(), TaskError> {
        let Some(to) = task.payload.get("to").and_then(|v| v.as_str()) else {
            return Err(TaskError::permanent("payload.to is missing"));
        };
        if !to.contains('@') {
            return Err(TaskError::permanent(format!("{to:?} is not an address")));
        }
        tracing::info!(task.id = %task.id, attempt = ctx.attempt, "sending an email");
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load(None)?;
    // Keep the guard: shutting it down flushes the last spans (when exported).
    let telemetry = warden::observe::telemetry::init(settings.log_format);
    let mut registry = Registry::builtin(settings.fault_handlers);
    registry.register("email.send", SendEmail);
    let result =
        warden::worker::run(settings, registry, None, warden::shutdown::on_signals()).await;
    telemetry.shutdown().await;
    result
}
