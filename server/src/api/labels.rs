//! Labels of a project: import (GeoJSON or CSV, bad rows reported and skipped), export, the summary per
//! class and split, and window sampling with the spatial train/val/test split.
//!
//! `POST /api/v1/projects/{id}/labels/import`, `GET /api/v1/projects/{id}/labels?format=&version=`,
//! `GET /api/v1/projects/{id}/labels/summary`, `POST /api/v1/projects/{id}/labels/split`.

use super::AppState;
use super::auth::{Actor, Role};
use super::error::{ApiError, ApiResult};
use super::extract::{Json, Path, Query};
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use geo::{BoundingRect, Intersects, MultiPolygon};
use groundwork_imagery::rasterize::{PixelGrid, Rasterizer, bitmask, parse_label_geometry};
use groundwork_store::labels::{self, Coverage, LabelSet, NewLabel, SplitCounts, Summary};
use groundwork_store::projects::{self, Project};
use groundwork_store::sampling::{self, SplitOptions};
use groundwork_store::{PgPool, labels::WindowGrid};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use uuid::Uuid;

/// Largest import body accepted (bytes).
pub const MAX_IMPORT_BYTES: usize = 64 * 1024 * 1024;

/// A file format of labels.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A GeoJSON FeatureCollection; properties `class` (name or id) or `value`, optionally `window_id`.
    Geojson,
    /// CSV with a header: `lon,lat,class` or `lon,lat,value`, optionally `window_id`.
    Csv,
}

/// One rejected row of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RowError {
    /// GeoJSON: the feature's index (from 0). CSV: the line number (from 1; the header is line 1).
    pub row: usize,
    /// Why it was rejected.
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImportReport {
    /// The new label-set version.
    pub version: i32,
    /// Labels imported.
    pub imported: usize,
    /// Labels whose windows are not known yet (imported before the windows were planned).
    pub unassigned: usize,
    /// Rows rejected (the others were imported).
    pub errors: Vec<RowError>,
}

/// A class as a file names it.
#[derive(Debug, Clone, PartialEq)]
enum ClassRef {
    Id(i64),
    Name(String),
}

/// A row as read from the file, before it is checked against the project.
#[derive(Debug, Clone)]
struct RawLabel {
    row: usize,
    geometry: Option<(Value, geo::Geometry<f64>)>,
    window_id: Option<String>,
    class: Option<ClassRef>,
    value: Option<f64>,
}

/// An error of the whole file (not of one row).
fn file_error(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_file", message)
}

fn class_from_json(v: &Value) -> Result<Option<ClassRef>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => Ok(Some(ClassRef::Name(s.trim().to_owned()))),
        Value::Number(n) => n
            .as_i64()
            .map(|i| Some(ClassRef::Id(i)))
            .ok_or_else(|| format!("unknown class {n}")),
        other => Err(format!("unknown class {other}")),
    }
}

fn value_from_json(v: &Value) -> Result<Option<f64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| format!("bad number {n}")),
        Value::String(s) => number(s).map(Some),
        other => Err(format!("bad number {other}")),
    }
}

fn number(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .ok_or_else(|| format!("bad number {:?}", s.trim()))
}

/// Reads a GeoJSON FeatureCollection (or one Feature).
fn parse_geojson(body: &[u8]) -> ApiResult<(Vec<RawLabel>, Vec<RowError>)> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the file is not valid JSON: {e}"),
        )
    })?;
    let features: Vec<Value> = match doc.get("type").and_then(Value::as_str) {
        Some("FeatureCollection") => match doc.get("features") {
            Some(Value::Array(f)) => f.clone(),
            _ => return Err(file_error("a FeatureCollection needs a `features` array")),
        },
        Some("Feature") => vec![doc.clone()],
        _ => return Err(file_error("expected a GeoJSON FeatureCollection")),
    };
    let mut rows = Vec::with_capacity(features.len());
    let mut errors = Vec::new();
    for (i, f) in features.iter().enumerate() {
        match geojson_feature(i, f) {
            Ok(r) => rows.push(r),
            Err(reason) => errors.push(RowError { row: i, reason }),
        }
    }
    Ok((rows, errors))
}

