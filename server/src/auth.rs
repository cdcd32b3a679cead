//! Bearer tokens: user tokens for the public API, a separate worker token
//! for the worker endpoints. Only sha256 hashes are stored.

use axum::extract::State;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

/// Token kinds.
pub const USER: &str = "user";
/// The worker token kind.
pub const WORKER: &str = "worker";

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random token.
pub fn new_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    format!("qrn_{}", hex::encode(bytes))
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn check(state: &AppState, parts: &Parts, kind: &str) -> Result<(), ApiError> {
    let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
    match state.store.token_kind(&hash_token(token)).await? {
        Some(k) if k == kind => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

/// Middleware: the request carries a user token.
pub async fn require_user(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    check(&state, &parts, USER).await?;
    Ok(next
        .run(axum::extract::Request::from_parts(parts, body))
        .await)
}

/// Middleware: the request carries the worker token.
pub async fn require_worker(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    check(&state, &parts, WORKER).await?;
    Ok(next
        .run(axum::extract::Request::from_parts(parts, body))
        .await)
}
