//! The worker registry: workers join a pool, advertise capabilities, heartbeat, and carry an admin
//! state (`active | draining | paused`); `offline` is derived from a stale heartbeat.

use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// A worker is `offline` when its last heartbeat is older than this.
pub const OFFLINE_AFTER: Duration = Duration::from_secs(30);

/// What a worker tells the registry about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    /// Display name (host and process by default).
    pub name: String,
    /// Pool it joins.
    pub pool: String,
    /// Queues it serves.
    pub queues: Vec<String>,
    /// Steps it runs at once.
    pub concurrency: i32,
    /// Cores, memory, GPU, candle device, …
    pub capabilities: Value,
    /// Software version.
    pub version: String,
}

/// A worker as admins see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Worker {
    /// Id.
    pub id: Uuid,
    /// Organisation it belongs to (for an installation worker, the organisation whose administrators
    /// manage it: the default one).
    pub org_id: Uuid,
    /// An installation worker (registered without a worker token): it runs the steps of every
    /// organisation allowed to use the installation's workers, which see it read-only.
    pub installation: bool,
    /// Name.
    pub name: String,
    /// Pool.
    pub pool: String,
    /// Queues served.
    pub queues: Vec<String>,
    /// Concurrency.
    pub concurrency: i32,
    /// Capabilities.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub capabilities: Value,
    /// Version.
    pub version: String,
    /// `active | draining | paused`, or `offline` when the heartbeat is stale.
    pub state: String,
    /// The admin state as set (kept when offline).
    pub admin_state: String,
    /// Steps running on it now (only the viewing organisation's, when listed for one).
    pub running_steps: Vec<Uuid>,
    /// Registered.
    pub started_at: DateTime<Utc>,
    /// Last heartbeat.
    pub last_heartbeat_at: DateTime<Utc>,
}

/// Registers a worker; returns its id.
pub async fn register(pool: &PgPool, r: &Registration) -> Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into worker (id, name, pool, queues, concurrency, capabilities, version) values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(&r.name)
    .bind(&r.pool)
    .bind(&r.queues)
    .bind(r.concurrency)
    .bind(&r.capabilities)
    .bind(&r.version)
    .execute(pool)
    .await?;
    Ok(id)
}

/// The message queues a registered worker polls: its queues as named (`cpu`, `gpu`) for an
/// installation worker (registered without a worker token), or `{queue}@{org id}` for a worker that
/// joined an organisation with its token and so serves that organisation alone.
pub async fn message_queues(pool: &PgPool, worker_id: Uuid) -> Result<Vec<String>> {
    let (queues, org_id, own): (Vec<String>, Uuid, bool) = sqlx::query_as(
        "select queues, org_id, worker_token_id is not null from worker where id = $1",
    )
    .bind(worker_id)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound {
        what: "worker",
        id: worker_id,
    })?;
    Ok(if own {
        queues
            .iter()
            .map(|q| crate::jobs::org_queue(q, org_id))
            .collect()
    } else {
        queues
    })
}

/// Registers a worker that presents `token` (a worker token, `gwk_…`): it joins the token's
/// organisation. Without a token, registration is allowed only while no live worker token exists
/// (the zero-setup local install); such a worker joins the default organisation. A bad or revoked
/// token, or a missing one once tokens exist, is refused with [`Error::Unauthorized`].
pub async fn register_with_token(
    pool: &PgPool,
    r: &Registration,
    token: Option<&str>,
) -> Result<Uuid> {
    let (org_id, token_id) = match token.map(str::trim).filter(|t| !t.is_empty()) {
        Some(secret) => {
            let row: Option<(Uuid, Uuid)> = sqlx::query_as(
                "update worker_token set last_used_at = now() where token_hash = $1 and revoked_at is null \
                 returning org_id, id",
            )
            .bind(crate::accounts::digest(secret))
            .fetch_optional(pool)
            .await?;
            let (org, id) = row.ok_or_else(|| {
                Error::Unauthorized(
                    "the worker token was refused: it is unknown or has been revoked".into(),
                )
            })?;
            (org, Some(id))
        }
        None => {
            let required: bool = sqlx::query_scalar(
                "select exists (select 1 from worker_token where revoked_at is null)",
            )
            .fetch_one(pool)
            .await?;
            if required {
                return Err(Error::Unauthorized(
                    "this installation requires a worker token: pass --token or set GROUNDWORK_WORKER_TOKEN \
                     (an admin creates one with `groundwork admin create-worker-token`)"
                        .into(),
                ));
            }
            (crate::DEFAULT_ORG_ID, None)
        }
    };
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into worker (id, name, pool, queues, concurrency, capabilities, version, org_id, worker_token_id) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(&r.name)
    .bind(&r.pool)
    .bind(&r.queues)
    .bind(r.concurrency)
    .bind(&r.capabilities)
    .bind(&r.version)
    .bind(org_id)
    .bind(token_id)
    .execute(pool)
    .await?;
    Ok(id)
}

