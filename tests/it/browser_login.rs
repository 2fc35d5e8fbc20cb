//! Browser logins with real Chromium through Playwright against the simulated provider,
//! which runs in-process on 127.0.0.1:0. Needs `eval "$(scripts/setup-playwright.sh)"`.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::support::eventually;
use crate::support::provider_browser::{
    alive, browser_descendants, browser_turn, children_named, client_secret_file, credentials,
    driver_config, require_playwright, simulator_provider,
};
use crate::support::provider_http::{
    CLIENT_ID, CLIENT_SECRET, TOTP_SEED, TestProvider, two_channel_config,
};
use secrecy::{ExposeSecret as _, SecretString};
use warden::provider::ProviderConfig;
use warden::reauth::browser::{LoginDriver, LoginError, LoginErrorKind};
use warden::reauth::flow::{
    AuthorizationCode, ChannelCredentials, OAuthProvider, Step, TOTP_SECRET,
};

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

#[tokio::test]
async fn a_browser_login_obtains_a_code_that_exchanges_for_a_working_token() {
    let _turn = browser_turn().await;
    let fixture = Fixture::start(two_channel_config()).await;
    let oauth = fixture.oauth();
    let driver = LoginDriver::new(driver_config(None));

    let code = log_in(&driver, &oauth).await.expect("login succeeds");
    assert_eq!(
        driver.open_contexts(),
        0,
        "the context is closed after success"
    );
    assert!(!format!("{code:?}").contains(code.secret().expose_secret()));

    let tokens = oauth
        .exchange_code(&reqwest::Client::new(), &code)
        .await
        .expect("code exchanges");
    assert_eq!(tokens.expires_in, Some(Duration::from_secs(3600)));
    let refresh = tokens.refresh_token.clone().expect("refresh token issued");
    fixture
        .assert_api_accepts("acme", &tokens.access_token)
        .await;

    // The refresh grant works from the same provider entry.
    let renewed = oauth
        .refresh(&reqwest::Client::new(), &refresh)
        .await
        .unwrap();
    assert_ne!(
        renewed.access_token.expose_secret(),
        tokens.access_token.expose_secret()
    );
    let stats = fixture.provider.stats().await;
    assert_eq!(stats.channels["acme"].logins, 1);
    assert_eq!(stats.token_grants.authorization_code, 1);
    driver.shutdown().await;
}

#[tokio::test]
async fn a_totp_step_types_a_valid_one_time_code() {
    let _turn = browser_turn().await;
    let fixture = Fixture::start(two_channel_config()).await;
    let oauth = fixture.oauth();
    let driver = LoginDriver::new(driver_config(None));

    let code = driver
        .login(&oauth, &globex(), TIMEOUT)
        .await
        .expect("login with TOTP");

    oauth
        .exchange_code(&reqwest::Client::new(), &code)
        .await
        .expect("code exchanges");
    let stats = fixture.provider.stats().await;
    assert_eq!((stats.channels["globex"].logins, stats.failed_totp), (1, 0));
    driver.shutdown().await;
}

