//! The web UI: server-rendered pages (askama templates in `web/templates/`) and the static files of the
//! map module (`web/dist/`, built by Vite and embedded into the binary), served under `/static/`.
//!
//! Pages read through the same store functions as the REST API and change state through the API's own
//! handlers, so validation lives in one place. Forms post to page handlers and redirect (POST-redirect-GET);
//! live progress is polled from the JSON API by the page script.

mod account;
mod assets;
mod error;
mod projects;
mod workers;

#[cfg(test)]
mod tests;

use crate::api::AppState;
use crate::api::auth::Actor;
use axum::Router;
use axum::response::Redirect;
use axum::routing::{get, post};
pub use error::PageError;
use std::sync::Arc;

/// The token every form carries in its hidden `csrf` input: the session's CSRF token (checked on every
/// state-changing request a session makes); empty for bearer-token requests, which need none.
#[must_use]
pub fn csrf_token(actor: &Actor) -> String {
    crate::api::auth::csrf_token(&actor.credential)
        .unwrap_or_default()
        .to_owned()
}

/// Settings of the pages.
#[derive(Debug, Clone, Default)]
pub struct WebConfig {
    /// XYZ raster tile template (`https://…/{z}/{x}/{y}.png`) drawn under the maps; none draws a plain
    /// background, which needs no network.
    pub basemap_url: Option<String>,
}

impl WebConfig {
    /// From `GROUNDWORK_BASEMAP_URL`.
    #[must_use]
    pub fn from_env() -> Self {
        Self {
            basemap_url: std::env::var("GROUNDWORK_BASEMAP_URL")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
        }
    }
}

/// Which navigation entry is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// Projects and their pages.
    Projects,
    /// Worker administration.
    Workers,
    /// Neither.
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
}

impl Layout {
    /// The layout for `actor`, reading the organisation's name.
    pub async fn new(state: &AppState, actor: &Actor, title: impl Into<String>, nav: Nav) -> Self {
        let org_name = org_name(state, actor).await;
        let config = state_config();
        Self {
            title: title.into(),
            nav,
            org_name,
            csrf: csrf_token(actor),
            signed_in: actor.user_id.is_some(),
            css: assets::url("groundwork.css"),
            js: assets::url("groundwork.js"),
            basemap_url: config.basemap_url.clone().unwrap_or_default(),
        }
    }

    /// A layout that needs no database (error pages).
    #[must_use]
    pub fn bare(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            nav: Nav::None,
            org_name: String::new(),
            csrf: String::new(),
            signed_in: false,
            css: assets::url("groundwork.css"),
            js: assets::url("groundwork.js"),
            basemap_url: String::new(),
        }
    }

    /// `aria-current` for a navigation entry.
    #[must_use]
    pub fn current(&self, nav: &str) -> &'static str {
        let here = match self.nav {
            Nav::Projects => "projects",
            Nav::Workers => "workers",
            Nav::None => "",
        };
        if here == nav { "page" } else { "false" }
    }
}

static CONFIG: std::sync::OnceLock<Arc<WebConfig>> = std::sync::OnceLock::new();

fn state_config() -> Arc<WebConfig> {
    CONFIG
        .get_or_init(|| Arc::new(WebConfig::from_env()))
        .clone()
}

async fn org_name(state: &AppState, actor: &Actor) -> String {
    let name: Result<Option<String>, _> = sqlx::query_scalar("select name from org where id = $1")
        .bind(actor.org_id)
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
        .layer(axum::middleware::from_fn_with_state(
            state,
            account::redirect_unauthenticated,
        ))
        .route("/static/{*path}", get(assets::serve))
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
