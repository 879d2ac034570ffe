//! Every route under `/api/v1` is in the OpenAPI document with its methods, and every documented
//! operation is routed.

use super::{AppState, router};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use std::collections::BTreeSet;
use tower::ServiceExt;

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// A state whose database is never reached: routing and authentication answer first.
fn state() -> AppState {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(200))
        .connect_lazy("postgres://nobody@127.0.0.1:9/none")
        .expect("a lazy pool opens no connection");
    AppState::new(pool)
}

/// The router's paths under `/api/v1`, read from its route table.
fn routed_paths(app: &axum::Router) -> BTreeSet<String> {
    let table = format!("{app:?}");
    table
        .split('"')
        .filter(|s| s.starts_with("/api/v1/"))
        .map(str::to_owned)
        .collect()
}

/// `path` with every `{param}` filled in.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if s.starts_with('{') {
                "00000000-0000-0000-0000-000000000000"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A documented path as the router spells it: a final `{y}.png` is routed as `{y}` (the handler reads
/// the suffix), because the router matches whole segments.
fn as_routed(path: &str) -> String {
    match path.rsplit_once('/') {
        Some((head, last)) if last.starts_with('{') && last.contains("}.") => {
            let name = last.split_once('}').map_or(last, |(n, _)| n);
            format!("{head}/{name}}}")
        }
        _ => path.to_owned(),
    }
}

/// Whether `app` routes `method` on `path` (anything but the method-not-allowed and no-route answers).
async fn routes(app: &axum::Router, method: &Method, path: &str) -> bool {
    let request = Request::builder()
        .method(method)
        .uri(concrete(path))
        .body(Body::empty())
        .expect("a valid request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        return false;
    }
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    !(status == StatusCode::NOT_FOUND && body["error"]["message"] == "route not found")
}

#[tokio::test]
async fn every_api_route_is_documented_with_its_methods() {
    let app = router(state());
    let response = app
        .clone()
        .oneshot(
            Request::get("/api/openapi.json")
                .body(Body::empty())
                .expect("a valid request"),
        )
        .await
        .expect("infallible");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    let doc: Value = serde_json::from_slice(&body).expect("the OpenAPI document is JSON");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            documented.insert((as_routed(path), method.to_uppercase()));
        }
    }

    let paths = routed_paths(&app);
    assert!(paths.len() > 40, "the route table was not read: {paths:?}");
    let mut routed = BTreeSet::new();
    for path in &paths {
        for method in &METHODS {
            if routes(&app, method, path).await {
                routed.insert((path.clone(), method.to_string()));
            }
        }
    }
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the OpenAPI document: {undocumented:?}"
    );
    for (path, method) in &documented {
        let method: Method = method.parse().expect("an HTTP method");
        assert!(
            routes(&app, &method, path).await,
            "{method} {path} is documented but not routed"
        );
    }
}

#[test]
fn every_schema_the_document_refers_to_is_in_it() {
    let doc = serde_json::to_value(super::openapi()).expect("the document serialises");
    let text = doc.to_string();
    let prefix = "#/components/schemas/";
    let missing: BTreeSet<&str> = text
        .match_indices(prefix)
        .filter_map(|(i, _)| text[i + prefix.len()..].split('"').next())
        .filter(|name| doc["components"]["schemas"].get(*name).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "schemas referred to but missing: {missing:?}"
    );
}
