//! Project webhooks: a URL called when one of the project's runs finishes, and the deliveries to it.
//! `finish_run_if_done` queues a delivery in the same statement that finishes the run; the server's
//! maintenance task sends it ([`due`], [`record`]).

use crate::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// Attempts before a delivery fails for good.
pub const MAX_ATTEMPTS: i32 = 8;

/// A project's webhook as its organisation sees it (the secret is shown once, when it is set).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Webhook {
    /// The project.
    pub project_id: Uuid,
    /// Where finished runs are announced.
    pub url: String,
    /// When it was set.
    pub created_at: DateTime<Utc>,
}

/// One announcement of a finished run.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delivery {
    /// Id (the `X-Groundwork-Delivery` header).
    pub id: Uuid,
    /// The run announced.
    pub run_id: Uuid,
    /// `run.finished`, or `change.alert` (a scheduled run's map changed more than the schedule's
    /// threshold).
    pub event: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// Attempts so far.
    pub attempts: i32,
    /// HTTP status of the last attempt, if it got an answer.
    pub last_status: Option<i32>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// When the run finished (queued).
    pub created_at: DateTime<Utc>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Sets the webhook of a project of `org_id` (replacing one), with a new secret: `(webhook, secret)`.
pub async fn set(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
    url: &str,
) -> Result<(Webhook, String)> {
    crate::projects::ensure_owned(pool, org_id, project_id).await?;
    let secret = crate::accounts::new_secret("whsec_");
    let hook: Webhook = sqlx::query_as(
        "insert into project_webhook (project_id, url, secret) values ($1, $2, $3) \
         on conflict (project_id) do update set url = excluded.url, secret = excluded.secret, created_at = now() \
         returning project_id, url, created_at",
    )
    .bind(project_id)
    .bind(url)
    .bind(&secret)
    .fetch_one(pool)
    .await?;
    Ok((hook, secret))
}

