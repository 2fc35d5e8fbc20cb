//! A whole re-auth setup on one prefix: the simulated provider speaking real
//! HTTP, a SQLite token store seeded through the CLI, a config file naming the
//! provider, its channels and the `post.publish` handler, and the environment
//! that `warden worker` and `warden reauth` need. Used by the re-auth tests
//! and the chaos suite.

#![allow(dead_code)] // each test binary uses a different part of it

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde_json::json;

use super::{TestBroker, WardenProc};
use warden::reauth::flow::SecretRef;
use warden_devkit::provider::{Account, ProviderConfig, RunningProvider};

pub const USER: &str = "acme";
pub const PASSWORD: &str = "pw-Corr3ct-h0rse";
pub const CLIENT_SECRET: &str = "client-s3cret-value";
/// The channel of [`Stack::new`].
pub const MAIN: &str = "acme-main";

/// One isolated re-auth setup: a prefix, a provider, a store, a config file.
pub struct Stack {
    pub broker: TestBroker,
    pub provider: RunningProvider,
    _stop: tokio_util::sync::DropGuard,
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    /// The channels, each with its own account at the provider.
    pub channels: Vec<String>,
    /// The tokens seeded at start; they must never show up in any output.
    pub seeded: Vec<String>,
}

impl Stack {
    /// One channel, [`MAIN`], whose account logs in as [`USER`] with
    /// `password_in_config` (the provider expects [`PASSWORD`]).
    pub async fn new(test: &str, password_in_config: &str) -> Self {
        Self::with_channels(test, &[MAIN], password_in_config, |s| {
            s.retry.base_delay = Duration::from_millis(200);
        })
        .await
    }

    /// `channels`, each with an account of its own (the first one's username
    /// is [`USER`]), seeded with valid tokens. `tweak` adjusts the settings
    /// the prefix is declared with; parked tasks are re-checked every 2 s.
    pub async fn with_channels(
        test: &str,
        channels: &[&str],
        password_in_config: &str,
        tweak: impl FnOnce(&mut warden::config::Settings),
    ) -> Self {
        let broker = TestBroker::with(test, |s| {
            s.park_ttl = Duration::from_secs(2);
            tweak(s);
        })
        .await;
        let stop = tokio_util::sync::CancellationToken::new();
        let mut pc = ProviderConfig::new("warden-test", CLIENT_SECRET);
        for (i, channel) in channels.iter().enumerate() {
            pc = pc.with_account(*channel, Account::new(username(i), PASSWORD));
        }
        pc.bind = "127.0.0.1:0".parse().unwrap();
        let provider = warden_devkit::provider::start(pc, stop.clone())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("client-secret");
        std::fs::write(&secret_file, CLIENT_SECRET).unwrap();
        let oauth = warden_devkit::provider::oauth_client(
            &provider.base_url(),
            "warden-test",
            SecretRef::File(secret_file),
        )
        .unwrap();
        let sim = toml::Value::try_from(&oauth).unwrap();
        let (path, mut env) = write_config(dir.path(), &sim, &provider.base_url(), channels);
        env.extend(broker.env());

        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        env.extend([
            ("WARDEN_CONFIG".to_owned(), path.display().to_string()),
            ("WARDEN_TOKEN_KEY".to_owned(), key),
            ("T_ACME_PASS".to_owned(), password_in_config.to_owned()),
            ("WARDEN_PARK_TTL".to_owned(), "2s".to_owned()),
            ("WARDEN_REAUTH__LOGIN_TIMEOUT".to_owned(), "20s".to_owned()),
            ("WARDEN_REAUTH__MAX_ATTEMPTS".to_owned(), "2".to_owned()),
            (
                "WARDEN_REAUTH__ARTIFACTS_DIR".to_owned(),
                dir.path().join("artifacts").display().to_string(),
            ),
            ("PLAYWRIGHT_NO_SIGNAL_HANDLER".to_owned(), "1".to_owned()),
        ]);
        let mut stack = Self {
            broker,
            provider,
            _stop: stop.drop_guard(),
            dir,
            env,
            channels: channels.iter().map(|c| (*c).to_owned()).collect(),
            seeded: Vec::new(),
        };
        for channel in channels {
            stack.seed_token(channel);
        }
        stack
    }

