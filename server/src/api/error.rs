//! The API's error body: `{"error": {"code", "message", "details"}}` with the right status. 5xx bodies
//! never carry internal detail; the detail is logged.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

/// Every code an error body can carry, with its HTTP status and meaning. The wire value (`as_str`) is
/// stable: clients match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// the body (or an uploaded JSON file) is not valid JSON.
    InvalidJson,
    /// the body could not be read (413 when it is larger than the route accepts).
    InvalidBody,
    /// a path parameter could not be read.
    InvalidPath,
    /// the query string is malformed or out of range (`limit`, `cursor`, …).
    InvalidQuery,
    /// the tile coordinates do not name a tile.
    InvalidTile,
    /// no valid session or token, or one that has expired or was revoked.
    Unauthorized,
    /// wrong email or password at sign-in.
    InvalidCredentials,
    /// the principal's role does not allow this.
    Forbidden,
    /// a read-only token tried to change something.
    ReadOnlyToken,
    /// a session's state-changing request lacked its CSRF token.
    CsrfFailed,
    /// the user belongs to no organisation.
    NoOrganisation,
    /// only a signed-in user (not a token) may do this.
    SessionRequired,
    /// the current password given is wrong.
    WrongPassword,
    /// no such resource in the principal's organisation (or no such route).
    NotFound,
    /// the route exists but not with this method.
    MethodNotAllowed,
    /// the change conflicts with the current state (duplicate, step not in a state that allows it, …).
    Conflict,
    /// the first administrator exists already.
    SetupDone,
    /// the project has no windows yet: acquire imagery first.
    NoWindows,
    /// the output is not a class map (only class maps have polygons, assessments and change maps).
    NotAClassMap,
    /// the body is larger than the route accepts.
    PayloadTooLarge,
    /// the class map needs more map tiles or polygons than an offline package may hold.
    PackageTooLarge,
    /// a class map has more pixels than a change map may compare.
    ChangeTooLarge,
    /// the body's content type is not one the route reads.
    UnsupportedMediaType,
    /// fields are invalid; `details` lists `[{field, message}]`.
    ValidationFailed,
    /// an uploaded file is unusable as a whole.
    InvalidFile,
    /// no row of a labels file could be imported; `details` lists the row errors.
    NoValidLabels,
    /// the sampling or split options are invalid.
    InvalidOptions,
    /// too many failed sign-ins from this address; wait and retry.
    TooManyAttempts,
    /// the organisation's limit on queued steps is reached; wait for queued work to finish.
    LimitReached,
    /// the run would exceed the organisation's monthly device-time quota; `details` holds the estimate
    /// and what is left; start it with `request_approval` to wait for an administrator.
    QuotaExceeded,
    /// a server fault; the detail is logged, never returned.
    Internal,
    /// the database is unavailable.
    Unavailable,
    /// `/readyz`: the database is unreachable or migrations are not applied.
    NotReady,
    /// the request took longer than the server's limit (or waited too long for a free slot).
    Timeout,
}

impl ErrorCode {
    /// Every code, in the order the README's table lists them.
    pub const ALL: [Self; 34] = [
        Self::InvalidJson,
        Self::InvalidBody,
        Self::InvalidPath,
        Self::InvalidQuery,
        Self::InvalidTile,
        Self::Unauthorized,
        Self::InvalidCredentials,
        Self::Forbidden,
        Self::ReadOnlyToken,
        Self::CsrfFailed,
        Self::NoOrganisation,
        Self::SessionRequired,
        Self::WrongPassword,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Conflict,
        Self::SetupDone,
        Self::NoWindows,
        Self::NotAClassMap,
        Self::PayloadTooLarge,
        Self::PackageTooLarge,
        Self::ChangeTooLarge,
        Self::UnsupportedMediaType,
        Self::ValidationFailed,
        Self::InvalidFile,
        Self::NoValidLabels,
        Self::InvalidOptions,
        Self::TooManyAttempts,
        Self::LimitReached,
        Self::QuotaExceeded,
        Self::Internal,
        Self::Unavailable,
        Self::NotReady,
        Self::Timeout,
    ];

