//! `groundwork demo`: the whole pipeline on the offline demo catalogue, through the REST API a user or
//! a script would call.
//!
//! 1. The demo catalogue (Sentinel-2 COGs, STAC items, ground truth) is generated once in the demo
//!    folder and served as a STAC API by the same server ([`app`]).
//! 2. A demo organisation and user are set up (the user's password is new on every run and shown once).
//! 3. Through the API: a segmentation project over the catalogue's area with the scene's classes,
//!    `acquire`, a label import (points sampled from the ground truth as CSV, or points plus a few small
//!    polygons as GeoJSON), a spatial train/val/test split, `train` + `evaluate`, then `predict` →
//!    `combine` → `publish`.
//! 4. The published class map is scored against the ground truth on the test windows (overall and
//!    near class edges), next to every candidate model's scores from the evaluation report.

use anyhow::{Context, bail};
use groundwork_imagery::demo::{self as data, DemoOptions};
use groundwork_server::{AppState, router};
use groundwork_store::PgPool;
use groundwork_store::accounts::{self, Role, Scope};
use groundwork_store::audit::Who;
use groundwork_store::labels;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Name of the demo organisation.
pub const DEMO_ORG: &str = "Groundwork demo";
/// Email of the demo user.
pub const DEMO_EMAIL: &str = "demo@groundwork.localhost";

/// Settings of a demo run (defaults: the full demo).
#[derive(Debug, Clone)]
pub struct DemoRun {
    /// Name of the scene of the family (`classic`, `tropical-haze`, …), for the project and summary.
    pub scene: String,
    /// The synthetic scene.
    pub data: DemoOptions,
    /// Point labels sampled per class from the ground truth.
    pub labels_per_class: usize,
    /// Small square polygon labels sampled per class (0: points only, imported as CSV).
    pub polygons_per_class: usize,
    /// Side of those polygons, pixels.
    pub polygon_px: usize,
    /// Encoder patch size.
    pub patch_size: i32,
    /// `nano | tiny | base | large`.
    pub model_size: String,
    /// Training epochs.
    pub epochs: usize,
    /// Block side (windows) of the spatial split.
    pub split_block: u32,
    /// Seed of label sampling and the split.
    pub seed: u64,
    /// The project's modalities (Sentinel-2 first).
    pub modalities: Vec<groundwork_types::Modality>,
}

impl Default for DemoRun {
    fn default() -> Self {
        DemoRun {
            scene: "classic".into(),
            data: DemoOptions::default(),
            labels_per_class: 400,
            polygons_per_class: 0,
            polygon_px: 4,
            // 8 × 8 px tokens: on two CPU cores p = 4 costs 20× the encoder time for ~1 point of
            // accuracy on the demo scene.
            patch_size: 8,
            model_size: "nano".into(),
            epochs: 20,
            split_block: 2,
            seed: 7,
            modalities: vec![groundwork_types::Modality::Sentinel2L2a],
        }
    }
}

/// One candidate model of the training run, from the evaluation report.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateSummary {
    /// `raw_pixels`, `pixel_context`, `linear_probe`, `knn_probe`, `hybrid_linear`, `fine_tuned`.
    pub name: String,
    /// Whether it is the published model.
    pub chosen: bool,
    /// Its validation score (the selection metric).
    pub val_score: Option<f64>,
    /// Accuracy on the labelled test pixels.
    pub accuracy: Option<f64>,
    /// Macro-F1 on the labelled test pixels.
    pub macro_f1: Option<f64>,
    /// Accuracy on the labelled test pixels near class edges.
    pub edge_accuracy: Option<f64>,
    /// Its maps of the test windows (the training run's own predictions) against the full ground truth,
    /// scored like [`DemoSummary::accuracy`].
    pub map_accuracy: Option<f64>,
    /// The same within 30 m of a class edge.
    pub map_edge_accuracy: Option<f64>,
}

