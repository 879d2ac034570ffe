//! The acquisition entry point: windows + request → window tensors in an object store, and a report.

use groundwork_types::keys::ProjectKeys;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::composite::{
    Composite, Composited, MASK_MISSING, SceneStack, TimeBin, TimeBinning, composite, time_bins,
};
use crate::error::{Error, Result};
use crate::gdal_proxy::GdalProxy;
use crate::grid::WindowSpec;
use crate::http::{HttpContext, HttpOptions};
use crate::modality::{Modality, Profile};
use crate::outbound::OutboundPolicy;
use crate::output::{ModalityTensor, WindowTensors, encode_safetensors, preview_png};
use crate::read::{BandRead, ReaderPool, Resampling, TargetGrid, describe, forget, read_on_grid};
use crate::source::{Scene, SceneQuery, Source, search_scenes};

/// Where window files go under the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputLayout {
    /// `windows/{window}/{modality}.safetensors`, one file per modality (the platform's layout).
    #[default]
    PerModality,
    /// `windows/{window}.safetensors` with every modality in one file (the CLI's layout).
    Combined,
}

/// What to acquire and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcquireRequest {
    /// Catalogue.
    pub source: Source,
    /// Catalogue conventions.
    pub profile: Profile,
    /// Modalities, in output order.
    pub modalities: Vec<Modality>,
    /// First day (inclusive).
    pub start: NaiveDate,
    /// Last day (inclusive).
    pub end: NaiveDate,
    /// Time bins (monthly by default).
    pub binning: TimeBinning,
    /// Maximum scene cloud cover in percent (Sentinel-2, Landsat).
    pub max_cloud: Option<f64>,
    /// Scenes composited per bin and window at most (least cloudy first for S2, earliest first otherwise).
    pub max_scenes_per_bin: usize,
    /// Sentinel-2 composite (median by default).
    pub s2_composite: Composite,
    /// Sentinel-1 composite (mean by default).
    pub s1_composite: Composite,
    /// Landsat composite (mean by default).
    pub landsat_composite: Composite,
    /// Retries and host limits.
    pub http: HttpOptions,
    /// Windows processed concurrently.
    pub window_concurrency: usize,
    /// Asset reads in flight per window.
    pub read_concurrency: usize,
    /// GDAL reads running at once across all windows. Each runs on a blocking thread that keeps its
    /// dataset handles open, so a bound here also bounds handles, header fetches and decoded-tile caches.
    pub read_threads: usize,
    /// Fraction of windows that must succeed for the run to count as a success (default 0.95).
    pub success_threshold: f64,
    /// File layout.
    pub layout: OutputLayout,
    /// Also write `windows/{window}.png` previews.
    pub previews: bool,
    /// Items per page of STAC API searches.
    pub search_page_size: u64,
    /// What may be fetched or opened: the catalogue, its links, token endpoints and asset hrefs.
    /// Not serialised; the default is the strictest policy (public `http(s)` only).
    #[serde(skip)]
    pub outbound: OutboundPolicy,
}

impl AcquireRequest {
    /// A request with default settings (Earth Search profile, monthly bins, median S2, mean S1/Landsat).
    pub fn new(
        source: Source,
        modalities: Vec<Modality>,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Self {
        AcquireRequest {
            source,
            profile: Profile::EarthSearch,
            modalities,
            start,
            end,
            binning: TimeBinning::Monthly,
            max_cloud: None,
            max_scenes_per_bin: 4,
            s2_composite: Composite::Median,
            s1_composite: Composite::Mean,
            landsat_composite: Composite::Mean,
            http: HttpOptions::default(),
            window_concurrency: 8,
            read_concurrency: 8,
            read_threads: 16,
            success_threshold: 0.95,
            layout: OutputLayout::PerModality,
            previews: false,
            search_page_size: 100,
            outbound: OutboundPolicy::default(),
        }
    }

    fn method(&self, m: Modality) -> Composite {
        match m {
            Modality::Sentinel2L2a => self.s2_composite,
            Modality::Sentinel1 => self.s1_composite,
            Modality::Landsat => self.landsat_composite,
        }
    }
}

/// Outcome of one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowStatus {
    /// Tensors written.
    Succeeded,
    /// Failed after retries; see the reason.
    Quarantined,
    /// Read without error but holds nothing: no scene covers it in the period, or every pixel of every
    /// month is masked (cloud, shadow, no data). No tensors are written; see the reason.
    Empty,
}

