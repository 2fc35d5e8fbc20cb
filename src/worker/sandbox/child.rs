//! The sandbox process: the worker's own executable, started with
//! [`wire::SOCKET_ENV`] set. It connects back to the worker, takes the
//! worker's effective settings from its first message (a worker inside
//! `warden-dev demo` or `warden-dev bench` has settings no command line holds), builds
//! the same handlers, runs every job it is sent, answers each, and exits when
//! the worker hangs up. It never touches the broker: if it dies, only the jobs
//! in it are affected, and the worker decides what that means for them.

use std::path::Path;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use opentelemetry::trace::FutureExt as _;
use secrecy::SecretString;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::bytes::Bytes;
use tracing::Instrument as _;

use super::wire::{self, Done, Job};
use crate::channels::ChannelToken;
use crate::config::Settings;
use crate::handler::{Registry, TaskContext, run_guarded};
use crate::outcome::TaskError;

/// Runs the sandbox until the worker closes the socket at `socket`;
/// `handlers` builds the handlers from the worker's settings.
///
/// # Errors
/// The worker is gone, or the socket or memory limit cannot be set up.
pub async fn serve(
    socket: &Path,
    handlers: impl FnOnce(&Settings) -> anyhow::Result<Registry>,
) -> anyhow::Result<()> {
    die_with_parent()?;
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to the worker at {}: {e}", socket.display()))?;
    // Bodies are not known yet; settings are small.
    let mut link = wire::link(stream, 0);
    let hello = link
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("the worker hung up before sending its settings"))??;
    let settings: Settings = serde_json::from_slice(&hello)?;
    link.codec_mut()
        .set_max_frame_length(wire::max_frame(settings.max_body_bytes));
    let (mut to_worker, mut from_worker) = link.split::<Bytes>();
    let registry = handlers(&settings)?;
    if let Some(limit) = settings.sandbox_memory {
        // Private writable memory (heap, anonymous maps, thread stacks): a
        // task that allocates past it gets a failed allocation, which aborts
        // this process and nothing else. Address space (RLIMIT_AS) would also
        // count the untouched reservations of every malloc arena.
        let bytes = limit.as_u64();
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_DATA, bytes, bytes)
            .map_err(|e| anyhow::anyhow!("setting the sandbox memory limit: {e}"))?;
    }
    tracing::debug!(pid = std::process::id(), "sandbox ready");

    // Handlers finish in any order; one writer sends their answers.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let writer = tokio::spawn(async move {
        while let Some(done) = done_rx.recv().await {
            let Ok(bytes) = serde_json::to_vec(&done) else {
                continue;
            };
            if to_worker.send(bytes.into()).await.is_err() {
                break;
            }
        }
    });
    let registry = Arc::new(registry);
    let timeout = settings.task_timeout;
    // Every line a handler logs here says it came from a sandbox.
    let span = tracing::info_span!("sandbox", pid = std::process::id());
    while let Some(frame) = from_worker.next().await {
        let job: Job = serde_json::from_slice(&frame?)?;
        let (registry, done_tx) = (registry.clone(), done_tx.clone());
        tokio::spawn(
            async move {
                let seq = job.seq;
                let result = run(&registry, job, timeout).await;
                let _ = done_tx.send(Done { seq, result });
            }
            .instrument(span.clone()),
        );
    }
    // The worker hung up: it is stopping us, or it is gone. Jobs still
    // running are abandoned; their outcome is the worker's business.
    writer.abort();
    tracing::debug!("sandbox stopping: the worker closed the socket");
    Ok(())
}

async fn run(registry: &Registry, job: Job, timeout: std::time::Duration) -> Result<(), TaskError> {
    let Some(handler) = registry.get(&job.task.kind).cloned() else {
        return Err(TaskError::permanent(format!(
            "no handler is registered for type {:?} in the sandbox",
            job.task.kind
        )));
    };
    let ctx = TaskContext {
        attempt: job.attempt,
        redelivered: job.redelivered,
        token: job.token.map(|t| ChannelToken {
            access_token: SecretString::from(t.access_token),
            version: t.version,
        }),
    };
    let mut carrier = lapin::types::FieldTable::default();
    if let Some(tp) = &job.traceparent {
        crate::amqp::envelope::set_text(&mut carrier, "traceparent", tp);
    }
    let parent = crate::observe::trace::extract(Some(&carrier));
    run_guarded(&*handler, &job.task, &ctx, timeout)
        .with_context(parent)
        .await
}

/// Asks the kernel to SIGKILL this process when the worker dies, so a sandbox
/// stuck in a loop that never reads its socket cannot outlive it; and exits
/// at once if the worker already died before this process got here.
fn die_with_parent() -> anyhow::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| anyhow::anyhow!("setting the parent-death signal: {e}"))?;
    let expected = std::env::var(wire::PARENT_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok());
    if let Some(pid) = expected
        && nix::unistd::getppid().as_raw() != pid
    {
        anyhow::bail!("the worker that started this sandbox (pid {pid}) is gone");
    }
    Ok(())
}
