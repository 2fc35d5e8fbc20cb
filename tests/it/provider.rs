//! The simulated OAuth2 provider over real HTTP: the authorization-code flow a browser walks,
//! the token endpoint, the bearer-checked API, revocation and the counters tests rely on.

use crate::support::provider_http::{
    Browser, CLIENT_ID, CLIENT_SECRET, TOTP_SEED, TestProvider, authorize_url, current_totp,
    query_param, two_channel_config,
};
use reqwest::StatusCode;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use warden::provider::{ProviderConfig, TokenResponse};

/// Walks authorize → login (→ TOTP) → consent and returns the final redirect URL.
async fn log_in(
    provider: &TestProvider,
    username: &str,
    password: &str,
    totp_seed: Option<&str>,
) -> (String, Browser) {
    let redirect_uri = provider.url("/callback");
    let mut browser = Browser::new(&provider.base);
    let login = browser
        .get(&authorize_url(&provider.base, &redirect_uri, "st-123"))
        .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    assert!(login.url.contains("/login?tx="), "landed on {}", login.url);
    let tx = login.hidden("tx").unwrap();
    let csrf = login.hidden("csrf_token").unwrap();
    let mut page = browser
        .post_form(
            "/login",
            &[
                ("tx", &tx),
                ("csrf_token", &csrf),
                ("username", username),
                ("password", password),
            ],
        )
        .await;
    if let Some(seed) = totp_seed {
        assert!(
            page.url.contains("/login/totp"),
            "expected TOTP page, got {}",
            page.url
        );
        page = browser
            .post_form(
                "/login/totp",
                &[
                    ("tx", &tx),
                    ("csrf_token", &csrf),
                    ("code", &current_totp(seed)),
                ],
            )
            .await;
    }
    assert!(
        page.url.contains("/oauth/consent"),
        "expected consent, got {}",
        page.url
    );
    assert!(page.body.contains("id=\"allow\""));
    let done = browser
        .post_form(
            "/oauth/consent",
            &[("tx", &tx), ("csrf_token", &csrf), ("decision", "allow")],
        )
        .await;
    (done.url, browser)
}

async fn exchange(provider: &TestProvider, code: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(provider.url("/oauth/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &provider.url("/callback")),
        ])
        .send()
        .await
        .unwrap()
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
        .get(authorize_url(
            &provider.base,
            &provider.url("/callback"),
            "s",
        ))
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

    let mut browser = Browser::new(&provider.base);
    let login = browser
        .get(&authorize_url(
            &provider.base,
            &provider.url("/callback"),
            "s",
        ))
        .await;
    assert!(login.hidden("csrf_token").is_some_and(|c| c.len() > 20));
    assert!(login.body.contains("id=\"username\"") && login.body.contains("id=\"password\""));
}

