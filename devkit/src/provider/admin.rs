//! `/admin/...`: what the platform's operators (and the tests) do: revoke a
//! channel's tokens, mint tokens without a browser, inject faults, read the
//! stats. Every route is behind one check, [`require_admin`], and every
//! channel route names a channel the provider has an account for
//! ([`KnownChannel`]).

use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::ExposeSecret as _;
use serde_json::json;

use super::api::{bearer, unauthorized};
use super::state::{Fault, ProviderState};

/// The admin routes, each answering 401 unless the request carries the
/// configured admin token.
pub(super) fn routes(state: ProviderState) -> Router<ProviderState> {
    Router::new()
        .route("/admin/stats", get(stats))
        .route("/admin/channels/{channel}/revoke", post(revoke))
        .route(
            "/admin/channels/{channel}/revoke-access",
            post(revoke_access),
        )
        .route("/admin/channels/{channel}/tokens", post(mint_tokens))
        .route(
            "/admin/channels/{channel}/faults",
            post(set_fault).delete(clear_fault),
        )
        .route_layer(axum::middleware::from_fn_with_state(state, require_admin))
}

/// Lets a request through when no admin token is configured or it carries
/// `Authorization: Bearer <admin_token>`; answers 401 otherwise.
async fn require_admin(
    State(state): State<ProviderState>,
    request: Request,
    next: Next,
) -> Response {
    match &state.config().admin_token {
        Some(token) if bearer(request.headers()) != Some(token.expose_secret()) => {
            unauthorized("invalid_token", "admin token required")
        }
        _ => next.run(request).await,
    }
}

/// The `{channel}` of the path, when the provider has an account for it;
/// 404 `unknown_channel` otherwise.
struct KnownChannel(String);

impl FromRequestParts<ProviderState> for KnownChannel {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ProviderState,
    ) -> Result<Self, Self::Rejection> {
        let Path(channel) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if state.config().accounts.contains_key(&channel) {
            Ok(Self(channel))
        } else {
            Err((
                StatusCode::NOT_FOUND,
                Json(json!({ "error": "unknown_channel" })),
            )
                .into_response())
        }
    }
}

/// `GET /admin/stats`.
async fn stats(State(state): State<ProviderState>) -> Response {
    Json(state.stats()).into_response()
}

/// `POST /admin/channels/{channel}/revoke`: access and refresh tokens.
async fn revoke(
    State(state): State<ProviderState>,
    KnownChannel(channel): KnownChannel,
) -> Response {
    state.revoke(&channel);
    tracing::info!(%channel, "simulated provider revoked all tokens");
    Json(json!({ "revoked": "all", "channel": channel })).into_response()
}

/// `POST /admin/channels/{channel}/revoke-access`: access tokens only.
async fn revoke_access(
    State(state): State<ProviderState>,
    KnownChannel(channel): KnownChannel,
) -> Response {
    state.revoke_access(&channel);
    tracing::info!(%channel, "simulated provider revoked access tokens");
    Json(json!({ "revoked": "access", "channel": channel })).into_response()
}

/// `POST /admin/channels/{channel}/tokens`: a token pair without a browser, for seeding.
async fn mint_tokens(
    State(state): State<ProviderState>,
    KnownChannel(channel): KnownChannel,
) -> Response {
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
async fn set_fault(
    State(state): State<ProviderState>,
    KnownChannel(channel): KnownChannel,
    Json(fault): Json<Fault>,
) -> Response {
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
async fn clear_fault(State(state): State<ProviderState>, Path(channel): Path<String>) -> Response {
    state.clear_fault(&channel);
    StatusCode::NO_CONTENT.into_response()
}
