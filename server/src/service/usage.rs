//! Device time an organisation spends, what a training or prediction run will cost before it starts,
//! and the monthly quota it must fit in.

use crate::api::AppState;
use crate::api::auth::Actor;
use crate::api::error::{ApiError, ApiResult, ErrorCode, FieldError};
use groundwork_store::accounts::Role;
use groundwork_store::projects::{self, Project};
use groundwork_store::usage::{self, DeviceUsage, Month};
use groundwork_types::{DeviceKind, StepKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Body of `POST /api/v1/projects/{id}/estimate`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EstimateRequest {
    /// `train` or `predict`.
    pub kind: String,
    /// Training epochs (`train`; default as `POST …/train`).
    pub epochs: Option<usize>,
}

/// What a run is expected to cost in device time, and how that fits the organisation's quota.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Estimate {
    /// The step kind estimated (`train` or `predict`).
    pub step_kind: StepKind,
    /// The device kind its steps go to now (`gpu` when a GPU worker is live, else `cpu`).
    pub device_kind: DeviceKind,
    /// The project's model size.
    pub model_size: String,
    /// Units of work: windows to predict, or training examples × epochs.
    pub units: f64,
    /// What a unit is.
    pub unit: String,
    /// Seconds of device time per unit.
    pub seconds_per_unit: f64,
    /// Whether that rate was measured on this installation (else a built-in assumption).
    pub measured: bool,
    /// Steps the rate was learned from.
    pub samples: i32,
    /// Expected device-hours (`units × seconds_per_unit / 3600`).
    pub device_hours: f64,
    /// Price of a device-hour, if the installation set one.
    pub price_per_hour: Option<f64>,
    /// ISO 4217 currency of the price.
    pub currency: Option<String>,
    /// Expected cost (`device_hours × price_per_hour`).
    pub cost: Option<f64>,
    /// The month the quota is counted in (UTC, `YYYY-MM`).
    pub month: String,
    /// Installation device-hours of this kind the organisation used this month.
    pub used_hours: f64,
    /// What the organisation's unfinished runs of this device kind are still expected to spend (their
    /// estimates less what they used); counted against the quota.
    pub committed_hours: f64,
    /// Its monthly quota of this kind (null: none).
    pub quota_hours: Option<f64>,
    /// What is left of the quota (null: no quota).
    pub remaining_hours: Option<f64>,
    /// Whether the estimate fits in what is left (true without a quota).
    pub within_quota: bool,
    /// Whether the quota counts this run (the organisation uses the installation's workers and has a
    /// quota of this kind).
    #[serde(skip)]
    pub counted: bool,
    /// How the figure was made and what it leaves out, in words.
    pub note: String,
}

/// An estimate of `units` of `kind` for `project` on `device`, against `org_id`'s quota.
pub async fn estimate_units(
    state: &AppState,
    org_id: Uuid,
    project: &Project,
    kind: StepKind,
    device: DeviceKind,
    units: f64,
) -> ApiResult<Estimate> {
    let size = project.model_size.name();
    let rate = usage::rate(&state.pool, kind, size, device).await?;
    let (seconds_per_unit, measured, samples) = match rate {
        Some(r) => (r.seconds_per_unit, true, r.samples),
        None => (
            usage::assumed_seconds_per_unit(kind, size, device),
            false,
            0,
        ),
    };
    let device_hours = units * seconds_per_unit / 3600.0;
    let month = Month::now();
    let row = usage::month_usage(&state.pool, org_id, month)
        .await?
        .into_iter()
        .find(|u| u.device_kind == device);
    let used_hours = row.as_ref().map_or(0.0, |u| u.installation_hours);
    let quota_hours = row.as_ref().and_then(|u| u.quota_hours);
    let price = row
        .as_ref()
        .and_then(|u| u.price_per_hour.zip(u.currency.clone()));
    // Quotas cap the installation's workers: an organisation that does not use them spends none.
    let on_installation = usage::uses_installation_workers(&state.pool, org_id).await?;
    // Runs already started but not finished hold their estimates (less what they used).
    let committed_hours = if quota_hours.is_some() {
        usage::committed_hours(&state.pool, org_id, device).await?
    } else {
        0.0
    };
    let remaining_hours =
        quota_hours.map(|q| usage::remaining_hours(q, used_hours, committed_hours));
    let within_quota = !on_installation || remaining_hours.is_none_or(|r| device_hours <= r);
    let unit = usage::unit_of(kind).unwrap_or("unit").to_owned();
    let note = format!(
        "{units} {unit}{} × {seconds_per_unit:.3} s on {device} ({}); {}",
        if units == 1.0 { "" } else { "s" },
        if measured {
            format!(
                "measured on this installation over {samples} step{}",
                if samples == 1 { "" } else { "s" }
            )
        } else {
            "no step of this kind has been measured here yet: a built-in assumption".into()
        },
        if kind == StepKind::Train {
            "an upper bound (early stopping may end sooner), evaluation not included"
        } else {
            "combining and publishing not included"
        }
    );
    Ok(Estimate {
        step_kind: kind,
        device_kind: device,
        model_size: size.to_owned(),
        units,
        unit,
        seconds_per_unit,
        measured,
        samples,
        device_hours,
        price_per_hour: price.as_ref().map(|p| p.0),
        currency: price.as_ref().map(|p| p.1.clone()),
        cost: price.map(|p| p.0 * device_hours),
        month: month.to_string(),
        used_hours,
        committed_hours,
        quota_hours,
        remaining_hours,
        within_quota,
        counted: on_installation && quota_hours.is_some(),
        note,
    })
}

