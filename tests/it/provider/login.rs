//! The pages a browser walks: authorize, login (and TOTP), consent, and what
//! they refuse.

use super::{consented_code, exchange, log_in, oauth_error, post, redeem};
use crate::support::provider_http::{
    Browser, CLIENT_SECRET, LoginForm, TOTP_SEED, TestProvider, authorize_url, query_param,
    two_channel_config,
};
use reqwest::StatusCode;
use secrecy::ExposeSecret as _;
use serde_json::Value;
use warden_devkit::provider::{ProviderConfig, TokenResponse};

#[tokio::test]
async fn the_authorization_code_flow_yields_tokens_that_the_api_accepts() {
    let provider = TestProvider::start(two_channel_config()).await;

    let (redirect, browser) = log_in(&provider, "acme-user", "acme-pass", None).await;

    // authorize 302 → /login, login 303 → consent, consent 302 → redirect_uri.
    let hops: Vec<u16> = browser.hops.iter().map(|(s, _)| s.as_u16()).collect();
    assert_eq!(hops, [302, 303, 302], "{:?}", browser.hops);
    assert!(redirect.starts_with(&provider.url("/callback?")));
    assert_eq!(query_param(&redirect, "state").as_deref(), Some("st-123"));
    let code = query_param(&redirect, "code").expect("code in redirect");

    let response = exchange(&provider, &code).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let tokens: TokenResponse = response.json().await.unwrap();
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.expires_in, 3600);
    assert_eq!(tokens.scope, "posts:write profile");

    let response = post(&provider, "acme", &tokens.access_token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["channel"], "acme");
    assert_eq!(body["status"], "published");
}

#[tokio::test]
async fn authorize_sets_a_session_cookie_and_login_form_carries_a_csrf_field() {
    let provider = TestProvider::start(two_channel_config()).await;
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(provider.authorize_url("s"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert!(
        response.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/login?tx=")
    );
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with("sim_session=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );

    let form = provider.login_form("s").await;
    assert!(form.csrf.len() > 20, "{}", form.csrf);
    let body = &form.page.body;
    assert!(body.contains("id=\"username\"") && body.contains("id=\"password\""));
}

#[tokio::test]
async fn a_wrong_password_re_renders_the_form_with_a_visible_error() {
    let provider = TestProvider::start(two_channel_config()).await;
    let mut form = provider.login_form("s").await;

    let page = form.submit("acme-user", "not-the-password").await;

    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("<div class=\"error\" role=\"alert\">Invalid username or password</div>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("value=\"acme-user\""),
        "username is kept"
    );
    assert!(
        !page.body.contains("not-the-password"),
        "password is never echoed"
    );
    let stats = provider.stats().await;
    assert_eq!((stats.logins, stats.failed_logins), (0, 1));
    assert_eq!(stats.channels["acme"].failed_logins, 1);
}

#[tokio::test]
async fn a_login_post_without_the_sessions_csrf_token_is_refused() {
    let provider = TestProvider::start(two_channel_config()).await;
    let mut form = provider.login_form("s").await;

    let page = form
        .submit_with_csrf("forged", "acme-user", "acme-pass")
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);

    // Nor does the transaction work from another session (no cookie).
    let mut stranger = Browser::new(&provider.base);
    let page = stranger.get(&format!("/login?tx={}", form.tx)).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert_eq!(provider.stats().await.logins, 0);
}

#[tokio::test]
async fn a_totp_account_needs_a_valid_code_before_consent() {
    let provider = TestProvider::start(two_channel_config()).await;
    let mut form = provider.login_form("s").await;
    let page = form.submit("globex-user", "globex-pass").await;
    assert!(page.url.contains("/login/totp"));
    assert!(page.body.contains("id=\"totp\""));

    let wrong = form.totp("000000").await;
    assert!(
        wrong
            .body
            .contains("role=\"alert\">Invalid verification code")
    );
    assert_eq!(provider.stats().await.channels["globex"].failed_totp, 1);

    let (redirect, _) = log_in(&provider, "globex-user", "globex-pass", Some(TOTP_SEED)).await;
    let code = query_param(&redirect, "code").unwrap();
    let tokens: TokenResponse = exchange(&provider, &code).await.json().await.unwrap();
    assert_eq!(
        post(&provider, "globex", &tokens.access_token)
            .await
            .status(),
        200
    );
    assert_eq!(provider.stats().await.channels["globex"].logins, 1);
}

#[tokio::test]
async fn an_unregistered_redirect_uri_is_shown_an_error_and_never_redirected_to() {
    let config = ProviderConfig {
        redirect_uris: vec!["http://127.0.0.1:1/registered".to_owned()],
        ..two_channel_config()
    };
    let provider = TestProvider::start(config).await;
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(authorize_url(
            &provider.base,
            "http://evil.example/steal",
            "s",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(!response.headers().contains_key("location"));
}

#[tokio::test]
async fn denying_consent_redirects_with_access_denied_and_the_state() {
    let provider = TestProvider::start(two_channel_config()).await;
    let mut form = provider.login_form("keep-me").await;
    form.submit("acme-user", "acme-pass").await;
    let done = form.consent("deny").await;
    assert_eq!(
        query_param(&done.url, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(query_param(&done.url, "state").as_deref(), Some("keep-me"));
    assert_eq!(query_param(&done.url, "code"), None);
}

#[tokio::test]
async fn a_pkce_challenge_binds_the_code_to_its_verifier() {
    use warden::reauth::flow::Pkce;
    let config = ProviderConfig {
        require_pkce: true,
        ..two_channel_config()
    };
    let provider = TestProvider::start(config).await;
    let redirect_uri = provider.url("/callback");

    // Without a challenge the request goes back to the client as invalid_request.
    let mut browser = Browser::new(&provider.base);
    let refused = browser.get(&provider.authorize_url("s")).await;
    assert_eq!(
        query_param(&refused.url, "error").as_deref(),
        Some("invalid_request")
    );

    // `plain` is not accepted either.
    let plain = format!(
        "{}&code_challenge=abc&code_challenge_method=plain",
        provider.authorize_url("s")
    );
    let refused = browser.get(&plain).await;
    assert_eq!(
        query_param(&refused.url, "error").as_deref(),
        Some("invalid_request")
    );

    let pkce = Pkce::generate();
    let with_challenge = format!(
        "{}&code_challenge={}&code_challenge_method=S256",
        provider.authorize_url("s"),
        pkce.challenge()
    );
    let mut form = LoginForm::open(&provider.base, &with_challenge).await;
    let code = consented_code(&mut form, "acme-user", "acme-pass").await;

    let other = Pkce::generate();
    let redeem_with = async |verifier: &Pkce| {
        let verifier = verifier.verifier().expose_secret();
        redeem(
            &provider,
            &code,
            CLIENT_SECRET,
            &redirect_uri,
            Some(verifier),
        )
        .await
    };
    let wrong = redeem_with(&other).await;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert_eq!(oauth_error(wrong).await, "invalid_grant");
    let right = redeem_with(&pkce).await;
    assert_eq!(right.status(), StatusCode::OK);
}
