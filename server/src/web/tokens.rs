//! Tokens: the user's API tokens in the current organisation (create, shown once; revoke) and, for
//! admins, the organisation's worker tokens.

use super::error::PageResult;
use super::{Layout, Nav, error_text, form_pairs, form_value, when};
use crate::api::AppState;
use crate::api::auth::{Actor, Role, Scope};
use crate::api::error::{ApiError, FieldError};
use crate::api::extract::Path;
use crate::service::tokens::{self as service, CreateToken, CreateWorkerToken};
use askama::Template;
use askama_web::WebTemplate;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use groundwork_store::accounts::{self, ApiToken, WorkerToken};
use uuid::Uuid;

/// `active`, `revoked` or `expired`.
fn status_of(revoked: Option<&DateTime<Utc>>, expires: Option<&DateTime<Utc>>) -> &'static str {
    if revoked.is_some() {
        "revoked"
    } else if expires.is_some_and(|e| *e <= Utc::now()) {
        "expired"
    } else {
        "active"
    }
}

fn used(t: Option<&DateTime<Utc>>) -> String {
    t.map_or_else(|| "never".into(), when)
}

/// An API token row.
pub struct TokenRow {
    /// The token.
    pub token: ApiToken,
}

impl TokenRow {
    /// `active`, `revoked` or `expired`.
    #[must_use]
    pub fn status(&self) -> &'static str {
        status_of(
            self.token.revoked_at.as_ref(),
            self.token.expires_at.as_ref(),
        )
    }

    /// Created.
    #[must_use]
    pub fn created(&self) -> String {
        when(&self.token.created_at)
    }

    /// Last used, or `never`.
    #[must_use]
    pub fn last_used(&self) -> String {
        used(self.token.last_used_at.as_ref())
    }

    /// Expiry, or `never`.
    #[must_use]
    pub fn expires(&self) -> String {
        used(self.token.expires_at.as_ref())
    }
}

/// A worker token row.
pub struct WorkerTokenRow {
    /// The token.
    pub token: WorkerToken,
}

impl WorkerTokenRow {
    /// `active` or `revoked`.
    #[must_use]
    pub fn status(&self) -> &'static str {
        status_of(self.token.revoked_at.as_ref(), None)
    }

    /// Created.
    #[must_use]
    pub fn created(&self) -> String {
        when(&self.token.created_at)
    }

    /// Last used, or `never`.
    #[must_use]
    pub fn last_used(&self) -> String {
        used(self.token.last_used_at.as_ref())
    }
}

/// A secret just made, shown only in the answer to the form that made it.
pub struct NewSecret {
    /// `api` or `worker`.
    pub kind: &'static str,
    /// The token's name.
    pub name: String,
    /// The secret.
    pub secret: String,
}

/// The create form's values, kept when the server refuses them.
#[derive(Debug, Clone)]
pub struct TokenForm {
    /// Name.
    pub name: String,
    /// `read` or `write`.
    pub scope: String,
}

