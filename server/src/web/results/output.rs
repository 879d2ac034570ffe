//! The map of an output (`/outputs/{id}`): its legend or colour ramp and its lineage, and for members
//! its read-only share links (make one, shown once; revoke).

use super::{headline, num};
use crate::api::AppState;
use crate::api::auth::{Actor, Role};
use crate::api::error::{ApiError, FieldError};
use crate::api::extract::Path;
use crate::service::shares::{self as service, CreateShare};
use crate::web::error::PageResult;
use crate::web::{Layout, Nav, error_text, form_pairs, form_value, when};
use askama::Template;
use askama_web::WebTemplate;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use groundwork_store::outputs::{self, Output};
use groundwork_store::projects::{self, Project};
use groundwork_store::shares::{self, ShareLink};
use serde_json::Value;
use uuid::Uuid;

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
    /// The offline package (GeoPackage) of a class map; empty for other outputs.
    package_url: String,
    stac_url: String,
    lineage: Vec<Fact>,
    /// Provenance, hectares per class, the project's outline and the outputs to compare with.
    extras: super::map_extras::MapExtras,
    /// The "Accuracy assessment" section (class maps only).
    assessment: crate::web::assessments::AssessmentSection,
    /// The "Change map" section (class maps only).
    changes: crate::web::changes::ChangeSection,
    /// Whether the "Share" section is shown (members and above).
    can_share: bool,
    shares: Vec<ShareRow>,
    share: ShareState,
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
    let imagery = super::Provenance::of_training(lineage.as_object()).imagery;
    if !imagery.is_empty() {
        facts.push(fact("Imagery", imagery));
    }
    let validation = &lineage["metrics"]["validation"];
    if let Some(model) = validation["chosen_description"].as_str() {
        facts.push(fact("Model", model.to_owned()));
    }
    if let Some(reason) = validation["selection_reason"].as_str() {
        facts.push(fact("Why this model", reason.to_owned()));
    }
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

/// The legend of a class map (its classes), or the colour ramp of a probability or value map.
pub(crate) fn legend_and_ramp(output: &Output) -> (Vec<LegendRow>, Option<Ramp>) {
    let classes: Vec<groundwork_imagery::publish::LegendClass> =
        serde_json::from_value(output.classes.clone()).unwrap_or_default();
    match output.kind.as_str() {
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
    }
}

/// A share link of the output as its "Share" section lists it.
pub struct ShareRow {
    /// The link.
    pub link: ShareLink,
    /// Created.
    pub created: String,
    /// Expiry, or `never`.
    pub expires: String,
}

/// A share link just made: its address is shown in this answer only.
pub struct CreatedShare {
    /// The page anyone with the link opens.
    pub url: String,
    /// Its label.
    pub label: String,
}

/// The "Share" section's state: the create form's values, its refusal, or the link just made.
#[derive(Default)]
pub struct ShareState {
    /// Label typed.
    pub label: String,
    /// Expiry in days typed (blank: never).
    pub days: String,
    /// Why the form was refused.
    pub error: String,
    /// The link just made.
    pub created: Option<CreatedShare>,
}

/// `GET /outputs/{id}`: the output's tiles on a map with its legend, downloads and lineage.
pub async fn output_map(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> PageResult<impl IntoResponse> {
    page(&state, &actor, id, ShareState::default()).await
}

async fn page(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    share: ShareState,
) -> PageResult<OutputPage> {
    let output = outputs::get(&state.pool, actor.org_id, id).await?;
    let project = projects::get(&state.pool, actor.org_id, output.project_id).await?;
    let (legend, ramp) = legend_and_ramp(&output);
    let can_share = actor.role >= Role::Member;
    let shares = if can_share {
        shares::list(&state.pool, actor.org_id, id)
            .await?
            .into_iter()
            .map(|link| ShareRow {
                created: when(&link.created_at),
                expires: link
                    .expires_at
                    .as_ref()
                    .map_or_else(|| "never".into(), when),
                link,
            })
            .collect()
    } else {
        Vec::new()
    };
    let [w, s, e, n] = output.bbox;
    Ok(OutputPage {
        layout: Layout::new(
            state,
            actor,
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
        package_url: if output.kind == "class" {
            format!("/api/v1/outputs/{id}/package.gpkg")
        } else {
            String::new()
        },
        stac_url: format!("/api/v1/projects/{}/stac/items/{id}", project.id),
        lineage: lineage_facts(&output.lineage),
        extras: super::map_extras::map_extras(state, actor, &output, &project).await?,
        assessment: crate::web::assessments::section(state, actor, &output).await?,
        changes: crate::web::changes::section(state, actor, &output).await?,
        can_share,
        shares,
        share,
        output,
        project,
    })
}

/// `POST /outputs/{id}/shares` (members and above): makes a read-only share link through the same
/// service function as the API; its address is shown in this answer only (201, never stored).
pub async fn create_share(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult<Response> {
    let pairs = form_pairs(&body);
    let mut share = ShareState {
        label: form_value(&pairs, "label"),
        days: form_value(&pairs, "expires_in_days").trim().to_owned(),
        ..ShareState::default()
    };
    let days = if share.days.is_empty() {
        Ok(None)
    } else {
        share.days.parse::<i64>().map(Some).map_err(|_| {
            ApiError::validation(vec![FieldError {
                field: "expires_in_days".into(),
                message: "expiry: a whole number of days, or blank for none".into(),
            }])
        })
    };
    let root = crate::api::outputs::root_url(&headers);
    let result = match days {
        Ok(expires_in_days) => {
            service::create(
                &state,
                &actor,
                id,
                CreateShare {
                    label: Some(share.label.clone()),
                    expires_in_days,
                    expires_at: None,
                },
                &root,
            )
            .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(new) => {
            let created = ShareState {
                created: Some(CreatedShare {
                    url: new.url,
                    label: new.share_link.label,
                }),
                ..ShareState::default()
            };
            let p = page(&state, &actor, id, created).await?;
            Ok(crate::hygiene::no_store(
                (StatusCode::CREATED, p).into_response(),
            ))
        }
        Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => {
            share.error = error_text(&e);
            let p = page(&state, &actor, id, share).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, p).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /outputs/{id}/shares/{share_id}/revoke` (members and above): the link opens nothing from now on.
pub async fn revoke_share(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, share_id)): Path<(Uuid, Uuid)>,
) -> PageResult<Redirect> {
    service::revoke(&state, &actor, id, share_id).await?;
    Ok(Redirect::to(&format!("/outputs/{id}#share-{share_id}")))
}
