//! Starting and stopping the consumer: its admin server, its login driver,
//! and the supervised broker sessions in between.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::context::Ctx;
use super::session::Sessions;
use crate::config::Settings;
use crate::observe::admin::{AdminState, Health};
use crate::observe::metrics::Metrics;
use crate::reauth::browser::{LoginDriver, LoginDriverConfig};
use crate::store::TokenStore;

/// Runs the re-auth consumer with its admin server until `shutdown`.
///
/// # Errors
/// The token store or admin address cannot be opened; broker trouble is retried.
pub async fn run(
    settings: Settings,
    store: Arc<dyn TokenStore>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let health = Arc::new(Health::new(settings.liveness_limit));
    let metrics = Arc::new(Metrics::new());
    let listener = crate::observe::admin::bind(settings.admin_addr).await?;
    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn(crate::observe::admin::serve(
        listener,
        AdminState {
            health: health.clone(),
            metrics: metrics.clone(),
        },
        admin_stop.clone(),
    ));
    let driver = Arc::new(login_driver(&settings));
    let ctx = Arc::new(Ctx::new(
        settings,
        store,
        driver.clone(),
        metrics.clone(),
        shutdown.clone(),
    )?);
    tracing::info!(
        channels = ctx.settings.channels.len(),
        "re-auth consumer starting"
    );
    let sessions = Sessions {
        ctx: ctx.clone(),
        health: health.clone(),
    };
    crate::supervisor::supervise(
        &ctx.settings,
        "reauth",
        &health,
        &metrics,
        &sessions,
        &shutdown,
    )
    .await;
    // No Chromium or node process may outlive warden.
    driver.shutdown().await;
    admin_stop.cancel();
    admin.await??;
    tracing::info!("re-auth consumer stopped");
    Ok(())
}

/// One browser for every provider: launched able to resolve all their hosts.
fn login_driver(settings: &Settings) -> LoginDriver {
    LoginDriver::new(LoginDriverConfig {
        chromium_path: settings.reauth.chromium_path.clone(),
        artifacts_dir: settings.reauth.artifacts_dir.clone(),
        resolvable_hosts: settings
            .providers
            .values()
            .flat_map(|p| p.allowed_hosts.iter().cloned())
            .collect(),
        ..LoginDriverConfig::default()
    })
}