/// What a demo run produced.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// Test-split pixel accuracy of the published map against the full ground truth.
    pub accuracy: f64,
    /// The same within 30 m of a class edge of the ground truth (`None` without edges).
    pub edge_accuracy: Option<f64>,
    /// Every candidate model of the training run, as the evaluation report scores them.
    pub candidates: Vec<CandidateSummary>,
    /// Name of the published candidate.
    pub chosen: Option<String>,
    /// Why it was chosen.
    pub selection_reason: Option<String>,
    /// Labels imported.
    pub labels: usize,
    /// The frozen-encoder baseline's test-window maps, scored like `accuracy`.
    pub baseline_accuracy: Option<f64>,
    /// The fine-tuned model on the labelled test pixels (the evaluation report).
    pub model_label_accuracy: Option<f64>,
    /// The frozen-encoder baseline on the labelled test pixels (the evaluation report).
    pub baseline_label_accuracy: Option<f64>,
    /// The training labels' majority class everywhere, scored like `accuracy`.
    pub majority_accuracy: f64,
    /// The map page.
    pub map_url: String,
    /// Wall time of the run.
    pub seconds: f64,
    /// The project.
    pub project_id: Uuid,
    /// The published class map.
    pub output_id: Uuid,
    /// Test windows scored.
    pub test_windows: usize,
    /// Wall times, work and sizes of the phases (for `scripts/bench-scale.sh`).
    pub phases: DemoPhases,
}

/// Wall times, work and sizes of a demo run's phases.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DemoPhases {
    /// Acquisition: the `acquire` run, from its request to its end.
    pub acquire: PhaseTimes,
    /// Training and evaluation: the `train` run.
    pub train: PhaseTimes,
    /// Prediction: the `predict` run (`predict` steps, `combine`, `publish`).
    pub predict: PhaseTimes,
    /// Windows planned for the project.
    pub windows: Option<i64>,
    /// Windows acquired (imagery stored).
    pub windows_acquired: Option<i64>,
    /// Core windows the `predict` steps predicted (each once).
    pub predicted_windows: u64,
    /// Their area, km².
    pub predicted_km2: f64,
    /// Size of the database (`pg_database_size`) before the project was created, bytes.
    pub db_bytes_before: Option<i64>,
    /// The same at the end.
    pub db_bytes_after: Option<i64>,
    /// The `project_window` table with its indexes and TOAST at the end, bytes.
    pub window_table_bytes: Option<i64>,
}

/// One phase: its wall time and, per step kind, the steps' times.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseTimes {
    /// From the request that started the run to the run's end as the API reported it, seconds.
    pub seconds: f64,
    /// Per step kind.
    pub steps: BTreeMap<String, StepKindTimes>,
}

/// The steps of one kind in a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepKindTimes {
    /// Steps.
    pub count: usize,
    /// From the first one's start to the last one's end, seconds.
    pub span_seconds: f64,
    /// Their run times added up (steps running side by side both count), seconds.
    pub busy_seconds: f64,
}

impl PhaseTimes {
    /// The phase of a finished run (`GET /api/v1/runs/{id}`) that took `seconds`.
    fn of(run: &Value, seconds: f64) -> Self {
        let at = |v: &Value| {
            v.as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        };
        let mut spans = BTreeMap::new();
        let mut steps: BTreeMap<String, StepKindTimes> = BTreeMap::new();
        for s in run["steps"].as_array().into_iter().flatten() {
            let kind = s["kind"].as_str().unwrap_or("step").to_owned();
            let e = steps.entry(kind.clone()).or_default();
            e.count += 1;
            if let (Some(a), Some(b)) = (at(&s["started_at"]), at(&s["finished_at"])) {
                e.busy_seconds += (b - a).num_milliseconds() as f64 / 1000.0;
                let span = spans.entry(kind).or_insert((a, b));
                span.0 = span.0.min(a);
                span.1 = span.1.max(b);
            }
        }
        for (kind, (a, b)) in spans {
            if let Some(e) = steps.get_mut(&kind) {
                e.span_seconds = (b - a).num_milliseconds() as f64 / 1000.0;
            }
        }
        PhaseTimes { seconds, steps }
    }
}

