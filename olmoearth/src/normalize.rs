//! Input normalisation (spec §2.2): the pretraining per-band statistics, the v1 missing-band fill and
//! Sentinel-1 linear → dB.
//!
//! The statistics are the reference package's `norm_configs/computed.json`, embedded verbatim.

use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::modality::Modality;

/// The reference `computed.json`.
pub const NORM_COMPUTED_JSON: &str = include_str!("norm_computed.json");

/// Marker of a missing value in raw inputs (besides NaN).
pub const MISSING_VALUE: f32 = -99999.0;

/// Lower clamp before taking the logarithm of Sentinel-1 linear backscatter.
pub const S1_DB_EPSILON: f32 = 1e-6;

/// Std multiplier of the `COMPUTED` normalisation strategy.
const STD_MULTIPLIER: f64 = 2.0;

/// Mean and standard deviation of one band over the pretraining data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BandStats {
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub std: f64,
}

impl BandStats {
    /// `(x − mean + 2·std) / (4·std)`, no clipping.
    pub fn normalize(&self, x: f64) -> f64 {
        let lo = self.mean - STD_MULTIPLIER * self.std;
        let hi = self.mean + STD_MULTIPLIER * self.std;
        (x - lo) / (hi - lo)
    }

    /// The raw value that normalises to 0.
    pub fn zero_point(&self) -> f64 {
        self.mean - STD_MULTIPLIER * self.std
    }
}

fn parsed() -> Result<&'static Value> {
    static JSON: OnceLock<std::result::Result<Value, String>> = OnceLock::new();
    JSON.get_or_init(|| serde_json::from_str(NORM_COMPUTED_JSON).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::InvalidInput(format!("embedded norm_computed.json: {e}")))
}

/// Statistics of every band of `m`, in [`Modality::bands`] order.
pub fn band_stats(m: Modality) -> Result<Vec<BandStats>> {
    let root = parsed()?;
    m.bands()
        .iter()
        .map(|band| {
            let entry = root.get(m.name()).and_then(|v| v.get(band));
            let field = |f: &str| entry.and_then(|e| e.get(f)).and_then(Value::as_f64);
            match (field("mean"), field("std")) {
                (Some(mean), Some(std)) => Ok(BandStats { mean, std }),
                _ => Err(Error::InvalidInput(format!(
                    "no statistics for {m} band {band}"
                ))),
            }
        })
        .collect()
}

/// Normalises raw values `(…, C)` of modality `m` with the pretraining statistics.
pub fn normalize(m: Modality, x: &Tensor) -> Result<Tensor> {
    let stats = band_stats(m)?;
    let c = x.dim(candle_core::D::Minus1)?;
    if c != stats.len() {
        return Err(Error::InvalidInput(format!(
            "{m} has {c} bands in the last axis, expected {}",
            stats.len()
        )));
    }
    let lo: Vec<f32> = stats.iter().map(|s| s.zero_point() as f32).collect();
    let scale: Vec<f32> = stats
        .iter()
        .map(|s| (1.0 / (2.0 * STD_MULTIPLIER * s.std)) as f32)
        .collect();
    let dev = x.device();
    let lo = Tensor::from_vec(lo, c, dev)?;
    let scale = Tensor::from_vec(scale, c, dev)?;
    Ok(x.to_dtype(DType::F32)?
        .broadcast_sub(&lo)?
        .broadcast_mul(&scale)?)
}

/// Centre wavelength (nm) and spectral group of each band of `m`, in band order, as the reference's
/// `SPECTRAL_GROUPS`: bands are only copied within a group. Sentinel-1 has none, so nothing is copied.
fn spectral_groups(m: Modality) -> Option<&'static [(f64, u8)]> {
    match m {
        // B02 B03 B04 B08 B05 B06 B07 B8A B11 B12 B01 B09
        Modality::Sentinel2L2a => Some(&[
            (490.0, 0),
            (560.0, 0),
            (665.0, 0),
            (842.0, 0),
            (705.0, 0),
            (740.0, 0),
            (783.0, 0),
            (865.0, 0),
            (1610.0, 0),
            (2190.0, 0),
            (443.0, 0),
            (945.0, 0),
        ]),
        // B8 B1 B2 B3 B4 B5 B6 B7 B9 | B10 B11 (thermal)
        Modality::Landsat => Some(&[
            (590.0, 0),
            (443.0, 0),
            (482.0, 0),
            (561.0, 0),
            (655.0, 0),
            (865.0, 0),
            (1609.0, 0),
            (2201.0, 0),
            (1373.0, 0),
            (10900.0, 1),
            (12000.0, 1),
        ]),
        Modality::Sentinel1 => None,
    }
}

fn is_missing(v: f32) -> bool {
    v.is_nan() || v == MISSING_VALUE
}

