//! `acquire`: a project's windows (planned on its AOI, stored in PostgreSQL) materialised from a STAC
//! catalogue into window tensors in the object store. A large AOI is split into partitions, one step
//! each, so every worker shares the work; `acquire_summary` (fan-in) checks the success threshold over
//! all of them.

use super::permanent;
use crate::data::WindowSet;
use crate::{Step, StepArgs, StepContext, StepError, StepKind, StepOutput};
use anyhow::Context;
use futures::future::BoxFuture;
use groundwork_imagery::{AcquireRequest, GridOptions, Profile, Source, WindowSpec, WindowStatus};
use groundwork_store::{projects, windows};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Arguments of `acquire`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireArgs {
    /// STAC API URL, or a static `catalog.json` path or URL.
    pub stac: String,
    /// `earth-search` (default), `planetary-computer`, or a custom profile.
    #[serde(default = "default_profile")]
    pub profile: Profile,
    /// Largest scene cloud cover accepted, percent.
    #[serde(default)]
    pub max_cloud: Option<f64>,
    /// This step's share: `[index, count]`; windows are dealt round-robin in id order.
    #[serde(default = "whole")]
    pub partition: [usize; 2],
    /// Fraction of windows that must succeed.
    #[serde(default = "default_threshold")]
    pub success_threshold: f64,
    /// Another period (and area) than the project's: a monitoring prediction's acquisition, whose
    /// windows are the run's own (the project's windows are left as they are).
    #[serde(default)]
    pub period: Option<Period>,
}

/// The period and area a monitoring prediction maps with a model trained on the project's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Period {
    /// First day.
    pub start: chrono::NaiveDate,
    /// Last day.
    pub end: chrono::NaiveDate,
    /// Area (a GeoJSON Polygon or MultiPolygon); the project's when absent.
    #[serde(default)]
    pub area: Option<Value>,
}

impl StepArgs for AcquireArgs {
    const KIND: StepKind = StepKind::Acquire;

    fn check(&self) -> Result<(), String> {
        let [index, count] = self.partition;
        if !(1..=256).contains(&count) || index >= count {
            return Err(
                "partition must be [index, count] with count 1–256 and index < count".into(),
            );
        }
        if self.max_cloud.is_some_and(|c| !(0.0..=100.0).contains(&c)) {
            return Err("max_cloud must be 0–100".into());
        }
        if !(0.0..=1.0).contains(&self.success_threshold) {
            return Err("success_threshold must be 0–1".into());
        }
        if self.period.as_ref().is_some_and(|p| p.end < p.start) {
            return Err("the period ends before it starts".into());
        }
        Ok(())
    }
}

fn default_profile() -> Profile {
    Profile::EarthSearch
}
fn whole() -> [usize; 2] {
    [0, 1]
}
fn default_threshold() -> f64 {
    0.95
}

/// Partitions of an acquisition of `windows` windows unless the request says: one per 64 windows, at
/// most 32.
#[must_use]
pub fn default_partitions(windows: usize) -> usize {
    windows.div_ceil(64).clamp(1, 32)
}

/// The steps of an acquisition: `acquire-{i}`, one per partition (`args` with its share), then
/// `acquire-summary` after them with the same success threshold, over the project's windows or,
/// when `args.period` is set, the run's own.
#[must_use]
pub fn acquisition_steps(args: &AcquireArgs, partitions: usize) -> Vec<crate::NewStep> {
    let names: Vec<String> = (0..partitions).map(|i| format!("acquire-{i}")).collect();
    let mut steps: Vec<crate::NewStep> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            AcquireArgs {
                partition: [i, partitions],
                ..args.clone()
            }
            .to_step(name, "cpu")
        })
        .collect();
    let mut summary = SummaryArgs {
        success_threshold: args.success_threshold,
        windows: if args.period.is_some() {
            WindowSet::Run
        } else {
            WindowSet::Project
        },
    }
    .to_step("acquire-summary", "cpu");
    summary.depends_on = names;
    steps.push(summary);
    steps
}

