//! The antialiased bicubic resize of `F.interpolate(mode="bicubic", antialias=True, align_corners=False)`
//! (spec §3.1), written as two matmuls with precomputed weight matrices.

use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// Keys cubic kernel with a = −0.5 (the antialias path of torch uses this, not −0.75).
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        A * (((x - 5.0) * x + 8.0) * x - 4.0)
    } else {
        0.0
    }
}

/// The `(out, inp)` matrix whose row i holds the weights of output sample i.
pub fn weight_matrix(inp: usize, out: usize) -> Vec<f64> {
    let mut m = vec![0.0; out * inp];
    let scale = inp as f64 / out as f64;
    let (support, inv) = if scale >= 1.0 {
        (2.0 * scale, 1.0 / scale)
    } else {
        (2.0, 1.0)
    };
    for i in 0..out {
        let c = scale * (i as f64 + 0.5);
        // Truncation toward zero, as the reference's int cast.
        let lo = ((c - support + 0.5).trunc() as i64).max(0) as usize;
        let hi = ((c + support + 0.5).trunc() as i64).min(inp as i64).max(0) as usize;
        let row = &mut m[i * inp..(i + 1) * inp];
        let mut total = 0.0;
        for (j, r) in row.iter_mut().enumerate().take(hi).skip(lo) {
            *r = cubic((j as f64 - c + 0.5) * inv);
            total += *r;
        }
        if total != 0.0 {
            row[lo..hi].iter_mut().for_each(|r| *r /= total);
        }
    }
    m
}

/// Precomputed resize of `(M, H, W)` images to `(M, out_h, out_w)`.
#[derive(Debug, Clone)]
pub struct Resize {
    /// Transposed row weights `(H, out_h)`.
    rh_t: Tensor,
    /// Transposed column weights `(W, out_w)`.
    rw_t: Tensor,
    out_h: usize,
    out_w: usize,
}

impl Resize {
    /// Builds the weight matrices.
    pub fn new(
        (h, w): (usize, usize),
        (out_h, out_w): (usize, usize),
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mk = |inp: usize, out: usize| -> Result<Tensor> {
            let m = weight_matrix(inp, out);
            Ok(Tensor::from_vec(m, (out, inp), &Device::Cpu)?
                .t()?
                .to_dtype(dtype)?
                .to_device(device)?
                .contiguous()?)
        };
        Ok(Resize {
            rh_t: mk(h, out_h)?,
            rw_t: mk(w, out_w)?,
            out_h,
            out_w,
        })
    }

    /// Resizes `x` of shape `(M, H, W)` to `(M, out_h, out_w)`.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (m, h, w) = x.dims3()?;
        // Along W: (M·H, W) @ (W, out_w).
        let y = x.contiguous()?.reshape((m * h, w))?.matmul(&self.rw_t)?;
        // Along H: transpose to (M·out_w, H) @ (H, out_h), then back.
        let y = y
            .reshape((m, h, self.out_w))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((m * self.out_w, h))?
            .matmul(&self.rh_t)?;
        Ok(y.reshape((m, self.out_w, self.out_h))?
            .transpose(1, 2)?
            .contiguous()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_to_one_and_identity_size_is_identity() {
        for (i, o) in [(32, 80), (64, 128), (32, 16), (5, 7)] {
            let m = weight_matrix(i, o);
            for r in 0..o {
                let s: f64 = m[r * i..(r + 1) * i].iter().sum();
                assert!((s - 1.0).abs() < 1e-12);
            }
        }
        let m = weight_matrix(6, 6);
        for r in 0..6 {
            for c in 0..6 {
                let expect = if r == c { 1.0 } else { 0.0 };
                assert!((m[r * 6 + c] - expect).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn constant_images_stay_constant() -> Result<()> {
        let x = Tensor::full(3.5f32, (2, 8, 12), &Device::Cpu)?;
        let y = Resize::new((8, 12), (20, 6), DType::F32, &Device::Cpu)?.apply(&x)?;
        assert_eq!(y.dims(), &[2, 20, 6]);
        let max = (y - 3.5)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(max < 1e-5);
        Ok(())
    }
}