fn geojson_feature(row: usize, f: &Value) -> Result<RawLabel, String> {
    if f.get("type").and_then(Value::as_str) != Some("Feature") {
        return Err("not a GeoJSON Feature".into());
    }
    let empty = Map::new();
    let props = match f.get("properties") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err("properties must be an object".into()),
    };
    let window_id = match props.get("window_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Some(_) => return Err("window_id must be a window id string".into()),
    };
    let geometry = match f.get("geometry") {
        None | Some(Value::Null) => None,
        Some(g) => {
            let parsed = parse_label_geometry(g).map_err(|e| format!("bad geometry: {e}"))?;
            Some((g.clone(), parsed))
        }
    };
    let class = match props.get("class") {
        Some(v) if !v.is_null() => class_from_json(v)?,
        _ => class_from_json(props.get("class_id").unwrap_or(&Value::Null))?,
    };
    let value = value_from_json(props.get("value").unwrap_or(&Value::Null))?;
    Ok(RawLabel {
        row,
        geometry,
        window_id,
        class,
        value,
    })
}

/// Splits one CSV line into fields (RFC 4180 quoting; a quoted field may not span lines).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.trim().is_empty() && !was_quoted => {
                field.clear();
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => {
                out.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    out.push(field);
    Ok(out)
}

