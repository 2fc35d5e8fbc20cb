//! The small platform API that checks bearer tokens, and the admin endpoints.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use super::state::{BearerCheck, Fault, ProviderState};

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// RFC 6750 §3: a 401 carries `WWW-Authenticate: Bearer` with the error code.
fn unauthorized(error: &str, description: &str) -> Response {
    let challenge = format!(
        "Bearer realm=\"simulated-provider\", error=\"{error}\", error_description=\"{description}\""
    );
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

fn reject(check: BearerCheck) -> Response {
    match check {
        BearerCheck::Missing => {
            let mut response = (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "error": "invalid_request", "error_description": "bearer token missing" })),
            )
                .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"simulated-provider\""),
            );
            response
        }
        BearerCheck::Invalid(why) => unauthorized("invalid_token", why),
        BearerCheck::WrongChannel => (
            StatusCode::FORBIDDEN,
            Json(json!({ "error": "insufficient_scope", "error_description": "token is for another channel" })),
        )
            .into_response(),
        BearerCheck::Valid { .. } => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn fault_response(fault: &Fault) -> Response {
    let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        Json(json!({ "error": "injected_fault", "status": fault.status })),
    )
        .into_response();
    if let Some(secs) = fault.retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// `GET /api/me`: who the token acts for.
pub(super) async fn me(State(state): State<ProviderState>, headers: HeaderMap) -> Response {
    match state.check_bearer(bearer(&headers), None) {
        BearerCheck::Valid { channel, scope } => {
            Json(json!({ "channel": channel, "scope": scope })).into_response()
        }
        other => reject(other),
    }
}

/// `POST /api/channels/{channel}/posts`: publishes the JSON body for the channel; a
/// body with `"reject": true` is refused with a 400 that echoes it.
pub(super) async fn create_post(
    State(state): State<ProviderState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    // Faults come first, the way a rate limiter or a failing gateway answers before the
    // application looks at the token.
    if let Some(fault) = state.take_fault(&channel) {
        return fault_response(&fault);
    }
    if let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        state.record_idempotency_key(&channel, key);
    }
    match state.check_bearer(bearer(&headers), Some(&channel)) {
        // A payload asking for it is refused as invalid input, echoed back
        // the way many APIs do: what the producer wrote (an `invalid_token`,
        // say) ends up in a 4xx body.
        BearerCheck::Valid { .. }
            if body
                .as_ref()
                .is_some_and(|Json(v)| v.get("reject") == Some(&Value::Bool(true))) =>
        {
            let input = body.map(|Json(v)| v).unwrap_or_default();
            (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": "validation_failed", "input": input })),
            )
                .into_response()
        }
        BearerCheck::Valid { .. } => {
            let id = uuid::Uuid::new_v4().to_string();
            let size = body.map_or(0, |Json(v)| v.to_string().len());
            (
                StatusCode::OK,
                Json(json!({ "id": id, "channel": channel, "status": "published", "bytes": size })),
            )
                .into_response()
        }
        other => reject(other),
    }
}

/// Why an admin request is refused.
enum Refused {
    NotAdmin,
    UnknownChannel,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::NotAdmin => unauthorized("invalid_token", "admin token required"),
            Self::UnknownChannel => (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": "unknown_channel" })),
            )
                .into_response(),
        }
    }
}

/// Admin endpoints answer 401 unless the request carries the configured admin token.
fn admin_allowed(state: &ProviderState, headers: &HeaderMap) -> Result<(), Refused> {
    match &state.config().admin_token {
        None => Ok(()),
        Some(token) if bearer(headers) == Some(token.expose_secret()) => Ok(()),
        Some(_) => Err(Refused::NotAdmin),
    }
}

/// `GET /admin/stats`.
pub(super) async fn stats(State(state): State<ProviderState>, headers: HeaderMap) -> Response {
    if let Err(refused) = admin_allowed(&state, &headers) {
        return refused.into_response();
    }
    Json(state.stats()).into_response()
}

fn known(state: &ProviderState, channel: &str) -> Result<(), Refused> {
    if state.config().accounts.contains_key(channel) {
        Ok(())
    } else {
        Err(Refused::UnknownChannel)
    }
}

/// `POST /admin/channels/{channel}/revoke`: access and refresh tokens.
pub(super) async fn revoke(
    State(state): State<ProviderState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = admin_allowed(&state, &headers).and_then(|()| known(&state, &channel)) {
        return refused.into_response();
    }
    state.revoke(&channel);
    tracing::info!(%channel, "simulated provider revoked all tokens");
    Json(json!({ "revoked": "all", "channel": channel })).into_response()
}

/// `POST /admin/channels/{channel}/revoke-access`: access tokens only.
pub(super) async fn revoke_access(
    State(state): State<ProviderState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = admin_allowed(&state, &headers).and_then(|()| known(&state, &channel)) {
        return refused.into_response();
    }
    state.revoke_access(&channel);
    tracing::info!(%channel, "simulated provider revoked access tokens");
    Json(json!({ "revoked": "access", "channel": channel })).into_response()
}

/// `POST /admin/channels/{channel}/tokens`: a token pair without a browser, for seeding.
pub(super) async fn mint_tokens(
    State(state): State<ProviderState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = admin_allowed(&state, &headers).and_then(|()| known(&state, &channel)) {
        return refused.into_response();
    }
    match state.mint_tokens(&channel) {
        Some(tokens) => {
            let mut response = Json(tokens).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `POST /admin/channels/{channel}/faults` with `{"status":429,"times":2,"retry_after_secs":1}`.
pub(super) async fn set_fault(
    State(state): State<ProviderState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    Json(fault): Json<Fault>,
) -> Response {
    if let Err(refused) = admin_allowed(&state, &headers).and_then(|()| known(&state, &channel)) {
        return refused.into_response();
    }
    if StatusCode::from_u16(fault.status).is_err() {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": "invalid status" })),
        )
            .into_response();
    }
    state.set_fault(&channel, fault.clone());
    Json(json!({ "channel": channel, "fault": fault })).into_response()
}

/// `DELETE /admin/channels/{channel}/faults`.
pub(super) async fn clear_fault(
    State(state): State<ProviderState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = admin_allowed(&state, &headers) {
        return refused.into_response();
    }
    state.clear_fault(&channel);
    StatusCode::NO_CONTENT.into_response()
}
