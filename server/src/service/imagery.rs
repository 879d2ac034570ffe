//! Acquisition: planning a project's windows and starting a run of partitioned `acquire` steps with an
//! `acquire_summary` fan-in, and listing the windows with their status. Browsing the acquired imagery:
//! the layers a project has ([`imagery_layers`]) and z/x/y PNG tiles drawn from its window tensors
//! ([`imagery_tile_png`], see [`groundwork_imagery::preview`]).

use crate::api::AppState;
use crate::api::auth::{Actor, Role};
use crate::api::error::{ApiError, ApiResult, ErrorCode, FieldError};
use futures::{StreamExt, TryStreamExt};
use groundwork_imagery::preview::{self, Placement, Rendering, WindowImage};
use groundwork_store::jobs::{self, RunWithSteps};
use groundwork_store::projects::Project;
use groundwork_store::windows::AcquiredWindow;
use groundwork_store::{projects, windows};
use groundwork_types::Modality;
use groundwork_types::keys::ProjectKeys;
use groundwork_worker::steps::{AcquireArgs, acquisition_steps, default_partitions};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Body of `POST /api/v1/projects/{id}/acquire`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireBody {
    /// STAC API URL, or a static `catalog.json` path or URL.
    pub stac: String,
    /// `{"kind": "earth-search"}` (default), `{"kind": "planetary-computer", "sas_endpoint": …}` or a custom profile.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub profile: Option<Value>,
    /// Largest scene cloud cover accepted, percent.
    #[serde(default)]
    pub max_cloud: Option<f64>,
    /// Partition steps (default: one per 64 windows, at most 32).
    #[serde(default)]
    pub partitions: Option<usize>,
    /// Fraction of windows that must succeed (default 0.95).
    #[serde(default)]
    pub success_threshold: Option<f64>,
}

/// `?status=&limit=&cursor=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WindowQuery {
    /// `pending | acquired | quarantined`.
    pub status: Option<String>,
    /// 1–1000 (default 200).
    pub limit: Option<i64>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// A page of windows with the project's counts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WindowPage {
    /// Counts by status over the whole project.
    pub counts: windows::Counts,
    /// Windows.
    pub items: Vec<windows::Window>,
    /// Cursor of the next page.
    pub next_cursor: Option<String>,
}

