//! A training run's evaluation report (`/runs/{id}/evaluation`): scores per class and the confusion
//! matrix.

use super::num;
use crate::api::AppState;
use crate::api::auth::Actor;
use crate::api::extract::Path;
use crate::web::error::PageResult;
use crate::web::{Layout, Nav, when};
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::response::IntoResponse;
use groundwork_store::models::{self, Evaluation};
use groundwork_store::projects::{self, Project};
use serde_json::Value;
use std::collections::BTreeMap;
use uuid::Uuid;

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
        add("Accuracy within 30 m of a class edge", "edge_accuracy");
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
    /// Every candidate of the training run, on the test split.
    candidates: Vec<CandidateRow>,
    /// Why the published model was chosen.
    selection: Option<String>,
    /// Fine-tuning scored below the chosen, simpler model.
    fine_tuned_lost: bool,
    /// The metric the choice compared.
    selection_metric: String,
    /// What makes the numbers less trustworthy (few test windows, classes without test samples, a
    /// model below the baseline).
    warnings: Vec<String>,
    /// Where the encoder's weights came from.
    provenance: super::Provenance,
}

/// A row of the candidates table.
struct CandidateRow {
    name: String,
    description: String,
    chosen: bool,
    publishable: bool,
    val_score: String,
    accuracy: String,
    macro_f1: String,
    edge_accuracy: String,
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
        .iter()
        .map(|c| (i64::from(c.id), (c.name.clone(), c.color.clone())))
        .collect();
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
    let selection = &report["selection"];
    let candidates: Vec<CandidateRow> = report["candidates"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|c| {
                    let test = &c["test"];
                    let metric = |k: &str| num(test[k].as_f64());
                    CandidateRow {
                        name: c["name"].as_str().unwrap_or("").to_owned(),
                        description: c["description"].as_str().unwrap_or("").to_owned(),
                        chosen: c["chosen"].as_bool().unwrap_or(false),
                        publishable: c["publishable"].as_bool().unwrap_or(true),
                        val_score: if c["cross_validated"].as_bool().unwrap_or(false) {
                            format!("{} (cross-validated)", num(c["val_score"].as_f64()))
                        } else {
                            num(c["val_score"].as_f64())
                        },
                        accuracy: if test.get("accuracy").is_some() {
                            metric("accuracy")
                        } else {
                            format!("RMSE {}", metric("rmse"))
                        },
                        macro_f1: metric("macro_f1"),
                        edge_accuracy: metric("edge_accuracy"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let chosen_title = candidates
        .iter()
        .find(|c| c.chosen)
        .map(|c| format!("Published model: {}", c.description));
    let mut reports = Vec::new();
    if report["model"].is_object() {
        reports.push(ModelReport::new(
            "model",
            chosen_title.unwrap_or_else(|| "Fine-tuned model".into()),
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
        candidates,
        selection: selection["reason"].as_str().map(str::to_owned),
        fine_tuned_lost: selection["fine_tuned_lost"].as_bool().unwrap_or(false),
        selection_metric: selection["metric"]
            .as_str()
            .unwrap_or("metric")
            .replace('_', "-"),
        // Stored by the evaluation; a report from before they were stored gets them worked out now.
        warnings: match report.get("warnings").and_then(|w| w.as_array()) {
            Some(list) => list
                .iter()
                .filter_map(|w| w.as_str().map(str::to_owned))
                .collect(),
            None => serde_json::from_value::<groundwork_types::EvaluationReport>(report.clone())
                .map(|r| r.trust_warnings())
                .unwrap_or_default(),
        },
        provenance: super::Provenance::of_training(
            models::trained_run(&state.pool, actor.org_id, project.id, Some(run_id))
                .await
                .map(|t| t.output)
                .unwrap_or_default()
                .as_object(),
        ),
        evaluation,
        project,
    })
}
