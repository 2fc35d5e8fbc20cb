//! The command line: one binary, one subcommand per role or tool, and
//! [`run_binary`], the start and end every binary built on the library shares.

pub mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;

/// The life of a command-line binary built on the library (`warden`, and the
/// dev kit's `warden-dev`): loads the settings (`--config` or `WARDEN_CONFIG`,
/// then `WARDEN_*`), starts logging and trace export, turns SIGTERM/SIGINT
/// into a cancellation token, runs `command` with `run`, flushes the last
/// spans, and maps an error to an exit code ([`commands::exit_code`]),
/// printed as `{name}: …`.
///
/// A process started as a worker's sandbox (the binary of a worker started
/// again, with the worker's own command line, see
/// [`crate::worker::sandbox`]) serves the sandbox instead of `command`, with
/// the built-in and configured handlers: whatever its command line says, it
/// only runs tasks, with the effective settings the worker sends it.
pub async fn run_binary<C, F, Fut>(name: &str, global: &GlobalArgs, command: C, run: F) -> ExitCode
where
    F: FnOnce(C, Settings, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let settings = match Settings::load(global.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(64); // EX_USAGE
        }
    };
    let telemetry = crate::observe::telemetry::init(settings.log_format);
    let result = if let Some(socket) = crate::worker::sandbox::child_socket() {
        drop(settings);
        crate::worker::sandbox::child::serve(&socket, |s| {
            crate::handler::Registry::from_settings(s).map_err(anyhow::Error::from)
        })
        .await
    } else {
        run(command, settings, crate::shutdown::on_signals()).await
    };
    // Flush the spans of the last tasks before the process goes.
    telemetry.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::from(commands::exit_code(&e))
        }
    }
}

/// warden: a crash-proof RabbitMQ task worker.
#[derive(Debug, Parser)]
#[command(name = "warden", version, about, propagate_version = true)]
pub struct Cli {
    /// Options of every subcommand.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The options every binary built on the library takes, before or after
/// its subcommand; see [`run_binary`].
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// TOML configuration file (also `WARDEN_CONFIG`); `WARDEN_*` env vars override it.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume and run tasks until SIGTERM/SIGINT.
    Worker,
    /// Heal revoked channel tokens (refresh grant, then a headless browser login).
    Reauth,
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
