//! Result pages: an output's map (`/outputs/{id}`), a training run's evaluation report
//! (`/runs/{id}/evaluation`), the "Results" section of a project's page (outputs, training curves,
//! evaluations) and its buttons that start training and prediction through the service layer.

use super::error::PageResult;
use super::{Layout, Nav, when};
use crate::api::AppState;
use crate::api::auth::{Actor, Role};
use crate::api::error::ApiError;
use crate::api::extract::Path;
use crate::service::models::{self as service, PredictRequest, TrainRequest};
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use groundwork_store::jobs::RunWithSteps;
use groundwork_store::models::{self, Evaluation, TrainingEpoch};
use groundwork_store::outputs::{self, Output};
use groundwork_store::projects::{self, Project};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use uuid::Uuid;

/// Outputs, training runs and evaluations a project's page lists.
const RESULTS_SHOWN: i64 = 10;

/// A number for people: three significant decimals at most, `–` for none.
fn num(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if !v.is_finite() => "–".into(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 100.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// A coordinate of the chart, rounded for the markup.
fn px(v: f64) -> String {
    format!("{v:.1}")
}

// ---------------------------------------------------------------------------------------------
// Training curves
// ---------------------------------------------------------------------------------------------

/// Size of a training chart's `viewBox`.
pub const CHART_W: f64 = 560.0;
/// Height of the `viewBox`.
pub const CHART_H: f64 = 240.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 56.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 44.0;

/// A labelled tick of an axis.
pub struct Tick {
    /// Position along the axis (x for the epoch axis, y for the others).
    pub at: String,
    /// Its label.
    pub label: String,
}

/// A point of one of the lines.
pub struct Dot {
    /// x.
    pub x: String,
    /// y.
    pub y: String,
    /// Which line (`train-loss`, `val-loss`, `val-metric`).
    pub series: &'static str,
}

/// A row of the chart's text alternative.
pub struct CurveRow {
    /// Epoch.
    pub epoch: i32,
    /// `frozen` or `fine-tune` (as the trainer names it).
    pub phase: String,
    /// Training loss.
    pub train_loss: String,
    /// Validation loss.
    pub val_loss: String,
    /// Validation metric.
    pub val_metric: String,
}

/// A training run's loss and metric per epoch as an inline SVG chart and a table.
pub struct Chart {
    /// Name of the validation metric (`accuracy`, `miou`, `rmse`, …).
    pub metric: String,
    /// `points` of the training-loss polyline.
    pub train_line: String,
    /// `points` of the validation-loss polyline.
    pub val_line: String,
    /// `points` of the validation-metric polyline.
    pub metric_line: String,
    /// Every point, drawn as a dot (a single epoch has no line).
    pub dots: Vec<Dot>,
    /// Epoch ticks.
    pub x_ticks: Vec<Tick>,
    /// Loss ticks (left axis).
    pub loss_ticks: Vec<Tick>,
    /// Metric ticks (right axis).
    pub metric_ticks: Vec<Tick>,
    /// One sentence about the last epoch (the chart's description).
    pub summary: String,
    /// The text alternative, one row per epoch.
    pub rows: Vec<CurveRow>,
}

/// The smallest of 1, 2, 2.5 and 5 times a power of ten that is at least `v` (> 0).
fn nice(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= v * (1.0 - 1e-9))
        .unwrap_or(10.0 * p)
}

/// An axis from `lo` (0 or below) to at least `max` in four nice steps: `(lo, hi, step)`.
fn axis(lo: f64, max: f64) -> (f64, f64, f64) {
    let span = (max - lo).max(1e-9);
    let step = nice(span / 4.0);
    let lo = (lo / step).floor() * step;
    let step = if lo + 4.0 * step < max {
        nice(step * 1.01)
    } else {
        step
    };
    (lo, lo + 4.0 * step, step)
}

fn ticks(lo: f64, step: f64, to_pos: impl Fn(f64) -> f64) -> Vec<Tick> {
    let decimals = if step.fract().abs() < 1e-9 {
        0
    } else if (step * 10.0).fract().abs() < 1e-9 {
        1
    } else if (step * 100.0).fract().abs() < 1e-9 {
        2
    } else {
        3
    };
    (0..=4)
        .map(|k| {
            let v = lo + step * f64::from(k);
            Tick {
                at: px(to_pos(v)),
                label: format!("{v:.decimals$}"),
            }
        })
        .collect()
}

impl Chart {
    /// The chart of a run's epochs (in the order the API returns them).
    #[must_use]
    pub fn new(epochs: &[TrainingEpoch]) -> Self {
        let metric = epochs
            .iter()
            .rev()
            .map(|e| e.metric.clone())
            .find(|m| !m.is_empty())
            .unwrap_or_else(|| "metric".into());
        let n = epochs.len();
        let (pw, ph) = (CHART_W - LEFT - RIGHT, CHART_H - TOP - BOTTOM);
        #[expect(clippy::cast_precision_loss, reason = "epoch counts")]
        let x = |i: usize| {
            if n > 1 {
                LEFT + pw * i as f64 / (n - 1) as f64
            } else {
                LEFT + pw / 2.0
            }
        };
        let finite = |v: &Option<f64>| v.filter(|v| v.is_finite());
        let loss_max = epochs
            .iter()
            .flat_map(|e| [Some(e.train_loss), e.val_loss])
            .filter_map(|v| finite(&v))
            .fold(0.0_f64, f64::max);
        let (_, loss_hi, loss_step) = axis(0.0, if loss_max > 0.0 { loss_max } else { 1.0 });
        let metrics: Vec<f64> = epochs
            .iter()
            .filter_map(|e| finite(&e.val_metric))
            .collect();
        let m_min = metrics.iter().copied().fold(0.0_f64, f64::min);
        let m_max = metrics.iter().copied().fold(1.0_f64, f64::max);
        let (m_lo, m_hi, m_step) = axis(m_min, m_max);
        let loss_y = |v: f64| TOP + ph * (1.0 - (v / loss_hi).clamp(0.0, 1.0));
        let metric_y = |v: f64| TOP + ph * (1.0 - ((v - m_lo) / (m_hi - m_lo)).clamp(0.0, 1.0));
        let mut lines = [String::new(), String::new(), String::new()];
        let mut dots = Vec::new();
        for (i, e) in epochs.iter().enumerate() {
            let values = [
                (Some(e.train_loss), "train-loss", true),
                (e.val_loss, "val-loss", true),
                (e.val_metric, "val-metric", false),
            ];
            for (k, (v, series, is_loss)) in values.into_iter().enumerate() {
                let Some(v) = finite(&v) else { continue };
                let y = if is_loss { loss_y(v) } else { metric_y(v) };
                let line = &mut lines[k];
                if !line.is_empty() {
                    line.push(' ');
                }
                let _ = write!(line, "{},{}", px(x(i)), px(y));
                dots.push(Dot {
                    x: px(x(i)),
                    y: px(y),
                    series,
                });
            }
        }
        let step = n.div_ceil(10).max(1);
        let x_ticks = epochs
            .iter()
            .enumerate()
            .filter(|(i, _)| i % step == 0 || *i + 1 == n)
            .map(|(i, e)| Tick {
                at: px(x(i)),
                label: e.epoch.to_string(),
            })
            .collect();
        let summary = match epochs.last() {
            None => "No epoch has finished yet.".into(),
            Some(e) => format!(
                "{n} epoch{} recorded; after epoch {}: training loss {}, validation loss {}, validation {metric} {}.",
                if n == 1 { "" } else { "s" },
                e.epoch,
                num(Some(e.train_loss)),
                num(e.val_loss),
                num(e.val_metric),
            ),
        };
        let [train_line, val_line, metric_line] = lines;
        Self {
            train_line,
            val_line,
            metric_line,
            dots,
            x_ticks,
            loss_ticks: ticks(0.0, loss_step, loss_y),
            metric_ticks: ticks(m_lo, m_step, metric_y),
            summary,
            rows: epochs
                .iter()
                .map(|e| CurveRow {
                    epoch: e.epoch,
                    phase: e.phase.clone(),
                    train_loss: num(Some(e.train_loss)),
                    val_loss: num(e.val_loss),
                    val_metric: num(e.val_metric),
                })
                .collect(),
            metric,
        }
    }

    /// x of the plot's left edge.
    #[must_use]
    pub fn left(&self) -> String {
        px(LEFT)
    }

    /// x of the plot's right edge.
    #[must_use]
    pub fn right(&self) -> String {
        px(CHART_W - RIGHT)
    }

    /// y of the plot's top edge.
    #[must_use]
    pub fn top(&self) -> String {
        px(TOP)
    }

    /// y of the plot's bottom edge.
    #[must_use]
    pub fn bottom(&self) -> String {
        px(CHART_H - BOTTOM)
    }

    /// y of the epoch tick labels.
    #[must_use]
    pub fn x_label_y(&self) -> String {
        px(CHART_H - BOTTOM + 16.0)
    }

    /// x of the right axis' tick labels.
    #[must_use]
    pub fn right_label_x(&self) -> String {
        px(CHART_W - RIGHT + 6.0)
    }

    /// x of the left axis' tick labels.
    #[must_use]
    pub fn left_label_x(&self) -> String {
        px(LEFT - 6.0)
    }
}

// ---------------------------------------------------------------------------------------------
// The project page's results
// ---------------------------------------------------------------------------------------------

/// An output as the project page lists it.
pub struct OutputRow {
    /// The output.
    pub output: Output,
    /// When it was published.
    pub created: String,
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
    /// Whether a trained model exists to predict with.
    pub has_model: bool,
    /// A refusal of the train or predict buttons.
    pub error: String,
}

/// The headline of a report: `accuracy 0.850 (baseline 0.610)` or the regression errors.
fn headline(report: &Value) -> String {
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
            output,
        })
        .collect();
    let mut training = Vec::new();
    let mut has_model = false;
    for r in models::training_runs(pool, actor.org_id, project_id, RESULTS_SHOWN).await? {
        has_model |= r.state == "succeeded";
        let epochs = models::training_curve(pool, actor.org_id, r.run_id).await?;
        training.push(TrainingView {
            run_id: r.run_id,
            state: r.state,
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
    Ok(Results {
        outputs,
        training,
        evaluations,
        has_model,
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
        Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => {
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
) -> PageResult<Response> {
    actor.require(Role::Member)?;
    let result = service::start_training(&state, &actor, id, None, TrainRequest::default()).await;
    started(&state, &actor, id, result).await
}

/// `POST /projects/{id}/predict`: maps the project with its newest trained model (the same service function as the API).
pub async fn predict(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> PageResult<Response> {
    actor.require(Role::Member)?;
    let result =
        service::start_prediction(&state, &actor, id, None, PredictRequest::default()).await;
    started(&state, &actor, id, result).await
}

// ---------------------------------------------------------------------------------------------
// The map of an output
// ---------------------------------------------------------------------------------------------

/// A legend entry of a class map (or a probability map's bands).
pub struct LegendRow {
    /// Raster value or band.
    pub value: String,
    /// Name.
    pub name: String,
    /// `#rrggbb`.
    pub color: String,
}

/// The colour ramp of probability and value maps.
pub struct Ramp {
    /// What the ramp shows.
    pub label: String,
    /// Its low end.
    pub min: String,
    /// Its high end.
    pub max: String,
    /// The CSS gradient of the ramp.
    pub css: &'static str,
}

/// A line of the lineage summary.
pub struct Fact {
    /// What.
    pub term: String,
    /// Its value.
    pub value: String,
    /// A page it links to, if any.
    pub href: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "output.html")]
struct OutputPage {
    layout: Layout,
    output: Output,
    project: Project,
    created: String,
    tiles_url: String,
    bounds_json: String,
    legend: Vec<LegendRow>,
    ramp: Option<Ramp>,
    tif_url: String,
    geojson_url: String,
    stac_url: String,
    lineage: Vec<Fact>,
}

/// Viridis at the stops the tile renderer uses, as a CSS gradient.
pub const RAMP_CSS: &str = "linear-gradient(to right, #440154, #472c7a, #3b518b, #2c718e, #21908d, #27ad81, #5cc863, #aadc32, #fde725)";

fn fact(term: &str, value: impl Into<String>) -> Fact {
    Fact {
        term: term.into(),
        value: value.into(),
        href: String::new(),
    }
}

/// The model lineage of an output, in a few lines.
fn lineage_facts(lineage: &Value) -> Vec<Fact> {
    let mut facts = Vec::new();
    if let Some(kind) = lineage["model"]["kind"].as_str() {
        let size = lineage["model"]["model_size"]
            .as_str()
            .or_else(|| lineage["project"]["model_size"].as_str());
        facts.push(fact(
            "Model",
            match size {
                Some(s) => format!("{kind} ({s})"),
                None => kind.to_owned(),
            },
        ));
    }
    if let Some(run) = lineage["training_run_id"].as_str() {
        facts.push(Fact {
            term: "Training run".into(),
            value: run.to_owned(),
            href: format!("/runs/{run}/evaluation"),
        });
    }
    if let Some(v) = lineage["label_set_version"].as_i64() {
        facts.push(fact("Label-set version", v.to_string()));
    }
    let validation = &lineage["metrics"]["validation"];
    if let Some(v) = validation["val_metric"].as_f64() {
        let name = validation["metric"].as_str().unwrap_or("metric");
        let epoch = validation["best_epoch"]
            .as_i64()
            .map(|e| format!(" (best epoch {e})"))
            .unwrap_or_default();
        facts.push(fact(
            "Validation",
            format!("{name} {}{epoch}", num(Some(v))),
        ));
    }
    let test = &lineage["metrics"]["test"];
    if test.is_object() {
        let windows = test["windows"]
            .as_i64()
            .map(|w| format!(" on {w} test windows"))
            .unwrap_or_default();
        facts.push(fact("Test", format!("{}{windows}", headline(test))));
    }
    if let Some(sha) = lineage["checkpoint_sha256"].as_str() {
        facts.push(fact(
            "Checkpoint",
            format!("sha256 {}…", &sha[..sha.len().min(12)]),
        ));
    }
    if let Some(scenes) = lineage["input_scenes"].as_array() {
        facts.push(fact("Input scenes", scenes.len().to_string()));
    }
    if let Some(r) = lineage["resolution_m"].as_f64() {
        facts.push(fact("Resolution", format!("{r} m")));
    }
    facts
}

/// `GET /outputs/{id}`: the output's tiles on a map with its legend, downloads and lineage.
pub async fn output_map(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> PageResult<impl IntoResponse> {
    let output = outputs::get(&state.pool, actor.org_id, id).await?;
    let project = projects::get(&state.pool, actor.org_id, output.project_id).await?;
    let classes: Vec<groundwork_imagery::publish::LegendClass> =
        serde_json::from_value(output.classes.clone()).unwrap_or_default();
    let (legend, ramp) = match output.kind.as_str() {
        "class" => (
            classes
                .iter()
                .map(|c| LegendRow {
                    value: c.id.to_string(),
                    name: c.name.clone(),
                    color: c.color.clone(),
                })
                .collect(),
            None,
        ),
        "probability" => (
            Vec::new(),
            Some(Ramp {
                label: format!(
                    "Probability of {}",
                    classes
                        .first()
                        .map_or("the first class", |c| c.name.as_str())
                ),
                min: "0".into(),
                max: "1".into(),
                css: RAMP_CSS,
            }),
        ),
        _ => (
            Vec::new(),
            Some(Ramp {
                label: "Predicted value".into(),
                min: num(output.stats.get("min").and_then(Value::as_f64)),
                max: num(output.stats.get("max").and_then(Value::as_f64)),
                css: RAMP_CSS,
            }),
        ),
    };
    let [w, s, e, n] = output.bbox;
    Ok(OutputPage {
        layout: Layout::new(
            &state,
            &actor,
            format!("Map · {}", project.name),
            Nav::Projects,
        )
        .await,
        created: when(&output.created_at),
        tiles_url: format!("/api/v1/outputs/{id}/tiles/{{z}}/{{x}}/{{y}}.png"),
        bounds_json: serde_json::json!([w, s, e, n]).to_string(),
        legend,
        ramp,
        tif_url: format!("/api/v1/outputs/{id}/download.tif"),
        geojson_url: if output.kind == "class" {
            format!("/api/v1/outputs/{id}/download.geojson")
        } else {
            String::new()
        },
        stac_url: format!("/api/v1/projects/{}/stac/items/{id}", project.id),
        lineage: lineage_facts(&output.lineage),
        output,
        project,
    })
}

// ---------------------------------------------------------------------------------------------
// The evaluation report
// ---------------------------------------------------------------------------------------------

/// A ratio shown as text with a bar.
pub struct Score {
    /// `0.823`.
    pub text: String,
    /// Bar width in percent.
    pub pct: String,
}

impl Score {
    fn of(v: Option<f64>) -> Self {
        Self {
            text: num(v),
            pct: format!("{:.1}", v.unwrap_or(0.0).clamp(0.0, 1.0) * 100.0),
        }
    }
}

/// A class's scores.
pub struct ClassScore {
    /// Name.
    pub name: String,
    /// `#rrggbb`.
    pub color: String,
    /// Precision.
    pub precision: Score,
    /// Recall.
    pub recall: Score,
    /// F1.
    pub f1: Score,
    /// Test samples of the class.
    pub support: String,
}

/// A cell of the confusion matrix.
pub struct Cell {
    /// The count.
    pub count: u64,
    /// Share of the row (the true class), 0–1, for the shading.
    pub share: String,
    /// Whether the shading is dark enough to need light text.
    pub dark: bool,
    /// Predicted class.
    pub predicted: String,
    /// Whether it is on the diagonal.
    pub correct: bool,
}

/// A row of the confusion matrix (one true class).
pub struct MatrixRow {
    /// The true class.
    pub name: String,
    /// Its cells, one per predicted class.
    pub cells: Vec<Cell>,
    /// Row total.
    pub total: u64,
}

/// The metrics of one model of a report.
pub struct ModelReport {
    /// `model` or `baseline`.
    pub key: &'static str,
    /// Heading.
    pub title: String,
    /// Headline numbers `(label, value)`.
    pub headline: Vec<(String, String)>,
    /// Per-class scores (classification and segmentation).
    pub per_class: Vec<ClassScore>,
    /// Column names of the matrix (the predicted classes).
    pub columns: Vec<String>,
    /// The confusion matrix, empty for regression.
    pub matrix: Vec<MatrixRow>,
}

impl ModelReport {
    fn new(key: &'static str, title: String, m: &Value, names: &[(String, String)]) -> Self {
        let mut headline = Vec::new();
        let mut add = |label: &str, field: &str| {
            if let Some(v) = m.get(field).filter(|v| !v.is_null()) {
                headline.push((label.to_owned(), num(v.as_f64())));
            }
        };
        add("Accuracy", "accuracy");
        add("Macro F1", "macro_f1");
        add("mIoU", "miou");
        add("MAE", "mae");
        add("RMSE", "rmse");
        add("R²", "r2");
        if let Some(n) = m.get("samples").and_then(Value::as_u64) {
            headline.push(("Test samples".into(), n.to_string()));
        }
        let name = |i: usize| {
            names
                .get(i)
                .cloned()
                .unwrap_or_else(|| (format!("class {i}"), "#888888".into()))
        };
        let per_class = m["per_class"]
            .as_array()
            .map(|list| {
                list.iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let idx = c["index"]
                            .as_u64()
                            .and_then(|v| usize::try_from(v).ok())
                            .unwrap_or(i);
                        let (name, color) = name(idx);
                        ClassScore {
                            name,
                            color,
                            precision: Score::of(c["precision"].as_f64()),
                            recall: Score::of(c["recall"].as_f64()),
                            f1: Score::of(c["f1"].as_f64()),
                            support: c["support"].as_u64().unwrap_or(0).to_string(),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let counts: Vec<Vec<u64>> = m["confusion_matrix"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        r.as_array()
                            .map(|r| r.iter().map(|c| c.as_u64().unwrap_or(0)).collect())
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let columns: Vec<String> = (0..counts.len()).map(|i| name(i).0).collect();
        let matrix = counts
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let total: u64 = row.iter().sum();
                MatrixRow {
                    name: name(i).0,
                    total,
                    cells: row
                        .iter()
                        .enumerate()
                        .map(|(j, &count)| {
                            #[expect(clippy::cast_precision_loss, reason = "counts to shares")]
                            let share = if total == 0 {
                                0.0
                            } else {
                                count as f64 / total as f64
                            };
                            Cell {
                                count,
                                share: format!("{share:.3}"),
                                dark: share > 0.55,
                                predicted: name(j).0,
                                correct: i == j,
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        Self {
            key,
            title,
            headline,
            per_class,
            columns,
            matrix,
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "evaluation.html")]
struct EvaluationPage {
    layout: Layout,
    project: Project,
    evaluation: Evaluation,
    created: String,
    task: String,
    windows: String,
    label_set_version: String,
    models: Vec<ModelReport>,
}

/// `GET /runs/{id}/evaluation`: the run's latest report, fine-tuned model and baseline side by side.
pub async fn evaluation(
    State(state): State<AppState>,
    actor: Actor,
    Path(run_id): Path<Uuid>,
) -> PageResult<impl IntoResponse> {
    let evaluation = models::run_evaluation(&state.pool, actor.org_id, run_id).await?;
    let project = projects::get(&state.pool, actor.org_id, evaluation.project_id).await?;
    let report = &evaluation.report;
    let by_id: BTreeMap<i64, (String, String)> = project
        .classes
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|c| {
                    Some((
                        c["id"].as_i64()?,
                        (
                            c["name"].as_str().unwrap_or_default().to_owned(),
                            c["color"].as_str().unwrap_or("#888888").to_owned(),
                        ),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    // The report's class order is the model's (`class_ids`); without it, the project's ids in order.
    let names: Vec<(String, String)> = match report["class_ids"].as_array() {
        Some(ids) => ids
            .iter()
            .map(|id| {
                let id = id.as_i64().unwrap_or(-1);
                by_id
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| (format!("class {id}"), "#888888".into()))
            })
            .collect(),
        None => by_id.values().cloned().collect(),
    };
    let mut reports = Vec::new();
    if report["model"].is_object() {
        reports.push(ModelReport::new(
            "model",
            "Fine-tuned model".into(),
            &report["model"],
            &names,
        ));
    }
    if report["baseline"].is_object() {
        let method = report["baseline"]["method"]
            .as_str()
            .map(|m| format!(" ({})", m.replace('_', " ")))
            .unwrap_or_default();
        reports.push(ModelReport::new(
            "baseline",
            format!("Frozen baseline{method}"),
            &report["baseline"],
            &names,
        ));
    }
    Ok(EvaluationPage {
        layout: Layout::new(
            &state,
            &actor,
            format!("Evaluation · {}", project.name),
            Nav::Projects,
        )
        .await,
        created: when(&evaluation.created_at),
        task: report["task"]
            .as_str()
            .unwrap_or(project.task.as_str())
            .to_owned(),
        windows: report["windows"]
            .as_u64()
            .map_or_else(|| "–".into(), |w| w.to_string()),
        label_set_version: evaluation
            .label_set_version
            .or_else(|| {
                report["label_set_version"]
                    .as_i64()
                    .and_then(|v| i32::try_from(v).ok())
            })
            .map_or_else(|| "–".into(), |v| v.to_string()),
        models: reports,
        evaluation,
        project,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(epoch: i32, train: f64, val: Option<f64>, metric: Option<f64>) -> TrainingEpoch {
        TrainingEpoch {
            step_id: Uuid::nil(),
            epoch,
            phase: "frozen".into(),
            train_loss: train,
            val_loss: val,
            val_metric: metric,
            metric: "rmse".into(),
            seconds: 1.0,
        }
    }

    #[test]
    fn a_chart_scales_its_axes_and_skips_missing_values() {
        let c = Chart::new(&[
            epoch(1, 4.0, None, Some(12.0)),
            epoch(2, 2.0, Some(f64::NAN), Some(6.0)),
        ]);
        assert_eq!(c.metric, "rmse");
        assert_eq!(c.rows.len(), 2);
        assert_eq!(c.rows[1].val_loss, "–");
        assert!(c.val_line.is_empty(), "no finite validation loss");
        assert_eq!(c.train_line, "56.0,16.0 504.0,106.0", "loss axis 0–4");
        assert_eq!(c.dots.len(), 4);
        let labels: Vec<&str> = c.metric_ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["0", "5", "10", "15", "20"]);
        assert!(c.summary.contains("after epoch 2"), "{}", c.summary);

        let one = Chart::new(&[epoch(1, 0.5, Some(0.6), Some(0.7))]);
        assert_eq!(
            one.train_line, "280.0,83.5",
            "loss axis 0–0.8 in steps of 0.2"
        );
        let labels: Vec<&str> = one.metric_ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["0.00", "0.25", "0.50", "0.75", "1.00"]);
        assert_eq!(one.x_ticks.len(), 1);
        let none = Chart::new(&[]);
        assert!(none.rows.is_empty() && none.dots.is_empty());
    }
}
