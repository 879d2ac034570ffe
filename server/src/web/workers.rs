//! Worker administration: workers with their state, pool and capabilities, pool summaries and queue
//! depths; drain, pause and resume.

use super::error::{PageError, PageResult};
use super::{Layout, Nav};
use crate::api::AppState;
use crate::api::auth::{Actor, Role};
use crate::api::extract::Path;
use crate::service::workers as service;
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use chrono::{DateTime, Utc};
use groundwork_store::jobs;
use groundwork_store::workers::{Pool, Worker};
use serde_json::Value;
use uuid::Uuid;

/// A worker as the page shows it.
pub struct WorkerView {
    /// The worker.
    pub worker: Worker,
    /// The viewing organisation's own worker (else one of the installation's, shown read-only).
    pub own: bool,
    now: DateTime<Utc>,
}

impl WorkerView {
    fn cap(&self, key: &str) -> Option<&Value> {
        self.worker.capabilities.get(key).filter(|v| !v.is_null())
    }

    /// `8 cores, 31.2 GiB`.
    #[must_use]
    pub fn machine(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = self.cap("cores").and_then(Value::as_u64) {
            parts.push(format!("{c} cores"));
        }
        if let Some(m) = self.cap("memory_bytes").and_then(Value::as_u64) {
            #[expect(clippy::cast_precision_loss, reason = "display")]
            let gib = m as f64 / f64::from(1u32 << 30);
            parts.push(format!("{gib:.1} GiB"));
        }
        if let Some(d) = self.cap("candle_device").and_then(Value::as_str) {
            parts.push(format!("device {d}"));
        }
        if let Some(why) = self.cap("gpu_unused").and_then(Value::as_str) {
            parts.push(format!("GPU unused: {why}"));
        }
        parts.join(", ")
    }

    /// `NVIDIA H100 (80 GiB)`, or `none`.
    #[must_use]
    pub fn gpu(&self) -> String {
        let Some(name) = self.cap("gpu_name").and_then(Value::as_str) else {
            return "none".into();
        };
        match self.cap("gpu_memory_mib").and_then(Value::as_u64) {
            #[expect(clippy::cast_precision_loss, reason = "display")]
            Some(mib) => format!("{name} ({:.0} GiB)", mib as f64 / 1024.0),
            None => name.to_owned(),
        }
    }

    /// `3 s ago`.
    #[must_use]
    pub fn heartbeat(&self) -> String {
        let secs = (self.now - self.worker.last_heartbeat_at)
            .num_seconds()
            .max(0);
        if secs < 120 {
            format!("{secs} s ago")
        } else if secs < 7200 {
            format!("{} min ago", secs / 60)
        } else {
            format!("{} h ago", secs / 3600)
        }
    }

    /// The heartbeat time, ISO 8601.
    #[must_use]
    pub fn heartbeat_iso(&self) -> String {
        self.worker.last_heartbeat_at.to_rfc3339()
    }
}

/// A pool as the page shows it.
pub struct PoolView {
    /// The pool.
    pub pool: Pool,
}

impl PoolView {
    /// Busy fraction in percent.
    #[must_use]
    pub fn busy(&self) -> String {
        format!("{:.0} %", self.pool.busy_fraction * 100.0)
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "workers.html")]
struct WorkersPage {
    layout: Layout,
    workers: Vec<WorkerView>,
    pools: Vec<PoolView>,
    queues: Vec<(String, i64)>,
    /// Drain, pause and resume are offered to administrators only.
    can_admin: bool,
    /// This month's device time, quotas and cost (administrators only).
    usage: Option<UsageView>,
}

/// The organisation's device time this month as the workers page shows it.
pub struct UsageView {
    /// `YYYY-MM`.
    pub month: String,
    /// `(device, hours, of which installation, quota, left, cost)`, as text.
    pub rows: Vec<[String; 6]>,
}

impl UsageView {
    fn new(u: crate::service::usage::Usage) -> Self {
        let h = super::results::hours;
        let rows = u
            .devices
            .iter()
            .map(|d| {
                [
                    d.device_kind.name().to_uppercase(),
                    h(d.hours),
                    h(d.installation_hours),
                    d.quota_hours.map_or("none".into(), h),
                    d.remaining_hours.map_or("–".into(), h),
                    match (d.cost, &d.currency) {
                        (Some(c), Some(cur)) => format!("{c:.2} {cur}"),
                        _ => "no price set".into(),
                    },
                ]
            })
            .collect();
        Self {
            month: u.month,
            rows,
        }
    }
}

/// `GET /workers`: the organisation's workers, pools and queues (the same service the API uses).
pub async fn list(State(state): State<AppState>, actor: Actor) -> PageResult<impl IntoResponse> {
    let now = Utc::now();
    let items = service::list_workers(&state, &actor).await?.items;
    let pools = service::list_pools(&state, &actor).await?.items;
    let queues = jobs::queue_depths_in_org(&state.pool, actor.org_id).await?;
    Ok(WorkersPage {
        layout: Layout::new(&state, &actor, "Workers", Nav::Workers).await,
        workers: items
            .into_iter()
            .map(|worker| WorkerView {
                own: worker.org_id == actor.org_id,
                worker,
                now,
            })
            .collect(),
        pools: pools.into_iter().map(|pool| PoolView { pool }).collect(),
        queues,
        can_admin: actor.role >= Role::Admin,
        usage: if actor.role >= Role::Admin {
            Some(UsageView::new(
                crate::service::usage::org_usage(&state, &actor, None).await?,
            ))
        } else {
            None
        },
    })
}

/// `POST /workers/{id}/{drain|pause|resume}`.
pub async fn act(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, action)): Path<(Uuid, String)>,
) -> PageResult<Redirect> {
    // The service checks the role, finds only the organisation's workers and audits the change.
    match action.as_str() {
        "drain" => service::drain_worker(&state, &actor, id).await?,
        "pause" => service::pause_worker(&state, &actor, id).await?,
        "resume" => service::resume_worker(&state, &actor, id).await?,
        _ => {
            return Err(PageError {
                status: StatusCode::NOT_FOUND,
                message: "no such worker action".into(),
            });
        }
    };
    Ok(Redirect::to(&format!("/workers#worker-{id}")))
}
