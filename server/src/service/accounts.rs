//! Accounts: first-run setup, sign-in and out, the principal's own profile (password, current
//! organisation), members of the current organisation, invitations and organisations.

use crate::api::AppState;
use crate::api::auth::{self, Actor, Credential, Principal, Role, SignIn};
use crate::api::error::{ApiError, ApiResult, ErrorCode, FieldError};
use axum::http::HeaderValue;
use groundwork_store::accounts::{
    self, AcceptOutcome, Invitation, Member, Org, OrgRole, PasswordChange, User,
};
use groundwork_store::audit::Who;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

fn field(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

fn email_field(email: &str, errors: &mut Vec<FieldError>) -> String {
    accounts::validate_email(email).unwrap_or_else(|m| {
        errors.push(field("email", m));
        String::new()
    })
}

fn password_field(name: &str, password: &str, errors: &mut Vec<FieldError>) {
    if let Err(m) = accounts::validate_password(password) {
        errors.push(field(name, m));
    }
}

fn check(errors: Vec<FieldError>) -> ApiResult<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(errors))
    }
}

/// A new session, as returned by setup, sign-in and invitation acceptance (the cookie is set too).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionInfo {
    /// The user.
    pub user: User,
    /// The organisation the session acts in.
    pub org_id: Option<Uuid>,
    /// Echo this in `X-CSRF-Token` (or a `csrf` form field) on state-changing requests.
    pub csrf_token: String,
}

/// A session just started: its cookie (`Set-Cookie` value) and what the client is told.
#[derive(Debug)]
pub struct NewSession {
    /// The `Set-Cookie` header value.
    pub cookie: HeaderValue,
    /// The body.
    pub info: SessionInfo,
}

/// A sign-in attempt that may be rate-limited.
#[derive(Debug)]
pub enum Started {
    /// Signed in.
    Session(Box<NewSession>),
    /// Too many failures: retry after this long (the right password included).
    Limited(Duration),
}

/// `GET /api/v1/setup`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SetupStatus {
    /// Whether the first-run setup is still open (no user exists).
    pub required: bool,
}

/// Whether the first-run setup is still open.
pub async fn setup_status(state: &AppState) -> ApiResult<SetupStatus> {
    Ok(SetupStatus {
        required: !accounts::any_user(&state.pool).await?,
    })
}

/// Body of `POST /api/v1/setup`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupBody {
    /// The first owner's email.
    pub email: String,
    /// Their password (at least 8 characters).
    pub password: String,
    /// Name for the organisation (default: keep `default`).
    #[serde(default)]
    pub org_name: Option<String>,
    /// The one-time setup code `serve` printed, when it asks for one (a fresh installation listening
    /// on an address other than loopback).
    #[serde(default)]
    pub setup_code: Option<String>,
}

/// First run: creates the first owner and their organisation, and signs them in. Allowed only while
/// no user exists (`setup_done` afterwards).
pub async fn setup(state: &AppState, ip: &str, body: SetupBody) -> ApiResult<NewSession> {
    if accounts::any_user(&state.pool).await? {
        return Err(ApiError::new(
            ErrorCode::SetupDone,
            "setup is already done; sign in instead",
        ));
    }
    if let Some(expected) = &state.setup_code {
        let given = body.setup_code.as_deref().unwrap_or_default().trim();
        if given.is_empty() || !accounts::same_secret(given, expected) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "this installation asks for the one-time setup code printed in the server's log \
                 when it started (setup_code)",
            ));
        }
    }
    let mut errors = Vec::new();
    let email = email_field(&body.email, &mut errors);
    password_field("password", &body.password, &mut errors);
    let org_name = match body.org_name.as_deref().map(accounts::validate_org_name) {
        Some(Err(m)) => {
            errors.push(field("org_name", m));
            None
        }
        Some(Ok(n)) => Some(n),
        None => None,
    };
    check(errors)?;
    let who = Who {
        ip: Some(ip.to_owned()),
        ..Who::default()
    };
    let (user, org) = accounts::setup(
        &state.pool,
        &who,
        &email,
        &body.password,
        org_name.as_deref(),
    )
    .await
    .map_err(|e| match e {
        groundwork_store::Error::Conflict(m) => ApiError::new(ErrorCode::SetupDone, m),
        other => other.into(),
    })?;
    let (cookie, session) = auth::start_session(state, user.id, Some(org.id), Some(ip)).await?;
    Ok(NewSession {
        cookie,
        info: SessionInfo {
            user,
            org_id: session.org_id,
            csrf_token: session.csrf_token,
        },
    })
}

