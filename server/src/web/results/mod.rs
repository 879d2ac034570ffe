//! Result pages: an output's map (`/outputs/{id}`), a training run's evaluation report
//! (`/runs/{id}/evaluation`), the "Results" section of a project's page (outputs, training curves,
//! evaluations) and its buttons that start training and prediction through the service layer.

mod chart;
mod evaluation;
mod map_extras;
mod output;

pub use chart::Chart;
pub use evaluation::evaluation;
pub(crate) use output::legend_and_ramp;
pub use output::{LegendRow, Ramp, create_share, output_map, revoke_share};

use super::error::PageResult;
use super::when;
use crate::api::AppState;
use crate::api::auth::{Actor, Role};
use crate::api::error::ApiError;
use crate::api::extract::Path;
use crate::service::models::{self as service, PredictRequest, TrainRequest};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use groundwork_store::jobs::RunWithSteps;
use groundwork_store::models::{self, Evaluation};
use groundwork_store::outputs::{self, Output};
use serde_json::Value;
use std::fmt::Write as _;
use uuid::Uuid;

/// Outputs, training runs and evaluations a project's page lists.
const RESULTS_SHOWN: i64 = 10;

/// A number for people: three significant decimals at most, `–` for none.
pub(super) fn num(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if !v.is_finite() => "–".into(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 100.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// Device-hours as shown: two significant decimals for small figures.
#[must_use]
pub fn hours(h: f64) -> String {
    if h < 0.01 && h > 0.0 {
        "under 0.01".into()
    } else {
        format!("{h:.2}")
    }
}

/// An estimate as the project page shows it beside the train and predict buttons.
pub struct EstimateView {
    /// "About 0.12 GPU-hours (0.30 EUR), measured on this installation; 8.50 of 10.00 GPU-hours left
    /// this month."
    pub sentence: String,
    /// It exceeds what is left of the quota: the form offers to wait for an administrator.
    pub over_quota: bool,
}

impl EstimateView {
    /// From the service's estimate.
    #[must_use]
    pub fn new(e: &crate::service::usage::Estimate) -> Self {
        let kind = e.device_kind.name().to_uppercase();
        let mut sentence = format!("About {} {kind}-hours", hours(e.device_hours));
        if let (Some(cost), Some(cur)) = (e.cost, &e.currency) {
            let _ = write!(sentence, " ({cost:.2} {cur})");
        }
        sentence.push_str(if e.measured {
            ", from steps measured on this installation"
        } else {
            ", a rough assumption until a step of this kind has been measured here"
        });
        if let (Some(left), Some(quota)) = (e.remaining_hours, e.quota_hours) {
            let _ = write!(
                sentence,
                "; {} of {} {kind}-hours left this month",
                hours(left),
                hours(quota)
            );
        }
        sentence.push('.');
        if !e.within_quota {
            sentence.push_str(
                " This exceeds what is left of the organisation's quota: tick “Wait for approval” to \
                 start it once an installation administrator approves it.",
            );
        }
        Self {
            sentence,
            over_quota: !e.within_quota,
        }
    }
}

/// Where a model's numbers come from: the encoder weights it started from, and the imagery it learnt
/// from; shown prominently wherever its metrics or maps are.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// `OlmoEarth v1 Nano (released checkpoint, sha256 …)`, `random initialisation …` or `unknown`.
    pub weights: String,
    /// The encoder started from random weights: the numbers say nothing of OlmoEarth's pretraining.
    pub random: bool,
    /// Why no checkpoint was used, when the training said.
    pub note: String,
    /// The acquisitions whose imagery the model learnt from (their run ids), or empty.
    pub imagery: String,
}

impl Provenance {
    /// From a `train` step's output or an output's lineage (both carry `initialised_from`,
    /// `encoder_sha256`, `initialisation_note` and `acquisition_runs`).
    #[must_use]
    pub fn of_training(fields: Option<&serde_json::Map<String, Value>>) -> Self {
        let get = |k: &str| fields.and_then(|f| f.get(k));
        let from = get("initialised_from").and_then(Value::as_str);
        let sha = get("encoder_sha256").and_then(Value::as_str);
        let random = from == Some("random");
        let weights = match from {
            Some("random") => {
                "random initialisation: no released OlmoEarth checkpoint was used".to_string()
            }
            Some(name) => match sha {
                Some(sha) => format!(
                    "{name} (released checkpoint, sha256 {}…)",
                    &sha[..sha.len().min(16)]
                ),
                None => format!("{name} (released checkpoint)"),
            },
            None => "not recorded".to_string(),
        };
        let imagery = get("acquisition_runs")
            .and_then(Value::as_array)
            .map(|runs| {
                runs.iter()
                    .filter_map(Value::as_str)
                    .map(|r| format!("acquisition {}…", &r[r.len().saturating_sub(8)..]))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        Self {
            weights,
            random,
            note: get("initialisation_note")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            imagery,
        }
    }
}

/// An output as the project page lists it.
pub struct OutputRow {
    /// The output.
    pub output: Output,
    /// When it was published.
    pub created: String,
    /// The period it maps (and whether it is another area than the project's), in words; empty for
    /// maps that do not record it.
    pub period: String,
}

/// The period an output maps, from its lineage: `Apr 2025 – May 2025`, `· another area` when the
/// prediction was of another area than the project's.
fn period_of(lineage: &serde_json::Value) -> String {
    let p = &lineage["period"];
    let month = |k: &str| {
        p[k].as_str()
            .and_then(|d| d.parse::<chrono::NaiveDate>().ok())
            .map(|d| d.format("%b %Y").to_string())
    };
    match (month("start"), month("end")) {
        (Some(a), Some(b)) => {
            let span = if a == b { a } else { format!("{a} – {b}") };
            if p["area"] == "given" {
                format!("{span} · another area")
            } else {
                span
            }
        }
        _ => String::new(),
    }
}

/// A training run with its curve.
pub struct TrainingView {
    /// The run.
    pub run_id: Uuid,
    /// State of its `train` step.
    pub state: String,
    /// When it started.
    pub created: String,
    /// Its curve.
    pub chart: Chart,
}

/// An evaluation as the project page lists it.
pub struct EvaluationRow {
    /// The evaluation.
    pub evaluation: Evaluation,
    /// When it was written.
    pub created: String,
    /// The headline numbers, model against baseline.
    pub headline: String,
}

/// The project page's "Results" section.
pub struct Results {
    /// Published outputs, newest first.
    pub outputs: Vec<OutputRow>,
    /// Training runs, newest first.
    pub training: Vec<TrainingView>,
    /// Evaluation reports, newest first.
    pub evaluations: Vec<EvaluationRow>,
    /// Trained models a prediction can use, newest first, the default marked.
    pub models: Vec<ModelOption>,
    /// A refusal of the train or predict buttons.
    pub error: String,
}

/// A trained model in the predict form's choice.
pub struct ModelOption {
    /// The training run.
    pub run_id: Uuid,
    /// What the option says.
    pub label: String,
    /// Whether it is the default (best validation score).
    pub best: bool,
}

impl From<service::ModelChoice> for ModelOption {
    fn from(c: service::ModelChoice) -> Self {
        let run = c.run_id.to_string();
        let mut label = format!("Run {}…", &run[run.len() - 8..]);
        if let Some(m) = &c.model {
            let _ = write!(label, " · {m}");
        }
        if let Some(v) = c.val_metric {
            let _ = write!(
                label,
                " · validation {} {}",
                c.metric.as_deref().unwrap_or("score"),
                num(Some(v))
            );
        }
        if let Some(v) = c.label_set_version {
            let _ = write!(label, " · labels v{v}");
        }
        if c.initialised_from.as_deref() == Some("random") {
            label.push_str(" · random encoder weights");
        }
        if c.best {
            label.push_str(" (best)");
        }
        Self {
            run_id: c.run_id,
            label,
            best: c.best,
        }
    }
}

/// The headline of a report: `accuracy 0.850 (baseline 0.610)` or the regression errors.
pub(super) fn headline(report: &Value) -> String {
    let pick = |m: &Value| -> Option<String> {
        if m.get("accuracy").is_some() {
            let mut s = format!("accuracy {}", num(m["accuracy"].as_f64()));
            if let Some(miou) = m.get("miou").and_then(Value::as_f64) {
                let _ = write!(s, ", mIoU {}", num(Some(miou)));
            }
            Some(s)
        } else if m.get("mae").is_some() {
            Some(format!(
                "MAE {}, RMSE {}, R² {}",
                num(m["mae"].as_f64()),
                num(m["rmse"].as_f64()),
                num(m["r2"].as_f64())
            ))
        } else {
            None
        }
    };
    match (pick(&report["model"]), pick(&report["baseline"])) {
        (Some(m), Some(b)) => format!("{m} (baseline: {b})"),
        (Some(m), None) => m,
        _ => "no metrics".into(),
    }
}

/// Reads the results of a project of the actor's organisation.
pub async fn results(state: &AppState, actor: &Actor, project_id: Uuid) -> PageResult<Results> {
    let pool = &state.pool;
    let outputs = outputs::list(pool, actor.org_id, project_id, None, RESULTS_SHOWN)
        .await?
        .into_iter()
        .map(|output| OutputRow {
            created: when(&output.created_at),
            period: period_of(&output.lineage),
            output,
        })
        .collect();
    let mut training = Vec::new();
    for r in models::training_runs(pool, actor.org_id, project_id, RESULTS_SHOWN).await? {
        let epochs = models::training_curve(pool, actor.org_id, r.run_id).await?;
        training.push(TrainingView {
            run_id: r.run_id,
            state: r.state.to_string(),
            created: when(&r.created_at),
            chart: Chart::new(&epochs),
        });
    }
    let evaluations =
        models::project_evaluations(pool, actor.org_id, project_id, None, RESULTS_SHOWN)
            .await?
            .into_iter()
            .map(|evaluation| EvaluationRow {
                created: when(&evaluation.created_at),
                headline: headline(&evaluation.report),
                evaluation,
            })
            .collect();
    let models = service::model_choices(state, actor, project_id)
        .await?
        .into_iter()
        .map(ModelOption::from)
        .collect();
    Ok(Results {
        outputs,
        training,
        evaluations,
        models,
        error: String::new(),
    })
}

/// What a train or predict button does with the service's answer: to the new run, or the project
/// page again with the refusal in its "Results" section.
async fn started(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    result: Result<RunWithSteps, ApiError>,
) -> PageResult<Response> {
    match result {
        Ok(run) => {
            Ok(Redirect::to(&format!("/projects/{project_id}#run-{}", run.run.id)).into_response())
        }
        // What the project still lacks (409) or a setting it refuses (422): said next to the buttons.
        Err(e)
            if e.status == StatusCode::UNPROCESSABLE_ENTITY || e.status == StatusCode::CONFLICT =>
        {
            super::projects::with_results_error(state, actor, project_id, super::error_text(&e))
                .await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /projects/{id}/train`: trains and evaluates a model with the defaults (the same service function as the API).
pub async fn train(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    body: axum::body::Bytes,
) -> PageResult<Response> {
    actor.require(Role::Member)?;
    // "Epochs" (optional, under "More settings"); what it cannot read is the service's field error.
    let epochs = super::form_pairs(&body)
        .into_iter()
        .find(|(k, _)| k == "epochs")
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    let request_approval = super::form_pairs(&body)
        .iter()
        .any(|(k, v)| k == "request_approval" && v == "on")
        .then_some(true);
    let request = match epochs.map(|v| v.parse::<usize>()) {
        None => TrainRequest {
            request_approval,
            ..TrainRequest::default()
        },
        Some(Ok(n)) => TrainRequest {
            epochs: Some(n),
            request_approval,
            ..TrainRequest::default()
        },
        Some(Err(_)) => {
            return super::projects::with_results_error(
                &state,
                &actor,
                id,
                "epochs: a whole number of 1–500".into(),
            )
            .await;
        }
    };
    let result = service::start_training(&state, &actor, id, None, request).await;
    started(&state, &actor, id, result).await
}

/// `POST /projects/{id}/predict`: maps the project with the chosen trained model (`run_id`), by default
/// the one with the best validation score (the same service function as the API).
pub async fn predict(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    body: axum::body::Bytes,
) -> PageResult<Response> {
    actor.require(Role::Member)?;
    let pairs = super::form_pairs(&body);
    // The model (under "Choose another model") and "Map another period" (both days, or neither).
    let fields = optional::<Uuid>(&pairs, "run_id", "model: choose one of the trained models")
        .and_then(|run| {
            let day = |field: &str, what: &str| {
                optional::<chrono::NaiveDate>(
                    &pairs,
                    field,
                    &format!("{what} of the period: give a date (YYYY-MM-DD)"),
                )
            };
            Ok((run, day("start", "first day")?, day("end", "last day")?))
        });
    let (run_id, start, end) = match fields {
        Ok(v) => v,
        Err(message) => {
            return super::projects::with_results_error(&state, &actor, id, message).await;
        }
    };
    let request = PredictRequest {
        run_id,
        request_approval: (super::form_value(&pairs, "request_approval") == "on").then_some(true),
        start,
        end,
        ..PredictRequest::default()
    };
    let result = service::start_prediction(&state, &actor, id, None, request).await;
    started(&state, &actor, id, result).await
}

/// An optional form field: `None` when empty, else its value, or `message` when it does not parse.
fn optional<T: std::str::FromStr>(
    pairs: &[(String, String)],
    field: &str,
    message: &str,
) -> Result<Option<T>, String> {
    match super::form_value(pairs, field).trim() {
        "" => Ok(None),
        v => v.parse().map(Some).map_err(|_| message.to_owned()),
    }
}

/// `POST /projects/{id}/schedule`: sets the project's schedule (cadence and change alert), or
/// removes it when the cadence is empty (the same service functions as the API).
pub async fn schedule(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    body: axum::body::Bytes,
) -> PageResult<Response> {
    actor.require(Role::Member)?;
    let pairs = super::form_pairs(&body);
    let cadence = super::form_value(&pairs, "cadence").trim().to_owned();
    let result = if cadence.is_empty() {
        match crate::service::schedules::delete(&state, &actor, id).await {
            Ok(()) => Ok(()),
            // No schedule to remove: nothing to do.
            Err(e) if e.status == StatusCode::NOT_FOUND => Ok(()),
            Err(e) => Err(e),
        }
    } else {
        let alert = match optional::<f64>(
            &pairs,
            "change_alert_km2",
            "change alert: give an area in km²",
        ) {
            Ok(alert) => alert,
            Err(message) => {
                return super::projects::with_results_error(&state, &actor, id, message).await;
            }
        };
        // The form sets the cadence and the alert; what the API set besides is kept.
        let kept = crate::service::schedules::get(&state, &actor, id)
            .await
            .ok()
            .map(|v| v.schedule);
        crate::service::schedules::set(
            &state,
            &actor,
            id,
            crate::service::schedules::SetSchedule {
                cadence,
                stac: kept.as_ref().map(|k| k.stac.clone()),
                profile: kept.as_ref().map(|k| k.profile.clone()),
                max_cloud: kept.as_ref().and_then(|k| k.max_cloud),
                run_id: kept.as_ref().and_then(|k| k.training_run_id),
                change_alert_km2: alert,
                first_run: None,
            },
        )
        .await
        .map(|_| ())
    };
    match result {
        Ok(()) => Ok(Redirect::to(&format!("/projects/{id}#schedule-heading")).into_response()),
        Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => {
            super::projects::with_results_error(&state, &actor, id, super::error_text(&e)).await
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::EstimateView;
    use crate::service::usage::Estimate;
    use groundwork_types::{DeviceKind, StepKind};

    fn estimate(hours: f64, remaining: Option<f64>, measured: bool) -> Estimate {
        Estimate {
            step_kind: StepKind::Predict,
            device_kind: DeviceKind::Gpu,
            model_size: "base".into(),
            units: 100.0,
            unit: "window".into(),
            seconds_per_unit: hours * 36.0,
            measured,
            samples: i32::from(measured),
            device_hours: hours,
            price_per_hour: Some(2.0),
            currency: Some("EUR".into()),
            cost: Some(hours * 2.0),
            month: "2026-12".into(),
            used_hours: 10.0 - remaining.unwrap_or(0.0),
            committed_hours: 0.0,
            quota_hours: remaining.map(|_| 10.0),
            remaining_hours: remaining,
            within_quota: remaining.is_none_or(|r| hours <= r),
            counted: remaining.is_some(),
            note: String::new(),
        }
    }

    #[test]
    fn an_estimate_says_hours_money_source_and_what_the_quota_leaves() {
        let e = EstimateView::new(&estimate(1.25, Some(8.5), true));
        assert!(!e.over_quota);
        assert_eq!(
            e.sentence,
            "About 1.25 GPU-hours (2.50 EUR), from steps measured on this installation; 8.50 of 10.00 GPU-hours left this month."
        );
        let e = EstimateView::new(&estimate(3.0, Some(1.0), false));
        assert!(e.over_quota);
        assert!(e.sentence.contains("a rough assumption"), "{}", e.sentence);
        assert!(e.sentence.contains("Wait for approval"), "{}", e.sentence);
        let e = EstimateView::new(&estimate(0.001, None, true));
        assert!(
            e.sentence.starts_with("About under 0.01 GPU-hours"),
            "{}",
            e.sentence
        );
        assert!(!e.sentence.contains("left this month"));
    }
}
