//! Browser logins with real Chromium through Playwright against the simulated provider,
//! which runs in-process on 127.0.0.1:0. Needs `eval "$(scripts/setup-playwright.sh)"`.

use std::time::{Duration, Instant};

use crate::support::provider_browser::{
    BROWSER_LOCK, browser_descendants, client_secret_file, credentials, driver_config, eventually,
    require_playwright, simulator_provider,
};
use crate::support::provider_http::{CLIENT_ID, CLIENT_SECRET, TOTP_SEED, TestProvider, two_channel_config};
use secrecy::{ExposeSecret as _, SecretString};
use warden::provider::ProviderConfig;
use warden::reauth::browser::{LoginDriver, LoginErrorKind};
use warden::reauth::flow::{Step, TOTP_SECRET};

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

    fn oauth(&self) -> warden::reauth::flow::OAuthProvider {
        simulator_provider(
            &self.provider.base,
            CLIENT_ID,
            client_secret_file(&self.secrets, CLIENT_SECRET),
        )
    }
}

#[tokio::test]
async fn a_browser_login_obtains_a_code_that_exchanges_for_a_working_token() {
    let _serial = BROWSER_LOCK.lock().await;
    let fixture = Fixture::start(two_channel_config()).await;
    let oauth = fixture.oauth();
    let driver = LoginDriver::new(driver_config(None));

    let code = driver
        .login(
            &oauth,
            &credentials("acme", "acme-user", "acme-pass"),
            TIMEOUT,
        )
        .await
        .expect("login succeeds");
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
    let status = reqwest::Client::new()
        .post(fixture.provider.url("/api/channels/acme/posts"))
        .bearer_auth(tokens.access_token.expose_secret())
        .json(&serde_json::json!({"text": "hi"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);

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
    let _serial = BROWSER_LOCK.lock().await;
    let fixture = Fixture::start(two_channel_config()).await;
    let oauth = fixture.oauth();
    let driver = LoginDriver::new(driver_config(None));
    let globex = credentials("globex", "globex-user", "globex-pass")
        .with(TOTP_SECRET, SecretString::from(TOTP_SEED.to_owned()));

    let code = driver
        .login(&oauth, &globex, TIMEOUT)
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
    let _serial = BROWSER_LOCK.lock().await;
    let fixture = Fixture::start(two_channel_config()).await;
    let oauth = fixture.oauth();
    let artifacts = tempfile::tempdir().unwrap();
    let root = artifacts.path().join("login-artifacts");
    let driver = LoginDriver::new(driver_config(Some(root.clone())));
    driver.warm_up().await.unwrap();

    let started = Instant::now();
    let error = driver
        .login(
            &oauth,
            &credentials("acme", "acme-user", "wrong-password-123"),
            TIMEOUT,
        )
        .await
        .expect_err("a wrong password fails");
    let elapsed = started.elapsed();

    assert_eq!(error.kind(), LoginErrorKind::BadCredentials, "{error}");
    assert!(!error.is_retryable());
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(!error.to_string().contains("wrong-password-123"));
    assert_eq!(driver.open_contexts(), 0);

    let dir = error.artifacts().expect("artifacts saved").to_owned();
    assert!(dir.starts_with(&root));
    use std::os::unix::fs::PermissionsExt as _;
    for d in [&root, &dir] {
        let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} has mode {mode:o}", d.display());
    }
    let png = std::fs::read(dir.join("page.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let html = std::fs::read_to_string(dir.join("page.html")).unwrap();
    assert!(html.contains("Invalid username or password"));
    assert!(!html.contains("wrong-password-123") && !html.contains("acme-user"));
    let mode = std::fs::metadata(dir.join("page.html"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        fixture.provider.stats().await.channels["acme"].failed_logins,
        1
    );
    driver.shutdown().await;
}

#[tokio::test]
async fn artifacts_can_be_switched_off() {
    let _serial = BROWSER_LOCK.lock().await;
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
    let _serial = BROWSER_LOCK.lock().await;
    // "localhost" is not in allowed_hosts ["127.0.0.1"], though it names the same machine.
    let fixture = Fixture::start(ProviderConfig {
        help_url: "http://localhost:9/help".into(),
        ..two_channel_config()
    })
    .await;
    let driver = LoginDriver::new(driver_config(None));

    // A goto step straight to a foreign host.
    let mut oauth = fixture.oauth();
    oauth.login_flow = vec![Step::Goto {
        url: "http://localhost:9/elsewhere".into(),
    }];
    let started = Instant::now();
    let error = driver
        .login(
            &oauth,
            &credentials("acme", "acme-user", "acme-pass"),
            TIMEOUT,
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), LoginErrorKind::BlockedNavigation, "{error}");
    assert!(error.detail().contains("localhost"));
    assert!(started.elapsed() < Duration::from_secs(5));

    // A link on the provider's own login page that leads off the allowlist.
    let mut oauth = fixture.oauth();
    oauth.login_flow = vec![Step::Click {
        selector: "#forgot-password".into(),
    }];
    let error = driver
        .login(
            &oauth,
            &credentials("acme", "acme-user", "acme-pass"),
            TIMEOUT,
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), LoginErrorKind::BlockedNavigation, "{error}");
    assert_eq!(driver.open_contexts(), 0);
    driver.shutdown().await;
}

#[tokio::test]
async fn a_login_that_never_receives_a_code_times_out_and_closes_its_context() {
    let _serial = BROWSER_LOCK.lock().await;
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

    let started = Instant::now();
    let error = driver
        .login(
            &oauth,
            &credentials("acme", "acme-user", "acme-pass"),
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
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
    let _serial = BROWSER_LOCK.lock().await;
    let fixture = Fixture::start(two_channel_config()).await;
    let mut oauth = fixture.oauth();
    oauth.login_flow.insert(
        0,
        Step::WaitFor {
            selector: "#never-there".into(),
        },
    );
    let driver = LoginDriver::new(driver_config(None));
    driver.warm_up().await.unwrap();

    let acme = credentials("acme", "acme-user", "acme-pass");
    let cancelled = tokio::time::timeout(
        Duration::from_millis(800),
        driver.login(&oauth, &acme, TIMEOUT),
    )
    .await;
    assert!(
        cancelled.is_err(),
        "the login was still running when dropped"
    );

    assert!(
        eventually(Duration::from_secs(5), || driver.open_contexts() == 0).await,
        "context closed in the background"
    );
    // The browser is still good for the next login.
    driver
        .login(&fixture.oauth(), &acme, TIMEOUT)
        .await
        .expect("next login works");
    assert_eq!(driver.launches(), 1);
    driver.shutdown().await;
}

#[tokio::test]
async fn killing_chromium_mid_login_fails_that_login_and_the_next_one_relaunches() {
    let _serial = BROWSER_LOCK.lock().await;
    let fixture = Fixture::start(two_channel_config()).await;
    let before = browser_descendants();
    let driver = LoginDriver::new(driver_config(None));
    let acme = credentials("acme", "acme-user", "acme-pass");

    // A login parked on a selector that never appears, so the kill lands mid-login.
    let mut stuck = fixture.oauth();
    stuck.login_flow.insert(
        0,
        Step::WaitFor {
            selector: "#never-there".into(),
        },
    );
    let login = driver.login(&stuck, &acme, TIMEOUT);
    let killer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut main = None;
        assert!(
            eventually(Duration::from_secs(10), || {
                main = driver.browser_main_pid();
                main.is_some()
            })
            .await,
            "found the browser process"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pid = main.unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        Instant::now()
    };
    let (result, killed_at) = tokio::join!(login, killer);
    let error = result.expect_err("the login in flight fails");
    // Killed mid-login it is a crash; killed while the driver was still bringing
    // the browser up, the launch itself fails. Either way it fails at once.
    assert!(
        error.kind() == LoginErrorKind::BrowserCrashed
            || error.to_string().contains("cannot start Chromium"),
        "{error}"
    );
    assert!(
        killed_at.elapsed() < Duration::from_secs(10),
        "failed promptly, not by timeout"
    );
    assert_eq!(driver.open_contexts(), 0);

    driver
        .login(&fixture.oauth(), &acme, TIMEOUT)
        .await
        .expect("the next login relaunches and succeeds");
    assert_eq!(driver.launches(), 2);

    driver.shutdown().await;
    assert!(
        eventually(Duration::from_secs(10), || driver.browser_pids().is_empty()).await,
        "no Chromium of this driver remains: {:?}",
        driver.browser_pids()
    );
    assert!(
        eventually(Duration::from_secs(10), || browser_descendants().len()
            <= before.len())
        .await,
        "no node or Chromium started by the test remains: {:?} (before: {before:?})",
        browser_descendants()
    );
}

#[tokio::test]
async fn after_shutdown_no_chromium_or_node_process_started_by_the_test_remains() {
    let _serial = BROWSER_LOCK.lock().await;
    let fixture = Fixture::start(two_channel_config()).await;
    let before = browser_descendants();
    let driver = LoginDriver::new(driver_config(None));
    driver
        .login(
            &fixture.oauth(),
            &credentials("acme", "acme-user", "acme-pass"),
            TIMEOUT,
        )
        .await
        .unwrap();
    let during = browser_descendants();
    assert!(
        during.iter().any(|(_, comm)| comm.contains("node")),
        "the driver runs as a child of the test: {during:?}"
    );
    assert!(!driver.browser_pids().is_empty());

    driver.shutdown().await;

    assert!(
        eventually(Duration::from_secs(10), || driver.browser_pids().is_empty()
            && browser_descendants().len() <= before.len())
        .await,
        "left behind: marked {:?}, descendants {:?}",
        driver.browser_pids(),
        browser_descendants()
    );
    let error = driver
        .login(
            &fixture.oauth(),
            &credentials("acme", "acme-user", "acme-pass"),
            TIMEOUT,
        )
        .await
        .unwrap_err();
    assert_eq!(
        error.kind(),
        LoginErrorKind::Other,
        "logins after shutdown are refused"
    );
}

/// Not a pass/fail test: prints cold and warm login times. Run with
/// `cargo test --test browser_login -- --ignored --nocapture login_timings`.
#[tokio::test]
#[ignore = "benchmark"]
async fn login_timings_cold_and_warm() {
    if std::env::var_os("TIMING_TRACE").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter("warden=debug,playwright_rs=info")
            .init();
    }
    let _serial = BROWSER_LOCK.lock().await;
    let fixture = Fixture::start(two_channel_config()).await;
    let oauth = fixture.oauth();
    let acme = credentials("acme", "acme-user", "acme-pass");
    let mut cold = Vec::new();
    for _ in 0..5 {
        let driver = LoginDriver::new(driver_config(None));
        let started = Instant::now();
        driver.login(&oauth, &acme, TIMEOUT).await.unwrap();
        cold.push(started.elapsed());
        driver.shutdown().await;
    }
    let driver = LoginDriver::new(driver_config(None));
    driver.warm_up().await.unwrap();
    let mut warm = Vec::new();
    for _ in 0..21 {
        let started = Instant::now();
        driver.login(&oauth, &acme, TIMEOUT).await.unwrap();
        warm.push(started.elapsed());
    }
    let mut exchange = Vec::new();
    for _ in 0..5 {
        let code = driver.login(&oauth, &acme, TIMEOUT).await.unwrap();
        let started = Instant::now();
        oauth
            .exchange_code(&reqwest::Client::new(), &code)
            .await
            .unwrap();
        exchange.push(started.elapsed());
    }
    driver.shutdown().await;
    for (name, mut samples) in [("cold", cold), ("warm", warm), ("exchange", exchange)] {
        samples.sort();
        println!(
            "{name}: median {:?}, min {:?}, max {:?}, n={}",
            samples[samples.len() / 2],
            samples[0],
            samples[samples.len() - 1],
            samples.len()
        );
    }
}

#[tokio::test]
async fn killing_the_playwright_driver_between_logins_relaunches_it() {
    let _serial = BROWSER_LOCK.lock().await;
    let fixture = Fixture::start(two_channel_config()).await;
    let driver = LoginDriver::new(driver_config(None));
    let acme = credentials("acme", "acme-user", "acme-pass");
    driver
        .login(&fixture.oauth(), &acme, TIMEOUT)
        .await
        .unwrap();

    let me = std::process::id();
    let node: Vec<u32> = browser_descendants()
        .into_iter()
        .filter(|(pid, comm)| comm == "node" && parent_of(*pid) == Some(me))
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(node.len(), 1, "one driver process: {node:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(node[0]).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    driver
        .login(&fixture.oauth(), &acme, TIMEOUT)
        .await
        .expect("the login after the driver died relaunches it");
    assert_eq!(driver.launches(), 2);
    driver.shutdown().await;
    assert!(eventually(Duration::from_secs(10), || driver.browser_pids().is_empty()).await);
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
}

#[tokio::test]
async fn killing_the_playwright_driver_mid_login_fails_that_login_as_a_crash() {
    let _serial = BROWSER_LOCK.lock().await;
    let fixture = Fixture::start(two_channel_config()).await;
    let driver = LoginDriver::new(driver_config(None));
    driver.warm_up().await.unwrap();
    let acme = credentials("acme", "acme-user", "acme-pass");
    let mut stuck = fixture.oauth();
    stuck.login_flow.insert(
        0,
        Step::WaitFor {
            selector: "#never-there".into(),
        },
    );
    let me = std::process::id();
    let node = browser_descendants()
        .into_iter()
        .find(|(pid, comm)| comm == "node" && parent_of(*pid) == Some(me))
        .map(|(pid, _)| pid)
        .expect("the driver process");

    let login = driver.login(&stuck, &acme, Duration::from_secs(4));
    let killer = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(node).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    };
    let started = Instant::now();
    let (result, ()) = tokio::join!(login, killer);
    let error = result.unwrap_err();
    // A dead driver never answers, so this is only noticed at the timeout; the browser
    // process being gone is what tells it apart from a slow page.
    assert_eq!(error.kind(), LoginErrorKind::BrowserCrashed, "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "{:?}",
        started.elapsed()
    );

    driver
        .login(&fixture.oauth(), &acme, TIMEOUT)
        .await
        .expect("the next login relaunches the driver");
    assert_eq!(driver.launches(), 2);
    driver.shutdown().await;
    assert!(eventually(Duration::from_secs(10), || driver.browser_pids().is_empty()).await);
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
    let _serial = BROWSER_LOCK.lock().await;
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
    let globex = credentials("globex", "globex-user", "globex-pass")
        .with(TOTP_SECRET, SecretString::from(TOTP_SEED.to_owned()));
    let code = driver.login(&oauth, &globex, TIMEOUT).await.unwrap();
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
    let _serial = BROWSER_LOCK.lock().await;
    require_playwright();
    let (outside, hits) = outside_host().await;
    let base = hostile_provider(outside).await;
    let secrets = tempfile::tempdir().unwrap();
    let driver = LoginDriver::new(driver_config(None));
    for page in ["redirect", "ws"] {
        let mut oauth = simulator_provider(
            &base,
            CLIENT_ID,
            client_secret_file(&secrets, CLIENT_SECRET),
        );
        oauth.authorize_url = format!("{base}/{page}").parse().unwrap();
        oauth.allowed_hosts = vec![base.trim_start_matches("http://").to_owned()];
        oauth.login_flow = vec![Step::WaitFor {
            selector: "#never".into(),
        }];
        let error = driver
            .login(
                &oauth,
                &credentials("acme", "acme-user", "acme-pass"),
                Duration::from_secs(10),
            )
            .await
            .unwrap_err();
        assert_eq!(
            error.kind(),
            LoginErrorKind::BlockedNavigation,
            "{page}: {error}"
        );
        assert!(error.detail().contains("localhost"), "{page}: {error}");
        // Anything still on its way would arrive within this.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            hits.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "{page}: the browser connected to a host outside allowed_hosts"
        );
    }
    driver.shutdown().await;
}