impl Default for TokenForm {
    fn default() -> Self {
        Self {
            name: String::new(),
            scope: "read".into(),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "tokens.html")]
struct TokensPage {
    layout: Layout,
    tokens: Vec<TokenRow>,
    /// Whether worker tokens are shown (admins).
    admin: bool,
    worker_tokens: Vec<WorkerTokenRow>,
    form: TokenForm,
    worker_name: String,
    /// A form's refusal: `(form, message)` with form `api` or `worker`.
    error: Option<(&'static str, String)>,
    created: Option<NewSecret>,
}

impl TokensPage {
    fn error_of(&self, form: &str) -> Option<&str> {
        self.error
            .as_ref()
            .filter(|(f, _)| *f == form)
            .map(|(_, m)| m.as_str())
    }
}

/// What a refused form keeps.
#[derive(Default)]
struct Kept {
    form: TokenForm,
    worker_name: String,
    error: Option<(&'static str, String)>,
    created: Option<NewSecret>,
}

async fn page(state: &AppState, actor: &Actor, kept: Kept) -> PageResult<TokensPage> {
    let tokens = match actor.user_id {
        Some(user) => accounts::api_tokens(&state.pool, actor.org_id, Some(user)).await?,
        None => Vec::new(),
    };
    let admin = actor.role >= Role::Admin;
    let worker_tokens = if admin {
        accounts::worker_tokens(&state.pool, actor.org_id).await?
    } else {
        Vec::new()
    };
    Ok(TokensPage {
        layout: Layout::new(state, actor, "Tokens", Nav::Tokens).await,
        tokens: tokens.into_iter().map(|token| TokenRow { token }).collect(),
        admin,
        worker_tokens: worker_tokens
            .into_iter()
            .map(|token| WorkerTokenRow { token })
            .collect(),
        form: kept.form,
        worker_name: kept.worker_name,
        error: kept.error,
        created: kept.created,
    })
}

/// Field problems are shown next to their form (422); anything else is an error page.
async fn refused(
    state: &AppState,
    actor: &Actor,
    mut kept: Kept,
    which: &'static str,
    e: ApiError,
) -> PageResult<Response> {
    if e.status == StatusCode::UNPROCESSABLE_ENTITY {
        kept.error = Some((which, error_text(&e)));
        let p = page(state, actor, kept).await?;
        Ok((StatusCode::UNPROCESSABLE_ENTITY, p).into_response())
    } else {
        Err(e.into())
    }
}

/// `GET /tokens`.
pub async fn list(State(state): State<AppState>, actor: Actor) -> PageResult<Response> {
    Ok(page(&state, &actor, Kept::default()).await?.into_response())
}

/// `POST /tokens`: creates an API token of the user's through the same service function as the API; the secret is shown
/// in this answer only.
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    body: Bytes,
) -> PageResult<Response> {
    let pairs = form_pairs(&body);
    let form = TokenForm {
        name: form_value(&pairs, "name"),
        scope: form_value(&pairs, "scope"),
    };
    let scope = form.scope.parse::<Scope>().map_err(|_| {
        ApiError::validation(vec![FieldError {
            field: "scope".into(),
            message: "choose read or write".into(),
        }])
    });
    let result = match scope {
        Ok(scope) => {
            service::create_token(
                &state,
                &actor,
                CreateToken {
                    name: Some(form.name.clone()),
                    scope,
                    expires_in_days: None,
                },
            )
            .await
        }
        Err(e) => Err(e),
    };
    let kept = Kept {
        form,
        ..Kept::default()
    };
    match result {
        Ok(new) => {
            let created = NewSecret {
                kind: "api",
                name: new.api_token.name,
                secret: new.token,
            };
            created_page(&state, &actor, created).await
        }
        Err(e) => refused(&state, &actor, kept, "api", e).await,
    }
}

/// The tokens page answering a creation: 201 with the new secret shown once, never stored by a cache
/// or the browser's history.
async fn created_page(state: &AppState, actor: &Actor, created: NewSecret) -> PageResult<Response> {
    let p = page(
        state,
        actor,
        Kept {
            created: Some(created),
            ..Kept::default()
        },
    )
    .await?;
    Ok(crate::hygiene::no_store(
        (StatusCode::CREATED, p).into_response(),
    ))
}

/// `POST /tokens/{id}/revoke`: the user's own token (admins: anyone's in the organisation).
pub async fn revoke(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> PageResult<Redirect> {
    service::revoke_token(&state, &actor, id).await?;
    Ok(Redirect::to(&format!("/tokens#token-{id}")))
}

/// `POST /tokens/workers` (admins): a worker token, shown in this answer only.
pub async fn create_worker_token(
    State(state): State<AppState>,
    actor: Actor,
    body: Bytes,
) -> PageResult<Response> {
    let name = form_value(&form_pairs(&body), "name");
    let result = service::create_worker_token(
        &state,
        &actor,
        CreateWorkerToken {
            name: Some(name.clone()),
        },
    )
    .await;
    match result {
        Ok(new) => {
            let created = NewSecret {
                kind: "worker",
                name: new.worker_token.name,
                secret: new.token,
            };
            created_page(&state, &actor, created).await
        }
        Err(e) => {
            let kept = Kept {
                worker_name: name,
                ..Kept::default()
            };
            refused(&state, &actor, kept, "worker", e).await
        }
    }
}

/// `POST /tokens/workers/{id}/revoke` (admins): its workers drain.
pub async fn revoke_worker_token(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> PageResult<Redirect> {
    service::revoke_worker_token(&state, &actor, id).await?;
    Ok(Redirect::to(&format!("/tokens#worker-token-{id}")))
}
