//! The small platform API that checks bearer tokens.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::state::{BearerCheck, Fault, ProviderState};

/// The bearer token of `Authorization: Bearer <token>`, if any.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// RFC 6750 §3: a 401 carries `WWW-Authenticate: Bearer` with the error code.
pub(super) fn unauthorized(error: &str, description: &str) -> Response {
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
