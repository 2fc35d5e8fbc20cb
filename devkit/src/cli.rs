//! The `warden-dev` command line: one subcommand per tool of the dev kit.

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use warden::Settings;
use warden::cli::GlobalArgs;

use crate::bench::BenchArgs;
use crate::demo::DemoArgs;
use crate::provider::ProviderArgs;

/// warden-dev: warden's demo, bench and simulated OAuth provider.
#[derive(Debug, Parser)]
#[command(name = "warden-dev", version, about, propagate_version = true)]
pub struct Cli {
    /// Options of every subcommand (`--config`), as `warden` takes them.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a worker on a throwaway prefix against a mixed batch, and show what happened.
    Demo(DemoArgs),
    /// Measure the shipped `warden worker` against the real broker and a
    /// raw-client baseline on a throwaway prefix; prints a table (or JSON).
    Bench(BenchArgs),
    /// Serve the simulated OAuth2 provider (tests, demo, compose, rehearsing a login flow).
    Provider(ProviderArgs),
}

impl Command {
    /// Runs the subcommand to completion; `shutdown` is cancelled on SIGTERM/SIGINT.
    ///
    /// # Errors
    /// Whatever the command reports.
    pub async fn run(self, settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
        match self {
            Self::Demo(args) => crate::demo::run(&settings, &args).await,
            Self::Bench(args) => crate::bench::run(&settings, args, shutdown).await,
            Self::Provider(args) => crate::provider::command::run(&args, shutdown).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        super::Cli::command().debug_assert();
    }
}