/// Plans a project's windows (off the async runtime) and records them; returns them in id order.
pub async fn plan_windows(
    pool: &groundwork_store::PgPool,
    project: &projects::Project,
) -> anyhow::Result<Vec<WindowSpec>> {
    let (specs, rows) = window_plan(&project.aoi, project.window_size).await?;
    windows::plan(pool, project.id, &rows).await?;
    Ok(specs)
}

/// Cuts an area (a GeoJSON geometry) into windows of `window_size` pixels (off the async runtime):
/// the windows in id order, and their rows to record.
///
/// # Errors
/// When the area is not a GeoJSON geometry, or cannot be cut.
pub async fn window_plan(
    area: &Value,
    window_size: i32,
) -> anyhow::Result<(Vec<WindowSpec>, Vec<windows::NewWindow>)> {
    let aoi: geojson::Geometry =
        serde_json::from_value(area.clone()).context("the area is not a GeoJSON geometry")?;
    let opts = GridOptions {
        window_size: u32::try_from(window_size).unwrap_or(64),
        ..GridOptions::default()
    };
    // Cutting a large AOI is CPU work: off the async runtime.
    let mut specs = tokio::task::spawn_blocking(move || {
        groundwork_imagery::windows_for_aoi(&aoi, &opts).context("cutting the AOI into windows")
    })
    .await
    .context("cutting the AOI into windows")??;
    specs.sort_by(|a, b| a.id.cmp(&b.id));
    let rows: Vec<windows::NewWindow> = specs
        .iter()
        .map(|w| windows::NewWindow {
            id: w.id.clone(),
            epsg: i32::try_from(w.epsg).unwrap_or_default(),
            crs: w.crs.clone(),
            size: i32::try_from(w.size).unwrap_or_default(),
            resolution: w.resolution,
            column: w.column,
            row: w.row,
            geotransform: json!(w.geotransform),
            utm_bounds: json!(w.utm_bounds),
            bbox: w.wgs84_bounds,
            geometry: serde_json::to_value(&w.wgs84_polygon).unwrap_or_default(),
        })
        .collect();
    Ok((specs, rows))
}

/// The `acquire` kind.
#[derive(Debug, Clone, Copy)]
pub struct Acquire;

impl Step for Acquire {
    type Args = AcquireArgs;