/// Body of `POST /api/v1/auth/login`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// Email.
    pub email: String,
    /// Password.
    pub password: String,
}

/// Signs in. Five failures per account or twenty per client address within 15 minutes lock further
/// tries, the right password included.
pub async fn login(state: &AppState, ip: &str, body: &LoginBody) -> ApiResult<Started> {
    match auth::sign_in(state, &body.email, &body.password, ip).await? {
        SignIn::Ok(s) => Ok(Started::Session(Box::new(NewSession {
            cookie: s.cookie,
            info: SessionInfo {
                user: s.user,
                org_id: s.session.org_id,
                csrf_token: s.session.csrf_token,
            },
        }))),
        SignIn::BadCredentials => Err(ApiError::new(
            ErrorCode::InvalidCredentials,
            "wrong email or password",
        )),
        SignIn::Limited(wait) => Ok(Started::Limited(wait)),
    }
}

/// Ends the principal's session (a token has none to end).
pub async fn logout(state: &AppState, p: &Principal) -> ApiResult<()> {
    if let Some(id) = p.session_id() {
        accounts::delete_session(&state.pool, &p.who(), id).await?;
    }
    Ok(())
}

/// `GET /api/v1/me`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    /// The user.
    pub user: User,
    /// Organisations with the user's role in each.
    pub orgs: Vec<OrgRole>,
    /// The organisation requests act in.
    pub current_org: Option<OrgRole>,
    /// The session's CSRF token (null for bearer tokens).
    pub csrf_token: Option<String>,
}

/// The signed-in user, their organisations and the current one.
pub async fn me(state: &AppState, p: &Principal) -> ApiResult<Me> {
    let user = accounts::user(&state.pool, p.user_id).await?;
    let orgs = accounts::orgs_of(&state.pool, p.user_id).await?;
    let current_org = p
        .org_id
        .and_then(|id| orgs.iter().find(|o| o.id == id).cloned());
    Ok(Me {
        user,
        orgs,
        current_org,
        csrf_token: auth::csrf_token(&p.credential).map(str::to_owned),
    })
}

/// Body of `POST /api/v1/me/password`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    /// The current password.
    pub current_password: String,
    /// The new one (at least 8 characters).
    pub new_password: String,
    /// Also revoke every API token of the user (default false).
    #[serde(default)]
    pub revoke_tokens: bool,
}

/// Changes the password; every other session of the user ends, and with `revoke_tokens` every API
/// token too. Wrong current passwords count against the sign-in limit.
pub async fn change_password(
    state: &AppState,
    p: &Principal,
    body: &PasswordBody,
) -> ApiResult<()> {
    let mut errors = Vec::new();
    password_field("new_password", &body.new_password, &mut errors);
    check(errors)?;
    match accounts::change_password(
        &state.pool,
        &p.who(),
        p.user_id,
        &body.current_password,
        &body.new_password,
        p.session_id(),
        body.revoke_tokens,
    )
    .await?
    {
        PasswordChange::Changed => Ok(()),
        PasswordChange::WrongPassword => Err(ApiError::new(
            ErrorCode::WrongPassword,
            "the current password is not right",
        )),
        PasswordChange::Limited(wait) => Err(ApiError::new(
            ErrorCode::TooManyAttempts,
            format!(
                "too many wrong passwords; try again in {} s",
                wait.as_secs().max(1)
            ),
        )),
    }
}

/// Body of `POST /api/v1/me/org`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchOrg {
    /// An organisation the user belongs to.
    pub org_id: Uuid,
}

/// Switches the organisation the session acts in (an API token stays in its own: any other is not
/// found).
pub async fn switch_org(state: &AppState, p: &Principal, body: &SwitchOrg) -> ApiResult<Me> {
    let mut p = p.clone();
    let Some(session_id) = p.session_id() else {
        // An API token acts in the organisation it was created for, and only there.
        if p.org_id == Some(body.org_id) {
            return me(state, &p).await;
        }
        return Err(ApiError::not_found("org"));
    };
    let role = accounts::set_session_org(&state.pool, session_id, p.user_id, body.org_id).await?;
    p.org_id = Some(body.org_id);
    p.role = Some(role);
    me(state, &p).await
}

