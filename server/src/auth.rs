//! Bearer tokens: user tokens for the public API; the cluster's worker
//! token, which only registers a worker; and each worker's own token
//! (`node`, named by its id), returned by registration and required by
//! every other worker endpoint, which then acts only for that worker. Only
//! sha256 hashes are stored.

use axum::extract::State;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

/// Token kinds.
pub const USER: &str = "user";
/// The cluster's worker token: registers workers, nothing else.
pub const WORKER: &str = "worker";
/// A worker's own token, named by the worker's id.
pub const NODE: &str = "node";

/// The worker a request's token belongs to (an extension set by
/// [`require_node`]).
#[derive(Debug, Clone)]
pub struct Node(pub protocol::WorkerId);

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

/// The token `worker`'s map-output server accepts for a job whose secret
/// is `job_secret`: HMAC-SHA256(secret, worker id) in hex. A lease hands a
/// worker the token of its own server, and a reduce lease each source's;
/// the secret itself never leaves the coordinator, so a worker (a rogue
/// one registered at any address included) learns no token that opens
/// another worker's outputs.
pub fn shuffle_token(job_secret: &str, worker: &protocol::WorkerId) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(job_secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(worker.0.as_bytes());
    hex::encode(mac.finalize().into_bytes())
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

/// The name of the request's token, if it is of `kind`.
async fn check(state: &AppState, parts: &Parts, kind: &str) -> Result<String, ApiError> {
    let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
    match state.store.token_kind(&hash_token(token)).await? {
        Some((k, name)) if k == kind => Ok(name),
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

/// Middleware: the request carries the cluster's worker token.
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

/// Middleware: the request carries a worker's own token; its worker is
/// put in the request's extensions as [`Node`].
pub async fn require_node(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let worker = check(&state, &parts, NODE).await?;
    parts.extensions.insert(Node(protocol::WorkerId(worker)));
    Ok(next
        .run(axum::extract::Request::from_parts(parts, body))
        .await)
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Node {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Node>()
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}

impl Node {
    /// Refuses a request made for another worker than the token's.
    pub fn check(&self, worker: &protocol::WorkerId) -> Result<(), ApiError> {
        if &self.0 == worker {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this token belongs to worker {}, not {worker}",
                self.0
            )))
        }
    }
}
