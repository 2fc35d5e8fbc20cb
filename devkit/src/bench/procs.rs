//! The real `warden worker` binary as a child process: start-up time, idle
//! and peak memory, and drains by one or more replicas.
//!
//! A child gets the bench's settings as a TOML file (so every queue argument
//! matches the topology the bench declared) plus a few `WARDEN_*` overrides,
//! its own admin port, and logs to nowhere: it runs exactly as deployed.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::process::{Child, Command};
use warden::config::Settings;

use super::env::{BenchEnv, NOOP, Poller};

/// How often a child's `/readyz` and `/metrics` are asked.
const POLL: Duration = Duration::from_millis(2);

/// How children start: the `warden` binary, and the settings written for
/// them (removed when dropped).
#[derive(Debug)]
pub struct ChildConfig {
    program: PathBuf,
    settings: PathBuf,
}

impl ChildConfig {
    /// Writes `settings` to a private (0600: it holds the broker password)
    /// temporary TOML file for children of `program`, the `warden` binary.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write(settings: &Settings, program: PathBuf) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("{}.toml", settings.prefix));
        let text = toml::to_string(settings).context("writing the workers' settings")?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(text.as_bytes())?;
        Ok(Self {
            program,
            settings: path,
        })
    }
}

impl Drop for ChildConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.settings);
    }
}

/// A running `warden worker`; killed if dropped before [`Worker::stop`].
#[derive(Debug)]
pub struct Worker {
    child: Child,
    pid: u32,
    admin: String,
    http: reqwest::Client,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Worker {
    /// Starts the `warden` binary as `warden worker` on the bench's prefix.
    ///
    /// # Errors
    /// The binary cannot be started.
    /// With `otlp`, it exports every span (100 % sampled) over OTLP/HTTP to
    /// that endpoint; without, it exports nothing.
    pub fn spawn(
        config: &ChildConfig,
        concurrency: u16,
        events: bool,
        otlp: Option<&str>,
    ) -> anyhow::Result<Self> {
        Self::spawn_with(config, concurrency, events, otlp, None)
    }

    /// [`Worker::spawn`], connecting to `amqp_url` instead of the bench's
    /// broker URL (a proxy in front of it, say).
    ///
    /// # Errors
    /// The binary cannot be started.
    pub fn spawn_with(
        config: &ChildConfig,
        concurrency: u16,
        events: bool,
        otlp: Option<&str>,
        amqp_url: Option<&str>,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut cmd = Command::new(&config.program);
        cmd.arg("--config").arg(&config.settings).arg("worker");
        // The file carries the bench's settings, already layered with this
        // process's environment; inherited `WARDEN_*` would override it.
        // So do the OpenTelemetry variables: export is this call's choice.
        for (k, _) in std::env::vars_os() {
            let k_ = k.to_string_lossy();
            if k_.starts_with("WARDEN_") || k_.starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        if let Some(endpoint) = otlp {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
                .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
                .env("OTEL_TRACES_SAMPLER", "always_on");
        }
        if let Some(url) = amqp_url {
            cmd.env("WARDEN_AMQP_URL", url);
        }
        let child = cmd
            .env("WARDEN_CONCURRENCY", concurrency.to_string())
            .env("WARDEN_EVENTS", events.to_string())
            .env("WARDEN_ADMIN_ADDR", format!("127.0.0.1:{port}"))
            .env("WARDEN_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} worker", config.program.display()))?;
        let pid = child.id().context("the worker exited at once")?;
        Ok(Self {
            child,
            pid,
            admin: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
        })
    }

    /// `/readyz` answers 200.
    pub async fn ready(&self) -> bool {
        matches!(
            self.http.get(format!("{}/readyz", self.admin)).send().await,
            Ok(r) if r.status().is_success()
        )
    }

    /// Waits for `/readyz`; errors if the process exits first.
    ///
    /// # Errors
    /// The worker exited or never became ready.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        let mut poll = Poller::new("a worker process to become ready", POLL);
        while !self.ready().await {
            poll.wait(false).await?;
        }
        Ok(())
    }

    /// `warden_tasks_total{type="builtin.noop",outcome="succeeded"}` from `/metrics`.
    ///
    /// # Errors
    /// The admin server does not answer.
    pub async fn succeeded(&self) -> anyhow::Result<u64> {
        Ok(succeeded_in(&self.metrics().await?))
    }

    /// The worker's `/metrics` exposition.
    async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(format!("{}/metrics", self.admin))
            .send()
            .await?
            .text()
            .await?)
    }

    /// The value of the unlabelled metric `name` (e.g.
    /// `warden_suspects_total`), 0 when absent.
    ///
    /// # Errors
    /// The admin server does not answer.
    pub async fn counter(&self, name: &str) -> anyhow::Result<u64> {
        let text = self.metrics().await?;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .map_or(0, |v| v as u64))
    }

    /// A `kB` field of `/proc/<pid>/status`, in MiB.
    #[must_use]
    pub fn status_mib(&self, field: &str) -> Option<f64> {
        status_mib(self.pid, field)
    }

    /// SIGTERM, then waits for the graceful drain to end.
    ///
    /// # Errors
    /// The process had to be killed, or exited with an error.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid)?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                anyhow::ensure!(status.success(), "the worker exited with {status}");
                Ok(())
            }
            Err(_) => {
                let _ = self.child.kill().await;
                anyhow::bail!("the worker did not stop within 30s of SIGTERM; killed")
            }
        }
    }
}