#[tokio::test]
async fn a_wrong_password_fails_as_bad_credentials_quickly_and_saves_private_artifacts() {
    use std::os::unix::fs::PermissionsExt as _;
    let _turn = browser_turn().await;
    let fixture = Fixture::start(two_channel_config()).await;
    let oauth = fixture.oauth();
    let artifacts = tempfile::tempdir().unwrap();
    let root = artifacts.path().join("login-artifacts");
    let driver = LoginDriver::new(driver_config(Some(root.clone())));
    driver.warm_up().await.unwrap();

    let wrong = credentials("acme", "acme-user", "wrong-password-123");
    let (error, elapsed) = timed(driver.login(&oauth, &wrong, TIMEOUT)).await;
    let error = error.expect_err("a wrong password fails");

    assert_eq!(error.kind(), LoginErrorKind::BadCredentials, "{error}");
    assert!(!error.is_retryable());
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(!error.to_string().contains("wrong-password-123"));
    assert_eq!(driver.open_contexts(), 0);

    let dir = error.artifacts().expect("artifacts saved").to_owned();
    assert!(dir.starts_with(&root));
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    for d in [&root, &dir] {
        assert_eq!(mode(d), 0o700, "{} has mode {:o}", d.display(), mode(d));
    }
    let png = std::fs::read(dir.join("page.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let html = std::fs::read_to_string(dir.join("page.html")).unwrap();
    assert!(html.contains("Invalid username or password"));
    assert!(!html.contains("wrong-password-123") && !html.contains("acme-user"));
    assert_eq!(mode(&dir.join("page.html")), 0o600);
    assert_eq!(
        fixture.provider.stats().await.channels["acme"].failed_logins,
        1
    );
    driver.shutdown().await;
}

#[tokio::test]
async fn artifacts_can_be_switched_off() {
    let _turn = browser_turn().await;
    let fixture = Fixture::start(two_channel_config()).await;
    let driver = LoginDriver::new(driver_config(None));
    let error = driver
        .login(
            &fixture.oauth(),
            &credentials("acme", "acme-user", "nope-nope"),
            TIMEOUT,
        )
        .await
        .unwrap_err();
    assert!(error.is_bad_credentials());
    assert!(error.artifacts().is_none());
    driver.shutdown().await;
}

#[tokio::test]
async fn navigation_to_a_host_outside_allowed_hosts_is_blocked() {
    let _turn = browser_turn().await;
    // "localhost" is not in allowed_hosts ["127.0.0.1"], though it names the same machine.
    let fixture = Fixture::start(ProviderConfig {
        help_url: "http://localhost:9/help".into(),
        ..two_channel_config()
    })
    .await;
    let driver = LoginDriver::new(driver_config(None));

    // A goto step straight to a foreign host.
    let goto = with_flow(
        fixture.oauth(),
        vec![Step::Goto {
            url: "http://localhost:9/elsewhere".into(),
        }],
    );
    let (error, elapsed) = timed(log_in(&driver, &goto)).await;
    let error = error.unwrap_err();
    assert_eq!(error.kind(), LoginErrorKind::BlockedNavigation, "{error}");
    assert!(error.detail().contains("localhost"));
    assert!(elapsed < Duration::from_secs(5));

    // A link on the provider's own login page that leads off the allowlist.
    let click = with_flow(
        fixture.oauth(),
        vec![Step::Click {
            selector: "#forgot-password".into(),
        }],
    );
    let error = log_in(&driver, &click).await.unwrap_err();
    assert_eq!(error.kind(), LoginErrorKind::BlockedNavigation, "{error}");
    assert_eq!(driver.open_contexts(), 0);
    driver.shutdown().await;
}

#[tokio::test]
async fn a_login_that_never_receives_a_code_times_out_and_closes_its_context() {
    let _turn = browser_turn().await;
    let fixture = Fixture::start(two_channel_config()).await;
    let mut oauth = fixture.oauth();
    oauth.login_flow.push(Step::WaitFor {
        selector: "#never-there".into(),
    });
    oauth
        .login_flow
        .retain(|s| !matches!(s, Step::Click { selector } if selector == "#allow"));
    let driver = LoginDriver::new(driver_config(None));
    driver.warm_up().await.unwrap();

    let (error, elapsed) = timed(driver.login(&oauth, &acme(), Duration::from_secs(2))).await;
    let error = error.unwrap_err();
    assert_eq!(error.kind(), LoginErrorKind::Timeout, "{error}");
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(6),
        "{elapsed:?}"
    );
    assert_eq!(driver.open_contexts(), 0);
    driver.shutdown().await;
}

#[tokio::test]
async fn a_cancelled_login_still_closes_its_context() {
    let _turn = browser_turn().await;
    let fixture = Fixture::start(two_channel_config()).await;
    let driver = LoginDriver::new(driver_config(None));
    driver.warm_up().await.unwrap();

    // Dropped while the provider holds its form submission: surely mid-login.
    fixture.hold_logins(true);
    tokio::select! {
        result = fixture.log_in(&driver) => {
            panic!("the login ended while its submission was held: {result:?}")
        }
        () = fixture.until_a_login_is_held() => {}
    }

    assert!(
        eventually(Duration::from_secs(5), async || driver.open_contexts() == 0).await,
        "context closed in the background"
    );
    fixture.hold_logins(false);
    // The browser is still good for the next login.
    fixture.log_in(&driver).await.expect("next login works");
    assert_eq!(driver.launches(), 1);
    driver.shutdown().await;
}

#[tokio::test]
async fn killing_chromium_mid_login_fails_that_login_and_the_next_one_relaunches() {
    let _turn = browser_turn().await;
    let fixture = Fixture::start(two_channel_config()).await;
    let before = browser_descendants();
    let driver = LoginDriver::new(driver_config(None));

    // The provider holds the login's submission, so the kill lands mid-login.
    fixture.hold_logins(true);
    let login = fixture.log_in(&driver);
    let killer = async {
        fixture.until_a_login_is_held().await;
        sigkill(
            driver
                .browser_main_pid()
                .expect("the browser runs the held login"),
        );
        Instant::now()
    };
    let (result, killed_at) = tokio::join!(login, killer);
    fixture.hold_logins(false);
    let error = result.expect_err("the login in flight fails");
    assert_eq!(error.kind(), LoginErrorKind::BrowserCrashed, "{error}");
    assert!(
        killed_at.elapsed() < Duration::from_secs(10),
        "failed promptly, not by timeout"
    );
    assert_eq!(driver.open_contexts(), 0);

    fixture
        .log_in(&driver)
        .await
        .expect("the next login relaunches and succeeds");
    assert_eq!(driver.launches(), 2);

    driver.shutdown().await;
    assert_browser_gone(&driver).await;
    assert!(
        eventually(Duration::from_secs(10), async || browser_descendants()
            .len()
            <= before.len())
        .await,
        "no node or Chromium started by the test remains: {:?} (before: {before:?})",
        browser_descendants()
    );
}

#[tokio::test]
async fn after_shutdown_no_chromium_or_node_process_started_by_the_test_remains() {
    let _turn = browser_turn().await;
    let fixture = Fixture::start(two_channel_config()).await;
    let before = browser_descendants();
    let driver = LoginDriver::new(driver_config(None));
    fixture.log_in(&driver).await.unwrap();
    let during = browser_descendants();
    assert!(
        during.iter().any(|(_, comm)| comm.contains("node")),
        "the driver runs as a child of the test: {during:?}"
    );
    assert!(!driver.browser_pids().is_empty());

    driver.shutdown().await;

    assert!(
        eventually(Duration::from_secs(10), async || driver
            .browser_pids()
            .is_empty()
            && browser_descendants().len() <= before.len())
        .await,
        "left behind: marked {:?}, descendants {:?}",
        driver.browser_pids(),
        browser_descendants()
    );
    let error = fixture.log_in(&driver).await.unwrap_err();
    assert_eq!(
        error.kind(),
        LoginErrorKind::Other,
        "logins after shutdown are refused"
    );
}

/// Median, fastest and slowest of `samples`.
fn summary(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
    )
}

