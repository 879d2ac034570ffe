//! Helpers shared by the server's integration tests: an owner's API token, and requests to the
//! in-process router.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use groundwork_store::PgPool;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// A user who owns the default organisation, and a write token of theirs.
pub async fn owner_token(pool: &PgPool) -> String {
    use groundwork_store::{DEFAULT_ORG_ID, accounts, audit::Who};
    let who = Who::cli();
    let user = accounts::create_user(pool, &who, "owner@example.org", "a long password")
        .await
        .unwrap();
    accounts::add_member(pool, &who, DEFAULT_ORG_ID, user.id, accounts::Role::Owner)
        .await
        .unwrap();
    accounts::create_api_token(
        pool,
        &who,
        user.id,
        DEFAULT_ORG_ID,
        "tests",
        accounts::Scope::Write,
        None,
    )
    .await
    .unwrap()
    .0
}

/// Sends `req` to `app`: the status, the headers (a value that is not text reads as empty) and the body.
pub async fn send(
    app: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, HashMap<String, String>, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, bytes)
}

/// A JSON request to `app`: the status and the body as JSON (`Null` when it is empty or not JSON).
pub async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let (s, _, b) = send(app, req).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}
