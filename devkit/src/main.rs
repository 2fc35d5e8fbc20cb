//! The `warden-dev` binary: the dev kit's tools (`demo`, `bench`, `provider`).
//! Like `warden`, it is a binary built on the library
//! ([`warden::cli::run_binary`]), sandbox included: the demo's worker runs
//! in this process, and its suspect tasks in this executable started again.

use std::process::ExitCode;

use clap::Parser;
use warden_devkit::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    warden::cli::run_binary("warden-dev", &cli.global, cli.command, Command::run).await
}