    /// The code as it appears in `error.code`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidBody => "invalid_body",
            Self::InvalidPath => "invalid_path",
            Self::InvalidQuery => "invalid_query",
            Self::InvalidTile => "invalid_tile",
            Self::Unauthorized => "unauthorized",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Forbidden => "forbidden",
            Self::ReadOnlyToken => "read_only_token",
            Self::CsrfFailed => "csrf_failed",
            Self::NoOrganisation => "no_organisation",
            Self::SessionRequired => "session_required",
            Self::WrongPassword => "wrong_password",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::SetupDone => "setup_done",
            Self::NoWindows => "no_windows",
            Self::NotAClassMap => "not_a_class_map",
            Self::PayloadTooLarge => "payload_too_large",
            Self::PackageTooLarge => "package_too_large",
            Self::ChangeTooLarge => "change_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::ValidationFailed => "validation_failed",
            Self::InvalidFile => "invalid_file",
            Self::NoValidLabels => "no_valid_labels",
            Self::InvalidOptions => "invalid_options",
            Self::TooManyAttempts => "too_many_attempts",
            Self::LimitReached => "limit_reached",
            Self::QuotaExceeded => "quota_exceeded",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
            Self::NotReady => "not_ready",
            Self::Timeout => "timeout",
        }
    }

    /// The HTTP status an error with this code has (`invalid_body` may carry another 4xx: see
    /// [`ApiError::with_status`]).
    #[must_use]
    pub const fn status(self) -> StatusCode {
        match self {
            Self::InvalidJson => StatusCode::BAD_REQUEST,
            Self::InvalidBody => StatusCode::BAD_REQUEST,
            Self::InvalidPath => StatusCode::BAD_REQUEST,
            Self::InvalidQuery => StatusCode::BAD_REQUEST,
            Self::InvalidTile => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::ReadOnlyToken => StatusCode::FORBIDDEN,
            Self::CsrfFailed => StatusCode::FORBIDDEN,
            Self::NoOrganisation => StatusCode::FORBIDDEN,
            Self::SessionRequired => StatusCode::FORBIDDEN,
            Self::WrongPassword => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::SetupDone => StatusCode::CONFLICT,
            Self::NoWindows => StatusCode::CONFLICT,
            Self::NotAClassMap => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::PackageTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ChangeTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            Self::InvalidFile => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NoValidLabels => StatusCode::UNPROCESSABLE_ENTITY,
            Self::InvalidOptions => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyAttempts | Self::LimitReached | Self::QuotaExceeded => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// What the code means, in one line.
    #[must_use]
    pub const fn meaning(self) -> &'static str {
        match self {
            Self::InvalidJson => "the body (or an uploaded JSON file) is not valid JSON",
            Self::InvalidBody => {
                "the body could not be read (413 when it is larger than the route accepts)"
            }
            Self::InvalidPath => "a path parameter could not be read",
            Self::InvalidQuery => {
                "the query string is malformed or out of range (`limit`, `cursor`, …)"
            }
            Self::InvalidTile => "the tile coordinates do not name a tile",
            Self::Unauthorized => {
                "no valid session or token, or one that has expired or was revoked"
            }
            Self::InvalidCredentials => "wrong email or password at sign-in",
            Self::Forbidden => "the principal's role does not allow this",
            Self::ReadOnlyToken => "a read-only token tried to change something",
            Self::CsrfFailed => "a session's state-changing request lacked its CSRF token",
            Self::NoOrganisation => "the user belongs to no organisation",
            Self::SessionRequired => "only a signed-in user (not a token) may do this",
            Self::WrongPassword => "the current password given is wrong",
            Self::NotFound => "no such resource in the principal's organisation (or no such route)",
            Self::MethodNotAllowed => "the route exists but not with this method",
            Self::Conflict => {
                "the change conflicts with the current state (duplicate, step not in a state that allows it, …)"
            }
            Self::SetupDone => "the first administrator exists already",
            Self::NoWindows => "the project has no windows yet: acquire imagery first",
            Self::NotAClassMap => {
                "the output is not a class map (only class maps have polygons, assessments and change maps)"
            }
            Self::PayloadTooLarge => "the body is larger than the route accepts",
            Self::PackageTooLarge => {
                "the class map needs more map tiles or polygons than an offline package may hold"
            }
            Self::ChangeTooLarge => {
                "a class map has more pixels than a change map may compare (50 million)"
            }
            Self::UnsupportedMediaType => "the body's content type is not one the route reads",
            Self::ValidationFailed => "fields are invalid; `details` lists `[{field, message}]`",
            Self::InvalidFile => "an uploaded file is unusable as a whole",
            Self::NoValidLabels => {
                "no row of a labels file could be imported; `details` lists the row errors"
            }
            Self::InvalidOptions => "the sampling or split options are invalid",
            Self::TooManyAttempts => "too many failed sign-ins from this address; wait and retry",
            Self::LimitReached => {
                "the organisation's limit on queued steps is reached; wait for queued work to finish"
            }
            Self::QuotaExceeded => {
                "the run would exceed the organisation's monthly device-time quota; `details` holds the estimate and what is left; start it with `request_approval` to wait for an administrator"
            }
            Self::Internal => "a server fault; the detail is logged, never returned",
            Self::Unavailable => "the database is unavailable",
            Self::NotReady => {
                "`/readyz`: the database is unreachable or migrations are not applied"
            }
            Self::Timeout => {
                "the request took longer than the server's limit (or waited too long for a free slot)"
            }
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: ErrorCode,
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
    /// Stable code (`not_found`, `validation_failed`, …: see [`ErrorCode`]).
    pub code: String,
    /// Message.
    pub message: String,
    /// Details (`[{field, message}]` for validation errors).
    #[schema(value_type = Object)]
    pub details: Value,
}

impl ApiError {
    /// An error with `code`'s status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::with_status(code.status(), code, message)
    }

    /// An error whose status is not the code's usual one (a body rejection's own 4xx).
    pub fn with_status(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    /// 404.
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    /// 422 with field errors.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let message = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            status: ErrorCode::ValidationFailed.status(),
            code: ErrorCode::ValidationFailed,
            message,
            details: json!(errors),
        }
    }

    /// What the error says (what a caller would read in the body).
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 500; `detail` is logged, never returned.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(ErrorCode::Internal, "internal server error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code.as_str(), "message": self.message, "details": self.details}});
        (self.status, Json(body)).into_response()
    }
}

