//! The re-auth half of the demo (and of the bench's `reauth` scenario): a
//! simulated provider in this process, a throwaway SQLite token store with a
//! throwaway key, and channel `acme-main` that posts through the provider's API.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;
use tokio_util::sync::{CancellationToken, DropGuard};
use warden::amqp::envelope::Task;
use warden::config::{ChannelConfig, Settings};
use warden::handler::http::HttpHandlerConfig;
use warden::reauth::flow::{CredentialRefs, SecretRef};
use warden::store::{Keyring, TokenSet, TokenStore};

use crate::provider::{Account, ProviderConfig, RunningProvider};

/// `post.publish` tasks for channel `acme-main` before, and again after, the revocation.
pub(crate) const POSTS: usize = 20;

/// The simulated provider, the token store, and what keeps them alive.
///
/// `warden-dev bench --scenarios reauth` measures the same setup.
pub(crate) struct ReauthDemo {
    pub(crate) provider: RunningProvider,
    pub(crate) store: Arc<dyn TokenStore>,
    _stop: DropGuard,
    _dir: tempfile::TempDir,
}

impl ReauthDemo {
    pub(crate) const WHY_SKIPPED: &'static str = "Chromium and the Playwright driver are not set up (run `make run`, or `eval \"$(scripts/setup-playwright.sh)\"` first)";

    /// Whether a browser login can run here.
    pub(crate) fn browser_ready(settings: &Settings) -> bool {
        std::env::var_os("PLAYWRIGHT_DRIVER_PATH").is_some()
            && settings.reauth.chromium_path.exists()
    }

    /// Configures `settings` for the re-auth story: a provider in this
    /// process, channel `acme-main` with a valid token in a throwaway store
    /// (with a throwaway key), and the `post.publish` HTTP handler.
    pub(crate) async fn start(settings: &mut Settings) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let stop = CancellationToken::new();
        let password = uuid::Uuid::new_v4().to_string();
        let client_secret = uuid::Uuid::new_v4().to_string();
        let mut pc = ProviderConfig::new("warden-demo", client_secret.clone())
            .with_account("acme-main", Account::new("acme", password.clone()));
        pc.bind = "127.0.0.1:0".parse()?;
        let provider = crate::provider::start(pc, stop.clone()).await?;
        configure(settings, &provider, dir.path(), &client_secret, &password)?;
        let store = seed(settings, &provider, dir.path()).await?;
        Ok(Self {
            provider,
            store,
            _stop: stop.drop_guard(),
            _dir: dir,
        })
    }

    /// `n` `post.publish` tasks for channel `acme-main`.
    pub(crate) fn posts(n: usize) -> Vec<Task> {
        (0..n)
            .map(|i| Task {
                channel: Some("acme-main".into()),
                ..Task::new("post.publish", json!({ "text": format!("hello {i}") }))
            })
            .collect()
    }
}

/// Provider `demo`, channel `acme-main` and the `post.publish` handler, with
/// the secrets in owner-only files under `dir`, referenced from `settings`.
fn configure(
    settings: &mut Settings,
    provider: &RunningProvider,
    dir: &Path,
    client_secret: &str,
    password: &str,
) -> anyhow::Result<()> {
    let secret = |name: &str, value: &str| -> anyhow::Result<SecretRef> {
        let path = dir.join(name);
        std::fs::write(&path, value)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        Ok(SecretRef::File(path))
    };
    let oauth = crate::provider::oauth_client(
        &provider.base_url(),
        "warden-demo",
        secret("client-secret", client_secret)?,
    )?;
    settings.providers.insert("demo".into(), oauth);
    let mut credentials = CredentialRefs::new();
    credentials.insert("username".into(), secret("username", "acme")?);
    credentials.insert("password".into(), secret("password", password)?);
    settings.channels.insert(
        "acme-main".into(),
        ChannelConfig {
            provider: "demo".into(),
            credentials,
        },
    );
    settings.handlers.insert(
        "post.publish".into(),
        HttpHandlerConfig {
            method: "POST".into(),
            url: format!("{}/api/channels/{{channel}}/posts", provider.base_url()),
            timeout: Duration::from_secs(10),
            plain_http: false,
            idempotency_header: "Idempotency-Key".into(),
            revocation_in_body: false,
        },
    );
    Ok(())
}

/// A throwaway SQLite store under `dir` (named in `settings`) holding a
/// valid token for `acme-main`, minted at the provider.
async fn seed(
    settings: &mut Settings,
    provider: &RunningProvider,
    dir: &Path,
) -> anyhow::Result<Arc<dyn TokenStore>> {
    let url = format!("sqlite://{}/demo.db", dir.display());
    settings.token_store = Some(SecretString::from(url.clone()));
    let store = warden::store::connect(&url, Keyring::generate()).await?;
    let t = provider
        .state
        .mint_tokens("acme-main")
        .ok_or_else(|| anyhow::anyhow!("provider has no acme-main"))?;
    store
        .put_token(
            "acme-main",
            "demo",
            &TokenSet::new(SecretString::from(t.access_token)),
        )
        .await?;
    Ok(store)
}
