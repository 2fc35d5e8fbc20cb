//! `warden-dev provider`: the simulated provider in the foreground, for
//! compose, the demo and rehearsing a login flow.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{Account, ProviderConfig};

/// `warden-dev provider`.
#[derive(Debug, Args)]
pub struct ProviderArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8765")]
    pub addr: SocketAddr,
    /// Provider configuration (TOML: client_id, client_secret, accounts …);
    /// without it, one demo account `acme-main` (user `acme`).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

impl ProviderArgs {
    /// The configuration these arguments name: the file, or the demo client
    /// and account; bound to `--addr` either way.
    ///
    /// # Errors
    /// The file cannot be read, or is not a provider configuration (a
    /// [`warden::config::ConfigError`]).
    pub fn config(&self) -> anyhow::Result<ProviderConfig> {
        let mut config = match &self.file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                toml::from_str::<ProviderConfig>(&text).map_err(|e| {
                    warden::config::ConfigError::new(format!("{}: {e}", path.display()))
                })?
            }
            None => {
                eprintln!(
                    "provider: no --file; serving the demo client `warden-demo` and account `acme-main` (user `acme`)"
                );
                ProviderConfig::new("warden-demo", "demo-client-secret")
                    .with_account("acme-main", Account::new("acme", "correct-horse"))
            }
        };
        config.bind = self.addr;
        Ok(config)
    }
}

/// Serves the provider until `shutdown` is cancelled.
///
/// # Errors
/// An unreadable provider file, or the address cannot be bound.
pub async fn run(args: &ProviderArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    super::run(args.config()?, shutdown).await?;
    Ok(())
}