/// Cold logins (each on a driver of its own, which launches its browser)
/// against warm ones (one browser kept), interleaved so that the machine's load
/// falls on both alike. Prints the figures: `cargo test --test it
/// login_timings -- --nocapture` (`TIMING_TRACE=1` logs each step).
#[tokio::test]
async fn login_timings_cold_and_warm() {
    // Each round: one cold login, then warm ones, then one whose code is exchanged.
    const ROUNDS: u64 = 3;
    const WARM_PER_ROUND: u64 = 3;
    let _trace = std::env::var_os("TIMING_TRACE").map(|_| {
        tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_env_filter("warden=debug,playwright_rs=info")
                .finish(),
        )
    });
    let _turn = browser_turn().await;
    let fixture = Fixture::start(two_channel_config()).await;
    let oauth = fixture.oauth();
    let warm_driver = LoginDriver::new(driver_config(None));
    warm_driver.warm_up().await.unwrap();
    let (mut cold, mut warm, mut exchange) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let driver = LoginDriver::new(driver_config(None));
        let (code, took) = timed(log_in(&driver, &oauth)).await;
        code.expect("a cold login succeeds");
        assert_eq!(driver.launches(), 1, "a cold login launches its browser");
        cold.push(took);
        driver.shutdown().await;
        for _ in 0..WARM_PER_ROUND {
            let (code, took) = timed(log_in(&warm_driver, &oauth)).await;
            code.expect("a warm login succeeds");
            warm.push(took);
        }
        let code = log_in(&warm_driver, &oauth).await.expect("a warm login");
        let (tokens, took) = timed(oauth.exchange_code(&reqwest::Client::new(), &code)).await;
        let tokens = tokens.expect("the code exchanges for tokens");
        fixture
            .assert_api_accepts("acme", &tokens.access_token)
            .await;
        exchange.push(took);
    }
    assert_eq!(warm_driver.launches(), 1, "warm logins reuse one browser");
    warm_driver.shutdown().await;
    let stats = fixture.provider.stats().await;
    assert_eq!(
        stats.channels["acme"].logins,
        ROUNDS * (1 + WARM_PER_ROUND + 1)
    );
    assert_eq!(stats.token_grants.authorization_code, ROUNDS);

    let mut medians = Vec::new();
    for (name, samples) in [
        ("cold", &mut cold),
        ("warm", &mut warm),
        ("exchange", &mut exchange),
    ] {
        let (median, min, max) = summary(samples);
        println!(
            "{name}: median {median:?}, min {min:?}, max {max:?}, n={}",
            samples.len()
        );
        medians.push(median);
    }
    assert!(
        medians[1] < medians[0],
        "a warm login, which launches nothing, is faster than a cold one: {medians:?}"
    );
}