impl From<groundwork_store::Error> for ApiError {
    fn from(e: groundwork_store::Error) -> Self {
        use groundwork_store::Error as E;
        match e {
            E::NotFound { what, .. } => Self::not_found(what),
            E::Conflict(msg) => Self::new(ErrorCode::Conflict, msg),
            E::Unauthorized(msg) => Self::new(ErrorCode::Unauthorized, msg),
            E::LimitReached(msg) => Self::new(ErrorCode::LimitReached, msg),
            E::QuotaExceeded { .. } => Self::new(ErrorCode::QuotaExceeded, e.to_string()),
            E::Database(ref db)
                if db
                    .as_database_error()
                    .and_then(|d| d.code())
                    .is_some_and(|c| c == "22021" || c == "22P05") =>
            {
                // Text PostgreSQL refuses (NUL, invalid byte sequences), should a check have missed it.
                tracing::warn!(error = %e, "text refused by the database");
                Self::validation(vec![FieldError {
                    field: "body".to_owned(),
                    message: format!(
                        "{}, nor byte sequences that are not UTF-8",
                        super::extract::NUL_MESSAGE
                    ),
                }])
            }
            E::Database(ref db)
                if db.as_database_error().is_some_and(|d| {
                    d.code()
                        .is_some_and(|c| c.starts_with("57P") || c.starts_with("08"))
                        || d.message().contains("not currently accepting connections")
                }) =>
            {
                // The server is shutting down, starting up or refusing connections, or the
                // connection broke (a restart, a failover).
                tracing::error!(error = %e, "database unavailable");
                Self::new(ErrorCode::Unavailable, "the database is unavailable")
            }
            E::Connect(_)
            | E::Unavailable
            | E::Database(
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::WorkerCrashed,
            ) => {
                tracing::error!(error = %e, "database unavailable");
                Self::new(ErrorCode::Unavailable, "the database is unavailable")
            }
            other => Self::internal(&other),
        }
    }
}

/// Result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
