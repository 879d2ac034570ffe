//! Offline packages of class maps for field teams (`GET /api/v1/outputs/{id}/package.gpkg`): one
//! GeoPackage holding the class map's tiles, a true-colour preview of the project's imagery and the
//! class polygons ([`groundwork_imagery::package`] has the layout).
//!
//! A package is built once per output, off the async runtime, and kept in the server's file cache
//! under the output's key (an output's rasters and legend never change; the imagery preview is the
//! imagery acquired when it was first asked for). Packages are built one at a time, in a task of
//! their own, so a client that gives up does not waste the work: the next request finds the file.
//!
//! Limits: an output needing more than [`MAX_PACKAGE_TILES`] tiles at its finest zoom is refused
//! (413 `package_too_large`) before any work, one with more than [`MAX_PACKAGE_POLYGONS`] class
//! regions once polygonising finds them (the refusal is not cached: each request polygonises
//! again, up to the limit); the imagery preview is drawn from at most
//! [`MAX_PACKAGE_WINDOWS`] acquired windows, and a package of an output meeting more has no imagery
//! table.

use crate::api::AppState;
use crate::api::auth::Actor;
use crate::api::error::{ApiError, ApiResult, ErrorCode};
use crate::service::outputs::{legend, local_copy};
use futures::{StreamExt, TryStreamExt};
use groundwork_imagery::package::{self as pkg, ImageryTiles, PackageError, PackageSpec};
use groundwork_imagery::preview::{self, Placement, Rendering, WindowImage};
use groundwork_store::outputs::{self, Output};
use groundwork_store::projects::{self, Project};
use groundwork_store::windows::{self, AcquiredWindow};
use groundwork_types::Modality;
use groundwork_types::keys::ProjectKeys;
use object_store::ObjectStoreExt;
use std::path::PathBuf;
use uuid::Uuid;

pub use groundwork_imagery::package::{MAX_PACKAGE_POLYGONS, MAX_PACKAGE_TILES, MEDIA_TYPE};

/// Most acquired windows a package's imagery preview is drawn from (each window's tensor is read
/// once, its image kept in memory: 1024 windows of 64² pixels are 16 MiB).
pub const MAX_PACKAGE_WINDOWS: usize = 1024;

/// The package layout's version, part of the cache key (a new layout is built afresh).
const PACKAGE_VERSION: u32 = 1;

/// Windows whose tensors are read to choose the imagery's time step.
const TIME_SAMPLES: usize = 8;

/// Tensor files read at once.
const CONCURRENT_READS: usize = 4;

/// One package is built at a time.
static BUILDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cache key of an output's package.
fn cache_key(o: &Output) -> String {
    format!("{}.package-v{PACKAGE_VERSION}.gpkg", o.utm_key)
}

async fn cached(state: &AppState, key: &str) -> ApiResult<Option<PathBuf>> {
    let cache = state.cache.clone();
    let k = key.to_owned();
    tokio::task::spawn_blocking(move || cache.get(&k))
        .await
        .map_err(|e| ApiError::internal(&e))
}

/// The offline package of a class map (built on first request): the output and the package's
/// local file. Another organisation's output is not found; an output that is not a class map is
/// refused (409 `not_a_class_map`), as is one needing more than [`MAX_PACKAGE_TILES`] tiles at its
/// finest zoom or having more than [`MAX_PACKAGE_POLYGONS`] class regions (413 `package_too_large`).
pub async fn package(state: &AppState, actor: &Actor, id: Uuid) -> ApiResult<(Output, PathBuf)> {
    let o = outputs::get(&state.pool, actor.org_id, id).await?;
    if o.kind != "class" {
        return Err(ApiError::new(
            ErrorCode::NotAClassMap,
            format!(
                "only class maps have an offline package; this output holds {}",
                o.kind
            ),
        ));
    }
    // Bounds the row cannot give are checked by the build, on the raster itself.
    let bounds: [f64; 4] = serde_json::from_value(o.bounds_3857.clone()).unwrap_or_default();
    let tiles = pkg::tile_count(bounds, u8::try_from(o.max_zoom.clamp(0, 30)).unwrap_or(30));
    if tiles > MAX_PACKAGE_TILES {
        return Err(ApiError::new(
            ErrorCode::PackageTooLarge,
            too_large(&format!(
                "the map needs {tiles} tiles at zoom {}, more than an offline package may hold \
                 ({MAX_PACKAGE_TILES})",
                o.max_zoom
            )),
        ));
    }
    let key = cache_key(&o);
    if let Some(path) = cached(state, &key).await? {
        return Ok((o, path));
    }
    let project = projects::get(&state.pool, actor.org_id, o.project_id).await?;
    let task = tokio::spawn(build(state.clone(), project, o.clone(), key));
    let path = task.await.map_err(|e| ApiError::internal(&e))??;
    Ok((o, path))
}

