//! The composite encodings added to every token (spec §3.3): band-set embedding, time-slot sin-cos,
//! month table and 2-D spatial sin-cos with GSD scaling.
//!
//! The sin-cos tables are computed in f32 like the reference, with its unusual frequency
//! ω_k = 10000^(−k/(2d)).

use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// Ground sample distance the positions count in (metres per pixel).
pub const BASE_GSD: f32 = 10.0;

/// `sincos(pos, d)` for each position: `[sin(p·ω_k)]_{k<d/2} ++ [cos(p·ω_k)]_{k<d/2}`, as `d` values per position.
pub fn sincos(positions: &[f32], d: usize) -> Vec<f32> {
    let half = d / 2;
    let omega: Vec<f32> = (0..half)
        .map(|k| {
            let e = k as f32 / d as f32 / 2.0;
            1.0 / 10000f32.powf(e)
        })
        .collect();
    let mut out = Vec::with_capacity(positions.len() * d);
    for &p in positions {
        out.extend(omega.iter().map(|&w| (p * w).sin()));
        out.extend(omega.iter().map(|&w| (p * w).cos()));
    }
    out
}

/// Time-slot encoding `(T, n)` for slots 0..T.
pub fn time_encoding(t: usize, n: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let pos: Vec<f32> = (0..t).map(|i| i as f32).collect();
    Ok(Tensor::from_vec(sincos(&pos, n), (t, n), &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?)
}

/// Spatial encoding `(h, w, n)`: column position first, then row, both scaled by `gsd_ratio`.
pub fn spatial_encoding(
    h: usize,
    w: usize,
    n: usize,
    gsd_ratio: f32,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let half = n / 2;
    let mut out = Vec::with_capacity(h * w * n);
    for i in 0..h {
        let row = sincos(&[i as f32 * gsd_ratio], half);
        for j in 0..w {
            out.extend(sincos(&[j as f32 * gsd_ratio], half));
            out.extend_from_slice(&row);
        }
    }
    Ok(Tensor::from_vec(out, (h, w, n), &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?)
}

/// The fixed month table `(12, n)`: `sin(2πk/12)` in the first half, `cos` in the second.
pub fn month_table(n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(12 * n);
    for k in 0..12 {
        let a = 2.0 * std::f32::consts::PI * k as f32 / 12.0;
        out.extend(std::iter::repeat_n(a.sin(), n / 2));
        out.extend(std::iter::repeat_n(a.cos(), n - n / 2));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sincos_uses_the_reference_frequencies() {
        let v = sincos(&[3.0], 8);
        // k = 1: ω = 10000^(−1/16).
        let w1 = 10000f32.powf(-1.0 / 16.0);
        assert!((v[1] - (3.0 * w1).sin()).abs() < 1e-6);
        assert!((v[4] - 1f32.mul_add(0.0, 3.0f32.cos())).abs() < 1e-6);
    }

    #[test]
    fn spatial_encoding_puts_the_column_first() -> Result<()> {
        let e = spatial_encoding(2, 3, 8, 1.0, DType::F32, &Device::Cpu)?;
        let v: Vec<f32> = e.get(0)?.get(2)?.to_vec1()?;
        assert_eq!(&v[..4], &sincos(&[2.0], 4)[..]);
        assert_eq!(&v[4..], &sincos(&[0.0], 4)[..]);
        Ok(())
    }
}