/// The device a new training or prediction run's steps go to now.
pub async fn device_now(state: &AppState, org_id: Uuid) -> ApiResult<DeviceKind> {
    Ok(
        if groundwork_store::models::gpu_worker_online(&state.pool, org_id).await? {
            DeviceKind::Gpu
        } else {
            DeviceKind::Cpu
        },
    )
}

/// The estimate of training `project` for `epochs` on `device`.
pub async fn train_estimate(
    state: &AppState,
    org_id: Uuid,
    project: &Project,
    epochs: usize,
    device: DeviceKind,
) -> ApiResult<Estimate> {
    let summary = groundwork_store::labels::summary(&state.pool, project.id, None).await?;
    let examples = summary.labelled_windows.train.max(0) as f64;
    estimate_units(
        state,
        org_id,
        project,
        StepKind::Train,
        device,
        examples * epochs as f64,
    )
    .await
}

/// The estimate of mapping `project`'s acquired windows on `device`.
pub async fn predict_estimate(
    state: &AppState,
    org_id: Uuid,
    project: &Project,
    device: DeviceKind,
) -> ApiResult<Estimate> {
    let counts = groundwork_store::windows::counts(&state.pool, project.id).await?;
    #[expect(clippy::cast_precision_loss, reason = "a window count")]
    let windows = counts.acquired.max(0) as f64;
    predict_estimate_for(state, org_id, project, device, windows).await
}

/// The estimate of mapping `windows` windows of `project` on `device` (a monitoring prediction
/// maps every window of its area).
pub async fn predict_estimate_for(
    state: &AppState,
    org_id: Uuid,
    project: &Project,
    device: DeviceKind,
    windows: f64,
) -> ApiResult<Estimate> {
    estimate_units(state, org_id, project, StepKind::Predict, device, windows).await
}

/// `POST /api/v1/projects/{id}/estimate`.
pub async fn estimate(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    body: EstimateRequest,
) -> ApiResult<Estimate> {
    let project = projects::get(&state.pool, actor.org_id, project_id).await?;
    let device = device_now(state, actor.org_id).await?;
    match body.kind.as_str() {
        "train" => {
            if body.epochs.is_some_and(|e| !(1..=500).contains(&e)) {
                return Err(ApiError::validation(vec![FieldError {
                    field: "epochs".into(),
                    message: "must be 1–500".into(),
                }]));
            }
            let args = groundwork_worker::steps::TrainArgs {
                epochs: body.epochs,
                ..Default::default()
            };
            train_estimate(state, actor.org_id, &project, args.planned_epochs(), device).await
        }
        "predict" => predict_estimate(state, actor.org_id, &project, device).await,
        _ => Err(ApiError::validation(vec![FieldError {
            field: "kind".into(),
            message: "must be train or predict".into(),
        }])),
    }
}