    fn run(
        &self,
        ctx: StepContext,
        args: AcquireArgs,
    ) -> BoxFuture<'static, Result<StepOutput, StepError>> {
        Box::pin(async move {
            let [index, count] = args.partition;
            if count == 0 || index >= count {
                return Err(permanent(anyhow::anyhow!(
                    "partition [{index}, {count}] is not a valid share"
                )));
            }
            let objects = ctx.objects(StepKind::Acquire)?;
            let project = ctx.project().await?;
            let modalities = project.modalities.clone();
            ctx.progress.set(0.0, "planning windows");
            // A monitoring run's windows are its own: the project's stay as they are.
            let (area, start, end, set) = match &args.period {
                Some(p) => (
                    p.area.clone().unwrap_or_else(|| project.aoi.clone()),
                    p.start,
                    p.end,
                    WindowSet::Run,
                ),
                None => (
                    project.aoi.clone(),
                    project.start,
                    project.end,
                    WindowSet::Project,
                ),
            };
            let (all, rows) = window_plan(&area, project.window_size)
                .await
                .map_err(permanent)?;
            let mine_rows: Vec<windows::NewWindow> = match set {
                WindowSet::Project => {
                    ctx.plan_windows(rows).await?;
                    Vec::new()
                }
                WindowSet::Run => rows
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| i % count == index)
                    .map(|(_, w)| w)
                    .collect(),
            };
            let mine: Vec<WindowSpec> = all
                .into_iter()
                .enumerate()
                .filter(|(i, _)| i % count == index)
                .map(|(_, w)| w)
                .collect();
            // The catalogue the user named goes through the worker's policy before anything is
            // fetched or opened; a refusal is final.
            let source = Source::checked(&args.stac, &ctx.outbound)
                .map_err(|e| permanent(anyhow::anyhow!("catalogue {:?}: {e}", args.stac)))?;
            let mut req = AcquireRequest::new(source, modalities, start, end);
            req.profile = args.profile.clone();
            req.max_cloud = args.max_cloud;
            req.success_threshold = args.success_threshold;
            req.outbound = ctx.outbound.clone();
            // This acquisition's own folder: earlier imagery stays as it was.
            let prefix = object_store::path::Path::from(ctx.keys().acquisition(ctx.run_id));
            let progress = ctx.progress.clone();
            let report_progress = move |p: &groundwork_imagery::Progress<'_>| {
                #[expect(clippy::cast_precision_loss, reason = "a progress fraction")]
                let f = if p.total == 0 {
                    1.0
                } else {
                    p.done as f32 / p.total as f32
                };
                progress.set(
                    f,
                    format!("{} of {} windows: {}", p.done, p.total, p.message),
                );
            };
            let report = groundwork_imagery::acquire(
                &mine,
                &req,
                objects.as_ref(),
                &prefix,
                &report_progress,
                &ctx.cancel,
            )
            .await
            .map_err(|e| match e {
                groundwork_imagery::Error::Cancelled { .. } => StepError::Cancelled,
                other => StepError::Retryable(anyhow::anyhow!(other).context("acquiring imagery")),
            })?;
            let outcomes: Vec<windows::Outcome> = report
                .windows
                .iter()
                .map(|w| windows::Outcome {
                    id: w.window_id.clone(),
                    status: match w.status {
                        WindowStatus::Succeeded => "acquired",
                        WindowStatus::Empty => "empty",
                        WindowStatus::Quarantined => "quarantined",
                    }
                    .into(),
                    reason: w.reason.clone(),
                    scenes: json!(w.scenes),
                    objects: w.objects.clone(),
                })
                .collect();
            // Fenced by the claim: an execution that lost its lease records nothing.
            match set {
                WindowSet::Project => ctx.record_outcomes(outcomes).await?,
                WindowSet::Run => ctx.record_run_outcomes(mine_rows, outcomes).await?,
            }
            let months: Vec<String> = report
                .bins
                .iter()
                .map(|b| b.start.format("%Y-%m").to_string())
                .collect();
            let output = json!({
                "windows": report.total, "succeeded": report.succeeded, "quarantined": report.quarantined,
                "empty": report.empty, "bytes_read": report.bytes_read, "scenes_found": report.scenes_found,
                "months": months, "scenes_per_month": report.scene_ids_per_bin.iter()
                    .map(|(m, bins)| (m, bins.iter().map(Vec::len).collect::<Vec<_>>()))
                    .collect::<std::collections::BTreeMap<_, _>>(),
                // By id, so that the summary counts the scenes of all partitions once.
                "scene_ids_per_month": report.scene_ids_per_bin,
                "clear_fraction": report.clear_per_bin, "seconds": report.elapsed_s,
                "band_means": report.band_means,
                "unit_warnings": unit_warnings(&report.band_means),
            });
            for w in unit_warnings(&report.band_means) {
                tracing::warn!(step = %ctx.step_id, "{w}");
            }
            if count == 1 && !report.success {
                let common = ctx.most_common_reason(set, "quarantined").await?;
                return Err(permanent(anyhow::anyhow!(
                    "{}",
                    shortfall(
                        (
                            report.succeeded,
                            report.total,
                            report.empty,
                            report.quarantined
                        ),
                        args.success_threshold,
                        &report.scenes_found,
                        common.as_ref(),
                    )
                )));
            }
            Ok(StepOutput {
                output,
                artifacts: Vec::new(),
            })
        })
    }
}

/// Arguments of `acquire_summary`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryArgs {
    /// Fraction of windows that must succeed.
    #[serde(default = "default_threshold")]
    pub success_threshold: f64,
    /// The project's windows, or the run's own (a monitoring prediction's acquisition).
    #[serde(default)]
    pub windows: WindowSet,
}

impl StepArgs for SummaryArgs {
    const KIND: StepKind = StepKind::AcquireSummary;

    fn check(&self) -> Result<(), String> {
        if (0.0..=1.0).contains(&self.success_threshold) {
            Ok(())
        } else {
            Err("success_threshold must be 0–1".into())
        }
    }
}

/// The `acquire_summary` kind: the fan-in of partitioned acquisition.
#[derive(Debug, Clone, Copy)]
pub struct AcquireSummary;

