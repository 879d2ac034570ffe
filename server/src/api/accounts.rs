//! Accounts: first-run setup, sign-in and out, `/me` (profile, password, current organisation),
//! members of the current organisation and invitations. The work is in [`crate::service::accounts`].

use super::AppState;
use super::auth::{self, Actor, Principal};
use super::error::{ApiError, ApiResult};
use super::extract::{Json, Path};
use crate::service::accounts::{self as service, Started};
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use groundwork_store::accounts::{Invitation, Member, Org, OrgRole};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub use crate::service::accounts::{
    AcceptBody, AddMember, CreateInvitation, CreateOrg, Items, LoginBody, Me, NewInvitation,
    PasswordBody, SessionInfo, SetupBody, SetupStatus, SwitchOrg, UpdateMember,
};

/// The client address for rate limiting and the audit log (`unknown` when not served over TCP).
#[derive(Debug, Clone)]
pub struct ClientIp(pub String);

impl axum::extract::FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> ApiResult<Self> {
        Ok(Self(
            auth::client_ip(parts).unwrap_or_else(|| "unknown".into()),
        ))
    }
}

fn with_cookie(
    status: StatusCode,
    cookie: axum::http::HeaderValue,
    body: impl Serialize,
) -> Response {
    (status, [(header::SET_COOKIE, cookie)], axum::Json(body)).into_response()
}

/// A started session as a response with its cookie; a rate-limited attempt as 429.
fn started(status: StatusCode, s: Started) -> Response {
    match s {
        Started::Session(s) => with_cookie(status, s.cookie, s.info),
        Started::Limited(wait) => auth::too_many_attempts(wait),
    }
}

/// Whether the first-run setup is still open.
#[utoipa::path(get, path = "/api/v1/setup", tag = "accounts", responses((status = 200, body = SetupStatus)))]
pub async fn setup_status(State(state): State<AppState>) -> ApiResult<axum::Json<SetupStatus>> {
    Ok(axum::Json(service::setup_status(&state).await?))
}

/// First run: creates the first owner and their organisation, and signs them in. Allowed only while
/// no user exists (409 afterwards).
#[utoipa::path(post, path = "/api/v1/setup", request_body = SetupBody, tag = "accounts",
    responses((status = 201, body = SessionInfo), (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn setup(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<SetupBody>,
) -> ApiResult<Response> {
    let s = service::setup(&state, &ip, body).await?;
    Ok(with_cookie(StatusCode::CREATED, s.cookie, s.info))
}

/// Signs in and sets the `gw_session` cookie. Five failures per account or twenty per client address
/// within 15 minutes lock further tries (429 with `Retry-After`), the right password included.
#[utoipa::path(post, path = "/api/v1/auth/login", request_body = LoginBody, tag = "accounts",
    responses((status = 200, body = SessionInfo), (status = 401, body = super::error::ErrorBody), (status = 429, body = super::error::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<LoginBody>,
) -> ApiResult<Response> {
    Ok(started(
        StatusCode::OK,
        service::login(&state, &ip, &body).await?,
    ))
}

/// Ends the session and clears the cookie.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "accounts", responses((status = 204), (status = 401, body = super::error::ErrorBody)))]
pub async fn logout(State(state): State<AppState>, p: Principal) -> ApiResult<Response> {
    service::logout(&state, &p).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            auth::clear_session_cookie(state.secure_cookies),
        )],
    )
        .into_response())
}

/// The signed-in user, their organisations and the current one.
#[utoipa::path(get, path = "/api/v1/me", tag = "accounts", responses((status = 200, body = Me), (status = 401, body = super::error::ErrorBody)))]
pub async fn me(State(state): State<AppState>, p: Principal) -> ApiResult<axum::Json<Me>> {
    Ok(axum::Json(service::me(&state, &p).await?))
}