/// Builds the package of `o` into the cache (unless a build that ran meanwhile did) and returns its
/// file.
async fn build(state: AppState, project: Project, o: Output, key: String) -> ApiResult<PathBuf> {
    let _one_at_a_time = BUILDING.lock().await;
    if let Some(path) = cached(&state, &key).await? {
        return Ok(path);
    }
    let utm = local_copy(&state, &o.utm_key).await?;
    let web = local_copy(&state, &o.web_key).await?;
    let imagery = imagery_preview(&state, &project, &o).await?;
    let legend = legend(&o);
    let cache = state.cache.clone();
    let output = o.id;
    // Ok(Err(why)): the class map is too large for a package.
    tokio::task::spawn_blocking(move || -> anyhow::Result<Result<PathBuf, String>> {
        let dir = TempDir::new()?;
        let dst = dir.0.join("package.gpkg");
        let spec = PackageSpec {
            utm_cog: &utm,
            web_cog: Some(&web),
            legend: &legend,
            title: &project.name,
            max_tiles: MAX_PACKAGE_TILES,
            max_polygons: MAX_PACKAGE_POLYGONS,
        };
        let imagery = imagery.as_ref().map(|(description, images)| ImageryTiles {
            description: description.clone(),
            tiles: pkg::window_tiles(images),
        });
        let started = std::time::Instant::now();
        let summary = match pkg::build_package(&dst, &spec, imagery) {
            Ok(summary) => summary,
            Err(PackageError::TooLarge(why)) => return Ok(Err(why)),
            Err(PackageError::Imagery(e)) => return Err(e.into()),
        };
        let bytes = std::fs::read(&dst)?;
        tracing::info!(
            %output,
            bytes = bytes.len(),
            zooms = ?(summary.min_zoom, summary.max_zoom),
            class_tiles = summary.class_tiles,
            imagery_tiles = ?summary.imagery_tiles,
            polygons = summary.polygons,
            seconds = started.elapsed().as_secs_f64(),
            "built an offline package"
        );
        Ok(Ok(cache.put(&key, &bytes)?))
    })
    .await
    .map_err(|e| ApiError::internal(&e))?
    .map_err(|e| ApiError::internal(&e))?
    .map_err(|why| ApiError::new(ErrorCode::PackageTooLarge, too_large(&why)))
}

/// The message of a refused package.
fn too_large(why: &str) -> String {
    format!("{why}; download the GeoTIFF and the GeoJSON polygons instead")
}

/// A private folder under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("groundwork-package-{}", Uuid::new_v4()));
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The imagery preview of a package: the description and the true-colour images of the acquired
/// windows meeting the output at one time step (the one with the most pixels with data in a sample
/// of the windows, the later one on a tie), of the project's first modality with a true-colour
/// rendering. `None` when there is no such imagery, or when more than [`MAX_PACKAGE_WINDOWS`]
/// windows meet the output.
async fn imagery_preview(
    state: &AppState,
    project: &Project,
    o: &Output,
) -> ApiResult<Option<(String, Vec<WindowImage>)>> {
    let Some(m) = project
        .modalities
        .iter()
        .copied()
        .find(|m| Rendering::for_modality(*m).contains(&Rendering::TrueColor))
    else {
        return Ok(None);
    };
    let limit = i64::try_from(MAX_PACKAGE_WINDOWS + 1).unwrap_or(i64::MAX);
    let found = windows::acquired_in_bbox(&state.pool, project.id, o.bbox, limit).await?;
    if found.len() > MAX_PACKAGE_WINDOWS {
        tracing::info!(output = %o.id, "more than {MAX_PACKAGE_WINDOWS} windows: a package without imagery");
        return Ok(None);
    }
    if found.is_empty() {
        return Ok(None);
    }
    // The time step: the one with the most pixels with data over a sample spread across the windows.
    let step = found.len().div_ceil(TIME_SAMPLES).max(1);
    let sample: Vec<AcquiredWindow> = found.iter().step_by(step).cloned().collect();
    let counts: Vec<Option<TimeCounts>> = futures::stream::iter(sample)
        .map(|w| data_per_time(state, project, w, m))
        .buffered(CONCURRENT_READS)
        .try_collect()
        .await?;
    let Some(times) = counts.iter().flatten().map(|(t, _)| t.clone()).next() else {
        return Ok(None);
    };
    let mut totals = vec![0usize; times.len()];
    for (t, c) in counts.iter().flatten() {
        if t.len() == times.len() {
            for (total, n) in totals.iter_mut().zip(c) {
                *total += n;
            }
        }
    }
    let Some((time, _)) = totals
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .max_by_key(|(i, n)| (**n, *i))
    else {
        return Ok(None);
    };
    let images: Vec<Option<WindowImage>> = futures::stream::iter(found)
        .map(|w| image(state, project, w, m, time))
        .buffered(CONCURRENT_READS)
        .try_collect()
        .await?;
    let images: Vec<WindowImage> = images.into_iter().flatten().collect();
    if images.is_empty() {
        return Ok(None);
    }
    let source = match m {
        Modality::Sentinel2L2a => "Sentinel-2",
        Modality::Landsat => "Landsat",
        Modality::Sentinel1 => "Sentinel-1",
    };
    Ok(Some((
        format!("{source} true colour, {}", preview::time_label(times[time])),
        images,
    )))
}