    /// A valid token for `channel`, stored through the CLI as an operator would.
    fn seed_token(&mut self, channel: &str) {
        let t = self.provider.state.mint_tokens(channel).unwrap();
        self.seeded
            .extend([t.access_token.clone(), t.refresh_token.clone()]);
        let (code, _, err) = self.token_set(channel, &t.access_token, Some(&t.refresh_token));
        assert_eq!(code, 0, "{err}");
    }

    /// `warden token set` for `channel`: the access token, and the refresh
    /// token if any, on stdin, as an operator would type them.
    pub fn token_set(
        &self,
        channel: &str,
        access: &str,
        refresh: Option<&str>,
    ) -> (i32, String, String) {
        let input = match refresh {
            Some(refresh) => format!("{access}\n{refresh}\n"),
            None => format!("{access}\n"),
        };
        self.cli_stdin(&["token", "set", "--channel", channel], &input)
    }

    /// Runs the CLI with this stack's environment and `input` on its stdin;
    /// returns (code, stdout, stderr).
    pub fn cli_stdin(&self, args: &[&str], input: &str) -> (i32, String, String) {
        super::run_cli_with_stdin(args, &self.env_ref(), input)
    }

    /// Spawns the real binary with this stack's environment plus `extra`.
    pub fn spawn(&self, args: &[&str], extra: &[(&str, &str)]) -> WardenProc {
        let mut env = self.env.clone();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        WardenProc::spawn(args, &env)
    }

    /// The environment as `run_cli` takes it.
    pub fn env_ref(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// A `post.publish` task body for `channel`, as any producer would write it.
    pub fn post(id: &str, channel: &str, text: &str) -> serde_json::Value {
        json!({"id": id, "type": "post.publish", "channel": channel, "payload": {"text": text}})
    }

    /// Publishes `n` posts on [`MAIN`]; returns their ids.
    pub async fn publish_posts(&self, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for i in 0..n {
            ids.push(
                self.publish_post(json!({"text": format!("post {i}")}))
                    .await,
            );
        }
        ids
    }

    /// Publishes a post on [`MAIN`] with `payload`; returns its id.
    pub async fn publish_post(&self, payload: serde_json::Value) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let body = json!({"id": id, "type": "post.publish", "channel": MAIN, "payload": payload});
        self.broker
            .publish_raw("post.publish", body.to_string().as_bytes(), &id)
            .await;
        id
    }

    /// Rewrites the config file through `edit`, for processes started afterwards.
    pub fn edit_config(&self, edit: impl FnOnce(&mut toml::Table)) {
        let path = self.dir.path().join("warden.toml");
        let mut config: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        edit(&mut config);
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    }

    /// Sets `key` of the `post.publish` handler's settings to `value`.
    pub fn set_handler_option(&self, key: &str, value: impl Into<toml::Value>) {
        self.edit_config(|config| {
            config["handlers"]["post.publish"]
                .as_table_mut()
                .unwrap()
                .insert(key.into(), value.into());
        });
    }

    /// Makes every browser login hang: the flow first waits for an element
    /// the provider never shows, until the login timeout.
    pub fn hang_logins(&self) {
        self.edit_config(|config| {
            let flow = config["providers"]["sim"]["login_flow"]
                .as_array_mut()
                .unwrap();
            flow.insert(
                0,
                toml::toml! { action = "wait_for" selector = "#never" }.into(),
            );
        });
    }

    /// Marks [`MAIN`] pending at version 1 and publishes `n` revocation
    /// requests for it, as workers that saw its token refused would.
    pub async fn request_reauth(&self, n: usize) {
        let store = self.store().await;
        assert!(store.mark_pending(MAIN, 1).await.unwrap());
        store.close().await;
        self.publish_requests(1, n).await;
    }

