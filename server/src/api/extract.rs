//! Extractors whose rejections use the API's error body.

use super::error::{ApiError, ErrorCode, FieldError};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// `Json<T>` with error bodies: malformed JSON → 400 `invalid_json`; unknown fields, wrong types or
/// unknown enum values → 422 `validation_failed`; wrong content type → 415.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
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
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with `Content-Type: application/json`",
            )),
            Err(e) => Err(ApiError::new(ErrorCode::InvalidBody, e.body_text())),
        }
    }
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
