//! The API's error body: `{"error": {"code", "message", "details"}}` with the right status. 5xx bodies
//! never carry internal detail; the detail is logged.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
    /// Field-level details, if any.
    pub details: Value,
}

/// One field's problem.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON path of the field (`aoi`, `classes[1].color`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// The error body, for the OpenAPI document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorInner,
}

/// Inside [`ErrorBody`].
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorInner {
    /// Stable code (`not_found`, `validation_failed`, …).
    pub code: String,
    /// Message.
    pub message: String,
    /// Details (`[{field, message}]` for validation errors).
    #[schema(value_type = Object)]
    pub details: Value,
}

impl ApiError {
    /// Any status/code/message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    /// 404.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 422 with field errors.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let message = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "validation_failed",
            message,
            details: json!(errors),
        }
    }

    /// 500; `detail` is logged, never returned.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"error": {"code": self.code, "message": self.message, "details": self.details}});
        (self.status, Json(body)).into_response()
    }
}

impl From<groundwork_store::Error> for ApiError {
    fn from(e: groundwork_store::Error) -> Self {
        use groundwork_store::Error as E;
        match e {
            E::NotFound { what, .. } => Self::not_found(what),
            E::Conflict(msg) => Self::new(StatusCode::CONFLICT, "conflict", msg),
            E::Unauthorized(msg) => Self::new(StatusCode::UNAUTHORIZED, "unauthorized", msg),
            E::Connect(_) => {
                tracing::error!(error = %e, "database unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable",
                )
            }
            other => Self::internal(&other),
        }
    }
}

/// Result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
