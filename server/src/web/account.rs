//! First-run setup, sign-in and sign-out pages, the account page (password change), the organisation
//! switcher's form, and the redirect that sends a visitor without a session to sign-in.

use super::error::PageResult;
use super::{Layout, Nav, error_text, form_pairs, form_uuid, form_value};
use crate::api::AppState;
use crate::api::accounts::ClientIp;
use crate::api::auth::{self, Principal, SignIn};
use crate::service::accounts::{self as service, PasswordBody, SetupBody, SwitchOrg};
use askama::Template;
use askama_web::WebTemplate;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use groundwork_store::accounts::{self, OrgRole};

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    email: String,
    next: String,
    error: String,
    form_token: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "setup.html")]
struct SetupPage {
    layout: Layout,
    email: String,
    org_name: String,
    error: String,
    form_token: String,
    /// Whether the server asks for the one-time setup code it printed.
    needs_code: bool,
}

/// Only a path on this site is followed after sign-in ([`crate::hygiene::same_site_path`]).
fn safe_next(next: &str) -> String {
    crate::hygiene::same_site_path(next).to_owned()
}

impl LoginPage {
    fn new(email: String, next: String, error: String, form_token: String) -> Self {
        LoginPage {
            layout: Layout::bare("Sign in"),
            email,
            next,
            error,
            form_token,
        }
    }
}

impl SetupPage {
    fn new(
        state: &AppState,
        email: String,
        org_name: String,
        error: String,
        form_token: String,
    ) -> Self {
        SetupPage {
            layout: Layout::bare("Set up Groundwork"),
            email,
            org_name,
            error,
            form_token,
            needs_code: state.setup_code.is_some(),
        }
    }
}

/// A sign-in or setup page made with a fresh form token, and the cookie that holds the token.
fn with_new_form_token<P: IntoResponse>(
    state: &AppState,
    status: StatusCode,
    page: impl FnOnce(String) -> P,
) -> Response {
    let (form_token, cookie) = auth::new_form_token(state.secure_cookies);
    let mut resp = (status, page(form_token)).into_response();
    resp.headers_mut().append(header::SET_COOKIE, cookie);
    resp
}

/// What a sign-in or setup post without its form token gets.
const FORM_EXPIRED: &str =
    "This form has expired or was not sent from this site. Please fill it in again.";

fn redirect_with_cookie(to: &str, cookie: HeaderValue) -> Response {
    let mut resp = Redirect::to(to).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, cookie);
    resp
}

#[derive(serde::Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    next: String,
}

/// `GET /login`: the sign-in form (the setup page while nobody has an account).
pub async fn login_form(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<NextQuery>,
) -> PageResult<Response> {
    if !accounts::any_user(&state.pool).await? {
        return Ok(Redirect::to("/setup").into_response());
    }
    let next = safe_next(&q.next);
    Ok(with_new_form_token(&state, StatusCode::OK, |token| {
        LoginPage::new(String::new(), next, String::new(), token)
    }))
}

