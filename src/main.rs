//! The `warden` binary: parse, configure, dispatch, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use warden::cli::{Cli, Command};
use warden::{Settings, commands};

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
        Command::Worker => warden::worker::serve(settings, shutdown).await,
        Command::Reauth => commands::reauth(settings, shutdown).await,
        Command::DemoProvider { addr, file } => commands::demo_provider(addr, file, shutdown).await,
        Command::Channels { json } => commands::channels(&settings, json).await,
        Command::Token { command } => commands::token(&settings, command).await,
        Command::Topology { json } => commands::topology(&settings, json).await,
        Command::Publish(args) => commands::publish(&settings, args).await,
        Command::Dlq { command } => commands::dlq(&settings, command).await,
        Command::Demo { noop, keep } => warden::demo::run(&settings, noop, keep).await,
        Command::Bench(args) => warden::bench::run(&settings, args, shutdown).await,
        Command::Config { command } => commands::config(&settings, &command),
    };
    result.map_or_else(
        |e| ExitCode::from(warden::commands::exit_code(&e)),
        |()| ExitCode::SUCCESS,
    )
}
