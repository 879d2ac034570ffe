//! The invitation page `/invite/{token}`: shows the organisation and role of an open invitation. A user
//! signed in with the invited email joins with one button; a visitor creates the account (or gives
//! the password of the existing one) and joins, signed in. A link that no longer works says why.

use super::error::{PageError, PageResult};
use super::{Layout, Nav, error_text, form_pairs, form_value, when};
use crate::api::AppState;
use crate::api::accounts::ClientIp;
use crate::api::auth::{Credential, MaybePrincipal, Principal};
use crate::api::extract::Path;
use crate::service::accounts::{self as service, AcceptBody, Started};
use askama::Template;
use askama_web::WebTemplate;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use groundwork_store::Error;
use groundwork_store::accounts::{self, Invitation};

/// What the page offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Signed in with the invited email: one button.
    Join,
    /// Signed in as someone else: sign out first.
    OtherUser,
    /// The invited email has an account: its password.
    SignIn,
    /// No account yet: choose a password.
    Create,
}

#[derive(Template, WebTemplate)]
#[template(path = "invite.html")]
struct InvitePage {
    layout: Layout,
    token: String,
    invitation: Invitation,
    org_name: String,
    offer: Offer,
    /// The signed-in user's email.
    signed_in_as: String,
    error: String,
}

impl InvitePage {
    fn expires(&self) -> String {
        when(&self.invitation.expires_at)
    }
}

/// Why a link does not work (an error page): unknown or withdrawn links are not found; used or expired
/// ones are gone.
async fn gone(state: &AppState, token: &str) -> PageError {
    match accounts::invitation_by_secret(&state.pool, token).await {
        Ok(Some(inv)) if inv.accepted_at.is_some() => PageError {
            status: StatusCode::GONE,
            message:
                "This invitation has already been used. If you accepted it, sign in to continue."
                    .into(),
        },
        Ok(Some(inv)) => PageError {
            status: StatusCode::GONE,
            message: format!(
                "This invitation expired on {}. Ask whoever invited you for a new link.",
                when(&inv.expires_at)
            ),
        },
        Ok(None) => PageError {
            status: StatusCode::NOT_FOUND,
            message: "This invitation link is not valid: it may have been withdrawn, or mistyped. \
                      Ask whoever invited you for a new link."
                .into(),
        },
        Err(e) => e.into(),
    }
}

async fn page(
    state: &AppState,
    who: Option<&Principal>,
    token: &str,
    error: String,
) -> PageResult<InvitePage> {
    let Some(invitation) = accounts::open_invitation(&state.pool, token).await? else {
        return Err(gone(state, token).await);
    };
    let org_name = accounts::org(&state.pool, invitation.org_id).await?.name;
    let title = format!("Join {org_name}");
    let (layout, offer, signed_in_as) = match who {
        Some(p) => {
            let user = accounts::user(&state.pool, p.user_id).await?;
            let offer = if user.email.eq_ignore_ascii_case(&invitation.email) {
                Offer::Join
            } else {
                Offer::OtherUser
            };
            (
                Layout::for_principal(state, p, title, Nav::None).await,
                offer,
                user.email,
            )
        }
        None => {
            let exists = accounts::user_by_email(&state.pool, &invitation.email)
                .await?
                .is_some();
            let offer = if exists { Offer::SignIn } else { Offer::Create };
            (Layout::bare(title), offer, String::new())
        }
    };
    Ok(InvitePage {
        layout,
        token: token.to_owned(),
        invitation,
        org_name,
        offer,
        signed_in_as,
        error,
    })
}

/// `GET /invite/{token}`.
pub async fn show(
    State(state): State<AppState>,
    MaybePrincipal(who): MaybePrincipal,
    Path(token): Path<String>,
) -> PageResult<Response> {
    Ok(page(&state, who.as_ref(), &token, String::new())
        .await?
        .into_response())
}

/// `POST /invite/{token}`: a signed-in session joins (and then acts in the organisation); a visitor
/// accepts through the same service function as the API with a password and is signed in.
pub async fn accept(
    State(state): State<AppState>,
    MaybePrincipal(who): MaybePrincipal,
    ip: ClientIp,
    Path(token): Path<String>,
    body: Bytes,
) -> PageResult<Response> {
    match &who {
        Some(p) => join_signed_in(&state, p, &ip.0, &token).await,
        None => {
            join_with_password(
                &state,
                ip,
                &token,
                &form_value(&form_pairs(&body), "password"),
            )
            .await
        }
    }
}

async fn join_signed_in(
    state: &AppState,
    p: &Principal,
    ip: &str,
    token: &str,
) -> PageResult<Response> {
    let Credential::Session { session_id, .. } = &p.credential else {
        return Err(PageError {
            status: StatusCode::FORBIDDEN,
            message: "Sign in to accept an invitation; an API token cannot.".into(),
        });
    };
    match accounts::accept_invitation_as(&state.pool, token, p.user_id, ip).await {
        Ok((org_id, _)) => {
            accounts::set_session_org(&state.pool, *session_id, p.user_id, org_id).await?;
            Ok(Redirect::to("/projects").into_response())
        }
        Err(Error::NotFound { .. }) => Err(gone(state, token).await),
        Err(Error::Conflict(m)) => {
            let page = page(state, Some(p), token, m).await?;
            Ok((StatusCode::CONFLICT, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

async fn join_with_password(
    state: &AppState,
    ip: ClientIp,
    token: &str,
    password: &str,
) -> PageResult<Response> {
    let again = |status: StatusCode, error: String| async move {
        let page = page(state, None, token, error).await?;
        Ok::<Response, PageError>((status, page).into_response())
    };
    let result = service::accept_invitation(
        state,
        &ip.0,
        token,
        &AcceptBody {
            password: password.to_owned(),
        },
    )
    .await;
    match result {
        Ok(Started::Limited(_)) => {
            again(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed attempts. Try again in a few minutes.".into(),
            )
            .await
        }
        Ok(Started::Session(session)) => {
            let mut r = Redirect::to("/projects").into_response();
            r.headers_mut().insert(header::SET_COOKIE, session.cookie);
            Ok(r)
        }
        Err(e) if e.status == StatusCode::NOT_FOUND => Err(gone(state, token).await),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            again(
                StatusCode::UNAUTHORIZED,
                "That is not the password of this account.".into(),
            )
            .await
        }
        Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => {
            again(StatusCode::UNPROCESSABLE_ENTITY, error_text(&e)).await
        }
        Err(e) => Err(e.into()),
    }
}
