//! The command line: one binary, one subcommand per role or tool.

pub mod commands;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// warden: a crash-proof RabbitMQ task worker.
#[derive(Debug, Parser)]
#[command(name = "warden", version, about, propagate_version = true)]
pub struct Cli {
    /// TOML configuration file (also `WARDEN_CONFIG`); `WARDEN_*` env vars override it.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume and run tasks until SIGTERM/SIGINT.
    Worker,
    /// Heal revoked channel tokens (refresh grant, then a headless browser login).
    Reauth,
    /// Serve the simulated OAuth2 provider (tests, demo, rehearsing a login flow).
    DemoProvider {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8765")]
        addr: std::net::SocketAddr,
        /// Provider configuration (TOML: client_id, client_secret, accounts …);
        /// without it, one demo account `acme-main` (user `acme`).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Show channels: provider, status and token version (never a token).
    Channels {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Manage channel tokens.
    Token {
        /// What to do.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Declare the broker topology and show every queue with its message count.
    Topology {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// `migrate`: bring queues declared with other arguments (by an older
        /// warden) to the current ones, keeping their messages.
        #[command(subcommand)]
        command: Option<TopologyCommand>,
    },
    /// Publish tasks with publisher confirms.
    Publish(PublishArgs),
    /// Inspect and act on dead letters.
    Dlq {
        /// What to do with them.
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Run a worker on a throwaway prefix against a mixed batch, and show what happened.
    Demo {
        /// How many `builtin.noop` tasks to add to the mix.
        #[arg(long, default_value_t = 200)]
        noop: usize,
        /// Keep the demo's queues afterwards (for `warden topology`, `warden dlq list`).
        #[arg(long)]
        keep: bool,
    },
    /// Measure the real worker against the real broker and a raw-client
    /// baseline on a throwaway prefix; prints a table (or JSON).
    Bench(BenchArgs),
    /// Configuration helpers.
    Config {
        /// Which helper.
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// `warden publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Task type (the routing key).
    #[arg(long = "type", value_name = "TYPE", required_unless_present = "file")]
    pub kind: Option<String>,
    /// The channel (third-party account) the task acts for.
    #[arg(long)]
    pub channel: Option<String>,
    /// JSON payload.
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,
    /// How many copies (each with its own id).
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// NDJSON file of tasks, one object per line (`id` optional).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["kind", "payload", "channel"])]
    pub file: Option<PathBuf>,
}

/// `warden bench`.
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
    pub scenarios: Vec<crate::bench::Scenario>,
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
}

/// Filters shared by `dlq replay` and `dlq purge`.
#[derive(Debug, Args, Clone)]
pub struct DlqFilter {
    /// Only dead letters with this reason (e.g. `retries_exhausted`).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only this task type.
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// Only this channel.
    #[arg(long)]
    pub channel: Option<String>,
    /// At most this many.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// `warden topology …`.
#[derive(Debug, Subcommand)]
pub enum TopologyCommand {
    /// Move the messages of every queue whose arguments differ from what this
    /// warden declares aside, declare the queue anew, and move them back.
    /// Stop the workers of the prefix first.
    Migrate,
}

/// `warden dlq …`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters without removing or reordering them.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move matching dead letters back to the task queue, attempts reset.
    Replay {
        /// Which ones.
        #[command(flatten)]
        filter: DlqFilter,
        /// Only show what would be replayed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete matching dead letters.
    Purge {
        /// Which ones.
        #[command(flatten)]
        filter: DlqFilter,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// `warden token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Store a token for a channel, read from stdin: the access token on the
    /// first line and optionally the refresh token on the second, or a JSON
    /// token response (`access_token`, `refresh_token`, `expires_in`).
    Set {
        /// The channel.
        #[arg(long)]
        channel: String,
        /// Its provider (defaults to the configured one).
        #[arg(long)]
        provider: Option<String>,
    },
    /// Re-encrypt every stored token under the current key
    /// (`WARDEN_TOKEN_KEY`), reading old rows with `WARDEN_TOKEN_KEY_PREVIOUS`;
    /// afterwards the previous keys can be retired.
    Rekey,
}

/// `warden config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration, read every `env:`/`file:` secret reference
    /// (naming each one that cannot be read), and print the configuration
    /// with secrets redacted.
    Check {
        /// Do not read the secret references: for checking a file away from
        /// the machine or pod that holds its secrets.
        #[arg(long)]
        skip_secrets: bool,
    },
    /// Print every environment variable warden reads, one per line.
    EnvKeys,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        super::Cli::command().debug_assert();
    }
}