/// Plans the windows and starts the acquisition run.
pub async fn acquire(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    idempotency_key: Option<&str>,
    body: AcquireBody,
) -> ApiResult<RunWithSteps> {
    actor.require(Role::Member)?;
    let project = projects::get(&state.pool, actor.org_id, project_id).await?;
    let mut errors = Vec::new();
    let profile = check_catalogue(
        state,
        &body.stac,
        body.profile.clone(),
        body.max_cloud,
        &mut errors,
    )?;
    if body
        .success_threshold
        .is_some_and(|t| !(0.0..=1.0).contains(&t))
    {
        errors.push(FieldError {
            field: "success_threshold".into(),
            message: "must be 0–1".into(),
        });
    }
    if body.partitions.is_some_and(|p| !(1..=256).contains(&p)) {
        errors.push(FieldError {
            field: "partitions".into(),
            message: "must be 1–256".into(),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    // Plan now so the caller sees the windows at once and the partition count fits the AOI.
    let planned = groundwork_worker::steps::plan_windows(&state.pool, &project)
        .await
        .map_err(|e| {
            ApiError::validation(vec![FieldError {
                field: "aoi".into(),
                message: format!("{e:#}"),
            }])
        })?;
    let partitions = body
        .partitions
        .unwrap_or_else(|| default_partitions(planned.len()))
        .min(planned.len().max(1));
    let steps = acquisition_steps(
        &AcquireArgs {
            stac: body.stac.clone(),
            profile,
            max_cloud: body.max_cloud,
            partition: [0, 1],
            success_threshold: body.success_threshold.unwrap_or(0.95),
            period: None,
        },
        partitions,
    );
    let key = idempotency_key;
    let run = jobs::create_run(&state.pool, actor.org_id, project_id, &steps, key).await?;
    actor
        .audit(
            state,
            "project.acquire",
            "run",
            run.run.id,
            json!({"project_id": project_id, "partitions": partitions}),
        )
        .await;
    Ok(run)
}

/// Checks a catalogue a user named (through the outbound-request policy), its profile and cloud
/// limit, adding what is wrong to `errors`; returns the profile (422 when it does not parse).
pub fn check_catalogue(
    state: &AppState,
    stac: &str,
    profile: Option<Value>,
    max_cloud: Option<f64>,
    errors: &mut Vec<FieldError>,
) -> ApiResult<groundwork_imagery::Profile> {
    if stac.trim().is_empty() {
        errors.push(FieldError {
            field: "stac".into(),
            message: "give a STAC API URL or a catalog.json path".into(),
        });
    } else if let Err(e) = groundwork_imagery::Source::checked(stac, &state.outbound) {
        errors.push(FieldError {
            field: "stac".into(),
            message: e.to_string(),
        });
    }
    let profile: groundwork_imagery::Profile = match profile {
        None => groundwork_imagery::Profile::EarthSearch,
        Some(v) => serde_json::from_value(v).map_err(|e| {
            ApiError::validation(vec![FieldError {
                field: "profile".into(),
                message: e.to_string(),
            }])
        })?,
    };
    if let groundwork_imagery::Profile::PlanetaryComputer { sas_endpoint } = &profile
        && let Err(e) = state.outbound.check_url_syntax(sas_endpoint)
    {
        errors.push(FieldError {
            field: "profile".into(),
            message: format!("sas_endpoint: {e}"),
        });
    }
    if max_cloud.is_some_and(|c| !(0.0..=100.0).contains(&c)) {
        errors.push(FieldError {
            field: "max_cloud".into(),
            message: "must be 0–100".into(),
        });
    }
    Ok(profile)
}

/// A catalogue a run reads from, checked.
#[derive(Debug, Clone)]
pub struct Catalogue {
    /// STAC API URL or `catalog.json`.
    pub stac: String,
    /// Its profile.
    pub profile: groundwork_imagery::Profile,
    /// Largest scene cloud cover.
    pub max_cloud: Option<f64>,
}

/// The catalogue a later run of the project reads from: what the request gives, the rest from the
/// project's last acquisition (its profile only when the request names no other catalogue); 422
/// when there is neither. The catalogue goes through the outbound-request policy (field errors are
/// added to `errors`).
pub async fn catalogue_or_last(
    state: &AppState,
    project_id: Uuid,
    (stac, profile, max_cloud): (Option<String>, Option<Value>, Option<f64>),
    errors: &mut Vec<FieldError>,
) -> ApiResult<Catalogue> {
    let last: Option<AcquireArgs> =
        jobs::latest_args(&state.pool, project_id, groundwork_types::StepKind::Acquire)
            .await?
            .and_then(|v| serde_json::from_value(v).ok());
    let named = stac.is_some();
    let Some(stac) = stac.or_else(|| last.as_ref().map(|a| a.stac.clone())) else {
        return Err(ApiError::validation(vec![FieldError {
            field: "stac".into(),
            message: "the project has no acquisition to take the catalogue from; give stac".into(),
        }]));
    };
    let profile = match profile {
        Some(p) => Some(p),
        None if !named => last
            .as_ref()
            .and_then(|a| serde_json::to_value(&a.profile).ok()),
        None => None,
    };
    let profile = check_catalogue(state, &stac, profile, max_cloud, errors)?;
    Ok(Catalogue {
        stac,
        profile,
        max_cloud: max_cloud.or_else(|| last.as_ref().and_then(|a| a.max_cloud)),
    })
}

/// A project's windows.
pub async fn list_windows(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    q: WindowQuery,
) -> ApiResult<WindowPage> {
    projects::get(&state.pool, actor.org_id, project_id).await?;
    let limit = window_page_limit(&q)?;
    let items = windows::list(
        &state.pool,
        project_id,
        q.status.as_deref(),
        q.cursor.as_deref(),
        limit + 1,
    )
    .await?;
    let counts = windows::counts(&state.pool, project_id).await?;
    Ok(window_page(items, limit, counts))
}

/// The windows a monitoring prediction run acquired for itself (another period or area than its
/// project's), with its counts; empty for other runs.
pub async fn list_run_windows(
    state: &AppState,
    actor: &Actor,
    run_id: Uuid,
    q: WindowQuery,
) -> ApiResult<WindowPage> {
    groundwork_store::jobs::get_run(&state.pool, actor.org_id, run_id).await?;
    let limit = window_page_limit(&q)?;
    let items = windows::run_list(
        &state.pool,
        run_id,
        q.status.as_deref(),
        q.cursor.as_deref(),
        limit + 1,
    )
    .await?;
    let counts = windows::run_counts(&state.pool, run_id).await?;
    Ok(window_page(items, limit, counts))
}

/// The page size a window query asks for, after checking its status.
fn window_page_limit(q: &WindowQuery) -> ApiResult<i64> {
    if q.status
        .as_deref()
        .is_some_and(|s| !["pending", "acquired", "quarantined", "empty"].contains(&s))
    {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            "status must be pending, acquired, quarantined or empty",
        ));
    }
    let limit = q.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            "limit must be 1–1000",
        ));
    }
    Ok(limit)
}

