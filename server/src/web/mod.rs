//! The web UI: server-rendered pages (askama templates in `web/templates/`) and the static files of the
//! map module (`web/dist/`, built by Vite and embedded into the binary), served under `/static/`.
//!
//! Pages read through the same store functions as the REST API and change state through the same
//! service functions ([`crate::service`]), so validation lives in one place. Forms post to page handlers and redirect (POST-redirect-GET);
//! live progress is polled from the JSON API by the page script.

mod account;
mod assessments;
mod assets;
mod changes;
mod error;
mod invite;
mod members;
mod projects;
mod results;
mod shared;
mod tokens;
mod workers;

#[cfg(test)]
mod tests;

use crate::api::AppState;
use crate::api::auth::{Actor, Credential, Principal};
use axum::Router;
use axum::response::Redirect;
use axum::routing::{get, post};
pub use error::PageError;
use groundwork_store::accounts::{self, OrgRole};
use uuid::Uuid;

/// The token every form carries in its hidden `csrf` input: the session's CSRF token (checked on every
/// state-changing request a session makes); empty for bearer-token requests, which need none.
#[must_use]
pub fn csrf_token(actor: &Actor) -> String {
    crate::api::auth::csrf_token(&actor.credential)
        .unwrap_or_default()
        .to_owned()
}

/// Which navigation entry is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// Projects and their pages.
    Projects,
    /// Worker administration.
    Workers,
    /// Members and invitations.
    Members,
    /// API and worker tokens.
    Tokens,
    /// The user's account.
    Account,
    /// None of them.
    None,
}

/// What the layout of every page shows.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Page title.
    pub title: String,
    /// Current navigation entry.
    pub nav: Nav,
    /// The organisation the actor works in.
    pub org_name: String,
    /// Its id (empty when there is none).
    pub org_id: String,
    /// The organisations a signed-in session can switch between (empty for API tokens).
    pub orgs: Vec<OrgRole>,
    /// The signed-in user's email (empty when nobody is signed in).
    pub user_email: String,
    /// Value of every form's hidden `csrf` input.
    pub csrf: String,
    /// Whether a user is signed in (the header offers sign-out).
    pub signed_in: bool,
    /// URL of the stylesheet (versioned).
    pub css: String,
    /// URL of the page script (versioned).
    pub js: String,
    /// Basemap tile template, empty for none.
    pub basemap_url: String,
    /// Attribution of the basemap's tiles, shown on the map (empty for none).
    pub basemap_attribution: String,
}

impl Layout {
    /// The layout for `actor`, reading the organisation's name and, for a session, the user's
    /// organisations.
    pub async fn new(state: &AppState, actor: &Actor, title: impl Into<String>, nav: Nav) -> Self {
        Self::build(
            state,
            actor.user_id,
            Some(actor.org_id),
            &actor.credential,
            title.into(),
            nav,
        )
        .await
    }

    /// The layout for a signed-in user who may act in no organisation (the account page).
    pub async fn for_principal(
        state: &AppState,
        p: &Principal,
        title: impl Into<String>,
        nav: Nav,
    ) -> Self {
        Self::build(
            state,
            Some(p.user_id),
            p.org_id,
            &p.credential,
            title.into(),
            nav,
        )
        .await
    }

    async fn build(
        state: &AppState,
        user_id: Option<Uuid>,
        org_id: Option<Uuid>,
        credential: &Credential,
        title: String,
        nav: Nav,
    ) -> Self {
        let org_name = match org_id {
            Some(id) => org_name(state, id).await,
            None => String::new(),
        };
        let (user_email, orgs) = match user_id {
            Some(id) => user_and_orgs(state, id, credential).await,
            None => (String::new(), Vec::new()),
        };
        Self {
            title,
            nav,
            org_name,
            org_id: org_id.map(|id| id.to_string()).unwrap_or_default(),
            orgs,
            user_email,
            csrf: crate::api::auth::csrf_token(credential)
                .unwrap_or_default()
                .to_owned(),
            signed_in: user_id.is_some(),
            css: assets::url("groundwork.css"),
            js: assets::url("groundwork.js"),
            basemap_url: state.basemap_url.clone().unwrap_or_default(),
            basemap_attribution: state.basemap_attribution.clone().unwrap_or_default(),
        }
    }

    /// A layout that needs no database (error pages).
    #[must_use]
    pub fn bare(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            nav: Nav::None,
            org_name: String::new(),
            org_id: String::new(),
            orgs: Vec::new(),
            user_email: String::new(),
            csrf: String::new(),
            signed_in: false,
            css: assets::url("groundwork.css"),
            js: assets::url("groundwork.js"),
            basemap_url: String::new(),
            basemap_attribution: String::new(),
        }
    }

    /// `aria-current` for a navigation entry.
    #[must_use]
    pub fn current(&self, nav: &str) -> &'static str {
        let here = match self.nav {
            Nav::Projects => "projects",
            Nav::Workers => "workers",
            Nav::Members => "members",
            Nav::Tokens => "tokens",
            Nav::Account => "account",
            Nav::None => "",
        };
        if here == nav { "page" } else { "false" }
    }

    /// Whether `org` is the organisation the page acts in (the switcher's selected option).
    #[must_use]
    pub fn is_current_org(&self, org: &OrgRole) -> bool {
        org.id.to_string() == self.org_id
    }
}

