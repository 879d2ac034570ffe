//! Who a request acts for. Every handler that touches an organisation's data takes an [`Actor`] and
//! scopes its queries to `actor.org_id`; handlers that change state call [`Actor::require`] first.
//!
//! A request authenticates with either
//! - the `gw_session` cookie (HTTP-only, `SameSite=Lax`, and `Secure` when the server is configured
//!   so) of a signed-in session, which acts in the
//!   session's current organisation. State-changing requests must then echo the session's CSRF token
//!   in an `X-CSRF-Token` header or, for HTML form posts, a `csrf` form field ([`csrf_form_field`]
//!   copies it into the header); or
//! - `Authorization: Bearer gw_…`, an API token scoped to one organisation and to `read` (safe
//!   methods only) or `write`. Bearer requests need no CSRF token: browsers never send them on their
//!   own.
//!
//! Server-rendered pages use the same pieces: [`Principal`] / [`MaybePrincipal`] to find the user,
//! [`csrf_token`] to put the token in a form, [`sign_in`] and [`start_session`] to sign in, and
//! [`session_cookie`] / [`clear_session_cookie`] for the cookie.

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorCode};
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use groundwork_store::accounts::{self, LoginOutcome, Session, User};
use groundwork_store::audit::{self, Who};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use uuid::Uuid;

pub use groundwork_store::accounts::{Role, Scope};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "gw_session";
/// Header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Form field carrying the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// Largest form body [`csrf_form_field`] reads to find the token.
const FORM_LIMIT: usize = 4 * 1024 * 1024;

/// How a request proved who it is.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A signed-in session (cookie).
    Session {
        /// Session id (not the cookie secret).
        session_id: Uuid,
        /// The session's CSRF token.
        csrf_token: String,
    },
    /// An API token (bearer).
    Token {
        /// Token id.
        token_id: Uuid,
        /// Its scope.
        scope: Scope,
    },
    /// A project's schedule, acting for the member who set it (the server's own requests).
    Schedule {
        /// The project.
        project_id: Uuid,
    },
}

/// An authenticated user, whether or not they act in an organisation (account-level endpoints such as
/// `/me` take this; organisation data takes [`Actor`]).
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user.
    pub user_id: Uuid,
    /// The organisation the request acts in, if any.
    pub org_id: Option<Uuid>,
    /// The user's role there.
    pub role: Option<Role>,
    /// Session or token.
    pub credential: Credential,
    /// Client address.
    pub ip: Option<String>,
}

impl Principal {
    /// The audit actor.
    #[must_use]
    pub fn who(&self) -> Who {
        Who {
            user_id: Some(self.user_id),
            token_id: match &self.credential {
                Credential::Token { token_id, .. } => Some(*token_id),
                Credential::Session { .. } | Credential::Schedule { .. } => None,
            },
            ip: self.ip.clone(),
        }
    }

    /// The session id, when signed in through a session.
    #[must_use]
    pub fn session_id(&self) -> Option<Uuid> {
        match &self.credential {
            Credential::Session { session_id, .. } => Some(*session_id),
            Credential::Token { .. } | Credential::Schedule { .. } => None,
        }
    }
}

/// The principal of a request that acts in an organisation.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The acting user (always set for authenticated requests).
    pub user_id: Option<Uuid>,
    /// The organisation the request acts in.
    pub org_id: Uuid,
    /// The user's role there.
    pub role: Role,
    /// Session or token.
    pub credential: Credential,
    /// Client address.
    pub ip: Option<String>,
}

impl Actor {
    /// Refuses (403) unless the actor holds at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "this needs the {role} role or higher; you are {}",
                    self.role
                ),
            ))
        }
    }

    /// The audit actor.
    #[must_use]
    pub fn who(&self) -> Who {
        Who {
            user_id: self.user_id,
            token_id: match &self.credential {
                Credential::Token { token_id, .. } => Some(*token_id),
                Credential::Session { .. } | Credential::Schedule { .. } => None,
            },
            ip: self.ip.clone(),
        }
    }

    /// Writes an audit entry in the actor's organisation. The action has already happened, so a
    /// failure to record it is logged rather than returned.
    pub async fn audit(
        &self,
        state: &AppState,
        action: &str,
        target_type: &str,
        target_id: impl ToString,
        details: Value,
    ) {
        let who = self.who();
        let entry = audit::Entry {
            org_id: Some(self.org_id),
            who: &who,
            action,
            target_type,
            target_id: Some(target_id.to_string()),
            details,
        };
        if let Err(e) = audit::record(&state.pool, &entry).await {
            tracing::error!(error = %e, action, "could not write the audit log");
        }
    }
}

/// The CSRF token page handlers put in their forms (`<input type=hidden name=csrf>`); `None` for
/// bearer-token requests, which need none.
#[must_use]
pub fn csrf_token(credential: &Credential) -> Option<&str> {
    match credential {
        Credential::Session { csrf_token, .. } => Some(csrf_token),
        Credential::Token { .. } | Credential::Schedule { .. } => None,
    }
}

