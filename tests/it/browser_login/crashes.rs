//! A login cancelled, Chromium or the driver killed mid-login or between
//! logins, a shutdown: each fails only what it must, and leaves no process
//! behind; and what a warm browser saves.

use std::time::{Duration, Instant};

use warden::reauth::browser::{LoginDriver, LoginErrorKind};

use super::{Fixture, acme, assert_browser_gone, driver_process, log_in, sigkill, timed};
use crate::support::eventually;
use crate::support::provider_browser::{alive, browser_descendants, browser_turn, driver_config};
use crate::support::provider_http::two_channel_config;

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

    assert_the_next_login_relaunches(&fixture, &driver).await;
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

    assert_the_next_login_relaunches(&fixture, &driver).await;
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

    assert_the_next_login_relaunches(&fixture, &driver).await;
}

/// The next login on `driver` relaunches what died and succeeds; the driver
/// then shuts down with no browser of it left.
async fn assert_the_next_login_relaunches(fixture: &Fixture, driver: &LoginDriver) {
    fixture
        .log_in(driver)
        .await
        .expect("the next login relaunches what died and succeeds");
    assert_eq!(driver.launches(), 2);
    driver.shutdown().await;
    assert_browser_gone(driver).await;
}
