//! The `warden` binary: parse, then run the command ([`warden::cli::run_binary`]
//! configures, dispatches and maps errors to exit codes).

use std::process::ExitCode;

use clap::Parser;
use warden::cli::{Cli, commands};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    warden::cli::run_binary("warden", &cli.global, cli.command, commands::run).await
}