fn csv_quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.trim() != s {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Reads CSV with a header naming `lon`, `lat`, `class` or `value`, and optionally `window_id`.
fn parse_csv(body: &[u8]) -> ApiResult<(Vec<RawLabel>, Vec<RowError>)> {
    let text =
        std::str::from_utf8(body).map_err(|_| file_error("the CSV file is not UTF-8 text"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(file_error("the CSV file is empty"));
    };
    let header: Vec<String> = csv_fields(header)
        .map_err(|e| file_error(format!("header: {e}")))?
        .iter()
        .map(|h| h.trim().to_lowercase())
        .collect();
    let col = |names: &[&str]| header.iter().position(|h| names.contains(&h.as_str()));
    let lon = col(&["lon", "lng", "longitude"]);
    let lat = col(&["lat", "latitude"]);
    let class = col(&["class", "class_id"]);
    let value = col(&["value"]);
    let window = col(&["window_id", "window"]);
    if (lon.is_none() || lat.is_none()) && window.is_none() {
        return Err(file_error(
            "the CSV header needs `lon` and `lat` columns (or `window_id`)",
        ));
    }
    if class.is_none() && value.is_none() {
        return Err(file_error(
            "the CSV header needs a `class` or a `value` column",
        ));
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in lines {
        let row = i + 1;
        match csv_row(row, line, lon, lat, class, value, window) {
            Ok(r) => rows.push(r),
            Err(reason) => errors.push(RowError { row, reason }),
        }
    }
    Ok((rows, errors))
}

fn csv_row(
    row: usize,
    line: &str,
    lon: Option<usize>,
    lat: Option<usize>,
    class: Option<usize>,
    value: Option<usize>,
    window: Option<usize>,
) -> Result<RawLabel, String> {
    let fields = csv_fields(line)?;
    let get = |i: Option<usize>| {
        i.and_then(|i| fields.get(i))
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    };
    let window_id = get(window).map(str::to_owned);
    let geometry = match (get(lon), get(lat)) {
        (Some(x), Some(y)) => {
            let (x, y) = (number(x)?, number(y)?);
            let g = json!({"type": "Point", "coordinates": [x, y]});
            let parsed = parse_label_geometry(&g).map_err(|e| format!("bad geometry: {e}"))?;
            Some((g, parsed))
        }
        (None, None) => None,
        _ => return Err("bad geometry: give both lon and lat".into()),
    };
    let class = get(class).map(|s| match s.parse::<i64>() {
        Ok(i) => ClassRef::Id(i),
        Err(_) => ClassRef::Name(s.to_owned()),
    });
    let value = get(value).map(number).transpose()?;
    Ok(RawLabel {
        row,
        geometry,
        window_id,
        class,
        value,
    })
}

/// The project's legend: name and id lookups.
struct Legend {
    by_id: HashMap<i64, String>,
    by_name: HashMap<String, i64>,
}

impl Legend {
    fn of(project: &Project) -> Self {
        let mut by_id = HashMap::new();
        let mut by_name = HashMap::new();
        for c in project.classes.as_array().into_iter().flatten() {
            if let (Some(id), Some(name)) = (c["id"].as_i64(), c["name"].as_str()) {
                by_id.insert(id, name.to_owned());
                by_name.insert(name.to_lowercase(), id);
            }
        }
        Self { by_id, by_name }
    }

    fn resolve(&self, c: &ClassRef) -> Result<i32, String> {
        let id = match c {
            ClassRef::Id(i) => self.by_id.contains_key(i).then_some(*i),
            ClassRef::Name(n) => self.by_name.get(&n.to_lowercase()).copied(),
        };
        let shown = match c {
            ClassRef::Id(i) => i.to_string(),
            ClassRef::Name(n) => format!("{n:?}"),
        };
        id.and_then(|i| i32::try_from(i).ok()).ok_or_else(|| {
            if self.by_id.is_empty() {
                format!("unknown class {shown}: the project has no classes")
            } else {
                format!("unknown class {shown}")
            }
        })
    }

    fn name(&self, id: i32) -> Option<&str> {
        self.by_id.get(&i64::from(id)).map(String::as_str)
    }
}

fn grid_of(w: &WindowGrid) -> Option<PixelGrid> {
    let geotransform: [f64; 6] = serde_json::from_value(w.geotransform.clone()).ok()?;
    Some(PixelGrid {
        epsg: u32::try_from(w.epsg).ok()?,
        geotransform,
        size: u32::try_from(w.size).ok()?,
    })
}

/// The windows (and pixels) a geometry in EPSG:4326 covers.
fn coverage_of(
    rasterizer: &mut Rasterizer,
    geometry: &geo::Geometry<f64>,
    windows: &[WindowGrid],
) -> Result<Vec<Coverage>, String> {
    let Some(rect) = geometry.bounding_rect() else {
        return Ok(Vec::new());
    };
    let eps = 1e-7;
    let mut out = Vec::new();
    for w in windows {
        if w.bbox_west > rect.max().x + eps
            || w.bbox_east < rect.min().x - eps
            || w.bbox_south > rect.max().y + eps
            || w.bbox_north < rect.min().y - eps
        {
            continue;
        }
        let Some(grid) = grid_of(w) else { continue };
        let pixels = rasterizer
            .rasterize(geometry, &grid)
            .map_err(|e| format!("bad geometry: {e}"))?;
        if !pixels.is_empty() {
            out.push(Coverage {
                window_id: w.id.clone(),
                pixel_count: i32::try_from(pixels.len()).unwrap_or(i32::MAX),
                pixels: Some(bitmask(&pixels, grid.size)),
            });
        }
    }
    Ok(out)
}

fn whole_window(w: &WindowGrid) -> Coverage {
    Coverage {
        window_id: w.id.clone(),
        pixels: None,
        pixel_count: w.size.saturating_mul(w.size).max(1),
    }
}

fn aoi_of(project: &Project) -> Option<MultiPolygon<f64>> {
    match parse_label_geometry(&project.aoi).ok()? {
        geo::Geometry::Polygon(p) => Some(MultiPolygon(vec![p])),
        geo::Geometry::MultiPolygon(m) => Some(m),
        _ => None,
    }
}

/// Checks rows against a project: classes, task, AOI and windows.
struct RowChecker<'a> {
    task: &'a str,
    legend: Legend,
    aoi: Option<MultiPolygon<f64>>,
    windows: &'a [WindowGrid],
    by_id: HashMap<&'a str, &'a WindowGrid>,
    rasterizer: Rasterizer,
}

impl<'a> RowChecker<'a> {
    fn new(project: &'a Project, windows: &'a [WindowGrid]) -> Self {
        Self {
            task: &project.task,
            legend: Legend::of(project),
            aoi: aoi_of(project),
            windows,
            by_id: windows.iter().map(|w| (w.id.as_str(), w)).collect(),
            rasterizer: Rasterizer::new(),
        }
    }

    /// The label of a row, with its windows worked out (when the project has windows).
    fn check(&mut self, raw: &RawLabel) -> Result<NewLabel, String> {
        let (class_id, value) = if self.task == "regression" {
            match raw.value {
                Some(v) => (None, Some(v)),
                None => return Err("bad number: this regression project needs a `value`".into()),
            }
        } else {
            match &raw.class {
                Some(c) => (Some(self.legend.resolve(c)?), None),
                None => {
                    return Err(format!(
                        "unknown class: this {} project needs a `class`",
                        self.task
                    ));
                }
            }
        };
        if let Some((json, g)) = &raw.geometry {
            if self.aoi.as_ref().is_some_and(|a| !a.intersects(g)) {
                return Err("outside the AOI".into());
            }
            let coverage = if self.windows.is_empty() {
                None
            } else {
                let c = coverage_of(&mut self.rasterizer, g, self.windows)?;
                if c.is_empty() {
                    return Err("bad geometry: covers no pixel centre of any window".into());
                }
                Some(c)
            };
            return Ok(NewLabel {
                geometry: Some(json.clone()),
                window_id: None,
                class_id,
                value,
                coverage,
            });
        }
        let Some(id) = &raw.window_id else {
            return Err("bad geometry: give a geometry (or lon/lat) or a window_id".into());
        };
        let Some(w) = self.by_id.get(id.as_str()) else {
            return Err(format!("unknown window {id:?}"));
        };
        Ok(NewLabel {
            geometry: None,
            window_id: Some(id.clone()),
            class_id,
            value,
            coverage: Some(vec![whole_window(w)]),
        })
    }
}

/// Checks rows against the project and works out their windows; bad rows go to `errors`. Runs GDAL:
/// call it from a blocking task.
fn check_rows(
    project: &Project,
    windows: &[WindowGrid],
    rows: Vec<RawLabel>,
    errors: &mut Vec<RowError>,
) -> Vec<NewLabel> {
    let mut checker = RowChecker::new(project, windows);
    let mut out = Vec::with_capacity(rows.len());
    for raw in rows {
        match checker.check(&raw) {
            Ok(l) => out.push(l),
            Err(reason) => errors.push(RowError {
                row: raw.row,
                reason,
            }),
        }
    }
    out
}

/// Imports a labels file into a project of `org_id` as a new version. Shared by the API and the CLI.
/// Rows with problems are reported and skipped; when no row is usable nothing is stored (422
/// `no_valid_labels`, the row errors in `details`). A replace with an empty file clears the labels.
#[expect(
    clippy::too_many_arguments,
    reason = "one import's inputs, all required"
)]
pub async fn import_file(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
    body: &[u8],
    format: Format,
    replace: bool,
    source: &str,
    created_by: Option<Uuid>,
) -> ApiResult<ImportReport> {
    let project = projects::get(pool, org_id, project_id).await?;
    let (rows, mut errors) = match format {
        Format::Geojson => parse_geojson(body)?,
        Format::Csv => parse_csv(body)?,
    };
    let windows = labels::window_grids(pool, project_id).await?;
    let (labels_to_add, errors) = tokio::task::spawn_blocking(move || {
        let out = check_rows(&project, &windows, rows, &mut errors);
        errors.sort_by_key(|e| e.row);
        (out, errors)
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    // A replace with no usable row would wipe the labels because of a bad file: refuse it too.
    if labels_to_add.is_empty() && (!replace || !errors.is_empty()) {
        let mut e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_valid_labels",
            format!(
                "no label could be imported ({} rows rejected)",
                errors.len()
            ),
        );
        e.details = json!(errors);
        return Err(e);
    }
    let set = labels::import(
        pool,
        project_id,
        &labels_to_add,
        replace,
        source,
        created_by,
    )
    .await?;
    Ok(ImportReport {
        version: set.version,
        imported: labels_to_add.len(),
        unassigned: labels_to_add
            .iter()
            .filter(|l| l.coverage.is_none())
            .count(),
        errors,
    })
}

/// Works out the windows of labels imported before their windows were planned.
pub async fn assign_pending(pool: &PgPool, project_id: Uuid) -> ApiResult<usize> {
    let pending = labels::unassigned(pool, project_id).await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let windows = labels::window_grids(pool, project_id).await?;
    if windows.is_empty() {
        return Ok(0);
    }
    let coverage = tokio::task::spawn_blocking(move || {
        let by_id: HashMap<&str, &WindowGrid> =
            windows.iter().map(|w| (w.id.as_str(), w)).collect();
        let mut rasterizer = Rasterizer::new();
        let mut out = Vec::new();
        for l in &pending {
            let c = match (&l.geometry, &l.window_id) {
                (Some(g), _) => parse_label_geometry(g)
                    .ok()
                    .and_then(|g| coverage_of(&mut rasterizer, &g, &windows).ok())
                    .unwrap_or_default(),
                (None, Some(w)) => by_id
                    .get(w.as_str())
                    .map(|w| vec![whole_window(w)])
                    .unwrap_or_default(),
                (None, None) => Vec::new(),
            };
            out.push((l.id, c));
        }
        out
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    let n = coverage.len();
    labels::assign(pool, project_id, &coverage).await?;
    Ok(n)
}

/// `?format=&mode=` of an import.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// `geojson` or `csv` (default: from the content type).
    pub format: Option<Format>,
    /// `append` (default) adds to the current labels; `replace` makes a version with only these.
    pub mode: Option<ImportMode>,
}

/// How an import combines with the current labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImportMode {
    /// Add to the current labels.
    Append,
    /// Replace them.
    Replace,
}

fn format_of(headers: &HeaderMap, explicit: Option<Format>) -> ApiResult<Format> {
    if let Some(f) = explicit {
        return Ok(f);
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_lowercase();
    match ct.as_str() {
        "application/geo+json" | "application/json" => Ok(Format::Geojson),
        "text/csv" => Ok(Format::Csv),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send labels as `application/geo+json`, `application/json` or `text/csv`",
        )),
    }
}

