//! Extractors whose rejections use the API's error body, and the checks every text input passes
//! before a handler runs: a JSON body is an object and holds no NUL character (PostgreSQL refuses NUL
//! in `text` and `jsonb`), a form holds no NUL character.

use super::error::{ApiError, ErrorCode, FieldError};
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Largest JSON body a route accepts unless it sets its own limit (bytes): a 20,000-vertex AOI fits
/// several times over.
pub const MAX_JSON_BYTES: usize = 2 * 1024 * 1024;

/// The message of a refused NUL character.
pub const NUL_MESSAGE: &str = "text may not contain NUL characters";

/// Whether a JSON text holds a `\u0000` escape inside a string (the only way JSON can carry a NUL
/// character: a raw NUL byte is a syntax error). Backslashes escaped by a backslash do not count.
#[must_use]
pub fn json_has_nul(body: &[u8]) -> bool {
    let mut backslashes = 0usize;
    for (i, &b) in body.iter().enumerate() {
        if b == b'\\' {
            backslashes += 1;
            continue;
        }
        if b == b'u' && backslashes % 2 == 1 && body.get(i + 1..i + 5) == Some(b"0000") {
            return true;
        }
        backslashes = 0;
    }
    false
}

/// The path (`name`, `classes[1].name`) of the first string or key in `value` that holds a NUL.
#[must_use]
pub fn nul_path(value: &Value) -> Option<String> {
    fn walk(value: &Value, path: &str) -> Option<String> {
        match value {
            Value::String(s) if s.contains('\0') => Some(path.to_owned()),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| walk(v, &format!("{path}[{i}]"))),
            Value::Object(map) => map.iter().find_map(|(k, v)| {
                let here = if path.is_empty() {
                    k.replace('\0', "\\u0000")
                } else {
                    format!("{path}.{}", k.replace('\0', "\\u0000"))
                };
                if k.contains('\0') {
                    Some(here)
                } else {
                    walk(v, &here)
                }
            }),
            _ => None,
        }
    }
    walk(value, "").map(|p| if p.is_empty() { "body".to_owned() } else { p })
}

/// A body that could not be read: 413 `payload_too_large` when it is over the route's limit.
pub(crate) fn body_rejection(e: &BytesRejection, what: &str) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("{what} is larger than this route accepts"),
        )
    } else {
        ApiError::with_status(
            e.status(),
            ErrorCode::InvalidBody,
            format!("{what} could not be read: {}", e.body_text()),
        )
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The 422 of a JSON body with a NUL character, naming the field.
fn nul_error(body: &[u8]) -> ApiError {
    let field = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| nul_path(&v))
        .unwrap_or_else(|| "body".to_owned());
    ApiError::validation(vec![FieldError {
        field,
        message: NUL_MESSAGE.to_owned(),
    }])
}

/// `Json<T>` with error bodies: malformed JSON → 400 `invalid_json`; a body that is not an object, a
/// string with a NUL character, unknown fields, wrong types or unknown enum values → 422
/// `validation_failed`; wrong content type → 415; over the route's body limit → 413.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| body_rejection(&e, "the body"))?;
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            None | Some(b'{') => {}
            Some(_) if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok() => {
                return Err(ApiError::validation(vec![FieldError {
                    field: "body".to_owned(),
                    message: "the body must be a JSON object".to_owned(),
                }]));
            }
            Some(_) => {}
        }
        if json_has_nul(&bytes) {
            return Err(nul_error(&bytes));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(JsonRejection::JsonDataError(e)) => {
                // serde_path_to_error's message: "{path}: {problem}".
                let text = std::error::Error::source(&e)
                    .map_or_else(|| e.body_text(), ToString::to_string);
                let (path, message) = match text.split_once(": ") {
                    Some((path, msg)) if !path.contains(' ') => (path.to_owned(), msg.to_owned()),
                    _ => ("body".to_owned(), text.clone()),
                };
                // serde reports a missing field at its parent: name the field itself.
                let field = match message
                    .strip_prefix("missing field `")
                    .and_then(|m| m.split_once('`'))
                {
                    Some((name, _)) if path == "body" || path == "." => name.to_owned(),
                    Some((name, _)) => format!("{path}.{name}"),
                    None => path,
                };
                Err(ApiError::validation(vec![FieldError { field, message }]))
            }
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::new(
                ErrorCode::InvalidJson,
                format!(
                    "the body is not valid JSON: {}",
                    std::error::Error::source(&e)
                        .map_or_else(|| e.body_text(), ToString::to_string)
                ),
            )),
            Err(e) => Err(ApiError::with_status(
                e.status(),
                ErrorCode::InvalidBody,
                e.body_text(),
            )),
        }
    }
}

/// Middleware: a form body (`application/x-www-form-urlencoded`) whose names or values hold a NUL
/// character is refused with 400 before any handler reads it; a form over [`MAX_JSON_BYTES`] is 413.
pub async fn reject_nul_in_forms(req: Request, next: Next) -> Response {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|e| {
            e.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_JSON_BYTES).await else {
        return ApiError::new(
            ErrorCode::PayloadTooLarge,
            "the form is larger than this route accepts",
        )
        .into_response();
    };
    if let Some((key, _)) =
        form_urlencoded::parse(&bytes).find(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return ApiError::new(
            ErrorCode::InvalidBody,
            format!("{}: {NUL_MESSAGE}", key.replace('\0', "\\u0000")),
        )
        .into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// `Path<T>`: a malformed id is a 404 (no such resource), other problems 400.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => Err(ApiError::new(
                ErrorCode::NotFound,
                "no such resource (the id is not a valid UUID)",
            )),
            Err(e) => Err(ApiError::new(ErrorCode::InvalidPath, e.body_text())),
        }
    }
}

/// `Query<T>` with error bodies (400).
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(e @ QueryRejection::FailedToDeserializeQueryString(_)) => {
                Err(ApiError::new(ErrorCode::InvalidQuery, e.body_text()))
            }
            Err(e) => Err(ApiError::new(ErrorCode::InvalidQuery, e.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_nul_escape_is_found_only_where_it_is_one() {
        assert!(json_has_nul(br#"{"email": "a\u0000b"}"#));
        assert!(
            json_has_nul(br#"{"a": "\\\u0000"}"#),
            "an escaped backslash, then NUL"
        );
        assert!(
            !json_has_nul(br#"{"a": "\\u0000"}"#),
            "a backslash, then the text u0000"
        );
        assert!(!json_has_nul(br#"{"a": "\u00"}"#), "a truncated escape");
        assert!(!json_has_nul(br#"{"a": "\u0001 u0000"}"#));
    }

    #[test]
    fn the_path_of_a_nul_names_the_field() {
        let v = json!({"name": "ok", "classes": [{"name": "a"}, {"name": "b\u{0}"}]});
        assert_eq!(nul_path(&v).as_deref(), Some("classes[1].name"));
        assert_eq!(nul_path(&json!({"k\u{0}": 1})).as_deref(), Some("k\\u0000"));
        assert_eq!(nul_path(&json!("\u{0}")).as_deref(), Some("body"));
        assert_eq!(nul_path(&json!({"a": ["x"]})), None);
    }
}