impl Step for AcquireSummary {
    type Args = SummaryArgs;

    fn run(
        &self,
        ctx: StepContext,
        args: SummaryArgs,
    ) -> BoxFuture<'static, Result<StepOutput, StepError>> {
        Box::pin(async move {
            let c = ctx.window_counts(args.windows).await?;
            #[expect(clippy::cast_precision_loss, reason = "a fraction")]
            let fraction = if c.total == 0 {
                0.0
            } else {
                c.acquired as f64 / c.total as f64
            };
            // What the partitions found, month by month: the distinct scenes used and the clear
            // fraction (weighted by windows).
            let steps = ctx.run_steps().await?;
            let parts: Vec<&Value> = steps
                .iter()
                .filter(|s| s.kind == StepKind::Acquire)
                .filter_map(|s| s.output.as_ref())
                .collect();
            let (months, scenes_per_month, clear_fraction, scenes_found) = merge_parts(&parts);
            let band_means = merge_band_means(&parts);
            let output = json!({"windows": c.total, "acquired": c.acquired, "quarantined": c.quarantined,
                "empty": c.empty, "pending": c.pending, "months": months, "scenes_found": scenes_found,
                "scenes_per_month": scenes_per_month, "clear_fraction": clear_fraction,
                "band_means": band_means, "unit_warnings": unit_warnings(&band_means)});
            if fraction < args.success_threshold {
                let common = ctx.most_common_reason(args.windows, "quarantined").await?;
                let n = |v: i64| usize::try_from(v).unwrap_or(0);
                return Err(permanent(anyhow::anyhow!(
                    "{}",
                    shortfall(
                        (n(c.acquired), n(c.total), n(c.empty), n(c.quarantined)),
                        args.success_threshold,
                        &scenes_found,
                        common.as_ref(),
                    )
                )));
            }
            Ok(StepOutput {
                output,
                artifacts: Vec::new(),
            })
        })
    }
}

/// Why an acquisition did not reach its threshold, in words a user can act on.
fn shortfall(
    (acquired, total, empty, quarantined): (usize, usize, usize, usize),
    threshold: f64,
    scenes_found: &std::collections::BTreeMap<String, usize>,
    common_reason: Option<&(String, i64)>,
) -> String {
    let mut msg = format!(
        "only {acquired} of {total} windows were acquired (threshold {:.0} %)",
        threshold * 100.0
    );
    if empty > 0 {
        msg.push_str(&format!(
            "; {empty} hold no imagery (no scene covers them in the period, or every pixel is masked)"
        ));
    }
    if quarantined > 0 {
        msg.push_str(&format!("; {quarantined} quarantined"));
        match common_reason {
            Some((reason, n)) => msg.push_str(&format!(", {n} of them because: {reason}")),
            None => msg.push_str(" (see their reasons)"),
        }
    }
    let none: Vec<&str> = scenes_found
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(m, _)| m.as_str())
        .collect();
    if !none.is_empty() {
        msg.push_str(&format!(
            ". The catalogue has no {} scene for the area and dates: check the area, the dates and the catalogue's coverage",
            none.join(" or ")
        ));
    }
    msg
}

/// Band means per modality.
type BandMeans = std::collections::BTreeMap<String, Vec<Option<f64>>>;

/// How far (in the model's standard deviations) a band's mean may sit from the mean of the data the
/// model was pretrained on before the values are taken to be in other units. Real scenes stay well
/// within it (Sentinel-1 VV over open water, −22 dB, is about 1 standard deviation off).
const UNITS_TOLERANCE_STD: f64 = 2.5;

