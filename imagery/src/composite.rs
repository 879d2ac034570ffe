//! Time bins and per-bin compositing of scenes read onto a window grid.

use chrono::{Datelike, Months, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::modality::{Modality, landsat_qa_is_clear, scl_is_clear};

/// Mask value of present data (OlmoEarth `MaskValue.ONLINE_ENCODER`).
pub const MASK_PRESENT: u8 = 0;
/// Mask value of missing data (OlmoEarth `MaskValue.MISSING`).
pub const MASK_MISSING: u8 = 3;
/// Most time bins the model takes.
pub const MAX_BINS: usize = 12;

/// How the date range is split into time steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeBinning {
    /// Calendar months intersected with the range (at most 12).
    #[default]
    Monthly,
    /// One bin for the whole range.
    Whole,
}

/// One time step: an inclusive date range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeBin {
    /// First day.
    pub start: NaiveDate,
    /// Last day (inclusive).
    pub end: NaiveDate,
}

impl TimeBin {
    /// OlmoEarth timestamp `[day 1–31, month 0–11, year]` of the bin (its first day).
    pub fn timestamp(&self) -> [i32; 3] {
        [
            self.start.day() as i32,
            self.start.month0() as i32,
            self.start.year(),
        ]
    }

    /// Whether a date falls in the bin.
    pub fn contains(&self, d: NaiveDate) -> bool {
        self.start <= d && d <= self.end
    }
}

/// Splits `[start, end]` into bins.
pub fn time_bins(start: NaiveDate, end: NaiveDate, binning: TimeBinning) -> Result<Vec<TimeBin>> {
    if end < start {
        return Err(Error::InvalidRequest(format!(
            "end {end} is before start {start}"
        )));
    }
    match binning {
        TimeBinning::Whole => Ok(vec![TimeBin { start, end }]),
        TimeBinning::Monthly => {
            let mut bins = Vec::new();
            let mut month = start.with_day(1).unwrap_or(start);
            while month <= end {
                let next = month + Months::new(1);
                bins.push(TimeBin {
                    start: month.max(start),
                    end: (next - chrono::Days::new(1)).min(end),
                });
                month = next;
                if bins.len() > MAX_BINS {
                    return Err(Error::InvalidRequest(format!(
                        "{start}..{end} spans more than {MAX_BINS} months; the model takes at most {MAX_BINS} time steps"
                    )));
                }
            }
            Ok(bins)
        }
    }
}

/// How scenes in one bin are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Composite {
    /// Per-pixel median of valid observations.
    Median,
    /// Per-pixel mean of valid observations (Sentinel-1 averages linear power).
    Mean,
    /// The first valid observation in time order.
    FirstValid,
}

/// One scene's bands on the window grid.
#[derive(Debug, Clone)]
pub struct SceneStack {
    /// Band values (`C` vectors of `H×W`), `NaN` for no data.
    pub bands: Vec<Vec<f32>>,
    /// Quality layer: scene classification (Sentinel-2) or `QA_PIXEL` (Landsat), `NaN` for no data.
    pub scl: Option<Vec<f32>>,
    /// Harmonisation offset subtracted from Sentinel-2 DN.
    pub offset: f32,
    /// Sentinel-1 values already in dB.
    pub in_db: bool,
}

/// The composite of one modality over all bins, `(H,W,T,C)` and `(H,W,T,S)`.
///
/// Where a band set is missing (mask 3) its values are 0. A band whose asset the scenes lack, in a band
/// set that is otherwise present, is `NaN`.
#[derive(Debug, Clone)]
pub struct Composited {
    /// Values, physical units; 0 where the mask says missing.
    pub data: Vec<f32>,
    /// Mask per band set.
    pub mask: Vec<u8>,
}

/// A per-pixel test that leaves out of a bin's composite the observations whose clouds the scene
/// classification missed (faint haze, thin cloud edges): these brighten the blue band, so an observation
/// whose `band` is above `reference × (1 + relative) + absolute` is dropped, where the reference is the
/// lower median of the pixel's valid values of `band` in the bin (of two observations, the darker one).
/// A pixel with one valid observation keeps it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierTest {
    /// Index of the band tested (blue for Sentinel-2).
    pub band: usize,
    /// Allowed brightening, relative to the reference.
    pub relative: f32,
    /// Allowed brightening on top, in the band's units (DN for Sentinel-2).
    pub absolute: f32,
}