/// A page of windows from `limit + 1` fetched.
fn window_page(mut items: Vec<windows::Window>, limit: i64, counts: windows::Counts) -> WindowPage {
    let more = items.len() > usize::try_from(limit).unwrap_or(0);
    items.truncate(usize::try_from(limit).unwrap_or(0));
    let next_cursor = if more {
        items.last().map(|w| w.id.clone())
    } else {
        None
    };
    WindowPage {
        counts,
        items,
        next_cursor,
    }
}

/// Most windows one imagery tile is drawn from: a tile that meets more (zoomed far out) comes back
/// transparent; [`ImageryLayers::min_zoom`] says from which zoom tiles are drawn.
pub const MAX_TILE_WINDOWS: usize = 128;

/// Bytes of window images [`PreviewCache`] keeps (64 MiB).
pub const PREVIEW_CACHE_BYTES: usize = 64 << 20;

/// Acquired windows whose tensors are tried, in id order, for a modality's time steps.
const TIME_PROBES: i64 = 3;

/// Tensor files read at once for one tile.
const CONCURRENT_READS: usize = 4;

/// `GET /api/v1/projects/{id}/imagery`: what acquired imagery can be browsed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImageryLayers {
    /// `[west, south, east, north]` (EPSG:4326) of the acquired windows; null when none is acquired.
    pub bounds: Option<[f64; 4]>,
    /// The smallest zoom whose tiles are drawn (a tile meeting more than 128 windows comes back
    /// transparent); null when nothing is acquired.
    pub min_zoom: Option<u8>,
    /// One layer per modality of the project with readable imagery; empty before acquisition.
    pub layers: Vec<ImageryLayer>,
}

/// The imagery of one modality.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImageryLayer {
    /// `sentinel2_l2a`, `sentinel1` or `landsat`.
    pub modality: String,
    /// Its renderings, the default first: `true_color` and `false_color` (Sentinel-2, Landsat),
    /// `vv_vh` (Sentinel-1).
    pub renderings: Vec<String>,
    /// Its time steps.
    pub times: Vec<ImageryTime>,
}

/// One time step of a layer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImageryTime {
    /// The `{time}` of tile URLs.
    pub index: usize,
    /// `YYYY-MM` of the step's first day.
    pub label: String,
}