/// One window's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowOutcome {
    /// Window id.
    pub window_id: String,
    /// Status.
    pub status: WindowStatus,
    /// Why it was quarantined.
    pub reason: Option<String>,
    /// Scene ids per bin, per modality name.
    pub scenes: BTreeMap<String, Vec<Vec<String>>>,
    /// Object paths written.
    pub objects: Vec<String>,
    /// Bins with no valid pixel at all, per modality name.
    pub empty_bins: BTreeMap<String, usize>,
    /// Fraction of clear (unmasked) pixels per bin, per modality name.
    #[serde(default)]
    pub clear: BTreeMap<String, Vec<f64>>,
    /// Scenes left out of this window because an asset could not be read, with the reason.
    #[serde(default)]
    pub skipped: Vec<String>,
    /// Source pixel bytes read.
    pub bytes_read: u64,
}

/// The result of [`acquire`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcquireReport {
    /// Windows requested.
    pub total: usize,
    /// Windows written.
    pub succeeded: usize,
    /// Windows quarantined.
    pub quarantined: usize,
    /// Windows with nothing to write (no scene, or every pixel masked); they count against success.
    #[serde(default)]
    pub empty: usize,
    /// Whether `succeeded / total` reached the request's threshold.
    pub success: bool,
    /// Scenes found per modality name.
    pub scenes_found: BTreeMap<String, usize>,
    /// The scenes the windows used in each bin (distinct ids, sorted), per modality name.
    #[serde(default)]
    pub scene_ids_per_bin: BTreeMap<String, Vec<Vec<String>>>,
    /// Mean fraction of clear pixels per bin over the windows read (written or empty), per modality.
    #[serde(default)]
    pub clear_per_bin: BTreeMap<String, Vec<f64>>,
    /// Mean of each band's clear composite values over the windows written, per modality, in the
    /// modality's band order, in the units the model is given (`None` for a band never observed).
    /// Compared with the model's normalisation statistics, it shows data in the wrong units.
    #[serde(default)]
    pub band_means: BTreeMap<String, Vec<Option<f64>>>,
    /// Time bins.
    pub bins: Vec<TimeBin>,
    /// Per window, in request order.
    pub windows: Vec<WindowOutcome>,
    /// Source pixel bytes read in total.
    pub bytes_read: u64,
    /// Wall time in seconds.
    pub elapsed_s: f64,
}

impl AcquireReport {
    /// A GeoJSON FeatureCollection with one feature per window (outline in EPSG:4326; properties `id`,
    /// `status`, `reason`, `crs`, `transform`, `scenes`, `empty_bins`, `objects`). `windows` are the
    /// windows passed to [`acquire`], in the same order.
    pub fn feature_collection(&self, windows: &[WindowSpec]) -> serde_json::Value {
        let features: Vec<serde_json::Value> = windows
            .iter()
            .zip(&self.windows)
            .map(|(w, o)| {
                serde_json::json!({
                    "type": "Feature",
                    "id": w.id,
                    "geometry": w.wgs84_polygon,
                    "properties": {
                        "id": w.id,
                        "status": o.status,
                        "reason": o.reason,
                        "crs": w.crs,
                        "transform": w.geotransform,
                        "scenes": o.scenes,
                        "empty_bins": o.empty_bins,
                        "objects": o.objects,
                    },
                })
            })
            .collect();
        serde_json::json!({"type": "FeatureCollection", "features": features})
    }
}

/// Progress of a running acquisition.
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    /// Windows finished (written or quarantined).
    pub done: usize,
    /// Windows requested.
    pub total: usize,
    /// The window just finished, or a phase description.
    pub message: &'a str,
}