async fn org_name(state: &AppState, org_id: Uuid) -> String {
    let name: Result<Option<String>, _> = sqlx::query_scalar("select name from org where id = $1")
        .bind(org_id)
        .fetch_optional(&state.pool)
        .await;
    match name {
        Ok(Some(n)) => n,
        Ok(None) => String::new(),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the organisation name");
            String::new()
        }
    }
}

/// The user's email and, for a session, the organisations it can switch to (an API token acts in its
/// own organisation only). A failure to read them leaves the header without them.
async fn user_and_orgs(
    state: &AppState,
    user_id: Uuid,
    credential: &Credential,
) -> (String, Vec<OrgRole>) {
    let email = match accounts::user(&state.pool, user_id).await {
        Ok(u) => u.email,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the user");
            String::new()
        }
    };
    if !matches!(credential, Credential::Session { .. }) {
        return (email, Vec::new());
    }
    match accounts::orgs_of(&state.pool, user_id).await {
        Ok(orgs) => (email, orgs),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the user's organisations");
            (email, Vec::new())
        }
    }
}

/// The pages and static files; merged into the application by [`crate::api::router`].
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/projects") }))
        .route("/login", get(account::login_form).post(account::login))
        .route("/setup", get(account::setup_form).post(account::setup))
        .route("/logout", post(account::logout))
        .route("/projects", get(projects::list))
        .route(
            "/projects/new",
            get(projects::new_form).post(projects::create),
        )
        .route("/projects/{id}", get(projects::show))
        .route("/projects/{id}/runs", post(projects::start_run))
        .route("/projects/{id}/label", get(projects::label))
        .route("/projects/{id}/settings", post(projects::settings))
        .route("/projects/{id}/delete", post(projects::delete))
        .route("/projects/{id}/train", post(results::train))
        .route("/projects/{id}/predict", post(results::predict))
        .route("/projects/{id}/schedule", post(results::schedule))
        .route("/outputs/{id}", get(results::output_map))
        .route("/outputs/{id}/shares", post(results::create_share))
        .route(
            "/outputs/{id}/shares/{share_id}/revoke",
            post(results::revoke_share),
        )
        .route("/runs/{id}/evaluation", get(results::evaluation))
        .route("/outputs/{id}/assessments", post(assessments::draw))
        .route("/assessments/{id}", get(assessments::show))
        .route("/assessments/{id}/label", get(assessments::label))
        .route("/outputs/{id}/changes", post(changes::create))
        .route("/changes/{id}", get(changes::show))
        .route(
            "/projects/{id}/steps/{step}/cancel",
            post(projects::cancel_step),
        )
        .route(
            "/projects/{id}/steps/{step}/retry",
            post(projects::retry_step),
        )
        .route("/workers", get(workers::list))
        .route("/workers/{id}/{action}", post(workers::act))
        .route("/members", get(members::list))
        .route("/members/invitations", post(members::invite))
        .route(
            "/members/invitations/{id}/revoke",
            post(members::revoke_invitation),
        )
        .route("/members/{user_id}/role", post(members::set_role))
        .route("/members/{user_id}/remove", post(members::remove))
        .route(
            "/invite/{token}",
            get(invite::show)
                .post(invite::accept)
                .layer(axum::middleware::from_fn(crate::hygiene::never_store)),
        )
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{id}/revoke", post(tokens::revoke))
        .route("/tokens/workers", post(tokens::create_worker_token))
        .route(
            "/tokens/workers/{id}/revoke",
            post(tokens::revoke_worker_token),
        )
        .route("/account", get(account::show))
        .route("/account/password", post(account::change_password))
        .route("/org", post(account::switch_org))
        .layer(axum::middleware::from_fn_with_state(
            state,
            account::redirect_unauthenticated,
        ))
        .route("/static/{*path}", get(assets::serve))
        // Open to anyone with the link; its address holds a secret, so no answer is stored.
        .route(
            "/shared/{secret}",
            get(shared::show).layer(axum::middleware::from_fn(crate::hygiene::never_store)),
        )
}

/// Reads an `application/x-www-form-urlencoded` body into ordered pairs (repeated keys kept).
fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// The first value of `key` (empty when absent).
fn form_value(pairs: &[(String, String)], key: &str) -> String {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// Every value of `key`, in order.
fn form_values(pairs: &[(String, String)], key: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

/// What a page says about a refused form: the field messages of a validation error, else the message.
fn error_text(e: &crate::api::error::ApiError) -> String {
    let fields: Vec<&str> = e
        .details
        .as_array()
        .map(|list| list.iter().filter_map(|d| d["message"].as_str()).collect())
        .unwrap_or_default();
    if fields.is_empty() {
        e.message.clone()
    } else {
        fields.join("; ")
    }
}

/// A form's id field as a UUID; anything else names nothing, so it is not found.
fn form_uuid(pairs: &[(String, String)], key: &str, what: &str) -> Result<Uuid, PageError> {
    form_value(pairs, key)
        .trim()
        .parse()
        .map_err(|_| crate::api::error::ApiError::not_found(what).into())
}

/// `2026-11-27 10:00 UTC`.
fn when(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}