/// The webhook of a project of `org_id` and its latest 20 deliveries.
pub async fn get(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
) -> Result<Option<(Webhook, Vec<Delivery>)>> {
    crate::projects::ensure_owned(pool, org_id, project_id).await?;
    let Some(hook) = sqlx::query_as::<_, Webhook>(
        "select project_id, url, created_at from project_webhook where project_id = $1",
    )
    .bind(project_id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let deliveries = sqlx::query_as(
        "select id, run_id, event, state, attempts, last_status, last_error, created_at, delivered_at \
         from webhook_delivery where project_id = $1 order by created_at desc, id limit 20",
    )
    .bind(project_id)
    .fetch_all(pool)
    .await?;
    Ok(Some((hook, deliveries)))
}

/// Removes the webhook of a project of `org_id` (pending deliveries are dropped); whether there was one.
pub async fn delete(pool: &PgPool, org_id: Uuid, project_id: Uuid) -> Result<bool> {
    crate::projects::ensure_owned(pool, org_id, project_id).await?;
    let mut tx = pool.begin().await?;
    let n = sqlx::query("delete from project_webhook where project_id = $1")
        .bind(project_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("delete from webhook_delivery where project_id = $1 and state = 'pending'")
        .bind(project_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n > 0)
}

/// A delivery to send now.
#[derive(Debug, Clone)]
pub struct Due {
    /// Delivery id.
    pub id: Uuid,
    /// Where to.
    pub url: String,
    /// The key the body is signed with.
    pub secret: String,
    /// `run.finished` or `change.alert`.
    pub event: String,
    /// The body: `{event, delivery, run_id, project_id, org_id, state, started_at, finished_at,
    /// steps, outputs}`.
    pub body: Value,
}

#[derive(sqlx::FromRow)]
struct DueRow {
    id: Uuid,
    url: String,
    secret: String,
    event: String,
    detail: Value,
    run_id: Uuid,
    project_id: Uuid,
    org_id: Uuid,
    state: String,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

/// Takes up to `limit` deliveries that are due, and holds them for a minute (another server's pass
/// skips them meanwhile).
pub async fn due(pool: &PgPool, limit: i64) -> Result<Vec<Due>> {
    let rows: Vec<DueRow> = sqlx::query_as(
            "with d as (select d.id from webhook_delivery d where d.state = 'pending' and d.next_at <= now() \
                        order by d.next_at limit $1 for update skip locked), \
                  held as (update webhook_delivery w set next_at = now() + interval '1 minute' \
                           from d where w.id = d.id returning w.id, w.run_id, w.project_id, w.event, w.detail) \
             select held.id, h.url, h.secret, held.event, held.detail, held.run_id, held.project_id, r.org_id, r.state, r.started_at, r.finished_at \
             from held join project_webhook h on h.project_id = held.project_id \
             join pipeline_run r on r.id = held.run_id",
        )
        .bind(limit)
        .fetch_all(pool)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for DueRow {
        id,
        url,
        secret,
        event,
        detail,
        run_id,
        project_id,
        org_id,
        state,
        started_at,
        finished_at,
    } in rows
    {
        let steps: Vec<(String, String, String)> = sqlx::query_as(
            "select name, kind, state from step where run_id = $1 order by created_at, id",
        )
        .bind(run_id)
        .fetch_all(pool)
        .await?;
        let outputs: Vec<(Uuid, String)> =
            sqlx::query_as("select id, kind from output where run_id = $1 order by kind")
                .bind(run_id)
                .fetch_all(pool)
                .await?;
        let mut body = json!({
                "event": event,
                "delivery": id,
                "run_id": run_id,
                "project_id": project_id,
                "org_id": org_id,
                "state": state,
                "started_at": started_at,
                "finished_at": finished_at,
                "steps": steps.iter().map(|(n, k, s)| json!({"name": n, "kind": k, "state": s})).collect::<Vec<_>>(),
                "outputs": outputs.iter().map(|(i, k)| json!({"id": i, "kind": k})).collect::<Vec<_>>(),
        });
        if event == "change.alert" {
            body["change"] = detail;
        }
        out.push(Due {
            id,
            url,
            secret,
            event,
            body,
        });
    }
    Ok(out)
}

/// Records an attempt of delivery `id`: delivered, or (`Err((status, reason))`) retried after a
/// backoff (30 s doubling, at most an hour) until [`MAX_ATTEMPTS`], then failed.
pub async fn record(
    pool: &PgPool,
    id: Uuid,
    outcome: std::result::Result<i32, (Option<i32>, String)>,
) -> Result<()> {
    match outcome {
        Ok(status) => {
            sqlx::query(
                "update webhook_delivery set state = 'delivered', attempts = attempts + 1, last_status = $2, \
                     last_error = null, delivered_at = now() where id = $1",
            )
            .bind(id)
            .bind(status)
            .execute(pool)
            .await?;
        }
        Err((status, reason)) => {
            sqlx::query(
                "update webhook_delivery set attempts = attempts + 1, last_status = $2, last_error = $3, \
                     state = case when attempts + 1 >= $4 then 'failed' else 'pending' end, \
                     next_at = now() + least(30 * power(2, attempts), 3600) * interval '1 second' \
                 where id = $1",
            )
            .bind(id)
            .bind(status)
            .bind(reason)
            .bind(MAX_ATTEMPTS)
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

/// Queues a `change.alert` delivery of run `run_id` with `detail` (what changed, by how much), when
/// the project has a webhook; whether one was queued.
pub async fn queue_change_alert(
    pool: &PgPool,
    project_id: Uuid,
    run_id: Uuid,
    detail: &Value,
) -> Result<bool> {
    Ok(sqlx::query(
        "insert into webhook_delivery (id, project_id, run_id, event, detail) \
         select gen_random_uuid(), w.project_id, $2, 'change.alert', $3 from project_webhook w \
         where w.project_id = $1 \
         on conflict (run_id, event) where state = 'pending' do nothing",
    )
    .bind(project_id)
    .bind(run_id)
    .bind(detail)
    .execute(pool)
    .await?
    .rows_affected()
        > 0)
}