/// A small least-recently-used map bounded by the total weight of its values.
struct Lru<K, V> {
    map: HashMap<K, (V, u64, usize)>,
    tick: u64,
    weight: usize,
    cap: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> Lru<K, V> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            tick: 0,
            weight: 0,
            cap,
        }
    }

    fn get(&mut self, k: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(k).map(|(v, t, _)| {
            *t = tick;
            v.clone()
        })
    }

    fn put(&mut self, k: K, v: V, weight: usize) {
        self.tick += 1;
        if let Some((_, _, w)) = self.map.insert(k, (v, self.tick, weight)) {
            self.weight -= w;
        }
        self.weight += weight;
        while self.weight > self.cap && self.map.len() > 1 {
            let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (_, t, _))| *t)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((_, _, w)) = self.map.remove(&oldest) {
                self.weight -= w;
            }
        }
    }
}

/// Key of a window image: the tensor's object key, the time step and the rendering.
type ImageKey = (String, usize, Rendering);

/// Window images and time steps of tensors under immutable object keys (an acquisition's own
/// folder), kept in memory: images up to [`PREVIEW_CACHE_BYTES`], least recently used dropped first.
pub struct PreviewCache {
    images: Mutex<Lru<ImageKey, Arc<WindowImage>>>,
    times: Mutex<Lru<String, Arc<Vec<[i32; 3]>>>>,
}

impl Default for PreviewCache {
    fn default() -> Self {
        Self {
            images: Mutex::new(Lru::new(PREVIEW_CACHE_BYTES)),
            times: Mutex::new(Lru::new(4096)),
        }
    }
}

impl std::fmt::Debug for PreviewCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviewCache").finish_non_exhaustive()
    }
}

impl PreviewCache {
    fn image(&self, k: &ImageKey) -> Option<Arc<WindowImage>> {
        self.images.lock().ok()?.get(k)
    }

    fn put_image(&self, k: ImageKey, v: Arc<WindowImage>) {
        let weight = v.size_bytes();
        if let Ok(mut c) = self.images.lock() {
            c.put(k, v, weight);
        }
    }

    fn times(&self, key: &str) -> Option<Arc<Vec<[i32; 3]>>> {
        self.times.lock().ok()?.get(&key.to_owned())
    }

    fn put_times(&self, key: String, v: Arc<Vec<[i32; 3]>>) {
        if let Ok(mut c) = self.times.lock() {
            c.put(key, v, 1);
        }
    }
}

/// The key of a window's `m` tensor, and whether it is immutable: the key the acquisition recorded
/// (in its own folder), else the project's fixed window key of windows acquired before per-acquisition
/// folders (rewritten by a later acquisition, so never cached).
fn tensor_key(project: &Project, w: &AcquiredWindow, m: Modality) -> (String, bool) {
    let suffix = format!("/{}.safetensors", m.name());
    match w.objects.iter().find(|k| k.ends_with(&suffix)) {
        Some(k) => (k.clone(), true),
        None => (
            ProjectKeys::new(project.org_id, project.id).window(&w.id, m),
            false,
        ),
    }
}