/// Whether `supplied` is the session's CSRF token (always true for bearer-token requests).
#[must_use]
pub fn verify_csrf(credential: &Credential, supplied: Option<&str>) -> bool {
    match credential {
        Credential::Session { csrf_token, .. } => {
            supplied.is_some_and(|s| accounts::same_secret(s, csrf_token))
        }
        Credential::Token { .. } | Credential::Schedule { .. } => true,
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

/// The client address (the TCP peer; the server does not trust forwarding headers).
#[must_use]
pub fn client_ip(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

/// The `gw_session` cookie's value.
#[must_use]
pub fn session_secret(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE)
}

/// A cookie's value from the request's `Cookie` headers (none when empty).
#[must_use]
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The cookie that protects the sign-in and setup forms, which are posted before any session
/// exists: the page sets it to a random value that its form also carries (`form_token`), and the
/// post must bring both, equal. Another site can make a browser post the form, but cannot read or
/// set the cookie, so it cannot sign a visitor into an account of its choosing.
pub const FORM_COOKIE: &str = "gw_form";

/// A new form token and its `Set-Cookie` value (`SameSite=Strict`, `HttpOnly`, one hour).
#[must_use]
pub fn new_form_token(secure: bool) -> (String, HeaderValue) {
    let token = accounts::new_secret("");
    let value = format!(
        "{FORM_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{}; Max-Age=3600",
        if secure { "; Secure" } else { "" }
    );
    let header = HeaderValue::from_str(&value)
        .unwrap_or_else(|_| HeaderValue::from_static("gw_form=; Path=/; Max-Age=0"));
    (token, header)
}

/// Whether a posted form carries the token its cookie holds.
#[must_use]
pub fn form_token_matches(headers: &HeaderMap, posted: &str) -> bool {
    cookie(headers, FORM_COOKIE)
        .is_some_and(|c| !posted.is_empty() && accounts::same_secret(&c, posted))
}

/// `Set-Cookie` value for a new session; `secure` adds `Secure` ([`AppState::secure_cookies`]).
#[must_use]
pub fn session_cookie(secret: &str, secure: bool) -> HeaderValue {
    let value = format!(
        "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Lax{}; Max-Age={}",
        if secure { "; Secure" } else { "" },
        accounts::SESSION_TTL.as_secs()
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| clear_session_cookie(secure))
}

/// `Set-Cookie` value that removes the session cookie (with the same attributes as it was set).
#[must_use]
pub fn clear_session_cookie(secure: bool) -> HeaderValue {
    if secure {
        HeaderValue::from_static("gw_session=; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=0")
    } else {
        HeaderValue::from_static("gw_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
    }
}

/// The token of an `Authorization: Bearer …` header value, trimmed; `None` for another scheme.
pub(crate) fn bearer_token(value: &HeaderValue) -> Option<&str> {
    value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// Finds who sent the request, without refusing anyone: `Ok(None)` when there are no credentials or
/// the session cookie is stale. A bearer token that is not valid is refused (401).
pub async fn authenticate(state: &AppState, parts: &Parts) -> ApiResult<Option<Principal>> {
    let ip = client_ip(parts);
    if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
        let token = bearer_token(auth)
            .ok_or_else(|| unauthorized("use `Authorization: Bearer gw_…` with an API token"))?;
        let p = accounts::authenticate_api_token(&state.pool, token)
            .await?
            .ok_or_else(|| {
                unauthorized("the API token is not valid (unknown, expired or revoked)")
            })?;
        return Ok(Some(Principal {
            user_id: p.user_id,
            org_id: Some(p.org_id),
            role: Some(p.role),
            credential: Credential::Token {
                token_id: p.token_id,
                scope: p.scope,
            },
            ip,
        }));
    }
    let Some(secret) = session_secret(&parts.headers) else {
        return Ok(None);
    };
    Ok(accounts::session_by_secret(&state.pool, &secret)
        .await?
        .map(|s| principal_of(&s, ip)))
}

fn principal_of(s: &Session, ip: Option<String>) -> Principal {
    Principal {
        user_id: s.user_id,
        org_id: s.role.and(s.org_id),
        role: s.role,
        credential: Credential::Session {
            session_id: s.id,
            csrf_token: s.csrf_token.clone(),
        },
        ip,
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// What a credential may do with this method: read-only tokens only read; cookie-authenticated
/// state changes must carry the CSRF token.
fn check_method(p: &Principal, parts: &Parts) -> ApiResult<()> {
    if is_safe(&parts.method) {
        return Ok(());
    }
    match &p.credential {
        Credential::Token {
            scope: Scope::Read, ..
        } => Err(ApiError::new(
            ErrorCode::ReadOnlyToken,
            "this API token is scoped to `read`; it cannot change anything",
        )),
        Credential::Token { .. } | Credential::Schedule { .. } => Ok(()),
        Credential::Session { .. } => {
            let supplied = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            if verify_csrf(&p.credential, supplied) {
                Ok(())
            } else {
                Err(ApiError::new(
                    ErrorCode::CsrfFailed,
                    "send the session's CSRF token in the X-CSRF-Token header (or the `csrf` form field)",
                ))
            }
        }
    }
}

#[derive(Clone)]
struct Resolved(Option<Principal>);

async fn resolve(parts: &mut Parts, state: &AppState) -> ApiResult<Option<Principal>> {
    if let Some(Resolved(p)) = parts.extensions.get::<Resolved>() {
        return Ok(p.clone());
    }
    let p = authenticate(state, parts).await?;
    parts.extensions.insert(Resolved(p.clone()));
    Ok(p)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let p = resolve(parts, state)
            .await?
            .ok_or_else(|| unauthorized("sign in, or send `Authorization: Bearer gw_…`"))?;
        check_method(&p, parts)?;
        Ok(p)
    }
}

/// The principal when the request has one; for pages that show something to everyone. State-changing
/// requests still get the read-scope and CSRF checks.
#[derive(Debug, Clone)]
pub struct MaybePrincipal(pub Option<Principal>);

impl FromRequestParts<AppState> for MaybePrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let p = resolve(parts, state).await?;
        if let Some(p) = &p {
            check_method(p, parts)?;
        }
        Ok(Self(p))
    }
}

impl FromRequestParts<AppState> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let p = Principal::from_request_parts(parts, state).await?;
        match (p.org_id, p.role) {
            (Some(org_id), Some(role)) => Ok(Actor {
                user_id: Some(p.user_id),
                org_id,
                role,
                credential: p.credential,
                ip: p.ip,
            }),
            _ => Err(ApiError::new(
                ErrorCode::NoOrganisation,
                "you act in no organisation: choose one with POST /api/v1/me/org, or ask for an invitation",
            )),
        }
    }
}