/// `pg_database_size` of the current database, if it can be read.
async fn database_bytes(pool: &PgPool) -> Option<i64> {
    sqlx::query_scalar("select pg_database_size(current_database())")
        .fetch_one(pool)
        .await
        .ok()
}

/// The demo user's credentials (the password is new on every run).
#[derive(Debug, Clone)]
pub struct DemoLogin {
    /// Email.
    pub email: String,
    /// Password.
    pub password: String,
}

/// Generates the demo catalogue in `dir` unless it is already there for the same options; returns
/// the catalogue path.
pub async fn prepare_data(dir: &Path, opts: &DemoOptions) -> anyhow::Result<PathBuf> {
    let catalog = dir.join("catalog.json");
    let marker = dir.join("demo-options.json");
    let wanted = serde_json::to_value(opts)?;
    let existing: Option<Value> = std::fs::read(&marker)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if catalog.is_file() && existing.as_ref() == Some(&wanted) {
        return Ok(catalog);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let (d, o) = (dir.to_path_buf(), opts.clone());
    let catalog = tokio::task::spawn_blocking(move || data::generate_demo_data(&d, &o))
        .await
        .context("demo generator task")?
        .context("generating the demo catalogue")?;
    std::fs::write(&marker, serde_json::to_vec(&wanted)?)
        .with_context(|| format!("writing {}", marker.display()))?;
    Ok(catalog)
}

/// The application plus the demo catalogue as a STAC API under `/demo/stac`.
pub fn app(state: AppState, data_dir: &Path, base_url: &str) -> anyhow::Result<axum::Router> {
    let stac =
        groundwork_server::demo_stac::demo_stac_router(data_dir, &format!("{base_url}/demo/stac"))
            .with_context(|| format!("serving the demo catalogue in {}", data_dir.display()))?;
    Ok(router(state).nest("/demo/stac", stac))
}

/// Creates (or finds) the demo organisation and user, gives the user a new password and returns it
/// with a write token for the API.
pub async fn login(pool: &PgPool) -> anyhow::Result<(DemoLogin, String)> {
    let who = Who::cli();
    let password = format!("demo-{}", Uuid::new_v4().simple());
    let user = match accounts::user_by_email(pool, DEMO_EMAIL).await? {
        Some(u) => {
            accounts::set_password(pool, &who, u.id, &password, None).await?;
            u
        }
        None => accounts::create_user(pool, &who, DEMO_EMAIL, &password).await?,
    };
    let org = match accounts::org_by_name(pool, DEMO_ORG).await? {
        Some(o) => o,
        None => accounts::create_org(pool, &who, DEMO_ORG, Some(user.id)).await?,
    };
    if accounts::role_in(pool, org.id, user.id).await?.is_none() {
        accounts::add_member(pool, &who, org.id, user.id, Role::Owner).await?;
    }
    let (token, _) =
        accounts::create_api_token(pool, &who, user.id, org.id, "demo", Scope::Write, None).await?;
    Ok((
        DemoLogin {
            email: DEMO_EMAIL.into(),
            password,
        },
        token,
    ))
}

/// A small client of the REST API.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("{what}: the server did not answer"))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{what}: {status}: {body}");
        }
        Ok(body)
    }

    async fn get(&self, path: &str, what: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)), what)
            .await
    }

    async fn post(&self, path: &str, body: &Value, what: &str) -> anyhow::Result<Value> {
        self.send(
            self.http.post(format!("{}{path}", self.base)).json(body),
            what,
        )
        .await
    }

    /// Polls a run until it ends, reporting each step's progress as it changes.
    async fn wait(&self, run: &Value, log: &mut dyn FnMut(&str)) -> anyhow::Result<Value> {
        let id = run["id"].as_str().context("the run has no id")?.to_owned();
        // Per step: the last line printed, its state and when. A step's line is printed when its
        // state changes, or at most every few seconds while it runs.
        let mut last: BTreeMap<String, (String, String, Instant)> = BTreeMap::new();
        loop {
            let r = self
                .get(&format!("/api/v1/runs/{id}"), "reading the run")
                .await?;
            for s in r["steps"].as_array().into_iter().flatten() {
                let name = s["name"].as_str().unwrap_or("step").to_owned();
                let state = s["state"].as_str().unwrap_or("").to_owned();
                let line = format!(
                    "{:>4.0}% {state} {}",
                    s["progress"].as_f64().unwrap_or(0.0) * 100.0,
                    s["message"].as_str().unwrap_or("")
                );
                let due = match last.get(&name) {
                    None => true,
                    Some((l, st, at)) => {
                        *st != state || (*l != line && at.elapsed() >= Duration::from_secs(5))
                    }
                };
                if due {
                    log(&format!("  {name:<16} {line}"));
                    last.insert(name, (line, state, Instant::now()));
                }
            }
            match r["state"].as_str() {
                Some("succeeded") => return Ok(r),
                Some(state @ ("failed" | "cancelled")) => {
                    let errors: Vec<String> = r["steps"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| {
                            s["error"]
                                .as_str()
                                .map(|e| format!("{}: {e}", s["name"].as_str().unwrap_or("step")))
                        })
                        .collect();
                    bail!("the run {state}: {}", errors.join("; "));
                }
                _ => tokio::time::sleep(Duration::from_millis(1000)).await,
            }
        }
    }
}