/// Tasks settled by all of `workers`.
async fn succeeded(workers: &[Worker]) -> anyhow::Result<u64> {
    let mut sum = 0;
    for w in workers {
        sum += w.succeeded().await?;
    }
    Ok(sum)
}

/// The noop success counter in a Prometheus text exposition.
fn succeeded_in(text: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.starts_with("warden_tasks_total{")
                && l.contains(&format!("type=\"{NOOP}\""))
                && l.contains("outcome=\"succeeded\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let v = v as u64;
            v
        })
        .sum()
}

/// A `kB` field (`VmRSS`, `VmHWM`) of `/proc/<pid>/status`, in MiB.
#[must_use]
pub fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Start-up of one worker on an existing topology with the broker up.
#[derive(Debug, Clone, Copy)]
pub struct Startup {
    /// From `exec` to the first 200 of `/readyz`, ms.
    pub ready_ms: f64,
    /// The largest `VmRSS` seen while idle after that, MiB.
    pub idle_rss_mib: f64,
}

/// Starts a worker, times it to ready, samples its idle memory, stops it.
///
/// # Errors
/// The worker does not start or stop cleanly.
pub async fn startup(config: &ChildConfig, concurrency: u16) -> anyhow::Result<Startup> {
    let t0 = Instant::now();
    let w = Worker::spawn(config, concurrency, false, None)?;
    w.wait_ready().await?;
    let ready_ms = t0.elapsed().as_secs_f64() * 1e3;
    // Idle means consuming an empty queue: sample for a second and keep the
    // largest figure (allocations settle within the first few ticks).
    let mut idle_rss_mib = 0f64;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for _ in 0..20 {
        tick.tick().await;
        idle_rss_mib = idle_rss_mib.max(w.status_mib("VmRSS").unwrap_or(0.0));
    }
    w.stop().await?;
    Ok(Startup {
        ready_ms,
        idle_rss_mib,
    })
}

/// A drain by worker processes.
#[derive(Debug, Clone, Copy)]
pub struct ProcDrain {
    /// Messages per second while every replica was consuming.
    pub rate: f64,
    /// The largest peak RSS (`VmHWM`) of any replica, MiB.
    pub peak_rss_mib: f64,
}

/// How each worker process of a drain runs.
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    /// Tasks at once.
    pub concurrency: u16,
    /// `task.*` events published.
    pub events: bool,
    /// OTLP/HTTP endpoint to export every span to, if any.
    pub otlp: Option<&'a str>,
}

impl Shape<'_> {
    /// `concurrency` tasks at once, no events, no export.
    #[must_use]
    pub fn plain(concurrency: u16) -> Self {
        Self {
            concurrency,
            events: false,
            otlp: None,
        }
    }
}

/// Starts `replicas` worker processes on the `n` tasks waiting in `{p}.tasks`
/// and times them from the moment all are ready until the tasks are settled.
/// Tasks settled before the last replica came up are left out of the rate.
///
/// # Errors
/// A worker fails, stalls, or messages are left unacknowledged.
pub async fn drain(
    env: &BenchEnv,
    config: &ChildConfig,
    replicas: usize,
    shape: Shape<'_>,
    n: u64,
    progress: impl FnMut(u64),
) -> anyhow::Result<ProcDrain> {
    let workers = (0..replicas)
        .map(|_| Worker::spawn(config, shape.concurrency, shape.events, shape.otlp))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for w in &workers {
        w.wait_ready().await?;
    }
    let before = succeeded(&workers).await?;
    let started = Instant::now();
    Poller::new("worker processes to drain the queue", POLL)
        .count_until_done(
            before,
            || {
                let workers = &workers;
                async move {
                    let done = succeeded(workers).await?;
                    Ok((done, done >= n))
                }
            },
            progress,
        )
        .await?;
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let peak_rss_mib = workers
        .iter()
        .filter_map(|w| w.status_mib("VmHWM"))
        .fold(0.0, f64::max);
    for w in workers {
        w.stop().await?;
    }
    env.expect_drained(&format!("{replicas} worker process(es)"))
        .await?;
    #[allow(clippy::cast_precision_loss)]
    let rate = n.saturating_sub(before) as f64 / elapsed;
    Ok(ProcDrain { rate, peak_rss_mib })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_noop_success_counter_is_read_from_the_exposition() {
        let text = "# TYPE warden_tasks counter\n\
            warden_tasks_total{type=\"builtin.noop\",outcome=\"succeeded\"} 1234\n\
            warden_tasks_total{type=\"builtin.noop\",outcome=\"dead\"} 5\n\
            warden_tasks_total{type=\"other\",outcome=\"succeeded\"} 7\n";
        assert_eq!(succeeded_in(text), 1234);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        assert!(status_mib(std::process::id(), "VmRSS").unwrap() > 0.0);
    }
}