/// Middleware: for HTML form posts (`application/x-www-form-urlencoded`) without an `X-CSRF-Token`
/// header, copies the `csrf` form field into that header so the extractors check forms and API calls
/// alike. The body is passed on unchanged.
pub async fn csrf_form_field(req: Request, next: Next) -> Response {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_safe(req.method()) || !is_form || req.headers().contains_key(CSRF_HEADER) {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, FORM_LIMIT).await else {
        return ApiError::new(ErrorCode::PayloadTooLarge, "the form is too large").into_response();
    };
    let token = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == CSRF_FIELD)
        .map(|(_, v)| v.into_owned());
    if let Some(value) = token.and_then(|t| HeaderValue::from_str(&t).ok()) {
        parts.headers.insert(CSRF_HEADER, value);
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// A successful sign-in.
#[derive(Debug)]
pub struct SignedIn {
    /// The user.
    pub user: User,
    /// The new session.
    pub session: Session,
    /// `Set-Cookie` value to send.
    pub cookie: HeaderValue,
}

/// The outcome of [`sign_in`].
#[derive(Debug)]
pub enum SignIn {
    /// Signed in.
    Ok(Box<SignedIn>),
    /// Wrong email or password.
    BadCredentials,
    /// Rate-limited: retry after this long.
    Limited(Duration),
}

/// Checks an email and password under the rate limit and, when they match, starts a session.
/// `ip` is [`client_ip`] (use `"unknown"` when there is none).
pub async fn sign_in(state: &AppState, email: &str, password: &str, ip: &str) -> ApiResult<SignIn> {
    match accounts::login(&state.pool, email, password, ip).await? {
        LoginOutcome::Ok(user) => {
            let (cookie, session) = start_session(state, user.id, None, Some(ip)).await?;
            let who = Who {
                user_id: Some(user.id),
                token_id: None,
                ip: Some(ip.to_owned()),
            };
            let entry = audit::Entry {
                org_id: session.org_id,
                who: &who,
                action: "auth.login",
                target_type: "session",
                target_id: Some(session.id.to_string()),
                details: Value::Null,
            };
            if let Err(e) = audit::record(&state.pool, &entry).await {
                tracing::error!(error = %e, "could not write the audit log");
            }
            Ok(SignIn::Ok(Box::new(SignedIn {
                user,
                session,
                cookie,
            })))
        }
        LoginOutcome::BadCredentials => Ok(SignIn::BadCredentials),
        LoginOutcome::Limited(wait) => Ok(SignIn::Limited(wait)),
    }
}

/// Starts a session for a user (acting in `org_id`, default their first organisation) and returns
/// the `Set-Cookie` value with the session.
pub async fn start_session(
    state: &AppState,
    user_id: Uuid,
    org_id: Option<Uuid>,
    ip: Option<&str>,
) -> ApiResult<(HeaderValue, Session)> {
    let (secret, session) = accounts::create_session(&state.pool, user_id, org_id, ip).await?;
    Ok((session_cookie(&secret, state.secure_cookies), session))
}

/// 429 with `Retry-After`.
#[must_use]
pub fn too_many_attempts(wait: Duration) -> Response {
    let secs = wait.as_secs().max(1);
    (
        [(header::RETRY_AFTER, secs.to_string())],
        ApiError::new(
            ErrorCode::TooManyAttempts,
            format!("too many failed sign-ins; try again in {secs} s"),
        ),
    )
        .into_response()
}