/// Whether a run with `estimate` starts now (`false`) or waits for an administrator (`true`); a run
/// over the quota without `request_approval` is refused (429 `quota_exceeded`, the estimate in
/// `details`).
pub fn over_quota(estimate: &Estimate, request_approval: bool) -> ApiResult<bool> {
    if estimate.within_quota {
        return Ok(false);
    }
    if request_approval {
        return Ok(true);
    }
    Err(quota_refusal(estimate))
}

/// The 429 `quota_exceeded` of a run with `estimate`, the estimate in `details`.
fn quota_refusal(estimate: &Estimate) -> ApiError {
    let mut e = ApiError::new(
        ErrorCode::QuotaExceeded,
        format!(
            "this run needs about {:.2} {}-hours, and the organisation has {:.2} of its {:.2} {} device-hours \
             left for {}{}: start it with request_approval to wait for an administrator's approval, or ask for a \
             larger quota",
            estimate.device_hours,
            estimate.device_kind.name().to_uppercase(),
            estimate.remaining_hours.unwrap_or(0.0),
            estimate.quota_hours.unwrap_or(0.0),
            estimate.device_kind.name().to_uppercase(),
            estimate.month,
            if estimate.committed_hours > 0.005 {
                format!(
                    " ({:.2} of them held by runs not yet finished)",
                    estimate.committed_hours
                )
            } else {
                String::new()
            },
        ),
    );
    e.details = serde_json::to_value(estimate).unwrap_or_default();
    e
}

/// The quota a run with `estimate` must fit in when it is created (checked again there, under the
/// organisation's lock); `None` when no quota counts it.
pub fn quota_check(
    estimate: &Estimate,
    request_approval: bool,
) -> Option<groundwork_store::jobs::QuotaCheck> {
    let quota_hours = estimate.quota_hours.filter(|_| estimate.counted)?;
    Some(groundwork_store::jobs::QuotaCheck {
        device_kind: estimate.device_kind,
        quota_hours,
        used_hours: estimate.used_hours,
        device_hours: estimate.device_hours,
        request_approval,
    })
}

/// Creates a run with `estimate` (held for approval when `held`), its quota checked again under the
/// organisation's lock: a run that another, just created, left without room is refused like
/// [`over_quota`] refuses it, with the estimate recounted.
pub async fn create_estimated_run(
    state: &AppState,
    org_id: Uuid,
    project_id: Uuid,
    steps: &[groundwork_store::jobs::NewStep],
    idempotency_key: Option<&str>,
    estimate: &Estimate,
    (held, request_approval): (bool, bool),
) -> ApiResult<groundwork_store::jobs::RunWithSteps> {
    let extras = groundwork_store::jobs::RunExtras {
        estimate: Some(serde_json::json!(estimate)),
        awaiting_approval: held,
        quota: quota_check(estimate, request_approval),
    };
    match groundwork_store::jobs::create_run_with(
        &state.pool,
        org_id,
        project_id,
        steps,
        idempotency_key,
        &extras,
    )
    .await
    {
        Err(groundwork_store::Error::QuotaExceeded { committed_hours }) => {
            let mut recounted = estimate.clone();
            recounted.committed_hours = committed_hours;
            recounted.remaining_hours = recounted
                .quota_hours
                .map(|q| usage::remaining_hours(q, recounted.used_hours, committed_hours));
            recounted.within_quota = false;
            Err(quota_refusal(&recounted))
        }
        other => Ok(other?),
    }
}

/// An organisation's device time in a month.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Usage {
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// One row per device kind.
    pub devices: Vec<DeviceUsage>,
}

/// `GET /api/v1/usage`: the organisation's device time in `month` (default: this month). Admins.
pub async fn org_usage(state: &AppState, actor: &Actor, month: Option<&str>) -> ApiResult<Usage> {
    actor.require(Role::Admin)?;
    let month = match month {
        None => Month::now(),
        Some(m) => m
            .parse()
            .map_err(|e: String| ApiError::new(ErrorCode::InvalidQuery, format!("month: {e}")))?,
    };
    Ok(Usage {
        month: month.to_string(),
        devices: usage::month_usage(&state.pool, actor.org_id, month).await?,
    })
}
