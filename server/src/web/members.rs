//! Members of the current organisation: everyone sees who belongs and with which role; admins change
//! roles, remove members and invite colleagues by a one-time link (owners alone grant or take the
//! owner role, as the API rules).

use super::error::PageResult;
use super::{Layout, Nav, error_text, form_pairs, form_value, when};
use crate::api::AppState;
use crate::api::auth::{Actor, Role};
use crate::api::error::ApiError;
use crate::api::extract::Path;
use crate::service::accounts::{self as service, CreateInvitation, NewInvitation, UpdateMember};
use askama::Template;
use askama_web::WebTemplate;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use groundwork_store::accounts::{self, Invitation, Member};
use uuid::Uuid;

/// A member row.
pub struct MemberRow {
    /// The member.
    pub member: Member,
    /// Whether it is the viewer of the page.
    pub you: bool,
    /// Whether the viewer may change this member's role or remove them.
    pub manageable: bool,
}

impl MemberRow {
    /// When they joined.
    #[must_use]
    pub fn joined(&self) -> String {
        when(&self.member.created_at)
    }
}

/// An open invitation row.
pub struct InvitationRow {
    /// The invitation.
    pub invitation: Invitation,
}

impl InvitationRow {
    /// When it expires.
    #[must_use]
    pub fn expires(&self) -> String {
        when(&self.invitation.expires_at)
    }
}

/// The invite form's values, kept when the server refuses them.
#[derive(Debug, Clone)]
pub struct InviteForm {
    /// Email.
    pub email: String,
    /// Role.
    pub role: String,
}

impl Default for InviteForm {
    fn default() -> Self {
        Self {
            email: String::new(),
            role: "member".into(),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "members.html")]
struct MembersPage {
    layout: Layout,
    members: Vec<MemberRow>,
    invitations: Vec<InvitationRow>,
    /// Whether the viewer administers members (forms are shown).
    manage: bool,
    /// The roles the viewer may grant.
    roles: Vec<&'static str>,
    form: InviteForm,
    /// A form's refusal.
    error: String,
    /// The invitation just made, with its link (shown only now).
    created: Option<NewInvitation>,
}

impl MembersPage {
    fn created_expires(&self) -> String {
        self.created
            .as_ref()
            .map(|c| when(&c.invitation.expires_at))
            .unwrap_or_default()
    }
}

/// Roles `role` may grant: admins up to admin, owners any.
fn grantable(role: Role) -> Vec<&'static str> {
    let mut roles = vec!["viewer", "member", "admin"];
    if role >= Role::Owner {
        roles.push("owner");
    }
    roles
}

async fn page(
    state: &AppState,
    actor: &Actor,
    form: InviteForm,
    error: String,
    created: Option<NewInvitation>,
) -> PageResult<MembersPage> {
    let manage = actor.role >= Role::Admin;
    let members = accounts::members(&state.pool, actor.org_id)
        .await?
        .into_iter()
        .map(|member| MemberRow {
            you: Some(member.user_id) == actor.user_id,
            manageable: manage && (member.role < Role::Owner || actor.role >= Role::Owner),
            member,
        })
        .collect();
    let invitations = if manage {
        accounts::invitations(&state.pool, actor.org_id)
            .await?
            .into_iter()
            .map(|invitation| InvitationRow { invitation })
            .collect()
    } else {
        Vec::new()
    };
    Ok(MembersPage {
        layout: Layout::new(state, actor, "Members", Nav::Members).await,
        members,
        invitations,
        manage,
        roles: grantable(actor.role),
        form,
        error,
        created,
    })
}

/// Renders the page again with the refusal of a form: field and state problems (422, 409) are shown
/// on the page; what the viewer may not see or do (401, 403, 404) and server errors are error pages.
async fn refused(
    state: &AppState,
    actor: &Actor,
    form: InviteForm,
    e: ApiError,
) -> PageResult<Response> {
    if matches!(
        e.status,
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::CONFLICT
    ) {
        let status = e.status;
        let p = page(state, actor, form, error_text(&e), None).await?;
        Ok((status, p).into_response())
    } else {
        Err(e.into())
    }
}

fn role_of(value: &str) -> Result<Role, ApiError> {
    value.parse().map_err(|_| {
        ApiError::validation(vec![crate::api::error::FieldError {
            field: "role".into(),
            message: "choose a role".into(),
        }])
    })
}

/// `GET /members`.
pub async fn list(State(state): State<AppState>, actor: Actor) -> PageResult<Response> {
    Ok(
        page(&state, &actor, InviteForm::default(), String::new(), None)
            .await?
            .into_response(),
    )
}

/// `POST /members/invitations`: makes an invitation through the same service function as the API and shows its link once
/// (the page answers the post itself, so the secret is never in a URL or a later page).
pub async fn invite(
    State(state): State<AppState>,
    actor: Actor,
    body: Bytes,
) -> PageResult<Response> {
    let pairs = form_pairs(&body);
    let form = InviteForm {
        email: form_value(&pairs, "email").trim().to_owned(),
        role: form_value(&pairs, "role"),
    };
    let result = match role_of(&form.role) {
        Ok(role) => {
            service::create_invitation(
                &state,
                &actor,
                &CreateInvitation {
                    email: form.email.clone(),
                    role,
                },
            )
            .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(created) => {
            let p = page(
                &state,
                &actor,
                InviteForm::default(),
                String::new(),
                Some(created),
            )
            .await?;
            // The link is a secret: never stored by a cache or the browser's history.
            Ok(crate::hygiene::no_store(
                (StatusCode::CREATED, p).into_response(),
            ))
        }
        Err(e) => refused(&state, &actor, form, e).await,
    }
}

/// `POST /members/invitations/{id}/revoke`.
pub async fn revoke_invitation(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> PageResult<Redirect> {
    service::revoke_invitation(&state, &actor, id).await?;
    Ok(Redirect::to("/members#invitations-heading"))
}

/// `POST /members/{user_id}/role`.
pub async fn set_role(
    State(state): State<AppState>,
    actor: Actor,
    Path(user_id): Path<Uuid>,
    body: Bytes,
) -> PageResult<Response> {
    let role = role_of(&form_value(&form_pairs(&body), "role"));
    let result = match role {
        Ok(role) => service::update_member(&state, &actor, user_id, &UpdateMember { role })
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(Redirect::to(&format!("/members#member-{user_id}")).into_response()),
        Err(e) => refused(&state, &actor, InviteForm::default(), e).await,
    }
}

/// `POST /members/{user_id}/remove`: removes a member (their API tokens here are revoked). Someone who
/// removes themselves has left, and goes to their account page.
pub async fn remove(
    State(state): State<AppState>,
    actor: Actor,
    Path(user_id): Path<Uuid>,
) -> PageResult<Response> {
    let leaving = actor.user_id == Some(user_id);
    match service::remove_member(&state, &actor, user_id).await {
        Ok(_) if leaving => Ok(Redirect::to("/account").into_response()),
        Ok(_) => Ok(Redirect::to("/members").into_response()),
        Err(e) => refused(&state, &actor, InviteForm::default(), e).await,
    }
}
