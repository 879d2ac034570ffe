//! A project's webhook: set, read (with its latest deliveries) and removed by the organisation's
//! administrators. The URL goes through the outbound-request policy when it is set and again when it
//! is called.

use crate::api::AppState;
use crate::api::auth::{Actor, Role};
use crate::api::error::{ApiError, ApiResult, ErrorCode, FieldError};
use groundwork_store::webhooks::{self, Delivery, Webhook};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// Body of `PUT /api/v1/projects/{id}/webhook`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetWebhook {
    /// An http(s) URL the outbound-request policy allows; called with a POST when a run of the
    /// project finishes.
    pub url: String,
}

/// A webhook just set, with its signing secret (shown once).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookSet {
    /// The webhook.
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The key of the `X-Groundwork-Signature` HMAC-SHA256 (`whsec_…`): shown only now.
    pub secret: String,
}

/// A webhook with its latest deliveries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookStatus {
    /// The webhook.
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The latest 20 deliveries, newest first.
    pub deliveries: Vec<Delivery>,
}

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Sets (or replaces) the webhook of a project; administrators.
pub async fn set(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    body: SetWebhook,
) -> ApiResult<WebhookSet> {
    actor.require(Role::Admin)?;
    let url = body.url.trim();
    let invalid = |message: String| {
        ApiError::validation(vec![FieldError {
            field: "url".into(),
            message,
        }])
    };
    if url.len() > MAX_URL_LEN || url.contains(char::is_control) {
        return Err(invalid(format!(
            "an http(s) URL of at most {MAX_URL_LEN} characters"
        )));
    }
    state
        .outbound
        .check_url_syntax(url)
        .map_err(|e| invalid(e.to_string()))?;
    let (webhook, secret) = webhooks::set(&state.pool, actor.org_id, project_id, url).await?;
    actor
        .audit(
            state,
            "project.webhook_set",
            "project",
            project_id,
            json!({"host": reqwest::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned))}),
        )
        .await;
    Ok(WebhookSet { webhook, secret })
}

/// The webhook of a project and its latest deliveries; administrators.
pub async fn get(state: &AppState, actor: &Actor, project_id: Uuid) -> ApiResult<WebhookStatus> {
    actor.require(Role::Admin)?;
    match webhooks::get(&state.pool, actor.org_id, project_id).await? {
        Some((webhook, deliveries)) => Ok(WebhookStatus {
            webhook,
            deliveries,
        }),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            "the project has no webhook",
        )),
    }
}

/// Removes the webhook of a project; administrators.
pub async fn delete(state: &AppState, actor: &Actor, project_id: Uuid) -> ApiResult<()> {
    actor.require(Role::Admin)?;
    if !webhooks::delete(&state.pool, actor.org_id, project_id).await? {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "the project has no webhook",
        ));
    }
    actor
        .audit(
            state,
            "project.webhook_delete",
            "project",
            project_id,
            json!({}),
        )
        .await;
    Ok(())
}