// ---------------------------------------------------------------------------------------------------
// Members

/// List wrapper.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Items<T> {
    /// The items.
    pub items: Vec<T>,
}

/// Members of the current organisation.
pub async fn list_members(state: &AppState, actor: &Actor) -> ApiResult<Items<Member>> {
    Ok(Items {
        items: accounts::members(&state.pool, actor.org_id).await?,
    })
}

/// Body of `POST /api/v1/members`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// Email of the person to add.
    pub email: String,
    /// Role on acceptance.
    pub role: Role,
}

/// Only owners grant or take away the owner role.
pub fn may_grant(actor: &Actor, role: Role) -> ApiResult<()> {
    if role == Role::Owner {
        actor.require(Role::Owner)
    } else {
        actor.require(Role::Admin)
    }
}

/// Asks someone to join the current organisation (admins; owners to make owners): always by
/// invitation, never by attaching an account directly, so that nobody is put in an organisation
/// without accepting, and the answer is the same whether or not the email has an account here.
pub async fn add_member(
    state: &AppState,
    actor: &Actor,
    body: &AddMember,
) -> ApiResult<NewInvitation> {
    create_invitation(
        state,
        actor,
        &CreateInvitation {
            email: body.email.clone(),
            role: body.role,
        },
    )
    .await
}

/// Body of `PATCH /api/v1/members/{user_id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMember {
    /// New role.
    pub role: Role,
}

/// Changes a member's role (admins; only owners touch the owner role; the last owner stays).
pub async fn update_member(
    state: &AppState,
    actor: &Actor,
    user_id: Uuid,
    body: &UpdateMember,
) -> ApiResult<Member> {
    actor.require(Role::Admin)?;
    let current = accounts::role_in(&state.pool, actor.org_id, user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("member"))?;
    may_grant(actor, current.max(body.role))?;
    Ok(accounts::set_role(&state.pool, &actor.who(), actor.org_id, user_id, body.role).await?)
}

/// Removes a member (admins; owners to remove owners; anyone may leave). Their API tokens in the
/// organisation are revoked.
pub async fn remove_member(state: &AppState, actor: &Actor, user_id: Uuid) -> ApiResult<()> {
    let leaving = actor.user_id == Some(user_id);
    if !leaving {
        actor.require(Role::Admin)?;
    }
    let current = accounts::role_in(&state.pool, actor.org_id, user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("member"))?;
    if !leaving {
        may_grant(actor, current)?;
    }
    accounts::remove_member(&state.pool, &actor.who(), actor.org_id, user_id).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Invitations

/// Body of `POST /api/v1/invitations`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvitation {
    /// Who is invited.
    pub email: String,
    /// Role on acceptance.
    pub role: Role,
}

/// A new invitation with its one-time link.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewInvitation {
    /// The invitation.
    pub invitation: Invitation,
    /// The one-time secret (shown once).
    pub token: String,
    /// Path of the acceptance page (`/invite/{token}`); the API accepts at
    /// `POST /api/v1/invitations/{token}/accept`.
    pub url: String,
}

/// Invites someone to the current organisation by link (admins; owners to invite owners).
pub async fn create_invitation(
    state: &AppState,
    actor: &Actor,
    body: &CreateInvitation,
) -> ApiResult<NewInvitation> {
    may_grant(actor, body.role)?;
    let mut errors = Vec::new();
    let email = email_field(&body.email, &mut errors);
    check(errors)?;
    let (token, invitation) =
        accounts::create_invitation(&state.pool, &actor.who(), actor.org_id, &email, body.role)
            .await?;
    Ok(NewInvitation {
        invitation,
        url: format!("/invite/{token}"),
        token,
    })
}

/// Open invitations of the current organisation (admins).
pub async fn list_invitations(state: &AppState, actor: &Actor) -> ApiResult<Items<Invitation>> {
    actor.require(Role::Admin)?;
    Ok(Items {
        items: accounts::invitations(&state.pool, actor.org_id).await?,
    })
}