/// Imports labels as a new version; bad rows are reported and skipped.
#[utoipa::path(post, path = "/api/v1/projects/{id}/labels/import", params(ImportQuery), tag = "labels",
    request_body(content = String, description = "GeoJSON FeatureCollection or CSV", content_type = "application/geo+json"),
    responses((status = 201, body = ImportReport), (status = 404, body = super::error::ErrorBody),
        (status = 415, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn import_labels(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    Query(q): Query<ImportQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, axum::Json<ImportReport>)> {
    actor.require(Role::Member)?;
    projects::get(&state.pool, actor.org_id, project_id).await?;
    let format = format_of(&headers, q.format)?;
    let body = body.map_err(|e| {
        ApiError::new(
            e.status(),
            "invalid_body",
            format!("the labels file could not be read: {}", e.body_text()),
        )
    })?;
    let report = import_file(
        &state.pool,
        actor.org_id,
        project_id,
        &body,
        format,
        q.mode == Some(ImportMode::Replace),
        "api",
        actor.user_id,
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(report)))
}

/// `?format=&version=` of an export.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `geojson` (default) or `csv`.
    pub format: Option<Format>,
    /// Label-set version (default: the latest).
    pub version: Option<i32>,
}

/// A version of a project's labels rendered as a file; also what the CLI writes.
#[derive(Debug, Clone)]
pub struct Export {
    /// Version exported.
    pub version: i32,
    /// File contents.
    pub body: String,
    /// Labels left out (polygons have no CSV form).
    pub skipped: usize,
}