/// Materialises `windows` into `sink` under `prefix` and reports per-window outcomes.
///
/// Each window is independent: acquiring any subset of a project's windows (a partition) just works.
/// A window whose reads still fail after retries, or whose files are corrupt, is quarantined and the run
/// goes on. `cancel` is checked between windows and between reads; a cancelled run returns
/// [`Error::Cancelled`] (windows already written stay written). Only an unusable request or a failed
/// scene search fails the whole call.
pub async fn acquire(
    windows: &[WindowSpec],
    req: &AcquireRequest,
    sink: &dyn ObjectStore,
    prefix: &ObjectPath,
    progress: &(dyn Fn(&Progress<'_>) + Send + Sync),
    cancel: &CancellationToken,
) -> Result<AcquireReport> {
    let started = Instant::now();
    if req.modalities.is_empty() {
        return Err(Error::InvalidRequest("no modalities requested".into()));
    }
    let bins = time_bins(req.start, req.end, req.binning)?;
    let total = windows.len();
    let http = Arc::new(
        HttpContext::new(req.http.clone(), req.outbound.clone())?.with_cancel(cancel.clone()),
    );
    let bbox = windows.iter().fold(
        [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ],
        |b, w| {
            [
                b[0].min(w.wgs84_bounds[0]),
                b[1].min(w.wgs84_bounds[1]),
                b[2].max(w.wgs84_bounds[2]),
                b[3].max(w.wgs84_bounds[3]),
            ]
        },
    );
    let mut scenes: Vec<(Modality, Vec<Scene>)> = Vec::new();
    let mut scenes_found = BTreeMap::new();
    if total > 0 {
        for &m in &req.modalities {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled { done: 0, total });
            }
            progress(&Progress {
                done: 0,
                total,
                message: &format!("searching {m} scenes"),
            });
            let q = SceneQuery {
                source: &req.source,
                profile: &req.profile,
                modality: m,
                bbox,
                start: req.start,
                end: req.end,
                max_cloud: req.max_cloud,
                page_size: req.search_page_size,
            };
            let found = match search_scenes(&q, &http).await {
                Err(_) if cancel.is_cancelled() => return Err(Error::Cancelled { done: 0, total }),
                other => other?,
            };
            tracing::info!(modality = %m, scenes = found.len(), "scene search done");
            scenes_found.insert(m.name().to_string(), found.len());
            scenes.push((m, found));
        }
    }
    let scenes = Arc::new(scenes);
    // GDAL's requests go through a proxy that applies the policy (the trusted command line's need not).
    let proxy = if req.outbound.is_trusted() {
        None
    } else {
        Some(
            GdalProxy::start(req.outbound.clone())
                .await
                .map_err(|source| Error::Io {
                    path: "the GDAL proxy".into(),
                    source,
                })?,
        )
    };
    let readers = Arc::new(
        ReaderPool::new(
            req.read_threads,
            req.http.timeout,
            proxy.as_ref().map(GdalProxy::address),
        )
        .map_err(|source| Error::Io {
            path: "reader threads".into(),
            source,
        })?,
    );
    let band_totals = std::sync::Mutex::new(BandTotals::new());
    let ctx = WindowCtx {
        req,
        band_totals: &band_totals,
        readers: &readers,
        bins: &bins,
        scenes: &scenes,
        http: &http,
        sink,
        prefix,
        cancel,
    };
    let mut results: Vec<Option<WindowOutcome>> = vec![None; total];
    // Indices rather than `&WindowSpec` items: a closure taking a borrowed argument would make the
    // future `!Send` (higher-ranked lifetime inference), and the job system spawns it.
    let ctx = &ctx;
    let mut stream = futures::stream::iter(0..total)
        .map(move |i| async move { (i, ctx.window(&windows[i]).await) })
        .buffer_unordered(req.window_concurrency.max(1));
    let mut done = 0;
    loop {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Error::Cancelled { done, total }),
            n = stream.next() => n,
        };
        let Some((i, outcome)) = next else { break };
        let outcome = match outcome {
            Ok(o) => o,
            Err(Error::Cancelled { .. }) => return Err(Error::Cancelled { done, total }),
            Err(e) => WindowOutcome {
                window_id: windows[i].id.clone(),
                status: WindowStatus::Quarantined,
                reason: Some(e.to_string()),
                scenes: BTreeMap::new(),
                objects: Vec::new(),
                empty_bins: BTreeMap::new(),
                clear: BTreeMap::new(),
                skipped: Vec::new(),
                bytes_read: 0,
            },
        };
        match outcome.status {
            WindowStatus::Quarantined => {
                tracing::warn!(window = %outcome.window_id, reason = ?outcome.reason, "window quarantined");
            }
            WindowStatus::Empty => {
                tracing::warn!(window = %outcome.window_id, reason = ?outcome.reason, "window empty");
            }
            WindowStatus::Succeeded => {}
        }
        done += 1;
        progress(&Progress {
            done,
            total,
            message: &outcome.window_id,
        });
        results[i] = Some(outcome);
    }
    let windows: Vec<WindowOutcome> = results.into_iter().flatten().collect();
    let succeeded = windows
        .iter()
        .filter(|w| w.status == WindowStatus::Succeeded)
        .count();
    let empty = windows
        .iter()
        .filter(|w| w.status == WindowStatus::Empty)
        .count();
    let ratio = if total == 0 {
        1.0
    } else {
        succeeded as f64 / total as f64
    };
    let (scene_ids_per_bin, clear_per_bin) = per_bin_summary(&windows, bins.len());
    drop(stream);
    let totals = band_totals.lock().map(|t| t.clone()).unwrap_or_default();
    let band_means = totals
        .into_iter()
        .map(|(m, sums)| {
            let means = sums
                .iter()
                .map(|&(sum, n)| (n > 0).then(|| sum / n as f64))
                .collect();
            (m, means)
        })
        .collect();
    Ok(AcquireReport {
        total,
        succeeded,
        quarantined: total - succeeded - empty,
        empty,
        success: ratio >= req.success_threshold,
        scenes_found,
        scene_ids_per_bin,
        clear_per_bin,
        band_means,
        bins: bins.clone(),
        bytes_read: windows.iter().map(|w| w.bytes_read).sum(),
        windows,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// Per modality, one entry per bin.
type PerBin<T> = BTreeMap<String, Vec<T>>;

/// Per modality: the distinct scenes (ids) the windows used in each bin, and the mean clear fraction
/// of each bin over the windows that were read (written or empty; a quarantined window has none).
fn per_bin_summary(windows: &[WindowOutcome], n_bins: usize) -> (PerBin<Vec<String>>, PerBin<f64>) {
    let mut scenes: BTreeMap<String, Vec<std::collections::BTreeSet<&str>>> = BTreeMap::new();
    let mut clear: BTreeMap<String, (Vec<f64>, usize)> = BTreeMap::new();
    for w in windows {
        for (m, bins) in &w.scenes {
            let entry = scenes
                .entry(m.clone())
                .or_insert_with(|| vec![Default::default(); n_bins]);
            for (t, ids) in bins.iter().enumerate().take(n_bins) {
                entry[t].extend(ids.iter().map(String::as_str));
            }
        }
        for (m, fractions) in &w.clear {
            let (sum, n) = clear
                .entry(m.clone())
                .or_insert_with(|| (vec![0.0; n_bins], 0));
            for (t, f) in fractions.iter().enumerate().take(n_bins) {
                sum[t] += f;
            }
            *n += 1;
        }
    }
    (
        scenes
            .into_iter()
            .map(|(m, bins)| {
                let ids = bins
                    .iter()
                    .map(|b| b.iter().map(|id| (*id).to_owned()).collect())
                    .collect();
                (m, ids)
            })
            .collect(),
        clear
            .into_iter()
            .map(|(m, (sum, n))| (m, sum.iter().map(|s| s / n.max(1) as f64).collect()))
            .collect(),
    )
}

/// (scene in bin, band index or `None` for SCL).
type ReadKey = (usize, Option<usize>);

/// Per modality name, per band: the sum and count of clear composite values.
type BandTotals = BTreeMap<String, Vec<(f64, u64)>>;

struct WindowCtx<'a> {
    req: &'a AcquireRequest,
    band_totals: &'a std::sync::Mutex<BandTotals>,
    readers: &'a Arc<ReaderPool>,
    bins: &'a [TimeBin],
    scenes: &'a Arc<Vec<(Modality, Vec<Scene>)>>,
    http: &'a Arc<HttpContext>,
    sink: &'a dyn ObjectStore,
    prefix: &'a ObjectPath,
    cancel: &'a CancellationToken,
}

impl WindowCtx<'_> {
    async fn window(&self, w: &WindowSpec) -> Result<WindowOutcome> {
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled { done: 0, total: 0 });
        }
        let poly = w.polygon()?;
        let grid = Arc::new(TargetGrid::of_window(w));
        let pixels = grid.width * grid.height;
        let mut tensors = WindowTensors {
            window: w.clone(),
            bins: self.bins.to_vec(),
            modalities: Vec::new(),
        };
        let mut outcome = WindowOutcome {
            window_id: w.id.clone(),
            status: WindowStatus::Succeeded,
            reason: None,
            scenes: BTreeMap::new(),
            objects: Vec::new(),
            empty_bins: BTreeMap::new(),
            clear: BTreeMap::new(),
            skipped: Vec::new(),
            bytes_read: 0,
        };
        // The first failed read, and whether any scene was read at all: a window none of whose
        // scenes could be read is quarantined with that failure.
        let mut first_error: Option<Error> = None;
        let mut read_any = false;
        let mut skipped_ids: std::collections::BTreeSet<String> = Default::default();
        let mut window_sums = BandTotals::new();
        for (m, all) in self.scenes.iter() {
            let m = *m;
            // Pick scenes per bin.
            let mut per_bin: Vec<Vec<&Scene>> = Vec::with_capacity(self.bins.len());
            for bin in self.bins {
                let mut c: Vec<&Scene> = all
                    .iter()
                    .filter(|s| bin.contains(s.datetime.date_naive()) && s.intersects(&poly))
                    .collect();
                if m == Modality::Sentinel2L2a {
                    c.sort_by(|a, b| {
                        a.cloud_cover
                            .unwrap_or(100.0)
                            .total_cmp(&b.cloud_cover.unwrap_or(100.0))
                            .then(a.datetime.cmp(&b.datetime))
                    });
                }
                c.truncate(self.req.max_scenes_per_bin.max(1));
                per_bin.push(c);
            }
            // Read bin by bin (bounding memory to one bin's scenes), composite, and place the bin.
            let nodata = match m {
                Modality::Sentinel2L2a | Modality::Landsat => Some(0.0),
                Modality::Sentinel1 => None,
            };
            let (t_n, c_n, s_n) = (self.bins.len(), m.bands().len(), m.band_sets().len());
            let mut comp = Composited {
                data: vec![0.0; pixels * t_n * c_n],
                mask: vec![MASK_MISSING; pixels * t_n * s_n],
            };
            for (t, scenes) in per_bin.iter().enumerate() {
                if scenes.is_empty() {
                    continue;
                }
                let mut jobs = Vec::new();
                for (k, s) in scenes.iter().enumerate() {
                    for (c, href) in s.bands.iter().enumerate() {
                        if let Some(href) = href {
                            jobs.push((k, Some(c), href.clone(), Resampling::Bilinear));
                        }
                    }
                    if let Some(h) = &s.scl {
                        jobs.push((k, None, h.clone(), Resampling::Nearest));
                    }
                }
                let results: Vec<(ReadKey, Result<BandRead>)> = futures::stream::iter(jobs)
                    .map(|(k, c, href, resampling)| {
                        let grid = grid.clone();
                        async move { ((k, c), self.read(&href, grid, resampling, nodata).await) }
                    })
                    .buffered(self.req.read_concurrency.max(1))
                    .collect()
                    .await;
                // A scene whose asset cannot be read (after retries) is skipped for this window, not
                // the whole window: the bin is composited from the scenes that could be read.
                let mut failed: BTreeMap<usize, String> = BTreeMap::new();
                let mut reads: Vec<(ReadKey, BandRead)> = Vec::with_capacity(results.len());
                for ((k, c), r) in results {
                    match r {
                        Ok(r) => reads.push(((k, c), r)),
                        Err(e @ Error::Cancelled { .. }) => return Err(e),
                        Err(e) => {
                            failed.entry(k).or_insert_with(|| e.to_string());
                            first_error.get_or_insert(e);
                        }
                    }
                }
                reads.retain(|((k, _), _)| !failed.contains_key(k));
                for (k, reason) in &failed {
                    outcome
                        .skipped
                        .push(format!("{} skipped: {reason}", scenes[*k].id));
                }
                skipped_ids.extend(failed.keys().map(|k| scenes[*k].id.clone()));
                if failed.len() == scenes.len() {
                    continue;
                }
                read_any = true;
                let mut stacks: Vec<SceneStack> = scenes
                    .iter()
                    .map(|s| SceneStack {
                        bands: vec![Vec::new(); c_n],
                        scl: None,
                        offset: s.offset,
                        in_db: s.in_db,
                    })
                    .collect();
                for ((k, c), mut r) in reads {
                    outcome.bytes_read += r.bytes;
                    match c {
                        Some(c) => {
                            // Into the model's units (Landsat Level-2); 0 and NaN stay no data.
                            if let Some(rescale) = scenes[k].rescale.get(c).copied().flatten() {
                                for v in r.values.iter_mut().filter(|v| **v > 0.0) {
                                    *v = rescale.apply(*v);
                                }
                            }
                            stacks[k].bands[c] = r.values;
                        }
                        None => stacks[k].scl = Some(r.values),
                    }
                }
                let stacks: Vec<SceneStack> = stacks
                    .into_iter()
                    .enumerate()
                    .filter(|(k, _)| !failed.contains_key(k))
                    .map(|(_, s)| s)
                    .collect();
                let one = composite(m, std::slice::from_ref(&stacks), pixels, self.req.method(m));
                for p in 0..pixels {
                    let (o, d) = ((p * t_n + t) * c_n, p * c_n);
                    comp.data[o..o + c_n].copy_from_slice(&one.data[d..d + c_n]);
                    let (o, d) = ((p * t_n + t) * s_n, p * s_n);
                    comp.mask[o..o + s_n].copy_from_slice(&one.mask[d..d + s_n]);
                }
            }
            // A pixel of a bin is clear when any of its band sets holds a value (Landsat's pan band
            // set is absent from Collection 2 Level-2, while its other bands are there).
            let clear_at =
                |p: usize, t: usize| (0..s_n).any(|b| comp.mask[(p * t_n + t) * s_n + b] == 0);
            let clear: Vec<f64> = (0..t_n)
                .map(|t| {
                    let n = (0..pixels).filter(|&p| clear_at(p, t)).count();
                    n as f64 / pixels.max(1) as f64
                })
                .collect();
            let empty = clear.iter().filter(|&&f| f == 0.0).count();
            outcome.empty_bins.insert(m.name().to_string(), empty);
            outcome.clear.insert(m.name().to_string(), clear);
            let ids: Vec<Vec<String>> = per_bin
                .iter()
                .map(|v| {
                    v.iter()
                        .filter(|s| !skipped_ids.contains(&s.id))
                        .map(|s| s.id.clone())
                        .collect()
                })
                .collect();
            outcome.scenes.insert(m.name().to_string(), ids.clone());
            let sets = m.band_sets();
            let mut sums = vec![(0.0f64, 0u64); c_n];
            for p in 0..pixels {
                for t in 0..t_n {
                    for (b, set) in sets.iter().enumerate() {
                        if comp.mask[(p * t_n + t) * s_n + b] != 0 {
                            continue;
                        }
                        for &c in set.iter() {
                            let v = comp.data[(p * t_n + t) * c_n + c];
                            if v.is_finite() {
                                sums[c].0 += f64::from(v);
                                sums[c].1 += 1;
                            }
                        }
                    }
                }
            }
            window_sums.insert(m.name().to_string(), sums);
            tensors.modalities.push(ModalityTensor {
                modality: m,
                composite: comp,
                scenes: ids,
            });
        }
        if !read_any && let Some(e) = first_error {
            return Err(e);
        }
        if !outcome.skipped.is_empty() {
            outcome.reason = Some(outcome.skipped.join("; "));
        }
        // A window with no valid pixel in any month of any modality holds nothing to learn from or
        // map: it is empty, with the reason, and nothing is written.
        let t_n = self.bins.len();
        if !outcome.empty_bins.is_empty() && outcome.empty_bins.values().all(|&e| e >= t_n) {
            // Nothing left because a scene could not be read is a failure, not an absence.
            if let Some(e) = first_error {
                return Err(e);
            }
            let found: usize = outcome
                .scenes
                .values()
                .flat_map(|bins| bins.iter().map(Vec::len))
                .sum();
            let names: Vec<&str> = outcome.scenes.keys().map(String::as_str).collect();
            outcome.status = WindowStatus::Empty;
            outcome.reason = Some(if found == 0 {
                format!(
                    "no {} scene covers this window between {} and {}",
                    names.join(" or "),
                    self.req.start,
                    self.req.end
                )
            } else {
                format!(
                    "every pixel of every month is masked (cloud, shadow or no data) in the {found} scene(s) found"
                )
            });
            return Ok(outcome);
        }
        // Write.
        let mut puts: Vec<(ObjectPath, Vec<u8>)> = Vec::new();
        match self.req.layout {
            OutputLayout::PerModality => {
                for mt in &tensors.modalities {
                    let path = ProjectKeys::window_relative(&w.id, mt.modality)
                        .into_iter()
                        .fold(self.prefix.clone(), |p, part| p.join(part.as_str()));
                    puts.push((path, encode_safetensors(&tensors, Some(mt.modality))?));
                }
            }
            OutputLayout::Combined => {
                let path = self
                    .prefix
                    .clone()
                    .join("windows")
                    .join(format!("{}.safetensors", w.id));
                puts.push((path, encode_safetensors(&tensors, None)?));
            }
        }
        if self.req.previews {
            let path = self
                .prefix
                .clone()
                .join("windows")
                .join(format!("{}.png", w.id));
            puts.push((path, preview_png(&tensors)?));
        }
        for (path, bytes) in puts {
            self.sink
                .put(&path, PutPayload::from(bytes))
                .await
                .map_err(|e| Error::Store {
                    path: path.to_string(),
                    source: Box::new(e),
                })?;
            outcome.objects.push(path.to_string());
        }
        if let Ok(mut totals) = self.band_totals.lock() {
            for (m, sums) in window_sums {
                let total = totals
                    .entry(m)
                    .or_insert_with(|| vec![(0.0, 0); sums.len()]);
                for (t, (sum, n)) in total.iter_mut().zip(sums) {
                    t.0 += sum;
                    t.1 += n;
                }
            }
        }
        Ok(outcome)
    }

    async fn read(
        &self,
        href: &str,
        grid: Arc<TargetGrid>,
        resampling: Resampling,
        nodata: Option<f64>,
    ) -> Result<BandRead> {
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled { done: 0, total: 0 });
        }
        let first = self.read_once(href, grid.clone(), resampling, nodata).await;
        // A signed href the host refuses carries an expired SAS token: sign it again with a new
        // token and read once more.
        match first {
            Err(Error::Read { ref reason, .. }) if is_forbidden(reason) => {
                match self.http.resign(href).await {
                    Ok(Some(renewed)) => self.read_once(&renewed, grid, resampling, nodata).await,
                    Ok(None) => first,
                    Err(e) => Err(Error::Read {
                        href: describe(href),
                        reason: format!(
                            "the host refused the signed asset (HTTP 403) and renewing its token failed: {e}"
                        ),
                    }),
                }
            }
            other => other,
        }
    }

    async fn read_once(
        &self,
        href: &str,
        grid: Arc<TargetGrid>,
        resampling: Resampling,
        nodata: Option<f64>,
    ) -> Result<BandRead> {
        // Only hrefs the policy passed reach GDAL: http(s) URLs on allowed addresses (opened through
        // the `/vsicurl/` path built by `read::gdal_path`), or files under a catalogue root.
        let href = &self
            .http
            .checks
            .check_href(&self.http.policy, href)
            .await
            .map_err(|e| Error::Read {
                href: describe(href),
                reason: e.to_string(),
            })?;
        self.http
            .with_retry(href, || {
                let grid = grid.clone();
                let readers = self.readers.clone();
                async move {
                    // Redirects are followed here, under the policy, not inside GDAL.
                    let href = self.http.asset_location(href).await?;
                    let key = href.clone();
                    readers
                        .run(&key, move || {
                            let r = read_on_grid(&href, &grid, resampling, nodata);
                            if r.is_err() {
                                forget(&href);
                            }
                            r
                        })
                        .await?
                }
            })
            .await
            .map_err(|reason| Error::Read {
                href: describe(href),
                reason,
            })
    }
}

/// Whether a read failed because the host answered 403 Forbidden (the probe's status and GDAL's
/// message are both reported as `HTTP 403`, see `read::classify_gdal`).
fn is_forbidden(reason: &str) -> bool {
    reason.contains("HTTP 403")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn the_acquire_future_can_be_spawned() {
        let req = AcquireRequest::new(
            Source::Api("http://127.0.0.1:1".into()),
            vec![Modality::Sentinel2L2a],
            NaiveDate::MIN,
            NaiveDate::MIN,
        );
        let store = object_store::memory::InMemory::new();
        let cancel = CancellationToken::new();
        let prefix = ObjectPath::default();
        let fut = acquire(&[], &req, &store, &prefix, &|_| {}, &cancel);
        assert_send(&fut);
    }
}
