//! The browser-facing half of the OAuth flow: authorize, login, TOTP and consent, ending
//! in a redirect to the client with an authorization code.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use url::Url;

use super::pages;
use super::state::{ProviderState, Stage, Transaction};

const SESSION_COOKIE: &str = "sim_session";

// ----- helpers ---------------------------------------------------------------------------------

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

fn redirect(status: StatusCode, location: &str) -> Response {
    let mut response = status.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, Html(body)).into_response();
    // Login pages must not be cached or framed, as on any real provider.
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}

fn message(status: StatusCode, title: &str, text: &str) -> Response {
    html(status, pages::message(title, text))
}

fn expired() -> Response {
    message(
        StatusCode::BAD_REQUEST,
        "Session expired",
        "This sign-in request is unknown or has expired. Start again from the application.",
    )
}

/// `redirect_uri` with `params` appended to its query, as RFC 6749 §4.1.2 builds it.
fn back_to_client(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    match Url::parse(redirect_uri) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(params);
            redirect(StatusCode::FOUND, url.as_str())
        }
        Err(_) => message(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "Invalid redirect_uri.",
        ),
    }
}

fn with_state<'a>(
    t: &'a Transaction,
    mut params: Vec<(&'a str, &'a str)>,
) -> Vec<(&'a str, &'a str)> {
    if let Some(state) = &t.state {
        params.push(("state", state));
    }
    params
}

/// Why a step of the browser flow is refused.
enum Refused {
    Expired,
    Csrf,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::Expired => expired(),
            Self::Csrf => message(
                StatusCode::FORBIDDEN,
                "Request blocked",
                "The form's CSRF token is missing or wrong. Reload the page and try again.",
            ),
        }
    }
}

/// The transaction named in a form or query, provided the request carries its session and,
/// for a POST, the session's CSRF token.
fn checked_transaction(
    state: &ProviderState,
    headers: &HeaderMap,
    tx: &str,
    csrf: Option<&str>,
) -> Result<(Transaction, String), Refused> {
    let session = session_cookie(headers);
    let t = state.transaction(tx, session).ok_or(Refused::Expired)?;
    let expected = state.csrf(&t.session).ok_or(Refused::Expired)?;
    if let Some(sent) = csrf
        && sent != expected
    {
        return Err(Refused::Csrf);
    }
    Ok((t, expected))
}

/// Where a transaction goes once its user is known: consent, or straight back to the client.
fn after_authentication(state: &ProviderState, tx: &str, channel: &str) -> Response {
    if state.config().require_consent {
        redirect(StatusCode::SEE_OTHER, &format!("/oauth/consent?tx={tx}"))
    } else {
        grant_code(state, tx, channel)
    }
}

fn grant_code(state: &ProviderState, tx: &str, channel: &str) -> Response {
    match state.issue_code(tx, channel) {
        Some((code, t)) => back_to_client(&t.redirect_uri, &with_state(&t, vec![("code", &code)])),
        None => expired(),
    }
}

// ----- pages -----------------------------------------------------------------------------------

pub(super) async fn index() -> Response {
    html(
        StatusCode::OK,
        pages::message(
            "Simulated OAuth2 provider",
            "Endpoints: GET /oauth/authorize, POST /oauth/token, POST /api/channels/{channel}/posts, \
             GET /api/me, GET /admin/stats, POST /admin/channels/{channel}/revoke.",
        ),
    )
}

pub(super) async fn help() -> Response {
    message(
        StatusCode::OK,
        "Forgot password",
        "Ask the administrator of the simulated provider.",
    )
}

pub(super) async fn callback() -> Response {
    // The code in the query is for the client; never echo it into a page.
    message(
        StatusCode::OK,
        "Authorization complete",
        "You can close this window.",
    )
}

#[derive(Deserialize)]
pub(super) struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