/// The bands whose mean over the acquired windows is implausible for the units the model expects
/// (its normalisation statistics), in words: data that would reach the model on the wrong scale.
fn unit_warnings(means: &BandMeans) -> Vec<String> {
    let mut out = Vec::new();
    for (name, values) in means {
        let Ok(m) = name.parse::<olmoearth::Modality>() else {
            continue;
        };
        let Ok(stats) = olmoearth::normalize::band_stats(m) else {
            continue;
        };
        let off: Vec<String> = m
            .bands()
            .iter()
            .zip(&stats)
            .zip(values)
            .filter_map(|((band, st), v)| {
                let v = (*v)?;
                let z = (v - st.mean) / st.std;
                (z.abs() > UNITS_TOLERANCE_STD).then(|| {
                    format!(
                        "{band} mean {v:.1} (the model was trained on {:.1} ± {:.1})",
                        st.mean, st.std
                    )
                })
            })
            .collect();
        if off.is_empty() {
            continue;
        }
        let hint = match m {
            olmoearth::Modality::Sentinel1 => {
                " Sentinel-1 should be calibrated backscatter (the model takes dB): Earth Search's                  sentinel-1-grd holds uncalibrated amplitude; use a radiometrically terrain-corrected                  source such as the Planetary Computer's sentinel-1-rtc."
            }
            olmoearth::Modality::Landsat => {
                " Landsat should be Collection 2 (Level-2 products are rescaled automatically when                  the item or collection says Level-2)."
            }
            olmoearth::Modality::Sentinel2L2a => {
                " Sentinel-2 should be L2A surface reflectance as integer DN (0–10000+), harmonised                  to processing baseline 04.00."
            }
        };
        out.push(format!(
            "{name} values look like different units than the model expects: {}.{hint}",
            off.join("; ")
        ));
    }
    out
}

/// The partitions' band means merged, weighted by the windows each acquired.
fn merge_band_means(parts: &[&Value]) -> BandMeans {
    let mut acc: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for p in parts {
        let w = p["succeeded"].as_f64().unwrap_or(0.0);
        let Some(m) = p["band_means"].as_object() else {
            continue;
        };
        for (k, v) in m {
            let values: Vec<Option<f64>> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(Value::as_f64)
                .collect();
            let e = acc
                .entry(k.clone())
                .or_insert_with(|| vec![(0.0, 0.0); values.len()]);
            for (slot, v) in e.iter_mut().zip(values) {
                if let Some(v) = v {
                    slot.0 += v * w;
                    slot.1 += w;
                }
            }
        }
    }
    acc.into_iter()
        .map(|(k, v)| {
            let means = v
                .into_iter()
                .map(|(sum, w)| (w > 0.0).then(|| sum / w))
                .collect();
            (k, means)
        })
        .collect()
}

/// The partitions' month-by-month summaries merged: months, distinct scenes used per month, clear
/// fraction per month (the mean over windows), and scenes found per modality (the catalogue search is
/// the same for every partition: the most any found).
#[expect(clippy::type_complexity, reason = "four parts of one summary")]
fn merge_parts(
    parts: &[&Value],
) -> (
    Vec<String>,
    std::collections::BTreeMap<String, Vec<u64>>,
    std::collections::BTreeMap<String, Vec<f64>>,
    std::collections::BTreeMap<String, usize>,
) {
    use std::collections::BTreeMap;
    let months: Vec<String> = parts
        .iter()
        .find_map(|p| serde_json::from_value(p["months"].clone()).ok())
        .unwrap_or_default();
    let n = months.len();
    let mut scenes: BTreeMap<String, Vec<std::collections::BTreeSet<String>>> = BTreeMap::new();
    let mut clear: BTreeMap<String, (Vec<f64>, f64)> = BTreeMap::new();
    let mut found: BTreeMap<String, usize> = BTreeMap::new();
    for p in parts {
        let windows =
            p["windows"].as_f64().unwrap_or(0.0) - p["quarantined"].as_f64().unwrap_or(0.0);
        if let Some(m) = p["scene_ids_per_month"].as_object() {
            for (k, v) in m {
                let e = scenes
                    .entry(k.clone())
                    .or_insert_with(|| vec![Default::default(); n]);
                for (t, ids) in v.as_array().into_iter().flatten().enumerate().take(n) {
                    e[t].extend(
                        ids.as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .map(str::to_owned),
                    );
                }
            }
        }
        if let Some(m) = p["clear_fraction"].as_object() {
            for (k, v) in m {
                let e = clear
                    .entry(k.clone())
                    .or_insert_with(|| (vec![0.0; n], 0.0));
                for (t, x) in v.as_array().into_iter().flatten().enumerate().take(n) {
                    e.0[t] += x.as_f64().unwrap_or(0.0) * windows;
                }
                e.1 += windows;
            }
        }
        if let Some(m) = p["scenes_found"].as_object() {
            for (k, v) in m {
                let e = found.entry(k.clone()).or_insert(0);
                *e = (*e).max(usize::try_from(v.as_u64().unwrap_or(0)).unwrap_or(0));
            }
        }
    }
    let clear = clear
        .into_iter()
        .map(|(k, (sum, w))| {
            (
                k,
                sum.iter()
                    .map(|s| if w > 0.0 { s / w } else { 0.0 })
                    .collect(),
            )
        })
        .collect();
    let scenes = scenes
        .into_iter()
        .map(|(k, bins)| (k, bins.iter().map(|b| b.len() as u64).collect()))
        .collect();
    (months, scenes, clear, found)
}