/// Renders version `version` (latest when `None`) of a project of `org_id`'s labels.
pub async fn export_file(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
    format: Format,
    version: Option<i32>,
) -> ApiResult<Export> {
    let project = projects::get(pool, org_id, project_id).await?;
    let Some(version) = labels::resolve_version(pool, project_id, version).await? else {
        return Err(ApiError::not_found("label set"));
    };
    let rows = labels::labels_at(pool, project_id, version).await?;
    let legend = Legend::of(&project);
    let class_text = |id: i32| {
        legend
            .name(id)
            .map_or_else(|| id.to_string(), str::to_owned)
    };
    let regression = project.task == "regression";
    match format {
        Format::Geojson => {
            let features: Vec<Value> = rows
                .iter()
                .map(|l| {
                    let mut p = Map::new();
                    if let Some(c) = l.class_id {
                        p.insert("class".into(), json!(class_text(c)));
                        p.insert("class_id".into(), json!(c));
                    }
                    if let Some(v) = l.value {
                        p.insert("value".into(), json!(v));
                    }
                    if let Some(w) = &l.window_id {
                        p.insert("window_id".into(), json!(w));
                    }
                    json!({"type": "Feature", "id": l.id, "geometry": l.geometry, "properties": p})
                })
                .collect();
            let doc = json!({"type": "FeatureCollection", "label_set_version": version, "features": features});
            Ok(Export {
                version,
                body: doc.to_string(),
                skipped: 0,
            })
        }
        Format::Csv => {
            let mut body = String::from(if regression {
                "lon,lat,value,window_id\n"
            } else {
                "lon,lat,class,window_id\n"
            });
            let mut skipped = 0;
            for l in &rows {
                let (lon, lat) = match &l.geometry {
                    Some(g) if g["type"] == "Point" => (
                        g["coordinates"][0]
                            .as_f64()
                            .map(|v| v.to_string())
                            .unwrap_or_default(),
                        g["coordinates"][1]
                            .as_f64()
                            .map(|v| v.to_string())
                            .unwrap_or_default(),
                    ),
                    Some(_) => {
                        skipped += 1;
                        continue;
                    }
                    None => (String::new(), String::new()),
                };
                let target = match (l.class_id, l.value) {
                    (Some(c), _) => csv_quote(&class_text(c)),
                    (None, Some(v)) => v.to_string(),
                    (None, None) => String::new(),
                };
                let window = csv_quote(l.window_id.as_deref().unwrap_or(""));
                body.push_str(&format!("{lon},{lat},{target},{window}\n"));
            }
            Ok(Export {
                version,
                body,
                skipped,
            })
        }
    }
}