/// An object's bytes; `None` when it does not exist.
async fn fetch(state: &AppState, key: &str) -> ApiResult<Option<Vec<u8>>> {
    let objects = state
        .objects
        .clone()
        .ok_or_else(|| ApiError::internal(&"the server has no object store"))?;
    let path = object_store::path::Path::from(key);
    match objects.get(&path).await {
        Ok(r) => r
            .bytes()
            .await
            .map(|b| Some(Vec::from(b)))
            .map_err(|e| ApiError::internal(&e)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(ApiError::internal(&e)),
    }
}

/// The time steps of `m`: those of the first of `probes` whose tensor can be read (every window of
/// an acquisition has the same); empty when none can.
async fn layer_times(
    state: &AppState,
    project: &Project,
    probes: &[AcquiredWindow],
    m: Modality,
) -> ApiResult<Arc<Vec<[i32; 3]>>> {
    for w in probes {
        let (key, immutable) = tensor_key(project, w, m);
        if immutable && let Some(t) = state.previews.times(&key) {
            return Ok(t);
        }
        let Some(bytes) = fetch(state, &key).await? else {
            continue;
        };
        let times = tokio::task::spawn_blocking(move || preview::window_times(&bytes))
            .await
            .map_err(|e| ApiError::internal(&e))?;
        match times {
            Ok(t) => {
                let t = Arc::new(t);
                if immutable {
                    state.previews.put_times(key, t.clone());
                }
                return Ok(t);
            }
            Err(e) => tracing::warn!(window = %w.id, key, error = %e, "unreadable window tensor"),
        }
    }
    Ok(Arc::new(Vec::new()))
}

/// Acquired windows whose tensors tell a modality's time steps.
async fn probes(state: &AppState, project_id: Uuid) -> ApiResult<Vec<AcquiredWindow>> {
    Ok(windows::acquired_in_bbox(
        &state.pool,
        project_id,
        [-180.0, -90.0, 180.0, 90.0],
        TIME_PROBES,
    )
    .await?)
}

/// The smallest zoom at which a tile meets at most [`MAX_TILE_WINDOWS`] windows of side `side`
/// metres, anywhere in `bounds`.
fn min_zoom(bounds: [f64; 4], side: f64) -> u8 {
    // Tiles are widest on the ground at the latitude nearest the equator.
    let lat = if bounds[1] <= 0.0 && bounds[3] >= 0.0 {
        0.0
    } else {
        bounds[1].abs().min(bounds[3].abs())
    };
    let cos = lat.to_radians().cos();
    let per_axis = (MAX_TILE_WINDOWS as f64).sqrt();
    (0..=24u8)
        .find(|&z| {
            let tile =
                2.0 * groundwork_imagery::publish::MERCATOR_ORIGIN * cos / f64::from(1u32 << z);
            tile / side.max(1.0) + 2.0 <= per_axis
        })
        .unwrap_or(24)
}

/// What acquired imagery of a project can be browsed: its bounds and, per modality with readable
/// tensors, the renderings and time steps.
pub async fn imagery_layers(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
) -> ApiResult<ImageryLayers> {
    let project = projects::get(&state.pool, actor.org_id, project_id).await?;
    let bounds = windows::acquired_bounds(&state.pool, project_id).await?;
    let mut layers = Vec::new();
    let mut zoom = None;
    if let Some(b) = bounds {
        let probes = probes(state, project_id).await?;
        let side = probes
            .first()
            .and_then(|w| {
                let p = placement(w).ok()?;
                Some(p.geotransform[1].abs() * f64::from(w.size))
            })
            .unwrap_or(640.0);
        zoom = Some(min_zoom(b, side));
        for &m in &project.modalities {
            let times = layer_times(state, &project, &probes, m).await?;
            if times.is_empty() {
                continue;
            }
            layers.push(ImageryLayer {
                modality: m.name().to_owned(),
                renderings: Rendering::for_modality(m)
                    .iter()
                    .map(|r| r.name().to_owned())
                    .collect(),
                times: times
                    .iter()
                    .enumerate()
                    .map(|(index, t)| ImageryTime {
                        index,
                        label: preview::time_label(*t),
                    })
                    .collect(),
            });
        }
    }
    Ok(ImageryLayers {
        bounds,
        min_zoom: zoom,
        layers,
    })
}

/// Where a window lies, from its row.
fn placement(w: &AcquiredWindow) -> Result<Placement, String> {
    let gt: [f64; 6] = serde_json::from_value(w.geotransform.clone())
        .map_err(|e| format!("geotransform of window {}: {e}", w.id))?;
    let epsg = u32::try_from(w.epsg).map_err(|e| format!("EPSG of window {}: {e}", w.id))?;
    Ok(Placement {
        epsg,
        geotransform: gt,
        bbox: [w.bbox_west, w.bbox_south, w.bbox_east, w.bbox_north],
    })
}

/// One window's image at `time` with `rendering`; `None` when its tensor is missing or unusable
/// (logged), so the tile shows the other windows.
async fn window_image(
    state: &AppState,
    project: &Project,
    w: AcquiredWindow,
    (m, time, rendering): (Modality, usize, Rendering),
) -> ApiResult<Option<Arc<WindowImage>>> {
    let (key, immutable) = tensor_key(project, &w, m);
    let cache_key = (key.clone(), time, rendering);
    if immutable && let Some(img) = state.previews.image(&cache_key) {
        return Ok(Some(img));
    }
    let placement = match placement(&w) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(window = %w.id, error = %e, "window without a usable grid");
            return Ok(None);
        }
    };
    let Some(bytes) = fetch(state, &key).await? else {
        return Ok(None);
    };
    let img = tokio::task::spawn_blocking(move || {
        preview::window_image_from_safetensors(&bytes, m, time, rendering, placement)
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    match img {
        Ok(img) => {
            let img = Arc::new(img);
            if immutable {
                state.previews.put_image(cache_key, img.clone());
            }
            Ok(Some(img))
        }
        Err(e) => {
            tracing::warn!(window = %w.id, key, error = %e, "unusable window tensor");
            Ok(None)
        }
    }
}

/// Tile z/x/y of a project's `modality` imagery at time step `time` drawn with `rendering`, as PNG
/// (transparent where no acquired window has data, and for tiles meeting more than
/// [`MAX_TILE_WINDOWS`] windows).
pub async fn imagery_tile_png(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    (modality, time, rendering): (&str, usize, &str),
    (z, x, y): (u8, u32, u32),
) -> ApiResult<Vec<u8>> {
    let bad_tile = |m: String| ApiError::new(ErrorCode::InvalidTile, m);
    if z > 24 {
        return Err(bad_tile(format!("zoom {z} is above 24")));
    }
    let Some(bbox) = preview::tile_lonlat_bounds(z, x, y) else {
        return Err(bad_tile(format!("tile {z}/{x}/{y} does not exist")));
    };
    let bad = |m: String| ApiError::new(ErrorCode::InvalidPath, m);
    let m: Modality = modality
        .parse()
        .map_err(|e: groundwork_types::UnknownName| bad(e.to_string()))?;
    let names = || {
        Rendering::for_modality(m)
            .iter()
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rendering = Rendering::from_name(rendering)
        .filter(|r| Rendering::for_modality(m).contains(r))
        .ok_or_else(|| {
            bad(format!(
                "{m} has no rendering {rendering:?}; it has {}",
                names()
            ))
        })?;
    let project = projects::get(&state.pool, actor.org_id, project_id).await?;
    if !project.modalities.contains(&m) {
        return Err(bad(format!("the project has no {m} imagery")));
    }
    let probes = probes(state, project_id).await?;
    let times = layer_times(state, &project, &probes, m).await?;
    if time >= times.len() {
        return Err(bad(if times.is_empty() {
            format!("the project has no acquired {m} imagery yet")
        } else {
            format!(
                "time step {time} does not exist: {m} has {} (0–{})",
                times.len(),
                times.len() - 1
            )
        }));
    }
    let limit = i64::try_from(MAX_TILE_WINDOWS + 1).unwrap_or(i64::MAX);
    let found = windows::acquired_in_bbox(&state.pool, project_id, bbox, limit).await?;
    if found.is_empty() || found.len() > MAX_TILE_WINDOWS {
        return groundwork_imagery::tiles::transparent_png().map_err(|e| ApiError::internal(&e));
    }
    let images: Vec<Option<Arc<WindowImage>>> = futures::stream::iter(found)
        .map(|w| window_image(state, &project, w, (m, time, rendering)))
        .buffered(CONCURRENT_READS)
        .try_collect()
        .await?;
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&WindowImage> = images.iter().flatten().map(AsRef::as_ref).collect();
        preview::render_tile_png(z, x, y, &refs)
    })
    .await
    .map_err(|e| ApiError::internal(&e))?
    .map_err(|e| ApiError::internal(&e))
}