pub(super) async fn authorize(
    State(state): State<ProviderState>,
    headers: HeaderMap,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    let config = state.config();
    // Errors about the client or its redirect URI are shown to the user, never redirected:
    // redirecting to an unverified URI would make the provider an open redirector.
    if q.client_id.as_deref() != Some(config.client_id.as_str()) {
        return message(
            StatusCode::BAD_REQUEST,
            "Unknown application",
            "client_id is unknown.",
        );
    }
    let Some(redirect_uri) = q.redirect_uri.as_deref() else {
        return message(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "redirect_uri is missing.",
        );
    };
    let valid_uri = Url::parse(redirect_uri)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.fragment().is_none());
    let registered =
        config.redirect_uris.is_empty() || config.redirect_uris.iter().any(|r| r == redirect_uri);
    if !valid_uri || !registered {
        return message(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "redirect_uri is not registered for this application.",
        );
    }
    if q.response_type.as_deref() != Some("code") {
        let mut params = vec![("error", "unsupported_response_type")];
        if let Some(s) = &q.state {
            params.push(("state", s));
        }
        return back_to_client(redirect_uri, &params);
    }

    // PKCE (RFC 7636): only S256; `plain` protects nothing against a leaked code.
    let pkce_problem = match (&q.code_challenge, q.code_challenge_method.as_deref()) {
        (Some(_), Some("S256")) => None,
        (Some(_), _) => Some("code_challenge_method must be S256"),
        (None, _) if config.require_pkce => Some("code_challenge is required"),
        (None, _) => None,
    };
    if let Some(problem) = pkce_problem {
        let mut params = vec![("error", "invalid_request"), ("error_description", problem)];
        if let Some(s) = &q.state {
            params.push(("state", s));
        }
        return back_to_client(redirect_uri, &params);
    }

    let (session, fresh) = state.session(session_cookie(&headers));
    let tx = state.begin(
        &session,
        redirect_uri,
        q.scope.as_deref().unwrap_or(""),
        q.state.clone(),
        q.code_challenge.clone(),
    );
    let mut response = redirect(StatusCode::FOUND, &format!("/login?tx={tx}"));
    if fresh
        && let Ok(cookie) = HeaderValue::from_str(&format!(
            "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Lax"
        ))
    {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

#[derive(Deserialize)]
pub(super) struct TxQuery {
    tx: String,
}

pub(super) async fn login_page(
    State(state): State<ProviderState>,
    headers: HeaderMap,
    Query(q): Query<TxQuery>,
) -> Response {
    let (t, csrf) = match checked_transaction(&state, &headers, &q.tx, None) {
        Ok(found) => found,
        Err(refused) => return refused.into_response(),
    };
    match t.stage {
        Stage::Login => {}
        Stage::Totp { .. } => {
            return redirect(StatusCode::SEE_OTHER, &format!("/login/totp?tx={}", q.tx));
        }
        Stage::Consent { .. } => {
            return redirect(
                StatusCode::SEE_OTHER,
                &format!("/oauth/consent?tx={}", q.tx),
            );
        }
    }
    let config = state.config();
    html(
        StatusCode::OK,
        pages::login(
            &config.client_name,
            &q.tx,
            &csrf,
            "",
            &config.help_url,
            None,
        ),
    )
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    tx: String,
    csrf_token: Option<String>,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

pub(super) async fn login_submit(
    State(state): State<ProviderState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    state.wait_while_held().await;
    let csrf = form.csrf_token.as_deref().unwrap_or("");
    let (t, csrf) = match checked_transaction(&state, &headers, &form.tx, Some(csrf)) {
        Ok(found) => found,
        Err(refused) => return refused.into_response(),
    };
    if t.stage != Stage::Login {
        return expired();
    }
    match state.check_password(&form.tx, &form.username, &form.password) {
        None => {
            let config = state.config();
            html(
                StatusCode::OK,
                pages::login(
                    &config.client_name,
                    &form.tx,
                    &csrf,
                    &form.username,
                    &config.help_url,
                    Some("Invalid username or password"),
                ),
            )
        }
        Some(Stage::Totp { .. }) => redirect(
            StatusCode::SEE_OTHER,
            &format!("/login/totp?tx={}", form.tx),
        ),
        Some(Stage::Consent { channel }) => after_authentication(&state, &form.tx, &channel),
        Some(Stage::Login) => expired(),
    }
}

pub(super) async fn totp_page(
    State(state): State<ProviderState>,
    headers: HeaderMap,
    Query(q): Query<TxQuery>,
) -> Response {
    match checked_transaction(&state, &headers, &q.tx, None) {
        Ok((t, csrf)) if matches!(t.stage, Stage::Totp { .. }) => {
            html(StatusCode::OK, pages::totp(&q.tx, &csrf, None))
        }
        Ok(_) => expired(),
        Err(refused) => refused.into_response(),
    }
}

#[derive(Deserialize)]
pub(super) struct TotpForm {
    tx: String,
    csrf_token: Option<String>,
    #[serde(default)]
    code: String,
}

pub(super) async fn totp_submit(
    State(state): State<ProviderState>,
    headers: HeaderMap,
    Form(form): Form<TotpForm>,
) -> Response {
    let csrf = form.csrf_token.as_deref().unwrap_or("");
    let (t, csrf) = match checked_transaction(&state, &headers, &form.tx, Some(csrf)) {
        Ok(found) => found,
        Err(refused) => return refused.into_response(),
    };
    let Stage::Totp { channel } = t.stage else {
        return expired();
    };
    if state.check_totp(&form.tx, &channel, &form.code) {
        after_authentication(&state, &form.tx, &channel)
    } else {
        html(
            StatusCode::OK,
            pages::totp(&form.tx, &csrf, Some("Invalid verification code")),
        )
    }
}

pub(super) async fn consent_page(
    State(state): State<ProviderState>,
    headers: HeaderMap,
    Query(q): Query<TxQuery>,
) -> Response {
    match checked_transaction(&state, &headers, &q.tx, None) {
        Ok((t, csrf)) => match &t.stage {
            Stage::Consent { channel } => html(
                StatusCode::OK,
                pages::consent(&state.config().client_name, channel, &t.scope, &q.tx, &csrf),
            ),
            _ => expired(),
        },
        Err(refused) => refused.into_response(),
    }
}

#[derive(Deserialize)]
pub(super) struct ConsentForm {
    tx: String,
    csrf_token: Option<String>,
    #[serde(default)]
    decision: String,
}

pub(super) async fn consent_submit(
    State(state): State<ProviderState>,
    headers: HeaderMap,
    Form(form): Form<ConsentForm>,
) -> Response {
    let csrf = form.csrf_token.as_deref().unwrap_or("");
    let (t, _) = match checked_transaction(&state, &headers, &form.tx, Some(csrf)) {
        Ok(found) => found,
        Err(refused) => return refused.into_response(),
    };
    let Stage::Consent { channel } = &t.stage else {
        return expired();
    };
    if form.decision == "allow" {
        grant_code(&state, &form.tx, channel)
    } else {
        state.abandon(&form.tx);
        back_to_client(
            &t.redirect_uri,
            &with_state(&t, vec![("error", "access_denied")]),
        )
    }
}
