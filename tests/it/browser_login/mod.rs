//! Browser logins with real Chromium through Playwright against the simulated provider,
//! which runs in-process on 127.0.0.1:0. Needs `eval "$(scripts/setup-playwright.sh)"`.

mod crashes;
mod flows;
mod hosts;

use std::future::Future;
use std::time::{Duration, Instant};

use crate::support::eventually;
use crate::support::provider_browser::{
    children_named, client_secret_file, credentials, require_playwright, simulator_provider,
};
use crate::support::provider_http::{CLIENT_ID, CLIENT_SECRET, TOTP_SEED, TestProvider};
use secrecy::{ExposeSecret as _, SecretString};
use warden::reauth::browser::{LoginDriver, LoginError};
use warden::reauth::flow::{
    AuthorizationCode, ChannelCredentials, OAuthProvider, Step, TOTP_SECRET,
};
use warden_devkit::provider::ProviderConfig;

const TIMEOUT: Duration = Duration::from_secs(20);

struct Fixture {
    provider: TestProvider,
    secrets: tempfile::TempDir,
}

impl Fixture {
    async fn start(config: ProviderConfig) -> Self {
        require_playwright();
        // The simulator refuses requests without PKCE, so every browser test proves the
        // driver sends a challenge and the exchange its verifier.
        let config = ProviderConfig {
            require_pkce: true,
            ..config
        };
        Self {
            provider: TestProvider::start(config).await,
            secrets: tempfile::tempdir().unwrap(),
        }
    }

    fn oauth(&self) -> OAuthProvider {
        simulator_provider(
            &self.provider.base,
            CLIENT_ID,
            client_secret_file(&self.secrets, CLIENT_SECRET),
        )
    }

    /// acme logs in through the simulator's own flow on `driver`.
    async fn log_in(&self, driver: &LoginDriver) -> Result<AuthorizationCode, LoginError> {
        log_in(driver, &self.oauth()).await
    }

    /// While `hold` is true, the provider keeps every login form submission
    /// waiting: a browser that submitted is surely mid-login.
    fn hold_logins(&self, hold: bool) {
        self.provider.state.hold_logins(hold);
    }

    /// Waits until the provider holds a login submission (see [`Self::hold_logins`]).
    async fn until_a_login_is_held(&self) {
        assert!(
            eventually(TIMEOUT, async || self.provider.state.logins_on_hold() > 0).await,
            "no login submission reached the provider within {TIMEOUT:?}"
        );
    }

    /// Asserts that the provider's API takes a post on `channel` with `access_token`.
    async fn assert_api_accepts(&self, channel: &str, access_token: &SecretString) {
        let status = reqwest::Client::new()
            .post(self.provider.url(&format!("/api/channels/{channel}/posts")))
            .bearer_auth(access_token.expose_secret())
            .json(&serde_json::json!({"text": "hi"}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "the API accepts the token");
    }
}

/// acme's account at the simulator, with its right password.
fn acme() -> ChannelCredentials {
    credentials("acme", "acme-user", "acme-pass")
}

/// globex's account, which asks for a one-time code after the password.
fn globex() -> ChannelCredentials {
    credentials("globex", "globex-user", "globex-pass")
        .with(TOTP_SECRET, SecretString::from(TOTP_SEED.to_owned()))
}

/// acme logs in through `oauth` on `driver`, within the tests' timeout.
async fn log_in(
    driver: &LoginDriver,
    oauth: &OAuthProvider,
) -> Result<AuthorizationCode, LoginError> {
    driver.login(oauth, &acme(), TIMEOUT).await
}

/// `oauth` with its flow replaced by `steps`.
fn with_flow(mut oauth: OAuthProvider, steps: Vec<Step>) -> OAuthProvider {
    oauth.login_flow = steps;
    oauth
}

/// The Playwright driver of this test's [`LoginDriver`]: the one node process
/// that this test process started.
fn driver_process() -> u32 {
    let node = children_named(std::process::id(), "node");
    assert_eq!(node.len(), 1, "one driver process: {node:?}");
    node[0]
}

fn sigkill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// Asserts that `driver` has shut down its browser, with no process of it left.
async fn assert_browser_gone(driver: &LoginDriver) {
    assert!(
        eventually(Duration::from_secs(10), async || driver
            .browser_pids()
            .is_empty())
        .await,
        "no Chromium of this driver remains: {:?}",
        driver.browser_pids()
    );
}

/// `work`'s result and how long it took.
async fn timed<T>(work: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = work.await;
    (out, started.elapsed())
}