#[tokio::test]
async fn a_wrong_password_re_renders_the_form_with_a_visible_error() {
    let provider = TestProvider::start(two_channel_config()).await;
    let mut browser = Browser::new(&provider.base);
    let login = browser
        .get(&authorize_url(
            &provider.base,
            &provider.url("/callback"),
            "s",
        ))
        .await;
    let tx = login.hidden("tx").unwrap();
    let csrf = login.hidden("csrf_token").unwrap();

    let page = browser
        .post_form(
            "/login",
            &[
                ("tx", &tx),
                ("csrf_token", &csrf),
                ("username", "acme-user"),
                ("password", "not-the-password"),
            ],
        )
        .await;

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
    let mut browser = Browser::new(&provider.base);
    let login = browser
        .get(&authorize_url(
            &provider.base,
            &provider.url("/callback"),
            "s",
        ))
        .await;
    let tx = login.hidden("tx").unwrap();

    let page = browser
        .post_form(
            "/login",
            &[
                ("tx", &tx),
                ("csrf_token", "forged"),
                ("username", "acme-user"),
                ("password", "acme-pass"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);

    // Nor does the transaction work from another session (no cookie).
    let mut stranger = Browser::new(&provider.base);
    let page = stranger.get(&format!("/login?tx={tx}")).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert_eq!(provider.stats().await.logins, 0);
}

#[tokio::test]
async fn a_totp_account_needs_a_valid_code_before_consent() {
    let provider = TestProvider::start(two_channel_config()).await;
    let mut browser = Browser::new(&provider.base);
    let login = browser
        .get(&authorize_url(
            &provider.base,
            &provider.url("/callback"),
            "s",
        ))
        .await;
    let tx = login.hidden("tx").unwrap();
    let csrf = login.hidden("csrf_token").unwrap();
    let page = browser
        .post_form(
            "/login",
            &[
                ("tx", &tx),
                ("csrf_token", &csrf),
                ("username", "globex-user"),
                ("password", "globex-pass"),
            ],
        )
        .await;
    assert!(page.url.contains("/login/totp"));
    assert!(page.body.contains("id=\"totp\""));

    let wrong = browser
        .post_form(
            "/login/totp",
            &[("tx", &tx), ("csrf_token", &csrf), ("code", "000000")],
        )
        .await;
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
async fn the_token_endpoint_answers_invalid_client_for_a_wrong_secret() {
    let provider = TestProvider::start(two_channel_config()).await;
    let (redirect, _) = log_in(&provider, "acme-user", "acme-pass", None).await;
    let code = query_param(&redirect, "code").unwrap();

    let response = reqwest::Client::new()
        .post(provider.url("/oauth/token"))
        .basic_auth(CLIENT_ID, Some("wrong"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &provider.url("/callback")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");

    // The code was not consumed by the failed attempt.
    assert_eq!(exchange(&provider, &code).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_authorization_code_is_single_use_and_a_replay_revokes_its_tokens() {
    let provider = TestProvider::start(two_channel_config()).await;
    let (redirect, _) = log_in(&provider, "acme-user", "acme-pass", None).await;
    let code = query_param(&redirect, "code").unwrap();
    let tokens: TokenResponse = exchange(&provider, &code).await.json().await.unwrap();

    let replay = exchange(&provider, &code).await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    let body: Value = replay.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(
        post(&provider, "acme", &tokens.access_token).await.status(),
        401
    );
}

#[tokio::test]
async fn a_code_redeemed_with_another_redirect_uri_is_invalid_grant() {
    let provider = TestProvider::start(two_channel_config()).await;
    let (redirect, _) = log_in(&provider, "acme-user", "acme-pass", None).await;
    let code = query_param(&redirect, "code").unwrap();
    let response = reqwest::Client::new()
        .post(provider.url("/oauth/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", "http://elsewhere.example/cb"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn the_refresh_grant_rotates_the_refresh_token() {
    let provider = TestProvider::start(two_channel_config()).await;
    let first = tokens_for(&provider, "acme").await;

    let response = refresh(&provider, &first.refresh_token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let second: TokenResponse = response.json().await.unwrap();
    assert_ne!(second.access_token, first.access_token);
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(
        post(&provider, "acme", &second.access_token).await.status(),
        200
    );

    let reused = refresh(&provider, &first.refresh_token).await;
    assert_eq!(reused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        reused.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let stats = provider.stats().await;
    assert_eq!(stats.token_grants.refresh_token, 1);
    assert_eq!(stats.channels["acme"].refresh_rejected, 1);
}

#[tokio::test]
async fn revoking_a_channel_turns_its_api_calls_into_401_invalid_token_and_kills_refresh() {
    let provider = TestProvider::start(two_channel_config()).await;
    let acme = tokens_for(&provider, "acme").await;
    let globex = tokens_for(&provider, "globex").await;
    assert_eq!(
        post(&provider, "acme", &acme.access_token).await.status(),
        200
    );

    assert_eq!(
        admin(&provider, "/admin/channels/acme/revoke")
            .await
            .status(),
        200
    );

    let response = post(&provider, "acme", &acme.access_token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""));
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "invalid_token"
    );
    assert_eq!(refresh(&provider, &acme.refresh_token).await.status(), 400);
    // Other channels are untouched.
    assert_eq!(
        post(&provider, "globex", &globex.access_token)
            .await
            .status(),
        200
    );

    let stats = provider.stats().await;
    let acme_stats = &stats.channels["acme"];
    assert_eq!((acme_stats.api_ok, acme_stats.api_rejected), (1, 1));
    assert_eq!(acme_stats.refresh_rejected, 1);
    assert_eq!(acme_stats.revocations, 1);
    assert_eq!(stats.channels["globex"].api_rejected, 0);
}

#[tokio::test]
async fn revoking_access_only_lets_the_refresh_grant_heal_the_channel() {
    let provider = TestProvider::start(two_channel_config()).await;
    let tokens = tokens_for(&provider, "acme").await;

    admin(&provider, "/admin/channels/acme/revoke-access").await;

    assert_eq!(
        post(&provider, "acme", &tokens.access_token).await.status(),
        401
    );
    let healed: TokenResponse = refresh(&provider, &tokens.refresh_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        post(&provider, "acme", &healed.access_token).await.status(),
        200
    );
}

#[tokio::test]
async fn a_token_for_one_channel_is_forbidden_on_another() {
    let provider = TestProvider::start(two_channel_config()).await;
    let acme = tokens_for(&provider, "acme").await;
    let response = post(&provider, "globex", &acme.access_token).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(provider.stats().await.channels["globex"].api_rejected, 1);
}

#[tokio::test]
async fn an_injected_429_carries_retry_after_and_runs_out() {
    let provider = TestProvider::start(two_channel_config()).await;
    let tokens = tokens_for(&provider, "acme").await;
    let response = reqwest::Client::new()
        .post(provider.url("/admin/channels/acme/faults"))
        .json(&json!({ "status": 429, "times": 2, "retry_after_secs": 3 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    for _ in 0..2 {
        let response = post(&provider, "acme", &tokens.access_token).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "3");
    }
    assert_eq!(
        post(&provider, "acme", &tokens.access_token).await.status(),
        200
    );

    reqwest::Client::new()
        .post(provider.url("/admin/channels/acme/faults"))
        .json(&json!({ "status": 500 }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        post(&provider, "acme", &tokens.access_token).await.status(),
        500
    );
    assert_eq!(
        post(&provider, "acme", &tokens.access_token).await.status(),
        500
    );
    reqwest::Client::new()
        .delete(provider.url("/admin/channels/acme/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        post(&provider, "acme", &tokens.access_token).await.status(),
        200
    );
    assert_eq!(provider.stats().await.channels["acme"].api_faults, 4);
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
    let mut browser = Browser::new(&provider.base);
    let login = browser
        .get(&authorize_url(
            &provider.base,
            &provider.url("/callback"),
            "keep-me",
        ))
        .await;
    let tx = login.hidden("tx").unwrap();
    let csrf = login.hidden("csrf_token").unwrap();
    browser
        .post_form(
            "/login",
            &[
                ("tx", &tx),
                ("csrf_token", &csrf),
                ("username", "acme-user"),
                ("password", "acme-pass"),
            ],
        )
        .await;
    let done = browser
        .post_form(
            "/oauth/consent",
            &[("tx", &tx), ("csrf_token", &csrf), ("decision", "deny")],
        )
        .await;
    assert_eq!(
        query_param(&done.url, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(query_param(&done.url, "state").as_deref(), Some("keep-me"));
    assert_eq!(query_param(&done.url, "code"), None);
}

#[tokio::test]
async fn stats_count_logins_grants_and_api_calls_per_channel() {
    let provider = TestProvider::start(two_channel_config()).await;
    let (redirect, _) = log_in(&provider, "acme-user", "acme-pass", None).await;
    let code = query_param(&redirect, "code").unwrap();
    let tokens: TokenResponse = exchange(&provider, &code).await.json().await.unwrap();
    let refreshed: TokenResponse = refresh(&provider, &tokens.refresh_token)
        .await
        .json()
        .await
        .unwrap();
    for _ in 0..3 {
        post(&provider, "acme", &refreshed.access_token).await;
    }
    admin(&provider, "/admin/channels/acme/revoke").await;
    post(&provider, "acme", &refreshed.access_token).await;

    let stats = provider.stats().await;
    assert_eq!(
        stats,
        provider.state.stats(),
        "HTTP and in-process views agree"
    );
    assert_eq!(stats.logins, 1);
    assert_eq!(stats.token_grants.authorization_code, 1);
    assert_eq!(stats.token_grants.refresh_token, 1);
    assert_eq!((stats.api_ok, stats.api_rejected), (3, 1));
    let acme = &stats.channels["acme"];
    assert_eq!(acme.logins, 1);
    assert_eq!(acme.token_grants.authorization_code, 1);
    assert_eq!((acme.api_ok, acme.api_rejected), (3, 1));
}

#[tokio::test]
async fn the_admin_endpoints_require_the_admin_token_when_one_is_configured() {
    let config = ProviderConfig {
        admin_token: Some("admin-secret".to_owned().into()),
        ..two_channel_config()
    };
    let provider = TestProvider::start(config).await;
    let client = reqwest::Client::new();
    let denied = client
        .get(provider.url("/admin/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    let allowed = client
        .get(provider.url("/admin/stats"))
        .bearer_auth("admin-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
}

#[test]
fn the_provider_config_parses_from_toml_with_defaults() {
    let config: ProviderConfig = toml_from(
        r#"
        client_secret = "s3cret"
        token_lifetime = "5m"
        [accounts.acme]
        username = "acme-user"
        password = "acme-pass"
        [accounts.globex]
        username = "globex-user"
        password = "globex-pass"
        totp_secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
        "#,
    );
    assert_eq!(config.client_id, "warden");
    assert_eq!(config.token_lifetime.as_secs(), 300);
    assert_eq!(config.bind.port(), 8765);
    assert!(config.accounts["globex"].totp_secret.is_some());
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("s3cret") && !debug.contains("acme-pass"),
        "{debug}"
    );
}

fn toml_from(text: &str) -> ProviderConfig {
    use figment::providers::Format as _;
    figment::Figment::from(figment::providers::Toml::string(text))
        .extract()
        .unwrap()
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
    let refused = browser
        .get(&authorize_url(&provider.base, &redirect_uri, "s"))
        .await;
    assert_eq!(
        query_param(&refused.url, "error").as_deref(),
        Some("invalid_request")
    );

    // `plain` is not accepted either.
    let plain = format!(
        "{}&code_challenge=abc&code_challenge_method=plain",
        authorize_url(&provider.base, &redirect_uri, "s")
    );
    let refused = browser.get(&plain).await;
    assert_eq!(
        query_param(&refused.url, "error").as_deref(),
        Some("invalid_request")
    );

    let pkce = Pkce::generate();
    let with_challenge = format!(
        "{}&code_challenge={}&code_challenge_method=S256",
        authorize_url(&provider.base, &redirect_uri, "s"),
        pkce.challenge()
    );
    let login = browser.get(&with_challenge).await;
    let tx = login.hidden("tx").unwrap();
    let csrf = login.hidden("csrf_token").unwrap();
    browser
        .post_form(
            "/login",
            &[
                ("tx", &tx),
                ("csrf_token", &csrf),
                ("username", "acme-user"),
                ("password", "acme-pass"),
            ],
        )
        .await;
    let done = browser
        .post_form(
            "/oauth/consent",
            &[("tx", &tx), ("csrf_token", &csrf), ("decision", "allow")],
        )
        .await;
    let code = query_param(&done.url, "code").unwrap();

    let redeem = |verifier: String| {
        let (code, redirect_uri, url) = (
            code.clone(),
            redirect_uri.clone(),
            provider.url("/oauth/token"),
        );
        async move {
            reqwest::Client::new()
                .post(url)
                .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("redirect_uri", redirect_uri.as_str()),
                    ("code_verifier", verifier.as_str()),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let wrong = redeem(Pkce::generate().verifier().expose_secret().to_owned()).await;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        wrong.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let right = redeem(pkce.verifier().expose_secret().to_owned()).await;
    assert_eq!(right.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_provider_answers_its_liveness_probe() {
    let provider = TestProvider::start(two_channel_config()).await;
    let r = reqwest::get(provider.url("/livez")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
