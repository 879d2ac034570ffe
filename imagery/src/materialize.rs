//! Materialising an AOI from a STAC catalogue into a local folder (what `groundwork imagery
//! materialize` runs): the AOI cut into windows, acquisition, `windows.geojson` and `report.json`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::NaiveDate;
use object_store::local::LocalFileSystem;

use crate::CancellationToken;
use crate::acquire::{AcquireReport, AcquireRequest, OutputLayout, Progress, acquire};
use crate::composite::TimeBinning;
use crate::grid::{GridOptions, windows_for_aoi};
use crate::modality::{Modality, Profile};
use crate::source::Source;

/// What to materialise, and where.
#[derive(Debug, Clone)]
pub struct MaterializeRequest {
    /// STAC API root URL, or a static `catalog.json` path or URL.
    pub stac: String,
    /// Catalogue conventions.
    pub profile: Profile,
    /// Modalities to acquire.
    pub modalities: Vec<Modality>,
    /// AOI GeoJSON file (Polygon/MultiPolygon geometry, Feature or FeatureCollection) in EPSG:4326.
    pub aoi: PathBuf,
    /// First day.
    pub start: NaiveDate,
    /// Last day (inclusive).
    pub end: NaiveDate,
    /// Window side in 10 m pixels.
    pub window_size: u32,
    /// Maximum scene cloud cover, percent.
    pub max_cloud: Option<f64>,
    /// One composite over the whole range instead of monthly bins.
    pub single_bin: bool,
    /// Windows processed concurrently.
    pub concurrency: usize,
    /// Requests in flight per host.
    pub per_host: usize,
    /// Fraction of windows that must succeed.
    pub success_threshold: f64,
    /// Output directory: `windows/{id}.safetensors`, `windows/{id}.png`, `windows.geojson`, `report.json`.
    pub out: PathBuf,
}

/// Reads an AOI file into one (multi)polygon geometry.
pub fn read_aoi(path: &Path) -> anyhow::Result<geojson::Geometry> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let gj: geojson::GeoJson = text
        .parse()
        .with_context(|| format!("parsing {}", path.display()))?;
    let geoms: Vec<geojson::Geometry> = match gj {
        geojson::GeoJson::Geometry(g) => vec![g],
        geojson::GeoJson::Feature(f) => f.geometry.into_iter().collect(),
        geojson::GeoJson::FeatureCollection(fc) => {
            fc.features.into_iter().filter_map(|f| f.geometry).collect()
        }
    };
    let mut polys = Vec::new();
    for g in &geoms {
        polys.extend(crate::grid::aoi_multipolygon(g)?.0);
    }
    if polys.is_empty() {
        bail!("{} has no polygon", path.display());
    }
    Ok(geojson::Geometry::from(&geo::MultiPolygon(polys)))
}

/// Cuts the AOI into windows, acquires them into `req.out` and writes `windows.geojson` and
/// `report.json` there. `progress` sees every finished window; `cancel` stops the run between windows.
pub async fn materialize(
    req: &MaterializeRequest,
    progress: &(dyn Fn(&Progress<'_>) + Send + Sync),
    cancel: &CancellationToken,
) -> anyhow::Result<AcquireReport> {
    let aoi = read_aoi(&req.aoi)?;
    let grid = GridOptions {
        window_size: req.window_size,
        ..GridOptions::default()
    };
    let windows = windows_for_aoi(&aoi, &grid).context("cutting the AOI into windows")?;
    let mut acq = AcquireRequest::new(
        Source::parse(&req.stac),
        req.modalities.clone(),
        req.start,
        req.end,
    );
    acq.profile = req.profile.clone();
    acq.max_cloud = req.max_cloud;
    acq.binning = if req.single_bin {
        TimeBinning::Whole
    } else {
        TimeBinning::Monthly
    };
    acq.window_concurrency = req.concurrency;
    acq.http.per_host_concurrency = req.per_host;
    acq.success_threshold = req.success_threshold;
    acq.layout = OutputLayout::Combined;
    acq.previews = true;
    // The operator's own command: local catalogues and any address are fine.
    acq.outbound = crate::outbound::OutboundPolicy::trusted();
    if let Source::Static(p) = &acq.source
        && !p.starts_with("http")
    {
        let abs = std::fs::canonicalize(p).with_context(|| format!("catalogue {p}"))?;
        acq.source = Source::Static(abs.to_string_lossy().into_owned());
    }
    std::fs::create_dir_all(&req.out).with_context(|| format!("creating {}", req.out.display()))?;
    let sink = LocalFileSystem::new_with_prefix(&req.out)
        .with_context(|| format!("opening {}", req.out.display()))?;
    let report = acquire(
        &windows,
        &acq,
        &sink,
        &object_store::path::Path::default(),
        progress,
        cancel,
    )
    .await
    .context("acquiring imagery")?;
    let fc = report.feature_collection(&windows);
    let path = req.out.join("windows.geojson");
    std::fs::write(&path, serde_json::to_vec_pretty(&fc)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let path = req.out.join("report.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(report)
}
