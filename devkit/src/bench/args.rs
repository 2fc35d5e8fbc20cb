//! `warden-dev bench`'s arguments: what to measure, how often, and which
//! `warden` binary runs as the worker processes.

use std::path::PathBuf;

use clap::Args;

/// `warden-dev bench`.
#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Messages per drain, baseline and publish run.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub n: u64,
    /// Which scenarios to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "drain,baseline,latency,publish,backlog,replicas,startup,tracing,suspects,reauth"
    )]
    pub scenarios: Vec<Scenario>,
    /// Rounds; every figure is reported as the median and spread over them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Worker concurrencies of the drain scenario.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub concurrency: Vec<u16>,
    /// Largest backlog of the backlog scenario (10k, 100k, 1M are measured up to it).
    #[arg(long, default_value_t = 100_000)]
    pub backlog_max: u64,
    /// Revocations measured by the reauth scenario, cold and again warm.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub reauth_runs: u32,
    /// The `warden` binary the worker-process scenarios (backlog, replicas,
    /// startup, tracing, suspects) run; by default the one beside this
    /// executable, i.e. of the same build.
    #[arg(long, env = crate::shipped::ENV, value_name = "PATH")]
    pub warden: Option<PathBuf>,
}

/// A part of the bench, selected with `--scenarios`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// The worker draining N waiting tasks, by concurrency and events.
    Drain,
    /// Raw lapin consumers on the same queue: the naive and coalesced references.
    Baseline,
    /// Publish→handler and publish→ack latency at a steady rate.
    Latency,
    /// `Publisher::publish_all` against a raw confirming publisher.
    Publish,
    /// Drain rate and peak memory as the backlog grows.
    Backlog,
    /// One worker process against two.
    Replicas,
    /// Time to `/readyz` and idle memory of `warden worker`.
    Startup,
    /// The cost of exporting every span over OTLP.
    Tracing,
    /// Revoked token → stored → parked task done, browser cold and warm.
    Reauth,
    /// A cut connection: how fast the redelivered suspects drain in the
    /// sandbox, and how long until the worker is back to speed.
    Suspects,
}

impl Scenario {
    /// Its name, as `--scenarios` takes it and the report prints it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Drain => "drain",
            Scenario::Baseline => "baseline",
            Scenario::Latency => "latency",
            Scenario::Publish => "publish",
            Scenario::Backlog => "backlog",
            Scenario::Replicas => "replicas",
            Scenario::Startup => "startup",
            Scenario::Tracing => "tracing",
            Scenario::Reauth => "reauth",
            Scenario::Suspects => "suspects",
        }
    }
}