/// The key of a window's `m` tensor: the one its acquisition recorded, else the project's fixed key
/// of windows acquired before per-acquisition folders.
fn tensor_key(project: &Project, w: &AcquiredWindow, m: Modality) -> String {
    let suffix = format!("/{}.safetensors", m.name());
    w.objects
        .iter()
        .find(|k| k.ends_with(&suffix))
        .cloned()
        .unwrap_or_else(|| ProjectKeys::new(project.org_id, project.id).window(&w.id, m))
}

/// Where a window lies, from its row.
fn placement(w: &AcquiredWindow) -> Option<Placement> {
    Some(Placement {
        epsg: u32::try_from(w.epsg).ok()?,
        geotransform: serde_json::from_value(w.geotransform.clone()).ok()?,
        bbox: [w.bbox_west, w.bbox_south, w.bbox_east, w.bbox_north],
    })
}

/// A window's tensor file; `None` when it is missing.
async fn tensor(
    state: &AppState,
    project: &Project,
    w: &AcquiredWindow,
    m: Modality,
) -> ApiResult<Option<Vec<u8>>> {
    let objects = state
        .objects
        .clone()
        .ok_or_else(|| ApiError::internal(&"the server has no object store"))?;
    let path = object_store::path::Path::from(tensor_key(project, w, m));
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

/// A window's time steps and, per time step, its true-colour pixels with data.
type TimeCounts = (Vec<[i32; 3]>, Vec<usize>);

/// A window's time steps and, per step, its true-colour pixels with data; `None` when its tensor is
/// missing or unusable.
async fn data_per_time(
    state: &AppState,
    project: &Project,
    w: AcquiredWindow,
    m: Modality,
) -> ApiResult<Option<TimeCounts>> {
    let (Some(placement), Some(bytes)) = (placement(&w), tensor(state, project, &w, m).await?)
    else {
        return Ok(None);
    };
    tokio::task::spawn_blocking(move || {
        let times = preview::window_times(&bytes).ok()?;
        let counts = (0..times.len())
            .map(|t| {
                preview::window_image_from_safetensors(
                    &bytes,
                    m,
                    t,
                    Rendering::TrueColor,
                    placement,
                )
                .map_or(0, |img| {
                    img.rgba.chunks_exact(4).filter(|p| p[3] != 0).count()
                })
            })
            .collect();
        Some((times, counts))
    })
    .await
    .map_err(|e| ApiError::internal(&e))
}

/// A window's true-colour image at `time`; `None` when its tensor is missing or unusable (logged)
/// or has no data then.
async fn image(
    state: &AppState,
    project: &Project,
    w: AcquiredWindow,
    m: Modality,
    time: usize,
) -> ApiResult<Option<WindowImage>> {
    let (Some(placement), Some(bytes)) = (placement(&w), tensor(state, project, &w, m).await?)
    else {
        return Ok(None);
    };
    let img = tokio::task::spawn_blocking(move || {
        preview::window_image_from_safetensors(&bytes, m, time, Rendering::TrueColor, placement)
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    match img {
        Ok(img) => Ok(img.has_data().then_some(img)),
        Err(e) => {
            tracing::warn!(window = %w.id, error = %e, "unusable window tensor in a package");
            Ok(None)
        }
    }
}