/// Records a heartbeat and returns the admin state the worker must follow.
pub async fn heartbeat(pool: &PgPool, id: Uuid) -> Result<String> {
    // A worker whose token was revoked drains: it finishes what it runs and takes nothing new.
    sqlx::query_scalar(
        "update worker w set last_heartbeat_at = now(), stopped_at = null where w.id = $1 \
         returning case when exists (select 1 from worker_token t where t.id = w.worker_token_id and t.revoked_at is not null) \
                        then 'draining' else w.admin_state end",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound { what: "worker", id })
}

/// Marks a worker as stopped (clean shutdown): it shows as offline at once.
pub async fn deregister(pool: &PgPool, id: Uuid) -> Result<()> {
    sqlx::query("update worker set stopped_at = now(), last_heartbeat_at = now() - interval '1 hour' where id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

const SELECT: &str = "select w.id, w.org_id, w.worker_token_id is null as installation, w.name, w.pool, w.queues, w.concurrency, w.capabilities, w.version, \
    case when w.stopped_at is not null or w.last_heartbeat_at < now() - $1 * interval '1 second' then 'offline' \
         else w.admin_state end as state, \
    w.admin_state, \
    coalesce((select array_agg(s.id order by s.id) from step s where s.lease_owner = w.id and s.state = 'running' \
        and ($2::uuid is null or s.run_id in (select r.id from pipeline_run r where r.org_id = $2))), '{}') as running_steps, \
    w.started_at, w.last_heartbeat_at from worker w";

/// Workers seen in the last day (offline ones included), newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<Worker>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} where w.last_heartbeat_at > now() - interval '1 day' or w.stopped_at is null order by w.id desc"
    )))
    .bind(OFFLINE_AFTER.as_secs_f64())
    .bind(None::<Uuid>)
    .fetch_all(pool)
    .await?)
}

/// One worker.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Worker> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT} where w.id = $3")))
        .bind(OFFLINE_AFTER.as_secs_f64())
        .bind(None::<Uuid>)
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(Error::NotFound { what: "worker", id })
}

/// Sets the admin state (`active | draining | paused`).
pub async fn set_admin_state(pool: &PgPool, id: Uuid, state: &str) -> Result<Worker> {
    let done = sqlx::query("update worker set admin_state = $2 where id = $1")
        .bind(id)
        .bind(state)
        .execute(pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound { what: "worker", id });
    }
    get(pool, id).await
}

/// The workers an organisation sees, seen in the last day (offline ones included), newest first: its
/// own, and the installation's workers when it may use them (`org.installation_workers`).
pub async fn list_in_org(pool: &PgPool, org_id: Uuid) -> Result<Vec<Worker>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} where {VISIBLE} and (w.last_heartbeat_at > now() - interval '1 day' or w.stopped_at is null) \
         order by w.id desc"
    )))
    .bind(OFFLINE_AFTER.as_secs_f64())
    .bind(org_id)
    .fetch_all(pool)
    .await?)
}

/// Which workers organisation `$2` sees: its own, and installation workers when it may use them.
const VISIBLE: &str = "(w.org_id = $2 or (w.worker_token_id is null \
    and coalesce((select o.installation_workers from org o where o.id = $2), false)))";

/// One worker as organisation `org_id` sees it ([`list_in_org`]'s rule); another organisation's
/// private worker is not found.
pub async fn get_in_org(pool: &PgPool, org_id: Uuid, id: Uuid) -> Result<Worker> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} where {VISIBLE} and w.id = $3"
    )))
    .bind(OFFLINE_AFTER.as_secs_f64())
    .bind(org_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound { what: "worker", id })
}

/// Sets the admin state of one of an organisation's workers; another organisation's is not found.
pub async fn set_admin_state_in_org(
    pool: &PgPool,
    org_id: Uuid,
    id: Uuid,
    state: &str,
) -> Result<Worker> {
    let done = sqlx::query("update worker set admin_state = $3 where id = $1 and org_id = $2")
        .bind(id)
        .bind(org_id)
        .bind(state)
        .execute(pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound { what: "worker", id });
    }
    get(pool, id).await
}