/// Withdraws an open invitation (admins).
pub async fn revoke_invitation(state: &AppState, actor: &Actor, id: Uuid) -> ApiResult<()> {
    actor.require(Role::Admin)?;
    accounts::revoke_invitation(&state.pool, &actor.who(), actor.org_id, id).await?;
    Ok(())
}

/// Body of `POST /api/v1/invitations/{token}/accept`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptBody {
    /// For a new account, its password (at least 8 characters); for an existing one, its password.
    pub password: String,
}

/// Accepts an invitation: creates the account (or proves it is yours with its password), joins the
/// organisation and signs in. Unknown, used or expired links are not found.
pub async fn accept_invitation(
    state: &AppState,
    ip: &str,
    token: &str,
    body: &AcceptBody,
) -> ApiResult<Started> {
    if body.password.chars().count() > 1024 {
        return Err(ApiError::validation(vec![field(
            "password",
            "a password may have at most 1024 characters",
        )]));
    }
    // A new account's password must be acceptable; checked before the invitation is used up.
    let invited_email = invited_email(state, token).await?;
    if accounts::user_by_email(&state.pool, &invited_email)
        .await?
        .is_none()
    {
        let mut errors = Vec::new();
        password_field("password", &body.password, &mut errors);
        check(errors)?;
    }
    match accounts::accept_invitation(&state.pool, token, &body.password, ip)
        .await
        .map_err(|e| match e {
            groundwork_store::Error::NotFound { .. } => ApiError::not_found("invitation"),
            other => other.into(),
        })? {
        AcceptOutcome::Accepted { user, org_id, .. } => {
            let (cookie, session) =
                auth::start_session(state, user.id, Some(org_id), Some(ip)).await?;
            Ok(Started::Session(Box::new(NewSession {
                cookie,
                info: SessionInfo {
                    user,
                    org_id: session.org_id,
                    csrf_token: session.csrf_token,
                },
            })))
        }
        AcceptOutcome::WrongPassword => Err(ApiError::new(
            ErrorCode::InvalidCredentials,
            "this email already has an account: give its password to accept",
        )),
        AcceptOutcome::Limited(wait) => Ok(Started::Limited(wait)),
    }
}

async fn invited_email(state: &AppState, token: &str) -> ApiResult<String> {
    accounts::open_invitation(&state.pool, token)
        .await?
        .map(|i| i.email)
        .ok_or_else(|| ApiError::not_found("invitation"))
}

// ---------------------------------------------------------------------------------------------------
// Organisations

/// The principal's organisations with their roles (a token sees only its own).
pub async fn list_orgs(state: &AppState, p: &Principal) -> ApiResult<Items<OrgRole>> {
    let mut items = accounts::orgs_of(&state.pool, p.user_id).await?;
    // A token sees only its own organisation.
    if matches!(p.credential, Credential::Token { .. }) {
        items.retain(|o| Some(o.id) == p.org_id);
    }
    Ok(Items { items })
}

/// Body of `POST /api/v1/orgs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    /// Unique name.
    pub name: String,
}

/// Creates an organisation with the signed-in user as its owner (sessions only).
pub async fn create_org(state: &AppState, p: &Principal, body: &CreateOrg) -> ApiResult<Org> {
    if matches!(p.credential, Credential::Token { .. }) {
        return Err(ApiError::new(
            ErrorCode::SessionRequired,
            "an API token acts in one organisation; create organisations signed in",
        ));
    }
    let name = accounts::validate_org_name(&body.name)
        .map_err(|m| ApiError::validation(vec![field("name", m)]))?;
    let org = accounts::create_org(&state.pool, &p.who(), &name, Some(p.user_id)).await?;
    Ok(org)
}

/// Deletes an organisation (owners; it must have no projects left). Only the current organisation:
/// any other id is not found.
pub async fn delete_org(state: &AppState, actor: &Actor, id: Uuid) -> ApiResult<()> {
    if id != actor.org_id {
        return Err(ApiError::not_found("org"));
    }
    actor.require(Role::Owner)?;
    accounts::delete_org(&state.pool, &actor.who(), id).await?;
    Ok(())
}
