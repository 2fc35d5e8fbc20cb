//! The `warden` binary: parse, configure, dispatch, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use warden::cli::{Cli, Command};
use warden::{Registry, Settings, commands};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warden: {e}");
            return ExitCode::from(64); // EX_USAGE
        }
    };
    warden::telemetry::init(settings.log_format);
    let shutdown = warden::shutdown::on_signals();
    let result = match cli.command {
        Command::Worker => {
            warden::worker::run(
                settings.clone(),
                Registry::builtin(settings.fault_handlers),
                shutdown,
            )
            .await
        }
        Command::Topology { json } => commands::topology(&settings, json).await,
        Command::Publish(args) => commands::publish(&settings, args).await,
        Command::Dlq { command } => commands::dlq(&settings, command).await,
        Command::Demo { noop, keep } => warden::demo::run(&settings, noop, keep).await,
        Command::Config { command } => commands::config(&settings, &command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warden: {e:#}");
            ExitCode::from(if e.is::<warden::broker::Unreachable>() {
                69
            } else {
                1
            }) // EX_UNAVAILABLE
        }
    }
}
