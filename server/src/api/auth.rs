//! Who a request acts for. Every handler that touches an organisation's data takes an [`Actor`] and
//! scopes its queries to `actor.org_id`; handlers that change state call [`Actor::require`] first.
//!
//! Until accounts exist every request acts as the owner of the default organisation.

use super::AppState;
use super::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A member's role in an organisation, weakest first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads.
    Viewer,
    /// Reads and works: projects, runs, labels.
    Member,
    /// Also manages members, tokens and workers.
    Admin,
    /// Everything.
    Owner,
}

/// The principal of a request.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The user, when a user (not the bootstrap default) acts.
    pub user_id: Option<Uuid>,
    /// The organisation the request acts in.
    pub org_id: Uuid,
    /// The user's role there.
    pub role: Role,
}

impl Actor {
    /// Refuses (403) unless the actor holds at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this needs the {role:?} role or higher").to_lowercase(),
            ))
        }
    }
}

impl FromRequestParts<AppState> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(
        _parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Actor {
            user_id: None,
            org_id: state.org_id,
            role: Role::Owner,
        })
    }
}
