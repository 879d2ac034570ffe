//! Errors of page handlers, rendered as an HTML page with the right status. 5xx pages carry no internal
//! detail (the API error they come from has already logged it).

use super::Layout;
use crate::api::error::ApiError;
use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// A page handler's error.
#[derive(Debug)]
pub struct PageError {
    /// HTTP status.
    pub status: StatusCode,
    /// What the user reads.
    pub message: String,
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        let message = if e.status.is_server_error() {
            "Something went wrong on our side. Please try again.".to_owned()
        } else {
            e.message
        };
        Self {
            status: e.status,
            message,
        }
    }
}

impl From<groundwork_store::Error> for PageError {
    fn from(e: groundwork_store::Error) -> Self {
        ApiError::from(e).into()
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    layout: Layout,
    status: u16,
    reason: &'a str,
    message: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let reason = self.status.canonical_reason().unwrap_or("Error");
        let page = ErrorPage {
            layout: Layout::bare(reason),
            status: self.status.as_u16(),
            reason,
            message: &self.message,
        };
        match page.render() {
            Ok(html) => (self.status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "rendering the error page failed");
                (self.status, self.message).into_response()
            }
        }
    }
}

/// Result of page handlers.
pub type PageResult<T = Response> = Result<T, PageError>;