#[cfg(test)]
mod unit_tests {
    use super::{BandMeans, merge_band_means, unit_warnings};
    use serde_json::json;

    #[test]
    fn values_in_the_wrong_units_are_named_and_plausible_ones_are_not() {
        let mut means = BandMeans::new();
        // Calibrated backscatter in dB: water, fields and a town are all plausible.
        means.insert("sentinel1".into(), vec![Some(-12.0), Some(-19.0)]);
        assert!(unit_warnings(&means).is_empty());
        means.insert("sentinel1".into(), vec![Some(-22.0), Some(-28.0)]);
        assert!(unit_warnings(&means).is_empty());
        // Uncalibrated GRD amplitude (DN ~ 300) taken as power: 10·log10(300) ≈ 24.8 dB.
        means.insert("sentinel1".into(), vec![Some(24.8), Some(18.0)]);
        let w = unit_warnings(&means);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("vv mean 24.8") && w[0].contains("sentinel-1-rtc"),
            "{w:?}"
        );
        // Sentinel-2 reflectance given as 0–1 floats instead of DN.
        let mut means = BandMeans::new();
        means.insert("sentinel2_l2a".into(), vec![Some(0.05); 12]);
        assert!(
            unit_warnings(&means).is_empty(),
            "0.05 is within 2.5 std of DN means"
        );
        // Reflectance scaled to 0–65535 far beyond the DN range.
        means.insert("sentinel2_l2a".into(), vec![Some(40_000.0); 12]);
        assert_eq!(unit_warnings(&means).len(), 1);
        // Unobserved bands say nothing.
        means.insert("sentinel2_l2a".into(), vec![None; 12]);
        assert!(unit_warnings(&means).is_empty());
    }

    #[test]
    fn partition_means_are_weighted_by_the_windows_they_acquired() {
        let a = json!({"succeeded": 3, "band_means": {"sentinel1": [-10.0, null]}});
        let b = json!({"succeeded": 1, "band_means": {"sentinel1": [-14.0, -20.0]}});
        let m = merge_band_means(&[&a, &b]);
        assert_eq!(m["sentinel1"], vec![Some(-11.0), Some(-20.0)]);
    }
}

#[cfg(test)]
mod shortfall_tests {
    use super::shortfall;
    use std::collections::BTreeMap;

    #[test]
    fn a_shortfall_says_what_held_the_windows_back() {
        let found: BTreeMap<String, usize> = [
            ("sentinel2_l2a".to_string(), 0),
            ("sentinel1".to_string(), 3),
        ]
        .into();
        let reason = (
            "files.example.org ignores HTTP range requests".to_string(),
            4,
        );
        let msg = shortfall((1, 9, 3, 5), 0.9, &found, Some(&reason));
        assert!(
            msg.starts_with("only 1 of 9 windows were acquired (threshold 90 %)"),
            "{msg}"
        );
        assert!(msg.contains("; 3 hold no imagery"), "{msg}");
        assert!(
            msg.contains(
                "; 5 quarantined, 4 of them because: files.example.org ignores HTTP range requests"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("no sentinel2_l2a scene for the area and dates"),
            "{msg}"
        );
        assert!(!msg.contains("no sentinel1"), "{msg}");
        let plain = shortfall((0, 2, 0, 2), 0.9, &BTreeMap::new(), None);
        assert!(
            plain.ends_with("; 2 quarantined (see their reasons)"),
            "{plain}"
        );
    }
}