/// A pool's summary for admins.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pool {
    /// Pool name.
    pub name: String,
    /// A pool of installation workers (shared by every organisation allowed to use them), as opposed
    /// to an organisation's own workers of that pool name.
    pub installation: bool,
    /// Queues its workers serve.
    pub queues: Vec<String>,
    /// Workers that are active.
    pub active: i64,
    /// … draining.
    pub draining: i64,
    /// … paused.
    pub paused: i64,
    /// … offline.
    pub offline: i64,
    /// Queued steps in the pool's queues.
    pub queue_depth: i64,
    /// Steps running on the pool's workers (only the viewing organisation's, when listed for one).
    pub running_steps: i64,
    /// Busy worker-slot time over available worker-slot time in the last hour, 0–1.
    pub busy_fraction: f64,
}

/// Per-pool summaries over every organisation's workers.
pub async fn pools(pool: &PgPool) -> Result<Vec<Pool>> {
    pools_for(pool, None).await
}

/// Per-pool summaries of the workers an organisation sees ([`list_in_org`]'s rule); queue depth counts
/// that organisation's steps.
pub async fn pools_in_org(pool: &PgPool, org_id: Uuid) -> Result<Vec<Pool>> {
    pools_for(pool, Some(org_id)).await
}

async fn pools_for(pool: &PgPool, org_id: Option<Uuid>) -> Result<Vec<Pool>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "with w as ( \
             select w.*, w.worker_token_id is null as inst, \
                    case when w.stopped_at is not null or w.last_heartbeat_at < now() - $1 * interval '1 second' \
                              then 'offline' else w.admin_state end as st \
             from worker w where w.last_heartbeat_at > now() - interval '1 hour' and ($2::uuid is null or {VISIBLE})), \
         p as (select pool, inst, array(select distinct unnest(array_agg_q) order by 1) as queues from \
                 (select pool, inst, array_agg(q) as array_agg_q from w, unnest(w.queues) q group by pool, inst) x) \
         select p.pool as name, p.inst as installation, p.queues, \
             (select count(*) from w where w.pool = p.pool and w.inst = p.inst and st = 'active') as active, \
             (select count(*) from w where w.pool = p.pool and w.inst = p.inst and st = 'draining') as draining, \
             (select count(*) from w where w.pool = p.pool and w.inst = p.inst and st = 'paused') as paused, \
             (select count(*) from w where w.pool = p.pool and w.inst = p.inst and st = 'offline') as offline, \
             (select count(*) from step s join pipeline_run r on r.id = s.run_id where s.state = 'queued' and s.queue = any(p.queues) \
                 and ($2::uuid is null or r.org_id = $2)) as queue_depth, \
             (select count(*) from step s join w on w.id = s.lease_owner where w.pool = p.pool and w.inst = p.inst \
                 and s.state = 'running' and ($2::uuid is null or s.run_id in (select id from pipeline_run where org_id = $2))) as running_steps, \
             coalesce(( \
                 select sum(extract(epoch from least(coalesce(a.finished_at, now()), now()) \
                                              - greatest(a.started_at, now() - interval '1 hour'))) \
                 from step_attempt a join w on w.id = a.worker_id \
                 where w.pool = p.pool and w.inst = p.inst and coalesce(a.finished_at, now()) > now() - interval '1 hour') \
               / nullif((select sum(w.concurrency * extract(epoch from least(w.last_heartbeat_at, now()) \
                                                               - greatest(w.started_at, now() - interval '1 hour'))) \
                         from w where w.pool = p.pool and w.inst = p.inst), 0), 0)::float8 as busy_fraction \
         from p order by p.pool, p.inst"
    )))
    .bind(OFFLINE_AFTER.as_secs_f64())
    .bind(org_id)
    .fetch_all(pool)
    .await?)
}

/// A worker that joined over the worker API, as its request authenticated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteWorker {
    /// The worker's registry id.
    pub id: Uuid,
    /// The organisation its token binds it to.
    pub org_id: Uuid,
    /// Whether the token was revoked since: the worker may finish what it runs, and takes nothing new.
    pub revoked: bool,
}

/// Authenticates a worker API request: `worker_id` must have registered with the worker token
/// `secret`. Workers registered without a token (the installation's own) never authenticate here.
pub async fn authenticate_remote(
    pool: &PgPool,
    worker_id: Uuid,
    secret: &str,
) -> Result<Option<RemoteWorker>> {
    let row: Option<(Uuid, Uuid, bool)> = sqlx::query_as(
        "select w.id, w.org_id, t.revoked_at is not null from worker w \
         join worker_token t on t.id = w.worker_token_id \
         where w.id = $1 and t.token_hash = $2 and t.org_id = w.org_id",
    )
    .bind(worker_id)
    .bind(crate::accounts::digest(secret.trim()))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(id, org_id, revoked)| RemoteWorker {
        id,
        org_id,
        revoked,
    }))
}