impl OutlierTest {
    /// The Sentinel-2 test: blue (B02) more than 25 % + 100 DN above the reference.
    pub const SENTINEL2: OutlierTest = OutlierTest {
        band: 0,
        relative: 0.25,
        absolute: 100.0,
    };

    /// The test [`composite`] applies to a modality: Sentinel-2's; none for radar or Landsat.
    #[must_use]
    pub fn for_modality(m: Modality) -> Option<OutlierTest> {
        (m == Modality::Sentinel2L2a).then_some(OutlierTest::SENTINEL2)
    }
}

/// Composites one modality: `bins[t]` holds the scenes of bin `t`, in the order they should be preferred.
/// Sentinel-2 observations that fail [`OutlierTest::SENTINEL2`] are left out.
pub fn composite(
    m: Modality,
    bins: &[Vec<SceneStack>],
    pixels: usize,
    method: Composite,
) -> Composited {
    composite_with(m, bins, pixels, method, OutlierTest::for_modality(m))
}

/// [`composite`] with a chosen outlier test (`None`: every valid observation counts).
pub fn composite_with(
    m: Modality,
    bins: &[Vec<SceneStack>],
    pixels: usize,
    method: Composite,
    test: Option<OutlierTest>,
) -> Composited {
    let t_n = bins.len();
    let c_n = m.bands().len();
    let sets = m.band_sets();
    let mut data = vec![0f32; pixels * t_n * c_n];
    let mut mask = vec![MASK_MISSING; pixels * t_n * sets.len()];
    let mut vals: Vec<f32> = Vec::with_capacity(16);
    let mut have = vec![false; c_n];
    let mut absent = vec![false; c_n];
    let mut keep: Vec<bool> = Vec::new();
    let mut refs: Vec<f32> = Vec::new();
    for (t, scenes) in bins.iter().enumerate() {
        // A band no scene of the bin has an asset for is absent, not invalid: it is NaN (OlmoEarth's
        // missing-band marker, filled from the nearest band at model input) and does not mask its set.
        for (c, a) in absent.iter_mut().enumerate() {
            *a = !scenes.is_empty()
                && scenes
                    .iter()
                    .all(|s| s.bands.get(c).is_none_or(Vec::is_empty));
        }
        for p in 0..pixels {
            keep.clear();
            keep.resize(scenes.len(), true);
            if let Some(test) = test {
                refs.clear();
                refs.extend(
                    scenes
                        .iter()
                        .filter_map(|s| observation(m, s, test.band, p)),
                );
                if refs.len() > 1 {
                    refs.sort_by(f32::total_cmp);
                    let limit = refs[(refs.len() - 1) / 2] * (1.0 + test.relative) + test.absolute;
                    for (k, s) in keep.iter_mut().zip(scenes) {
                        *k = observation(m, s, test.band, p).is_none_or(|v| v <= limit);
                    }
                }
            }
            for (c, h) in have.iter_mut().enumerate() {
                vals.clear();
                for (s, _) in scenes.iter().zip(&keep).filter(|(_, k)| **k) {
                    let Some(v) = observation(m, s, c, p) else {
                        continue;
                    };
                    vals.push(v);
                    if method == Composite::FirstValid {
                        break;
                    }
                }
                *h = !vals.is_empty();
                if vals.is_empty() {
                    continue;
                }
                let v = match method {
                    Composite::FirstValid => vals[0],
                    Composite::Mean => vals.iter().sum::<f32>() / vals.len() as f32,
                    Composite::Median => median(&mut vals),
                };
                let v = if m == Modality::Sentinel1 {
                    to_db(v)
                } else {
                    v
                };
                data[(p * t_n + t) * c_n + c] = v;
            }
            for (s, set) in sets.iter().enumerate() {
                let present =
                    set.iter().any(|&c| !absent[c]) && set.iter().all(|&c| absent[c] || have[c]);
                if present {
                    mask[(p * t_n + t) * sets.len() + s] = MASK_PRESENT;
                    for &c in set.iter().filter(|&&c| absent[c]) {
                        data[(p * t_n + t) * c_n + c] = f32::NAN;
                    }
                } else {
                    for &c in set.iter() {
                        data[(p * t_n + t) * c_n + c] = 0.0;
                    }
                }
            }
        }
    }
    Composited { data, mask }
}