#[tokio::test]
async fn killing_the_playwright_driver_between_logins_relaunches_it() {
    let _turn = browser_turn().await;
    let fixture = Fixture::start(two_channel_config()).await;
    let driver = LoginDriver::new(driver_config(None));
    fixture.log_in(&driver).await.unwrap();

    let node = driver_process();
    sigkill(node);
    // Its browser goes with it; by then the driver's connection has read the
    // end of the dead driver's pipe, which is how the next login knows.
    let dead = async || !alive(node) && driver.browser_pids().is_empty();
    assert!(
        eventually(Duration::from_secs(10), dead).await,
        "the driver and its browser are gone before the next login: {:?}",
        driver.browser_pids()
    );

    fixture
        .log_in(&driver)
        .await
        .expect("the login after the driver died relaunches it");
    assert_eq!(driver.launches(), 2);
    driver.shutdown().await;
    assert_browser_gone(&driver).await;
}

#[tokio::test]
async fn killing_the_playwright_driver_mid_login_fails_that_login_as_a_crash() {
    let _turn = browser_turn().await;
    let fixture = Fixture::start(two_channel_config()).await;
    let driver = LoginDriver::new(driver_config(None));
    driver.warm_up().await.unwrap();
    let node = driver_process();

    // The provider holds the login's submission, so the kill lands mid-login.
    fixture.hold_logins(true);
    let (oauth, acme) = (fixture.oauth(), acme());
    let login = driver.login(&oauth, &acme, Duration::from_secs(4));
    let killer = async {
        fixture.until_a_login_is_held().await;
        sigkill(node);
    };
    let ((result, ()), elapsed) = timed(async { tokio::join!(login, killer) }).await;
    fixture.hold_logins(false);
    let error = result.unwrap_err();
    // A dead driver never answers; the browser process being gone is what tells
    // it apart from a slow page.
    assert_eq!(error.kind(), LoginErrorKind::BrowserCrashed, "{error}");
    assert!(elapsed < Duration::from_secs(7), "{elapsed:?}");

    fixture
        .log_in(&driver)
        .await
        .expect("the next login relaunches the driver");
    assert_eq!(driver.launches(), 2);
    driver.shutdown().await;
    assert_browser_gone(&driver).await;
}

