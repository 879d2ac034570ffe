//! The front end's built files (`web/dist/`), embedded into the binary and served under `/static/`.
//!
//! Pages link assets as `/static/NAME?v=HASH` (the first 16 hex digits of the file's SHA-256): such a
//! response may be cached for a year, because a new build changes the URL. Unversioned requests (the map
//! chunk the page script imports) are revalidated with the `ETag` every time.

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;
use serde::Deserialize;
use std::fmt::Write as _;

/// The files of `web/dist/`.
#[derive(Embed)]
#[folder = "../web/dist/"]
pub struct Assets;

fn version(path: &str) -> Option<String> {
    let file = Assets::get(path)?;
    let mut hex = String::with_capacity(16);
    for b in &file.metadata.sha256_hash()[..8] {
        let _ = write!(hex, "{b:02x}");
    }
    Some(hex)
}

/// The versioned URL of an embedded file.
#[must_use]
pub fn url(path: &str) -> String {
    match version(path) {
        Some(v) => format!("/static/{path}?v={v}"),
        None => format!("/static/{path}"),
    }
}

/// `?v=`.
#[derive(Debug, Deserialize)]
pub struct VersionQuery {
    v: Option<String>,
}

/// `GET /static/{*path}`.
pub async fn serve(
    Path(path): Path<String>,
    Query(q): Query<VersionQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(file) = Assets::get(&path) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "not found",
        )
            .into_response();
    };
    let v = version(&path).unwrap_or_default();
    let etag = format!("\"{v}\"");
    let cache = if q.v.as_deref() == Some(v.as_str()) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut mime = file.metadata.mimetype().to_owned();
    if (mime.starts_with("text/") || mime == "application/javascript") && !mime.contains("charset")
    {
        mime.push_str("; charset=utf-8");
    }
    let mut out = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, v);
    }
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.split(',').any(|t| t.trim() == etag));
    if not_modified {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    if let Ok(v) = HeaderValue::from_str(&mime) {
        out.insert(header::CONTENT_TYPE, v);
    }
    (StatusCode::OK, out, file.data.into_owned()).into_response()
}