/// A valid observation of band `c` at pixel `p` (S1 in linear power, S2 harmonised), if any.
fn observation(m: Modality, s: &SceneStack, c: usize, p: usize) -> Option<f32> {
    let v = *s.bands.get(c)?.get(p)?;
    if !v.is_finite() {
        return None;
    }
    match m {
        Modality::Sentinel2L2a => {
            if let Some(scl) = &s.scl {
                let class = scl.get(p).copied().unwrap_or(f32::NAN);
                if !class.is_finite() || !scl_is_clear(class as u8) {
                    return None;
                }
            }
            if v <= 0.0 {
                return None;
            }
            Some((v - s.offset).max(0.0))
        }
        Modality::Sentinel1 => {
            let lin = if s.in_db { 10f32.powf(v / 10.0) } else { v };
            (lin > 0.0).then_some(lin)
        }
        Modality::Landsat => {
            if let Some(qa) = &s.scl {
                let qa = qa.get(p).copied().unwrap_or(f32::NAN);
                if !qa.is_finite() || !landsat_qa_is_clear(qa as u16) {
                    return None;
                }
            }
            (v > 0.0).then_some(v)
        }
    }
}

fn median(v: &mut [f32]) -> f32 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Linear power to dB (`10·log10(max(x, 1e-10))`).
pub fn to_db(x: f32) -> f32 {
    10.0 * x.max(1e-10).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn monthly_bins_clip_to_the_range() {
        let b = time_bins(d("2024-01-15"), d("2024-03-10"), TimeBinning::Monthly).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(b[0].start, d("2024-01-15"));
        assert_eq!(b[0].end, d("2024-01-31"));
        assert_eq!(b[2].end, d("2024-03-10"));
        assert_eq!(b[1].timestamp(), [1, 1, 2024]);
        assert!(time_bins(d("2024-01-01"), d("2025-02-01"), TimeBinning::Monthly).is_err());
        assert_eq!(
            time_bins(d("2024-01-01"), d("2024-12-31"), TimeBinning::Monthly)
                .unwrap()
                .len(),
            12
        );
    }

    #[test]
    fn cloudy_pixels_are_excluded_and_empty_bins_are_missing() {
        let clear = SceneStack {
            bands: vec![vec![1100.0, 1200.0]; 12],
            scl: Some(vec![4.0, 4.0]),
            offset: 0.0,
            in_db: false,
        };
        let cloudy = SceneStack {
            bands: vec![vec![9000.0, 9000.0]; 12],
            scl: Some(vec![9.0, 4.0]),
            offset: 0.0,
            in_db: false,
        };
        let out = composite_with(
            Modality::Sentinel2L2a,
            &[vec![clear, cloudy], vec![]],
            2,
            Composite::Median,
            None,
        );
        // (H·W=2, T=2, C=12): pixel 0, bin 0 ignores the cloud; pixel 1 takes the median of 1200 and 9000.
        assert_eq!(out.data[0], 1100.0);
        assert_eq!(out.data[(2) * 12], 5100.0);
        assert_eq!(out.mask[0], MASK_PRESENT);
        assert_eq!(out.mask[3], MASK_MISSING); // pixel 0, bin 1, set 0
        assert_eq!(out.data[12], 0.0);
    }

    #[test]
    fn an_observation_far_brighter_in_blue_than_the_others_is_left_out_unless_it_is_alone() {
        let stack = |blue: f32, red: f32| SceneStack {
            bands: (0..12)
                .map(|c| vec![if c == 0 { blue } else { red }; 1])
                .collect(),
            scl: Some(vec![4.0]),
            offset: 0.0,
            in_db: false,
        };
        let s2 = Modality::Sentinel2L2a;
        // Two observations: the hazy one (blue 1500 against 400) is dropped, whatever the order.
        for bin in [
            vec![stack(400.0, 300.0), stack(1500.0, 1300.0)],
            vec![stack(1500.0, 1300.0), stack(400.0, 300.0)],
        ] {
            let out = composite(s2, &[bin], 1, Composite::Median);
            assert_eq!(out.data[0], 400.0);
            assert_eq!(out.data[2], 300.0);
        }
        // Within the allowance (≤ 400·1.25 + 100 = 600) both count.
        let out = composite(
            s2,
            &[vec![stack(400.0, 300.0), stack(590.0, 500.0)]],
            1,
            Composite::Median,
        );
        assert_eq!(out.data[2], 400.0);
        // Three observations: the reference is the median, so one dark outlier does not drop the rest.
        let out = composite(
            s2,
            &[vec![
                stack(100.0, 100.0),
                stack(400.0, 300.0),
                stack(420.0, 320.0),
            ]],
            1,
            Composite::Mean,
        );
        assert!((out.data[2] - 240.0).abs() < 1e-3, "{}", out.data[2]);
        // Alone, a hazy observation is kept: there is nothing to compare it with.
        let out = composite(s2, &[vec![stack(1500.0, 1300.0)]], 1, Composite::Median);
        assert_eq!(out.data[2], 1300.0);
        assert_eq!(out.mask[0], MASK_PRESENT);
    }

    /// Mean absolute error (DN) of a composite's 10 m bands against the month's clean surface, over
    /// pixels and months with data, and how many there were.
    fn error_against_clean(
        out: &Composited,
        passes: &[crate::demo::DemoPass],
        months: &[u32],
        pixels: usize,
    ) -> (f64, usize) {
        let (t_n, c_n, s_n) = (months.len(), 12, Modality::Sentinel2L2a.band_sets().len());
        let (mut sum, mut count) = (0f64, 0usize);
        for (t, &month) in months.iter().enumerate() {
            let mine: Vec<&crate::demo::DemoPass> =
                passes.iter().filter(|p| p.month == month).collect();
            for p in 0..pixels {
                if out.mask[(p * t_n + t) * s_n] != MASK_PRESENT {
                    continue;
                }
                for c in 0..4 {
                    let clean = mine.iter().map(|q| f64::from(q.clean[c][p])).sum::<f64>()
                        / mine.len() as f64;
                    sum += (f64::from(out.data[(p * t_n + t) * c_n + c]) - clean).abs();
                    count += 1;
                }
            }
        }
        (sum / count.max(1) as f64, count)
    }

    #[test]
    fn on_scenes_with_haze_and_cloud_edges_the_mask_misses_the_outlier_test_brings_the_composite_much_closer_to_the_clean_surface()
     {
        for (scene, seed) in [
            ("tropical-haze", 3),
            ("tropical-haze", 11),
            ("dryland", 5),
            ("smallholder", 17),
        ] {
            let opts = crate::demo::DemoOptions {
                size: 128,
                ..crate::demo::DemoOptions::scene(scene, seed).unwrap()
            };
            let passes = crate::demo::demo_passes(&opts).unwrap();
            let bins: Vec<Vec<SceneStack>> = opts
                .months
                .iter()
                .map(|&m| {
                    passes
                        .iter()
                        .filter(|p| p.month == m)
                        .map(|p| SceneStack {
                            bands: p.bands.clone(),
                            scl: Some(p.scl.clone()),
                            offset: 0.0,
                            in_db: false,
                        })
                        .collect()
                })
                .collect();
            let pixels = opts.size * opts.size;
            let s2 = Modality::Sentinel2L2a;
            let plain = composite_with(s2, &bins, pixels, Composite::Median, None);
            let tested = composite(s2, &bins, pixels, Composite::Median);
            assert_eq!(plain.mask, tested.mask, "the test never empties a pixel");
            let (without, n) = error_against_clean(&plain, &passes, &opts.months, pixels);
            let (with, _) = error_against_clean(&tested, &passes, &opts.months, pixels);
            eprintln!(
                "{scene} seed {seed}: MAE {without:.1} DN without the test, {with:.1} with it"
            );
            assert!(n > pixels, "{scene} {seed}: {n} values compared");
            assert!(
                with < 0.6 * without,
                "{scene} seed {seed}: {with:.1} DN with the test, {without:.1} without"
            );
        }
    }

    #[test]
    fn sentinel1_is_averaged_in_linear_power_and_reported_in_db() {
        let a = SceneStack {
            bands: vec![vec![0.01], vec![0.001]],
            scl: None,
            offset: 0.0,
            in_db: false,
        };
        let out = composite(Modality::Sentinel1, &[vec![a]], 1, Composite::Mean);
        assert!((out.data[0] + 20.0).abs() < 1e-4);
        assert!((out.data[1] + 30.0).abs() < 1e-4);
    }
}