/// Changes the password; every other session of the user ends.
#[utoipa::path(post, path = "/api/v1/me/password", request_body = PasswordBody, tag = "accounts",
    responses((status = 204), (status = 403, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn change_password(
    State(state): State<AppState>,
    p: Principal,
    Json(body): Json<PasswordBody>,
) -> ApiResult<StatusCode> {
    service::change_password(&state, &p, &body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Switches the organisation the session acts in (an API token stays in its own: any other is 404).
#[utoipa::path(post, path = "/api/v1/me/org", request_body = SwitchOrg, tag = "accounts",
    responses((status = 200, body = Me), (status = 404, body = super::error::ErrorBody)))]
pub async fn switch_org(
    State(state): State<AppState>,
    p: Principal,
    Json(body): Json<SwitchOrg>,
) -> ApiResult<axum::Json<Me>> {
    Ok(axum::Json(service::switch_org(&state, &p, &body).await?))
}

/// Members of the current organisation.
#[utoipa::path(get, path = "/api/v1/members", tag = "members", responses((status = 200, body = Items<Member>)))]
pub async fn list_members(
    State(state): State<AppState>,
    actor: Actor,
) -> ApiResult<axum::Json<Items<Member>>> {
    Ok(axum::Json(service::list_members(&state, &actor).await?))
}

/// Invites someone to the current organisation (admins; owners to make owners). The same answer
/// whether or not the email has an account: an invitation with its one-time link, which the person
/// accepts to become a member.
#[utoipa::path(post, path = "/api/v1/members", request_body = AddMember, tag = "members",
    responses((status = 201, body = NewInvitation), (status = 403, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn add_member(
    State(state): State<AppState>,
    actor: Actor,
    Json(body): Json<AddMember>,
) -> ApiResult<(StatusCode, axum::Json<NewInvitation>)> {
    let m = service::add_member(&state, &actor, &body).await?;
    Ok((StatusCode::CREATED, axum::Json(m)))
}

/// Changes a member's role (admins; only owners touch the owner role; the last owner stays).
#[utoipa::path(patch, path = "/api/v1/members/{user_id}", request_body = UpdateMember, tag = "members",
    responses((status = 200, body = Member), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn update_member(
    State(state): State<AppState>,
    actor: Actor,
    Path(user_id): Path<Uuid>,
    Json(body): Json<UpdateMember>,
) -> ApiResult<axum::Json<Member>> {
    Ok(axum::Json(
        service::update_member(&state, &actor, user_id, &body).await?,
    ))
}

/// Removes a member (admins; owners to remove owners; anyone may leave). Their API tokens in the
/// organisation are revoked.
#[utoipa::path(delete, path = "/api/v1/members/{user_id}", tag = "members",
    responses((status = 204), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn remove_member(
    State(state): State<AppState>,
    actor: Actor,
    Path(user_id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    service::remove_member(&state, &actor, user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Invites someone to the current organisation by link (admins; owners to invite owners).
#[utoipa::path(post, path = "/api/v1/invitations", request_body = CreateInvitation, tag = "members",
    responses((status = 201, body = NewInvitation), (status = 403, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn create_invitation(
    State(state): State<AppState>,
    actor: Actor,
    Json(body): Json<CreateInvitation>,
) -> ApiResult<(StatusCode, axum::Json<NewInvitation>)> {
    let invitation = service::create_invitation(&state, &actor, &body).await?;
    Ok((StatusCode::CREATED, axum::Json(invitation)))
}

/// Open invitations of the current organisation (admins).
#[utoipa::path(get, path = "/api/v1/invitations", tag = "members", responses((status = 200, body = Items<Invitation>)))]
pub async fn list_invitations(
    State(state): State<AppState>,
    actor: Actor,
) -> ApiResult<axum::Json<Items<Invitation>>> {
    Ok(axum::Json(service::list_invitations(&state, &actor).await?))
}

/// Withdraws an open invitation (admins).
#[utoipa::path(delete, path = "/api/v1/invitations/{id}", tag = "members",
    responses((status = 204), (status = 404, body = super::error::ErrorBody)))]
pub async fn revoke_invitation(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    service::revoke_invitation(&state, &actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Accepts an invitation: creates the account (or proves it is yours with its password), joins the
/// organisation and signs in. Unknown, used or expired links are 404.
#[utoipa::path(post, path = "/api/v1/invitations/{token}/accept", request_body = AcceptBody, tag = "members",
    responses((status = 200, body = SessionInfo), (status = 401, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody), (status = 429, body = super::error::ErrorBody)))]
pub async fn accept_invitation(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(token): Path<String>,
    Json(body): Json<AcceptBody>,
) -> ApiResult<Response> {
    Ok(started(
        StatusCode::OK,
        service::accept_invitation(&state, &ip, &token, &body).await?,
    ))
}

/// The user's organisations with their roles.
#[utoipa::path(get, path = "/api/v1/orgs", tag = "orgs", responses((status = 200, body = Items<OrgRole>)))]
pub async fn list_orgs(
    State(state): State<AppState>,
    p: Principal,
) -> ApiResult<axum::Json<Items<OrgRole>>> {
    Ok(axum::Json(service::list_orgs(&state, &p).await?))
}

/// Creates an organisation with the signed-in user as its owner (sessions only).
#[utoipa::path(post, path = "/api/v1/orgs", request_body = CreateOrg, tag = "orgs",
    responses((status = 201, body = Org), (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn create_org(
    State(state): State<AppState>,
    p: Principal,
    Json(body): Json<CreateOrg>,
) -> ApiResult<(StatusCode, axum::Json<Org>)> {
    let org = service::create_org(&state, &p, &body).await?;
    Ok((StatusCode::CREATED, axum::Json(org)))
}

/// Deletes an organisation (owners; it must have no projects left). Only the current organisation:
/// any other id is 404.
#[utoipa::path(delete, path = "/api/v1/orgs/{id}", tag = "orgs",
    responses((status = 204), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn delete_org(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    service::delete_org(&state, &actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The routes of this resource, each with its OpenAPI path.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(setup_status, setup))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(change_password))
        .routes(routes!(switch_org))
        .routes(routes!(list_orgs, create_org))
        .routes(routes!(delete_org))
        .routes(routes!(list_members, add_member))
        .routes(routes!(update_member, remove_member))
        .routes(routes!(list_invitations, create_invitation))
        .routes(routes!(revoke_invitation))
        .routes(routes!(accept_invitation))
}
