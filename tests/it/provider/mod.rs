//! The simulated OAuth2 provider over real HTTP: the authorization-code flow a browser walks,
//! the token endpoint, the bearer-checked API, revocation and the counters tests rely on.

mod login;
mod tokens;

use crate::support::provider_http::{
    Browser, CLIENT_ID, CLIENT_SECRET, LoginForm, TestProvider, current_totp, query_param,
};
use reqwest::StatusCode;
use serde_json::json;
use warden_devkit::provider::TokenResponse;

/// Walks authorize → login (→ TOTP) → consent and returns the final redirect URL.
async fn log_in(
    provider: &TestProvider,
    username: &str,
    password: &str,
    totp_seed: Option<&str>,
) -> (String, Browser) {
    let mut form = provider.login_form("st-123").await;
    assert_eq!(form.page.status, StatusCode::OK, "{}", form.page.body);
    assert!(
        form.page.url.contains("/login?tx="),
        "landed on {}",
        form.page.url
    );
    let mut page = form.submit(username, password).await;
    if let Some(seed) = totp_seed {
        assert!(
            page.url.contains("/login/totp"),
            "expected TOTP page, got {}",
            page.url
        );
        page = form.totp(&current_totp(seed)).await;
    }
    assert!(
        page.url.contains("/oauth/consent"),
        "expected consent, got {}",
        page.url
    );
    assert!(page.body.contains("id=\"allow\""));
    let done = form.consent("allow").await;
    (done.url, form.browser)
}

/// The authorization code of a browser login of `username`, from the redirect.
async fn code_for(provider: &TestProvider, username: &str, password: &str) -> String {
    let (redirect, _) = log_in(provider, username, password, None).await;
    query_param(&redirect, "code").expect("code in redirect")
}

/// The code the form's login of `username` obtains once it allows access.
async fn consented_code(form: &mut LoginForm, username: &str, password: &str) -> String {
    form.submit(username, password).await;
    let done = form.consent("allow").await;
    query_param(&done.url, "code").expect("code in redirect")
}

/// Redeems `code` at the token endpoint, the client authenticating with
/// `secret` (Basic), for `redirect_uri`, with the PKCE `verifier` if any.
async fn redeem(
    provider: &TestProvider,
    code: &str,
    secret: &str,
    redirect_uri: &str,
    verifier: Option<&str>,
) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
    ];
    form.extend(verifier.map(|v| ("code_verifier", v)));
    reqwest::Client::new()
        .post(provider.url("/oauth/token"))
        .basic_auth(CLIENT_ID, Some(secret))
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// Redeems `code` as the registered client would.
async fn exchange(provider: &TestProvider, code: &str) -> reqwest::Response {
    redeem(
        provider,
        code,
        CLIENT_SECRET,
        &provider.url("/callback"),
        None,
    )
    .await
}

async fn refresh(provider: &TestProvider, refresh_token: &str) -> reqwest::Response {
    // Client credentials in the form body this time: both RFC 6749 §2.3.1 styles work.
    reqwest::Client::new()
        .post(provider.url("/oauth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap()
}

async fn post(provider: &TestProvider, channel: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(provider.url(&format!("/api/channels/{channel}/posts")))
        .bearer_auth(token)
        .json(&json!({ "text": "hello" }))
        .send()
        .await
        .unwrap()
}

async fn admin(provider: &TestProvider, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(provider.url(path))
        .send()
        .await
        .unwrap()
}

async fn tokens_for(provider: &TestProvider, channel: &str) -> TokenResponse {
    admin(provider, &format!("/admin/channels/{channel}/tokens"))
        .await
        .json()
        .await
        .unwrap()
}

/// The `error` field of an OAuth error answer.
async fn oauth_error(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.unwrap();
    body["error"].as_str().unwrap_or_default().to_owned()
}
