//! `warden-dev demo`: the whole worker story in one command, on a throwaway prefix.
//!
//! It starts a worker in this process, publishes a mixed batch (successes,
//! slow tasks, transient failures that recover, permanent failures, panics,
//! timeouts, a task that aborts its process, a malformed body and an unknown
//! type), follows the lifecycle events live, then prints the outcomes and
//! the dead letters with their reasons, and deletes everything it declared.
//! With Chromium at hand, a channel's token is revoked halfway and healed by
//! the re-auth consumer (also in this process) against the simulated provider.
//!
//! [`run`] is the steps in order; each lives in its own module.

mod batch;
mod follow;
mod reauth;
mod summary;
mod tally;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warden::amqp::publish::Publisher;
use warden::channels::Channels;
use warden::config::{Isolation, Settings, TaskTypeSettings};
use warden::handler::Registry;
use warden::worker::Worker;

use self::follow::Listener;
pub(crate) use self::reauth::ReauthDemo;

/// `warden-dev demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many `builtin.noop` tasks to add to the mix.
    #[arg(long, default_value_t = 200)]
    pub noop: usize,
    /// Keep the demo's queues afterwards (for `warden topology`, `warden dlq list`).
    #[arg(long)]
    pub keep: bool,
}

/// Runs the demo against `base`'s broker.
///
/// # Errors
/// Broker unreachable, or the batch not settling within three minutes.
pub async fn run(base: &Settings, args: &DemoArgs) -> anyhow::Result<()> {
    let mut settings = demo_settings(base);
    println!(
        "warden-dev demo on {} with throwaway prefix {}",
        settings.amqp_url_redacted(),
        settings.prefix
    );
    let reauth = reauth_half(&mut settings).await?;
    let mut listener = Listener::open(&settings).await?;
    let shutdown = CancellationToken::new();
    let running = Running::start(&settings, reauth.as_ref(), &shutdown)?;
    let publisher = Publisher::connect(&settings).await?;
    let mut tally =
        batch::publish(&publisher, &listener.topology, args.noop, reauth.is_some()).await?;
    let followed =
        follow::until_settled(&mut listener, &mut tally, reauth.as_ref(), &publisher).await;
    let followed = followed.inspect_err(|_| shutdown.cancel())?;
    publisher.close().await;
    shutdown.cancel();
    running.stop().await?;
    tally.print(followed.elapsed);
    summary::reauth(reauth.as_ref(), followed.healed);
    summary::dead_letters(&settings).await?;
    listener.close(args.keep, &settings.prefix).await
}

/// `base` on a throwaway prefix, with the fault handlers, events, and short
/// timeouts and retries so that the story fits in seconds.
fn demo_settings(base: &Settings) -> Settings {
    let mut settings = base.clone();
    settings.prefix = format!(
        "warden-demo-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    settings.fault_handlers = true;
    settings.events = true;
    settings.task_timeout = Duration::from_secs(1);
    settings.retry.base_delay = Duration::from_millis(250);
    settings.retry.factor = 2;
    settings.retry.tiers = 3;
    settings.retry.max_attempts = 4;
    // The demo's worker runs inside this process: a task that aborts it must
    // run in the sandbox from the start. (A `warden worker` needs no such
    // setting: it dies once, and the redelivered task runs in the sandbox.)
    settings.task_types.insert(
        "builtin.abort".into(),
        TaskTypeSettings {
            isolation: Isolation::Always,
        },
    );
    settings
}

/// The re-auth half when a browser can run here, saying either way.
async fn reauth_half(settings: &mut Settings) -> anyhow::Result<Option<ReauthDemo>> {
    if !ReauthDemo::browser_ready(settings) {
        println!("note: re-auth part skipped: {}", ReauthDemo::WHY_SKIPPED);
        return Ok(None);
    }
    println!(
        "note: generated a throwaway token key for this demo's store; production refuses to start without WARDEN_TOKEN_KEY"
    );
    Ok(Some(ReauthDemo::start(settings).await?))
}

/// The worker, and with the re-auth half the `warden reauth` consumer, in
/// this process until `shutdown`.
struct Running {
    worker: JoinHandle<()>,
    reauth: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    fn start(
        settings: &Settings,
        reauth: Option<&ReauthDemo>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let registry = Registry::from_settings(settings)?;
        let mut worker = Worker::new(settings.clone(), registry);
        let mut consumer = None;
        if let Some(r) = reauth {
            worker = worker.with_channels(Arc::new(Channels::new(r.store.clone())));
            let mut s = settings.clone();
            s.admin_addr = "127.0.0.1:0".parse()?;
            consumer = Some(tokio::spawn(warden::reauth::consumer::run(
                s,
                r.store.clone(),
                shutdown.clone(),
            )));
        }
        let shutdown = shutdown.clone();
        let worker = tokio::spawn(async move { worker.run(shutdown).await });
        Ok(Self {
            worker,
            reauth: consumer,
        })
    }

    /// Waits for both to stop (after `shutdown`).
    async fn stop(self) -> anyhow::Result<()> {
        self.worker.await?;
        if let Some(t) = self.reauth {
            t.await??;
        }
        Ok(())
    }
}