    /// Publishes `n` revocation requests for [`MAIN`] at `failed_version`,
    /// whatever the channel's state: forged ones, when it is not pending there.
    pub async fn publish_requests(&self, failed_version: u64, n: usize) {
        for i in 0..n {
            self.broker
                .publish_reauth_request(MAIN, failed_version, &format!("t{i}"))
                .await;
        }
    }

    /// The SQLite database file of the token store.
    pub fn db_path(&self) -> std::path::PathBuf {
        self.dir.path().join("warden.db")
    }

    /// The token store, opened with this stack's key.
    pub async fn store(&self) -> std::sync::Arc<dyn warden::store::TokenStore> {
        let key = &self
            .env
            .iter()
            .find(|(k, _)| k == "WARDEN_TOKEN_KEY")
            .unwrap()
            .1;
        let keys = warden::store::Keyring::from_base64(key).unwrap();
        let url = format!("sqlite://{}", self.db_path().display());
        warden::store::connect(&url, keys).await.unwrap()
    }

    /// [`MAIN`]'s record in the token store.
    pub async fn record(&self) -> warden::store::ChannelRecord {
        let store = self.store().await;
        let r = store.get(MAIN).await.unwrap().unwrap();
        store.close().await;
        r
    }

    /// The provider's counters for `channel`.
    pub fn stats_of(&self, channel: &str) -> warden_devkit::provider::ChannelStats {
        self.provider
            .state
            .stats()
            .channels
            .get(channel)
            .cloned()
            .unwrap_or_default()
    }

    /// The provider's counters for [`MAIN`].
    pub fn stats(&self) -> warden_devkit::provider::ChannelStats {
        self.stats_of(MAIN)
    }
}

/// The login for the `i`-th channel's account: [`USER`], then `USER-1`, ...
fn username(i: usize) -> String {
    if i == 0 {
        USER.to_owned()
    } else {
        format!("{USER}-{i}")
    }
}

/// Writes `warden.toml` into `dir`: the token store there, provider `sim`,
/// `channels` whose credentials are references to the environment (never
/// inline), and a `post.publish` handler posting to the provider at
/// `base_url`. Returns its path and the environment its references name.
fn write_config(
    dir: &Path,
    sim: &toml::Value,
    base_url: &str,
    channels: &[&str],
) -> (PathBuf, Vec<(String, String)>) {
    let mut config = toml::Table::new();
    config.insert(
        "token_store".into(),
        format!("sqlite://{}/warden.db", dir.display()).into(),
    );
    let mut providers = toml::Table::new();
    providers.insert("sim".into(), sim.clone());
    config.insert("providers".into(), providers.into());
    let mut table = toml::Table::new();
    let mut env = Vec::new();
    for (i, channel) in channels.iter().enumerate() {
        // Credentials are references to the environment, never inline.
        let user_var = format!("T_USER_{i}");
        let mut credentials = toml::Table::new();
        credentials.insert("username".into(), format!("env:{user_var}").into());
        credentials.insert("password".into(), "env:T_ACME_PASS".into());
        let mut entry = toml::Table::new();
        entry.insert("provider".into(), "sim".into());
        entry.insert("credentials".into(), credentials.into());
        table.insert((*channel).to_owned(), entry.into());
        env.push((user_var, username(i)));
    }
    config.insert("channels".into(), table.into());
    let mut handler = toml::Table::new();
    handler.insert("method".into(), "POST".into());
    handler.insert(
        "url".into(),
        format!("{base_url}/api/channels/{{channel}}/posts").into(),
    );
    let mut handlers = toml::Table::new();
    handlers.insert("post.publish".into(), handler.into());
    config.insert("handlers".into(), handlers.into());
    let path = dir.join("warden.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    (path, env)
}