/// Exports a version of the labels as GeoJSON or CSV (polygons have no CSV form: the count left out is in
/// `x-labels-skipped`).
#[utoipa::path(get, path = "/api/v1/projects/{id}/labels", params(ExportQuery), tag = "labels",
    responses((status = 200, description = "GeoJSON FeatureCollection or CSV", content_type = "application/geo+json"),
        (status = 404, body = super::error::ErrorBody)))]
pub async fn export_labels(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Response> {
    let format = q.format.unwrap_or(Format::Geojson);
    let export = export_file(&state.pool, actor.org_id, project_id, format, q.version).await?;
    let content_type = match format {
        Format::Geojson => "application/geo+json",
        Format::Csv => "text/csv; charset=utf-8",
    };
    let mut resp = (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        export.body,
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert("x-label-set-version", HeaderValue::from(export.version));
    h.insert("x-labels-skipped", HeaderValue::from(export.skipped));
    Ok(resp)
}

/// `?version=` of the summary.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    /// Label-set version (default: the latest).
    pub version: Option<i32>,
}

/// Counts per class and split of a version, and every version's counts.
#[utoipa::path(get, path = "/api/v1/projects/{id}/labels/summary", params(SummaryQuery), tag = "labels",
    responses((status = 200, body = Summary), (status = 404, body = super::error::ErrorBody)))]
pub async fn label_summary(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    Query(q): Query<SummaryQuery>,
) -> ApiResult<axum::Json<Summary>> {
    projects::get(&state.pool, actor.org_id, project_id).await?;
    Ok(axum::Json(
        labels::summary(&state.pool, project_id, q.version).await?,
    ))
}

/// Removes one label: an edit, so a new version without it (older versions keep it).
#[utoipa::path(delete, path = "/api/v1/projects/{id}/labels/{label_id}", tag = "labels",
    responses((status = 200, body = LabelSet), (status = 404, body = super::error::ErrorBody)))]
pub async fn delete_label(
    State(state): State<AppState>,
    actor: Actor,
    Path((project_id, label_id)): Path<(Uuid, i64)>,
) -> ApiResult<axum::Json<LabelSet>> {
    actor.require(Role::Member)?;
    projects::get(&state.pool, actor.org_id, project_id).await?;
    match labels::remove(&state.pool, project_id, &[label_id], actor.user_id).await {
        Ok(set) => Ok(axum::Json(set)),
        Err(groundwork_store::Error::Conflict(_)) => Err(ApiError::not_found("label")),
        Err(e) => Err(e.into()),
    }
}

