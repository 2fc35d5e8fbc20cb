//! What every scenario step runs with: the bench's prefix and connections,
//! how to start worker processes, the sizes asked for, and the progress bar.

use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use tokio_util::sync::CancellationToken;

use super::env::BenchEnv;
use super::procs::{self, ChildConfig, ProcDrain, Shape};
use super::sink::Sink;

/// Everything one step needs.
pub(super) struct Ctx {
    /// The throwaway prefix, its topology and the bench's own connections.
    pub(super) env: BenchEnv,
    /// How `warden worker` processes start; only when a scenario spawns them.
    pub(super) children: Option<ChildConfig>,
    /// Messages per drain, baseline and publish run.
    pub(super) n: u64,
    /// Revocations per half of the reauth scenario.
    pub(super) reauth_runs: u32,
    /// The OTLP sink of the tracing scenario.
    pub(super) otlp: Option<Sink>,
    /// Cancelled on SIGTERM/SIGINT.
    pub(super) shutdown: CancellationToken,
    /// The bench's progress line.
    pub(super) bar: ProgressBar,
}

impl Ctx {
    /// A progress callback for `total` messages of the current step.
    pub(super) fn counter(&self, what: &str, total: u64) -> impl FnMut(u64) + use<> {
        let (bar, what) = (self.bar.clone(), what.to_owned());
        let mut shown = Instant::now();
        move |done| {
            if shown.elapsed() > Duration::from_millis(100) || done >= total {
                shown = Instant::now();
                bar.set_message(format!("{what}: {done}/{total}"));
            }
        }
    }

    /// A per-message progress callback.
    pub(super) fn each(&self, what: &str, total: u64) -> impl FnMut() + use<> {
        let mut count = self.counter(what, total);
        let mut done = 0;
        move || {
            done += 1;
            count(done);
        }
    }

    /// A progress callback that shows whatever a step reports.
    pub(super) fn message(&self) -> impl FnMut(String) + use<> {
        let bar = self.bar.clone();
        move |m| bar.set_message(m)
    }

    /// Publishes `n` noop tasks to `{p}.tasks`.
    pub(super) async fn prefill(&self, n: u64) -> anyhow::Result<()> {
        self.env.prefill(n, self.each("prefill", n)).await
    }

    /// How worker processes start.
    pub(super) fn children(&self) -> anyhow::Result<&ChildConfig> {
        self.children
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no settings were written for worker processes"))
    }

    /// Prefills `n` tasks and times `replicas` `warden worker` processes of
    /// `shape` draining them.
    pub(super) async fn drain_processes(
        &self,
        replicas: usize,
        shape: Shape<'_>,
        n: u64,
        what: &str,
    ) -> anyhow::Result<ProcDrain> {
        self.prefill(n).await?;
        let children = self.children()?;
        procs::drain(
            &self.env,
            children,
            replicas,
            shape,
            n,
            self.counter(what, n),
        )
        .await
    }
}