/// `POST /login`.
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> PageResult<Response> {
    let pairs = form_pairs(&body);
    let email = form_value(&pairs, "email");
    let next = safe_next(&form_value(&pairs, "next"));
    let form_token = form_value(&pairs, "form_token");
    if !auth::form_token_matches(&headers, &form_token) {
        return Ok(with_new_form_token(
            &state,
            StatusCode::FORBIDDEN,
            |token| LoginPage::new(email, next, FORM_EXPIRED.into(), token),
        ));
    }
    let page = |error: &str| {
        LoginPage::new(
            email.clone(),
            next.clone(),
            error.to_owned(),
            form_token.clone(),
        )
    };
    match auth::sign_in(&state, email.trim(), &form_value(&pairs, "password"), &ip).await? {
        SignIn::Ok(s) => Ok(redirect_with_cookie(&next, s.cookie)),
        SignIn::BadCredentials => Ok((
            StatusCode::UNAUTHORIZED,
            page("That email and password do not match an account."),
        )
            .into_response()),
        SignIn::Limited(wait) => {
            let mut resp = (
                StatusCode::TOO_MANY_REQUESTS,
                page(&format!(
                    "Too many failed attempts. Try again in {} minutes.",
                    wait.as_secs().div_ceil(60).max(1)
                )),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Ok(resp)
        }
    }
}

/// `GET /setup`: creates the first owner; once anyone has an account it sends to sign-in.
pub async fn setup_form(State(state): State<AppState>) -> PageResult<Response> {
    if accounts::any_user(&state.pool).await? {
        return Ok(Redirect::to("/login").into_response());
    }
    Ok(with_new_form_token(&state, StatusCode::OK, |token| {
        SetupPage::new(&state, String::new(), String::new(), String::new(), token)
    }))
}

/// `POST /setup`, through the same service function as `POST /api/v1/setup`.
pub async fn setup(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> PageResult<Response> {
    let pairs = form_pairs(&body);
    let email = form_value(&pairs, "email").trim().to_owned();
    let org_name = form_value(&pairs, "org_name").trim().to_owned();
    let form_token = form_value(&pairs, "form_token");
    if !auth::form_token_matches(&headers, &form_token) {
        return Ok(with_new_form_token(
            &state,
            StatusCode::FORBIDDEN,
            |token| SetupPage::new(&state, email, org_name, FORM_EXPIRED.into(), token),
        ));
    }
    let setup_code = form_value(&pairs, "setup_code");
    let request = SetupBody {
        email: email.clone(),
        password: form_value(&pairs, "password"),
        org_name: (!org_name.is_empty()).then(|| org_name.clone()),
        setup_code: (!setup_code.trim().is_empty()).then(|| setup_code.trim().to_owned()),
    };
    match service::setup(&state, &ip.0, request).await {
        Ok(session) => Ok(redirect_with_cookie("/projects", session.cookie)),
        Err(e) if e.status == StatusCode::CONFLICT => Ok(Redirect::to("/login").into_response()),
        Err(e) if e.status.is_client_error() => {
            let mut error = e.message.clone();
            if let Some(list) = e.details.as_array() {
                let fields: Vec<String> = list
                    .iter()
                    .filter_map(|d| d["message"].as_str().map(str::to_owned))
                    .collect();
                if !fields.is_empty() {
                    error = fields.join("; ");
                }
            }
            Ok((
                e.status,
                SetupPage::new(&state, email, org_name, error, form_token),
            )
                .into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /logout`: ends the session and returns to sign-in.
pub async fn logout(State(state): State<AppState>, p: Principal) -> PageResult<Response> {
    if let Some(id) = p.session_id() {
        accounts::delete_session(&state.pool, &p.who(), id).await?;
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        auth::clear_session_cookie(state.secure_cookies),
    );
    Ok(resp)
}

/// Sends a page request that failed for want of a signed-in user to the sign-in page (or to setup on
/// a fresh installation), coming back to the page afterwards.
pub async fn redirect_unauthenticated(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let is_get = req.method() == axum::http::Method::GET;
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/projects".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    // Only the API-style refusal of the actor extractor; a page's own 401 (a wrong password) stays.
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if resp.status() != StatusCode::UNAUTHORIZED || !json {
        return resp;
    }
    match accounts::any_user(&state.pool).await {
        Ok(false) => Redirect::to("/setup").into_response(),
        _ => {
            let back = if is_get { path } else { "/projects".into() };
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("next", &back)
                .finish();
            Redirect::to(&format!("/login?{query}")).into_response()
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "account.html")]
struct AccountPage {
    layout: Layout,
    email: String,
    orgs: Vec<OrgRole>,
    /// `current_password` or `new_password` with what is wrong, or none.
    error: Option<(&'static str, String)>,
    changed: bool,
}

impl AccountPage {
    fn error_of(&self, field: &str) -> Option<&str> {
        self.error
            .as_ref()
            .filter(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
    }
}

async fn account_page(
    state: &AppState,
    p: &Principal,
    error: Option<(&'static str, String)>,
    changed: bool,
) -> PageResult<AccountPage> {
    let user = accounts::user(&state.pool, p.user_id).await?;
    let mut orgs = accounts::orgs_of(&state.pool, p.user_id).await?;
    if !matches!(p.credential, auth::Credential::Session { .. }) {
        orgs.retain(|o| Some(o.id) == p.org_id);
    }
    Ok(AccountPage {
        layout: Layout::for_principal(state, p, "Your account", Nav::Account).await,
        email: user.email,
        orgs,
        error,
        changed,
    })
}

/// `GET /account`: the user's email, organisations and the password form.
pub async fn show(State(state): State<AppState>, p: Principal) -> PageResult<Response> {
    Ok(account_page(&state, &p, None, false).await?.into_response())
}

/// `POST /account/password`, through the same service function as the API: every other session of the user ends.
pub async fn change_password(
    State(state): State<AppState>,
    p: Principal,
    body: Bytes,
) -> PageResult<Response> {
    let pairs = form_pairs(&body);
    let request = PasswordBody {
        current_password: form_value(&pairs, "current_password"),
        new_password: form_value(&pairs, "new_password"),
        revoke_tokens: !form_value(&pairs, "revoke_tokens").is_empty(),
    };
    match service::change_password(&state, &p, &request).await {
        Ok(_) => Ok(account_page(&state, &p, None, true).await?.into_response()),
        Err(e) if e.code == crate::api::error::ErrorCode::WrongPassword => {
            let page = account_page(
                &state,
                &p,
                Some((
                    "current_password",
                    "That is not your current password.".into(),
                )),
                false,
            )
            .await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) if e.code == crate::api::error::ErrorCode::TooManyAttempts => {
            let page = account_page(
                &state,
                &p,
                Some(("current_password", error_text(&e))),
                false,
            )
            .await?;
            Ok((StatusCode::TOO_MANY_REQUESTS, page).into_response())
        }
        Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => {
            let page =
                account_page(&state, &p, Some(("new_password", error_text(&e))), false).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /org`: the organisation switcher. The session acts in the chosen organisation (one the user
/// belongs to; any other is not found) and goes to its projects.
pub async fn switch_org(
    State(state): State<AppState>,
    p: Principal,
    body: Bytes,
) -> PageResult<Redirect> {
    let org_id = form_uuid(&form_pairs(&body), "org_id", "org")?;
    let _me = service::switch_org(&state, &p, &SwitchOrg { org_id }).await?;
    Ok(Redirect::to("/projects"))
}