/// The v1 missing-band fill (reference `copy_nearest_bands` + `Normalizer`) on raw values laid out
/// `(…, C)` (channels last): a missing value (NaN or [`MISSING_VALUE`]) is copied from the present band
/// nearest in wavelength within its spectral group at the same pixel and time step; values with nothing
/// to copy from are set so they normalise to 0.
pub fn fill_missing_bands(m: Modality, data: &mut [f32]) -> Result<()> {
    let c = m.num_bands();
    if !data.len().is_multiple_of(c) {
        return Err(Error::InvalidInput(format!(
            "{} values are not a multiple of {c} bands",
            data.len()
        )));
    }
    let stats = band_stats(m)?;
    // For each band, the bands of its spectral group ordered by distance (ties: shorter wavelength).
    let groups = spectral_groups(m);
    let order: Vec<Vec<usize>> = (0..c)
        .map(|i| {
            let Some(g) = groups else { return Vec::new() };
            let mut others: Vec<usize> = (0..c).filter(|&j| j != i && g[j].1 == g[i].1).collect();
            others.sort_by(|&a, &b| {
                (g[a].0 - g[i].0)
                    .abs()
                    .total_cmp(&(g[b].0 - g[i].0).abs())
                    .then(g[a].0.total_cmp(&g[b].0))
            });
            others
        })
        .collect();
    for px in data.chunks_exact_mut(c) {
        if !px.iter().any(|&v| is_missing(v)) {
            continue;
        }
        let orig: Vec<f32> = px.to_vec();
        for i in 0..c {
            if is_missing(orig[i]) {
                px[i] = order[i]
                    .iter()
                    .map(|&j| orig[j])
                    .find(|&v| !is_missing(v))
                    .unwrap_or(stats[i].zero_point() as f32);
            }
        }
    }
    Ok(())
}

/// Sentinel-1 linear backscatter to decibels: `10·log10(max(x, ε))`.
pub fn s1_linear_to_db(x: &Tensor) -> Result<Tensor> {
    let x = x
        .to_dtype(DType::F32)?
        .clamp(S1_DB_EPSILON, f32::INFINITY)?;
    Ok((x.log()? * (10.0 / std::f64::consts::LN_10))?)
}

/// Raw `(…, C)` values as a normalised F32 tensor on `device`, after the missing-band fill.
pub fn prepare(m: Modality, mut raw: Vec<f32>, shape: &[usize], device: &Device) -> Result<Tensor> {
    fill_missing_bands(m, &mut raw)?;
    let t = Tensor::from_vec(raw, shape, &Device::Cpu)?;
    normalize(m, &t)?.to_device(device).map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_statistics_match_the_spec() -> Result<()> {
        let s2 = band_stats(Modality::Sentinel2L2a)?;
        assert!((s2[0].mean - 1188.9413).abs() < 1e-3 && (s2[0].std - 1859.1924).abs() < 1e-3);
        assert!((s2[11].mean - 3269.8126).abs() < 1e-3);
        let s1 = band_stats(Modality::Sentinel1)?;
        assert!((s1[0].mean + 11.6490).abs() < 1e-3 && (s1[1].std - 10.2163).abs() < 1e-3);
        let l = band_stats(Modality::Landsat)?;
        assert!((l[0].mean - 10132.0910).abs() < 1e-3 && (l[10].std - 9911.4212).abs() < 1e-3);
        Ok(())
    }

    #[test]
    fn normalisation_maps_mean_minus_two_std_to_zero_and_mean_to_half() -> Result<()> {
        let s = band_stats(Modality::Sentinel1)?;
        let x = Tensor::new(
            &[[s[0].zero_point() as f32, s[1].mean as f32]],
            &Device::Cpu,
        )?;
        let y: Vec<Vec<f32>> = normalize(Modality::Sentinel1, &x)?.to_vec2()?;
        assert!(y[0][0].abs() < 1e-6 && (y[0][1] - 0.5).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn missing_bands_copy_the_nearest_wavelength_or_normalise_to_zero() -> Result<()> {
        let m = Modality::Sentinel2L2a;
        let mut px: Vec<f32> = (0..12).map(|i| 100.0 * i as f32).collect();
        px[10] = f32::NAN; // B01 ← B02
        px[11] = MISSING_VALUE; // B09 ← B8A
        fill_missing_bands(m, &mut px)?;
        assert_eq!(px[10], px[0]);
        assert_eq!(px[11], px[7]);
        // Landsat thermal bands only copy from each other: B10 ← B11, but B11 alone stays unfilled.
        let mut l: Vec<f32> = (1..=11).map(|i| i as f32).collect();
        l[9] = f32::NAN;
        fill_missing_bands(Modality::Landsat, &mut l)?;
        assert_eq!(l[9], 11.0);
        // B8 (590 nm) is equidistant-ish between B3 (561) and B4 (655): nearest is B3.
        let mut l: Vec<f32> = (1..=11).map(|i| i as f32).collect();
        l[0] = MISSING_VALUE;
        fill_missing_bands(Modality::Landsat, &mut l)?;
        assert_eq!(l[0], 4.0);
        let mut s1 = vec![f32::NAN, f32::NAN];
        fill_missing_bands(Modality::Sentinel1, &mut s1)?;
        let t = normalize(
            Modality::Sentinel1,
            &Tensor::new(s1.as_slice(), &Device::Cpu)?,
        )?;
        assert!(t.abs()?.max(0)?.to_scalar::<f32>()? < 1e-6);
        Ok(())
    }

    #[test]
    fn s1_db_conversion() -> Result<()> {
        let x = Tensor::new(&[1.0f32, 0.1, 0.0], &Device::Cpu)?;
        let y: Vec<f32> = s1_linear_to_db(&x)?.to_vec1()?;
        assert!(y[0].abs() < 1e-6 && (y[1] + 10.0).abs() < 1e-4 && (y[2] + 60.0).abs() < 1e-3);
        Ok(())
    }
}
