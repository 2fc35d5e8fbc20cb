//! The token endpoint, the bearer-checked API, revocation, injected faults,
//! the counters and the admin endpoints.

use super::{admin, code_for, exchange, oauth_error, post, redeem, refresh, tokens_for};
use crate::support::provider_http::{CLIENT_SECRET, TestProvider, two_channel_config};
use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_devkit::provider::{ProviderConfig, TokenResponse};

#[tokio::test]
async fn the_token_endpoint_answers_invalid_client_for_a_wrong_secret() {
    let provider = TestProvider::start(two_channel_config()).await;
    let code = code_for(&provider, "acme-user", "acme-pass").await;

    let callback = provider.url("/callback");
    let response = redeem(&provider, &code, "wrong", &callback, None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));
    assert_eq!(oauth_error(response).await, "invalid_client");

    // The code was not consumed by the failed attempt.
    assert_eq!(exchange(&provider, &code).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_authorization_code_is_single_use_and_a_replay_revokes_its_tokens() {
    let provider = TestProvider::start(two_channel_config()).await;
    let code = code_for(&provider, "acme-user", "acme-pass").await;
    let tokens: TokenResponse = exchange(&provider, &code).await.json().await.unwrap();

    let replay = exchange(&provider, &code).await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    assert_eq!(oauth_error(replay).await, "invalid_grant");
    assert_eq!(
        post(&provider, "acme", &tokens.access_token).await.status(),
        401
    );
}

#[tokio::test]
async fn a_code_redeemed_with_another_redirect_uri_is_invalid_grant() {
    let provider = TestProvider::start(two_channel_config()).await;
    let code = code_for(&provider, "acme-user", "acme-pass").await;
    let response = redeem(
        &provider,
        &code,
        CLIENT_SECRET,
        "http://elsewhere.example/cb",
        None,
    )
    .await;
    assert_eq!(response.status(), 400);
    assert_eq!(oauth_error(response).await, "invalid_grant");
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
    assert_eq!(oauth_error(reused).await, "invalid_grant");
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
    assert_eq!(oauth_error(response).await, "invalid_token");
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

/// Sets (`Some`) or clears (`None`) the fault injected into acme's API calls.
async fn fault(provider: &TestProvider, fault: Option<Value>) -> reqwest::Response {
    let url = provider.url("/admin/channels/acme/faults");
    let client = reqwest::Client::new();
    let request = match fault {
        Some(fault) => client.post(url).json(&fault),
        None => client.delete(url),
    };
    request.send().await.unwrap()
}

#[tokio::test]
async fn an_injected_429_carries_retry_after_and_runs_out() {
    let provider = TestProvider::start(two_channel_config()).await;
    let tokens = tokens_for(&provider, "acme").await;
    let status_now = async || post(&provider, "acme", &tokens.access_token).await.status();
    let response = fault(
        &provider,
        Some(json!({ "status": 429, "times": 2, "retry_after_secs": 3 })),
    )
    .await;
    assert_eq!(response.status(), 200);

    for _ in 0..2 {
        let response = post(&provider, "acme", &tokens.access_token).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "3");
    }
    assert_eq!(status_now().await, 200);

    fault(&provider, Some(json!({ "status": 500 }))).await;
    assert_eq!(status_now().await, 500);
    assert_eq!(status_now().await, 500);
    fault(&provider, None).await;
    assert_eq!(status_now().await, 200);
    assert_eq!(provider.stats().await.channels["acme"].api_faults, 4);
}

#[tokio::test]
async fn stats_count_logins_grants_and_api_calls_per_channel() {
    let provider = TestProvider::start(two_channel_config()).await;
    let code = code_for(&provider, "acme-user", "acme-pass").await;
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
    use figment::providers::Format as _;
    let config: ProviderConfig = figment::Figment::from(figment::providers::Toml::string(
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
    ))
    .extract()
    .unwrap();
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

#[tokio::test]
async fn the_provider_answers_its_liveness_probe() {
    let provider = TestProvider::start(two_channel_config()).await;
    let r = reqwest::get(provider.url("/livez")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