/// What a split did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SplitReport {
    /// The new label-set version holding the split.
    pub version: i32,
    /// Windows sampled per split.
    pub windows: SplitCounts,
    /// Blocks the sample was grouped into.
    pub blocks: usize,
    /// The options applied (defaults filled in).
    pub options: SplitOptions,
    /// The version record.
    pub label_set: LabelSet,
}

/// Samples windows and splits them into train/val/test by blocks of neighbouring cells; the result is a
/// new label-set version.
#[utoipa::path(post, path = "/api/v1/projects/{id}/labels/split", request_body = SplitOptions, tag = "labels",
    responses((status = 201, body = SplitReport), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn split_windows(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    Json(options): Json<SplitOptions>,
) -> ApiResult<(StatusCode, axum::Json<SplitReport>)> {
    actor.require(Role::Member)?;
    projects::get(&state.pool, actor.org_id, project_id).await?;
    let invalid = |e: sampling::InvalidOptions| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_options", e.0)
    };
    options.validate().map_err(invalid)?;
    assign_pending(&state.pool, project_id).await?;
    let cells = labels::split_cells(&state.pool, project_id).await?;
    if cells.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_windows",
            "the project has no windows yet: start an acquisition first",
        ));
    }
    let assignments = sampling::sample_and_split(&cells, &options).map_err(invalid)?;
    if assignments.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_options",
            "the sampling picked no windows",
        ));
    }
    let mut windows = SplitCounts::default();
    let mut blocks = std::collections::HashSet::new();
    for a in &assignments {
        match a.split {
            labels::Split::Train => windows.train += 1,
            labels::Split::Val => windows.val += 1,
            labels::Split::Test => windows.test += 1,
        }
        blocks.insert(a.block.as_str());
    }
    let blocks = blocks.len();
    let label_set = labels::record_split(
        &state.pool,
        project_id,
        &assignments,
        &json!(options),
        actor.user_id,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(SplitReport {
            version: label_set.version,
            windows,
            blocks,
            options,
            label_set,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_follow_rfc_4180_quoting() {
        assert_eq!(csv_fields("a,b,,c").unwrap(), ["a", "b", "", "c"]);
        assert_eq!(
            csv_fields(r#"1,"x, y","say ""hi""""#).unwrap(),
            ["1", "x, y", r#"say "hi""#]
        );
        assert!(csv_fields(r#"1,"open"#).is_err());
        assert_eq!(csv_fields(&csv_quote("a,\"b\"")).unwrap(), ["a,\"b\""]);
    }

    #[test]
    fn csv_rows_report_their_line_and_reason() {
        let body = b"lon,lat,class\n3.0,45.0,forest\n\nabc,45.0,forest\n3.0,45.0\n4.0,,water\n";
        let (rows, errors) = parse_csv(body).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].row, 2);
        assert_eq!(rows[0].class, Some(ClassRef::Name("forest".into())));
        // Line 5 has no class: a row without a target is caught later, against the project.
        assert_eq!(rows[1].row, 5);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].row, 4);
        assert!(errors[0].reason.contains("bad number"), "{errors:?}");
        assert_eq!(errors[1].row, 6);
        assert!(errors[1].reason.contains("bad geometry"), "{errors:?}");
        assert!(parse_csv(b"x,y\n1,2\n").is_err());
        assert!(parse_csv(b"").is_err());
    }

    #[test]
    fn geojson_features_are_read_one_by_one() {
        let doc = json!({"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [3, 45]}, "properties": {"class": 2}},
            {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[3, 45], [4, 46]]}, "properties": {"class": 2}},
            {"type": "Feature", "geometry": null, "properties": {"window_id": "w1", "value": "1.5"}},
            {"type": "Feature", "geometry": null, "properties": {"value": "x"}},
            {"type": "Thing"}
        ]});
        let (rows, errors) = parse_geojson(doc.to_string().as_bytes()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].class, Some(ClassRef::Id(2)));
        assert_eq!(rows[1].value, Some(1.5));
        let rows_with_errors: Vec<usize> = errors.iter().map(|e| e.row).collect();
        assert_eq!(rows_with_errors, [1, 3, 4]);
        assert!(parse_geojson(b"{\"type\": \"Point\"}").is_err());
        assert!(parse_geojson(b"not json").is_err());
    }
}
