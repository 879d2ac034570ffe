//! Helpers for tests that call the API in process: a router whose every request carries the bearer
//! token of a real user (created through the same account functions the CLI uses).

use crate::{AppState, router};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request};
use groundwork_store::accounts::{self, Role, Scope};
use groundwork_store::audit::Who;
use groundwork_store::{DEFAULT_ORG_ID, PgPool};
use uuid::Uuid;

/// Creates a user with `role` in `org` and returns a write token of theirs.
pub async fn member_token(pool: &PgPool, org: Uuid, role: Role) -> anyhow::Result<String> {
    let who = Who::cli();
    let email = format!("{}@example.org", Uuid::new_v4().simple());
    let user = accounts::create_user(pool, &who, &email, "a long test password").await?;
    accounts::add_member(pool, &who, org, user.id, role).await?;
    Ok(
        accounts::create_api_token(pool, &who, user.id, org, "tests", Scope::Write, None)
            .await?
            .0,
    )
}

/// `app` with every request authenticated by `token`.
pub fn with_bearer(app: Router, token: &str) -> anyhow::Result<Router> {
    let value = HeaderValue::from_str(&format!("Bearer {token}"))?;
    Ok(app.layer(axum::middleware::map_request(
        move |mut req: Request<Body>| {
            let value = value.clone();
            async move {
                req.headers_mut().insert("authorization", value);
                req
            }
        },
    )))
}

/// The whole API with `state`, acting as a new owner of the default organisation.
pub async fn owner_router(state: AppState) -> anyhow::Result<Router> {
    let token = member_token(&state.pool, DEFAULT_ORG_ID, Role::Owner).await?;
    with_bearer(router(state), &token)
}