/// A writer the tracing subscriber appends to, so a test can read everything logged.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logins_and_token_exchanges_log_no_secret_even_at_debug() {
    let _turn = browser_turn().await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        // playwright_rs at trace would print the JSON it sends, fill text included; warden
        // must run it at debug or less.
        .with_env_filter("warden=trace,playwright_rs=debug")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let fixture = Fixture::start(two_channel_config()).await;
    let oauth = fixture.oauth();
    let driver = LoginDriver::new(driver_config(Some(
        fixture.secrets.path().join("artifacts"),
    )));
    let code = driver.login(&oauth, &globex(), TIMEOUT).await.unwrap();
    let tokens = oauth
        .exchange_code(&reqwest::Client::new(), &code)
        .await
        .unwrap();
    let refresh = tokens.refresh_token.clone().unwrap();
    let renewed = oauth
        .refresh(&reqwest::Client::new(), &refresh)
        .await
        .unwrap();
    let _ = oauth
        .exchange_code(&reqwest::Client::new(), &code)
        .await
        .unwrap_err();
    let error = driver
        .login(
            &oauth,
            &credentials("acme", "acme-user", "acme-wrong-pass"),
            TIMEOUT,
        )
        .await
        .unwrap_err();
    assert!(error.is_bad_credentials());
    driver.shutdown().await;

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("browser login captured an authorization code"),
        "{log}"
    );
    for secret in [
        "globex-pass",
        "acme-wrong-pass",
        TOTP_SEED,
        CLIENT_SECRET,
        code.secret().expose_secret(),
        tokens.access_token.expose_secret(),
        refresh.expose_secret(),
        renewed.access_token.expose_secret(),
    ] {
        assert!(!log.contains(secret), "a secret leaked into the log");
    }
}

/// A provider that misbehaves, on 127.0.0.1: `/redirect` answers 302 to `outside`, `/ws`
/// is a page that opens a WebSocket to `outside`. Returns its base URL.
async fn hostile_provider(outside: std::net::SocketAddr) -> String {
    let to = format!("http://localhost:{}/stolen", outside.port());
    let ws = format!(
        "<html><body><p id=\"waiting\">waiting</p><script>new WebSocket(\"ws://localhost:{}/ws\");</script></body></html>",
        outside.port()
    );
    let app = axum::Router::new()
        .route(
            "/redirect",
            axum::routing::get(move || async move {
                (axum::http::StatusCode::FOUND, [("location", to)])
            }),
        )
        .route(
            "/ws",
            axum::routing::get(move || async move { axum::response::Html(ws) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// A host outside the allowlist ("localhost" to the browser): counts every connection made
/// to it, since any connection is already a leak.
async fn outside_host() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn redirect_hops_and_websockets_never_reach_a_host_outside_allowed_hosts() {
    let _turn = browser_turn().await;
    let (outside, hits) = outside_host().await;
    let base = hostile_provider(outside).await;
    let secrets = tempfile::tempdir().unwrap();
    for page in ["redirect", "ws"] {
        let driver = LoginDriver::new(driver_config(None));
        let mut oauth = simulator_provider(
            &base,
            CLIENT_ID,
            client_secret_file(&secrets, CLIENT_SECRET),
        );
        oauth.authorize_url = format!("{base}/{page}").parse().unwrap();
        oauth.allowed_hosts = vec![base.trim_start_matches("http://").to_owned()];
        let oauth = with_flow(
            oauth,
            vec![Step::WaitFor {
                selector: "#never".into(),
            }],
        );
        let error = driver
            .login(&oauth, &acme(), Duration::from_secs(10))
            .await
            .unwrap_err();
        assert_eq!(
            error.kind(),
            LoginErrorKind::BlockedNavigation,
            "{page}: {error}"
        );
        assert!(error.detail().contains("localhost"), "{page}: {error}");
        // Once the browser is gone, any connection it made has arrived: one
        // more turn of the runtime lets the listener count it.
        driver.shutdown().await;
        assert_browser_gone(&driver).await;
        tokio::task::yield_now().await;
        assert_eq!(
            hits.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "{page}: the browser connected to a host outside allowed_hosts"
        );
    }
}
