//! Logins that work, and those that fail as they must: TOTP, a wrong
//! password and its artifacts, blocked hosts, a timeout; no secret logged.

use std::time::Duration;

use secrecy::ExposeSecret as _;
use warden::reauth::browser::{LoginDriver, LoginErrorKind};
use warden::reauth::flow::Step;
use warden_devkit::provider::ProviderConfig;

use super::{Fixture, TIMEOUT, acme, globex, log_in, timed, with_flow};
use crate::support::provider_browser::{browser_turn, credentials, driver_config};
use crate::support::provider_http::{CLIENT_SECRET, TOTP_SEED, two_channel_config};

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
