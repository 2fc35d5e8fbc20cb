//! The `warden` binary: parse, configure, dispatch, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use warden::Settings;
use warden::cli::{Cli, commands};

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
    let telemetry = warden::observe::telemetry::init(settings.log_format);
    let shutdown = warden::shutdown::on_signals();
    let result = commands::run(cli.command, settings, shutdown).await;
    // Flush the spans of the last tasks before the process goes.
    telemetry.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warden: {e:#}");
            ExitCode::from(commands::exit_code(&e))
        }
    }
}