/// Runs the demo against the server at `base_url` (serving [`app`] with workers attached) and scores
/// its map. `log` receives progress lines.
pub async fn run(
    pool: &PgPool,
    objects: Arc<dyn ObjectStore>,
    base_url: &str,
    data_dir: &Path,
    opts: &DemoRun,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<(DemoSummary, DemoLogin)> {
    let started = Instant::now();
    let mut phases = DemoPhases {
        db_bytes_before: database_bytes(pool).await,
        ..DemoPhases::default()
    };
    let (login, token) = login(pool).await?;
    let api = Api {
        http: reqwest::Client::new(),
        base: base_url.trim_end_matches('/').to_owned(),
        token,
    };

    // The project: the catalogue's area, the scene's classes, Sentinel-2 over the scene's months.
    let aoi_path = data_dir.join("aoi.geojson");
    let aoi: Value = serde_json::from_slice(
        &tokio::fs::read(&aoi_path)
            .await
            .with_context(|| format!("reading the demo area {}", aoi_path.display()))?,
    )
    .with_context(|| format!("parsing {}", aoi_path.display()))?;
    let classes: Vec<Value> = opts
        .data
        .classes
        .iter()
        .map(|c| json!({"id": c.id, "name": c.name, "color": c.surface.color()}))
        .collect();
    let months = &opts.data.months;
    let (first, last) = (
        months.iter().min().copied().unwrap_or(4),
        months.iter().max().copied().unwrap_or(7),
    );
    let end_day = chrono::NaiveDate::from_ymd_opt(2024, last + 1, 1)
        .and_then(|d| d.pred_opt())
        .map_or_else(|| "2024-12-31".to_owned(), |d| d.to_string());
    let project = api
        .post(
            "/api/v1/projects",
            &json!({
                "name": format!("Demo land cover {}", chrono::Utc::now().format("%Y-%m-%d %H:%M")),
                "description": format!(
                    "Land cover of the offline demo scene {:?} (seed {}), made by `groundwork demo`.",
                    opts.scene, opts.data.seed
                ),
                "aoi": aoi.get("geometry").unwrap_or(&aoi),
                "start": format!("2024-{first:02}-01"), "end": end_day,
                "task": "segmentation", "classes": classes, "modalities": opts.modalities,
                "model_size": opts.model_size, "patch_size": opts.patch_size, "window_size": 64,
                // The demo runs offline: without a pretrained checkpoint it trains from random
                // weights, which the project allows explicitly (and the train step's output says).
                "allow_random_init": true,
            }),
            "creating the project",
        )
        .await?;
    let project_id: Uuid = serde_json::from_value(project["id"].clone())?;
    log(&format!("project {project_id} created"));

    log(&format!(
        "acquiring {} windows from the demo STAC API",
        opts.modalities
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let phase_started = Instant::now();
    let run = api
        .post(
            &format!("/api/v1/projects/{project_id}/acquire"),
            &json!({"stac": format!("{}/demo/stac", api.base)}),
            "starting the acquisition",
        )
        .await?;
    let acquire_run = api.wait(&run, log).await?;
    phases.acquire = PhaseTimes::of(&acquire_run, phase_started.elapsed().as_secs_f64());
    let counts: Option<(i64, i64)> = sqlx::query_as(
        "select count(*), count(*) filter (where status = 'acquired') from project_window \
         where project_id = $1",
    )
    .bind(project_id)
    .fetch_one(pool)
    .await
    .ok();
    (phases.windows, phases.windows_acquired) = (counts.map(|c| c.0), counts.map(|c| c.1));

    // Labels: points sampled from the ground truth, imported as CSV like any user file; with polygons,
    // points and polygons together as GeoJSON.
    let points = data::sample_labels(&opts.data, opts.labels_per_class, 320.0, opts.seed)?;
    let polygons = if opts.polygons_per_class > 0 {
        data::sample_label_polygons(
            &opts.data,
            opts.polygons_per_class,
            opts.polygon_px,
            320.0,
            opts.seed,
        )?
    } else {
        Vec::new()
    };
    let (format, content_type, body) = if polygons.is_empty() {
        let mut csv = String::from("lon,lat,class\n");
        for p in &points {
            csv.push_str(&format!("{:.8},{:.8},{}\n", p.lon, p.lat, p.class_id));
        }
        ("csv", "text/csv", csv.into_bytes())
    } else {
        let features: Vec<Value> = points
            .iter()
            .map(|p| {
                json!({"type": "Feature", "properties": {"class": p.class_id},
                       "geometry": {"type": "Point", "coordinates": [p.lon, p.lat]}})
            })
            .chain(polygons.iter().map(|p| {
                json!({"type": "Feature", "properties": {"class": p.class_id},
                       "geometry": {"type": "Polygon", "coordinates": [p.ring]}})
            }))
            .collect();
        let doc = json!({"type": "FeatureCollection", "features": features});
        ("geojson", "application/geo+json", serde_json::to_vec(&doc)?)
    };
    let report = api
        .send(
            api.http
                .post(format!(
                    "{}/api/v1/projects/{project_id}/labels/import?format={format}",
                    api.base
                ))
                .header("content-type", content_type)
                .body(body),
            "importing the labels",
        )
        .await?;
    let imported = report["imported"]
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0);
    log(&format!(
        "imported {imported} labels ({} points, {} polygons sampled; {} rows rejected)",
        points.len(),
        polygons.len(),
        report["errors"].as_array().map_or(0, Vec::len)
    ));
    let split = api
        .post(
            &format!("/api/v1/projects/{project_id}/labels/split"),
            &json!({"block_size": opts.split_block, "seed": opts.seed}),
            "splitting the windows",
        )
        .await?;
    log(&format!(
        "windows split into train {} / val {} / test {} (blocks of {}×{})",
        split["windows"]["train"],
        split["windows"]["val"],
        split["windows"]["test"],
        opts.split_block,
        opts.split_block
    ));

    log("training (frozen-encoder baseline, then the task head) and evaluating");
    let phase_started = Instant::now();
    let run = api
        .post(
            &format!("/api/v1/projects/{project_id}/train"),
            &json!({"epochs": opts.epochs}),
            "starting training",
        )
        .await?;
    let train_run = api.wait(&run, log).await?;
    phases.train = PhaseTimes::of(&train_run, phase_started.elapsed().as_secs_f64());
    let train_run_id = train_run["id"].as_str().unwrap_or_default().to_owned();
    let evaluation = api
        .get(
            &format!("/api/v1/runs/{train_run_id}/evaluation"),
            "reading the evaluation",
        )
        .await?;
    let model_label_accuracy = evaluation["report"]["model"]["accuracy"].as_f64();
    let mut candidates: Vec<CandidateSummary> = evaluation["report"]["candidates"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| CandidateSummary {
            name: c["name"].as_str().unwrap_or("?").to_owned(),
            chosen: c["chosen"].as_bool().unwrap_or(false),
            val_score: c["val_score"].as_f64(),
            accuracy: c["test"]["accuracy"].as_f64(),
            macro_f1: c["test"]["macro_f1"].as_f64(),
            edge_accuracy: c["test"]["edge_accuracy"].as_f64(),
            map_accuracy: None,
            map_edge_accuracy: None,
        })
        .collect();
    let selection = &evaluation["report"]["selection"];
    let chosen = selection["chosen"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| candidates.iter().find(|c| c.chosen).map(|c| c.name.clone()));
    let selection_reason = selection["reason"].as_str().map(str::to_owned);
    let baseline_label_accuracy = evaluation["report"]["baseline"]["accuracy"].as_f64();
    let class_ids: Vec<i32> =
        serde_json::from_value(evaluation["report"]["class_ids"].clone()).unwrap_or_default();
    // The baseline's test-window maps, to score them on the same pixels as the published map.
    let baseline_key = train_run["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["kind"] == "train")
        .and_then(|s| s["output"]["baseline"].as_str())
        .map(str::to_owned);
    let baseline_doc: Value = match &baseline_key {
        Some(key) => {
            let bytes = objects
                .get(&object_store::path::Path::from(key.as_str()))
                .await?
                .bytes()
                .await?;
            serde_json::from_slice(&bytes)?
        }
        None => Value::Null,
    };
    let baseline_maps: BTreeMap<String, Value> =
        serde_json::from_value(baseline_doc["test_predictions"].clone()).unwrap_or_default();
    // Every candidate's test-window maps, by name.
    let candidate_maps: BTreeMap<String, BTreeMap<String, Value>> = baseline_doc["candidates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some((
                c["name"].as_str()?.to_owned(),
                serde_json::from_value(c["test_predictions"].clone()).ok()?,
            ))
        })
        .collect();

    log("predicting, combining and publishing the map");
    let phase_started = Instant::now();
    let run = api
        .post(
            &format!("/api/v1/projects/{project_id}/predict"),
            &json!({"run_id": train_run_id}),
            "starting prediction",
        )
        .await?;
    let predict_run = api.wait(&run, log).await?;
    phases.predict = PhaseTimes::of(&predict_run, phase_started.elapsed().as_secs_f64());
    for s in predict_run["steps"].as_array().into_iter().flatten() {
        let out = &s["output"];
        if s["kind"] == "predict"
            && let Some(n) = out["windows"].as_u64()
        {
            // Core windows of 64 × 64 pixels at the output's resolution.
            let side_m = 64.0 * out["resolution"].as_f64().unwrap_or(10.0);
            phases.predicted_windows += n;
            phases.predicted_km2 += n as f64 * side_m * side_m / 1e6;
        }
    }
    let outputs = api
        .get(
            &format!("/api/v1/projects/{project_id}/outputs"),
            "listing the outputs",
        )
        .await?;
    let class_output = outputs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["kind"] == "class")
        .context("the run published no class map")?
        .clone();
    let output_id: Uuid = serde_json::from_value(class_output["id"].clone())?;

    // Score the published map's UTM raster on the test windows against the full ground truth.
    let version = labels::resolve_version(pool, project_id, None)
        .await?
        .context("the project has no labels")?;
    let splits = labels::window_splits(pool, project_id, version).await?;
    let grids = labels::window_grids(pool, project_id).await?;
    let in_split = |split: labels::Split| -> Vec<data::ScoredWindow> {
        grids
            .iter()
            .filter(|w| splits.get(&w.id) == Some(&split))
            .filter_map(|w| {
                let gt = serde_json::from_value(w.geotransform.clone()).ok()?;
                Some((u32::try_from(w.epsg).ok()?, gt))
            })
            .collect()
    };
    let (train, test) = (
        in_split(labels::Split::Train),
        in_split(labels::Split::Test),
    );
    // Predicted maps hold output indices; the evaluation's class ids name them.
    let test_windows = |maps: &BTreeMap<String, Value>| -> Vec<(data::ScoredWindow, Vec<u8>)> {
        grids
            .iter()
            .filter(|w| splits.get(&w.id) == Some(&labels::Split::Test))
            .filter_map(|w| {
                let gt: [f64; 6] = serde_json::from_value(w.geotransform.clone()).ok()?;
                let epsg = u32::try_from(w.epsg).ok()?;
                let map = maps.get(&w.id)?["map"].as_array()?.iter().map(|v| {
                    let i = v.as_u64().and_then(|i| usize::try_from(i).ok());
                    i.and_then(|i| class_ids.get(i))
                        .and_then(|&c| u8::try_from(c).ok())
                        .unwrap_or(u8::MAX)
                });
                Some(((epsg, gt), map.collect()))
            })
            .collect()
    };
    let baseline_windows = test_windows(&baseline_maps);
    for c in &mut candidates {
        let windows = candidate_maps
            .get(&c.name)
            .map(&test_windows)
            .unwrap_or_default();
        if !windows.is_empty() {
            let score = data::score_window_maps(&opts.data, &windows, 64)?;
            c.map_accuracy = Some(score.accuracy());
            c.map_edge_accuracy = score.edge_accuracy();
        }
    }
    let org_id: Uuid = serde_json::from_value(project["org_id"].clone())?;
    let utm_key = groundwork_store::outputs::get(pool, org_id, output_id)
        .await?
        .utm_key;
    let bytes = objects
        .get(&object_store::path::Path::from(utm_key.as_str()))
        .await?
        .bytes()
        .await?;
    let tmp = tempfile_in(data_dir, &bytes)?;
    let baseline_accuracy = if baseline_windows.is_empty() {
        None
    } else {
        Some(data::score_window_maps(&opts.data, &baseline_windows, 64)?.accuracy())
    };
    let (data_opts, tests) = (opts.data.clone(), test.clone());
    // The majority baseline: the most common true class of the training windows, everywhere.
    let (score, train_score) = tokio::task::spawn_blocking(move || {
        let test = data::score_class_map(&tmp, &data_opts, &tests, 64);
        let train = data::score_class_map(&tmp, &data_opts, &train, 64);
        let _ = std::fs::remove_file(&tmp);
        Ok::<_, groundwork_imagery::Error>((test?, train?))
    })
    .await??;
    let majority = train_score
        .truth_counts
        .iter()
        .enumerate()
        .max_by_key(|(_, n)| **n)
        .and_then(|(c, _)| u8::try_from(c).ok())
        .unwrap_or(1);
    phases.db_bytes_after = database_bytes(pool).await;
    phases.window_table_bytes =
        sqlx::query_scalar("select pg_total_relation_size('project_window')")
            .fetch_one(pool)
            .await
            .ok();
    let summary = DemoSummary {
        accuracy: score.accuracy(),
        edge_accuracy: score.edge_accuracy(),
        candidates,
        chosen,
        selection_reason,
        labels: imported,
        baseline_accuracy,
        model_label_accuracy,
        baseline_label_accuracy,
        majority_accuracy: score.constant_accuracy(majority),
        map_url: format!("{}/outputs/{output_id}", api.base),
        seconds: started.elapsed().as_secs_f64(),
        project_id,
        output_id,
        test_windows: test.len(),
        phases,
    };
    Ok((summary, login))
}

/// Writes `bytes` to a fresh file in `dir`.
fn tempfile_in(dir: &Path, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("map-{}.tif", Uuid::new_v4().simple()));
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
