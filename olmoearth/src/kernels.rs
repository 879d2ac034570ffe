//! CPU kernels for the inference hot paths, where candle's generic ops are slow on the CPU:
//! a fused multi-head attention that reads q, k and v straight out of the packed qkv projection and keeps
//! each block of score rows in cache, and a parallel exact-GELU with a vectorisable erf.
//!
//! Both are f32-only candle custom ops without a backward pass; training and other devices use candle's
//! ops instead (see [`crate::encoder`]).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// Largest number of score elements one query block keeps (1 MiB of f32: stays in L2).
const BLOCK_SCORES: usize = 1 << 18;

/// `e^x`, accurate to a few ulp for x ≤ 0 (the only inputs after subtracting the row max), written so
/// that LLVM vectorises it: range reduction to 2^n·e^r, |r| ≤ ln2/2, and a degree-7 Taylor polynomial.
#[inline(always)]
fn exp_nonpos(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23: adding and subtracting rounds to an integer
    let x = x.max(-87.0);
    // Adding ROUND rounds x·log2(e) to an integer n held in the low mantissa bits; integer ops on those
    // bits (wrapping, so no overflow checks) keep the loop vectorisable.
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    p * scale
}

/// erf by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7), branch-free.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let y = ((((1.061_405_4 * t - 1.453_152) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let e = 1.0 - y * exp_nonpos(-a * a);
    e.copysign(x)
}

#[inline(always)]
fn gelu_slice(xs: &mut [f32]) {
    for v in xs {
        let x = *v;
        *v = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// Softmax numerators in place; returns the row sum.
#[inline(always)]
fn exp_row(row: &mut [f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            m[i] = m[i].max(c[i]);
        }
    }
    let mut max = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for v in m {
        max = max.max(v);
    }
    let mut s = [0f32; 8];
    let mut chunks = row.chunks_exact_mut(8);
    for c in &mut chunks {
        for i in 0..8 {
            c[i] = exp_nonpos(c[i] - max);
            s[i] += c[i];
        }
    }
    let mut sum: f32 = 0.0;
    for v in chunks.into_remainder() {
        *v = exp_nonpos(*v - max);
        sum += *v;
    }
    sum + s.iter().sum::<f32>()
}

macro_rules! dispatch_avx2 {
    ($name:ident, $inner:ident, ($($arg:ident : $ty:ty),*) -> $ret:ty) => {
        fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(unsafe_code)]
                unsafe fn avx2($($arg: $ty),*) -> $ret {
                    $inner($($arg),*)
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports the features the function was compiled for.
                    #[allow(unsafe_code)]
                    return unsafe { avx2($($arg),*) };
                }
            }
            $inner($($arg),*)
        }
    };
}

dispatch_avx2!(gelu_dispatch, gelu_slice, (xs: &mut [f32]) -> ());

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: only f32 is supported, got {:?}", s.dtype())
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "olmoearth-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let mut out = contiguous_f32(s, l, "gelu")?.to_vec();
        out.par_chunks_mut(1 << 14).for_each(gelu_dispatch);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// Exact (erf) GELU on a contiguous f32 CPU tensor, in parallel.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1_no_bwd(&Gelu)?)
}

struct Attention {
    b: usize,
    n: usize,
    heads: usize,
}

/// Rows of queries handled together by the micro-kernels.
const ROWS: usize = 4;

#[inline(always)]
fn fma<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// Scores of four query rows at once: `s_r[j] = Σ_c q_r[c] · kt[c][j]`, as axpy loops over the key axis
/// (plain slice loops, which LLVM vectorises reliably); each key value loaded serves four rows.
#[inline(always)]
fn qk_rows4<const HD: usize, const FMA: bool>(q: &[f32], kt: &[f32], s: &mut [f32], n: usize) {
    let (s0, rest) = s.split_at_mut(n);
    let (s1, rest) = rest.split_at_mut(n);
    let (s2, rest) = rest.split_at_mut(n);
    let s3 = &mut rest[..n];
    s0.fill(0.0);
    s1.fill(0.0);
    s2.fill(0.0);
    s3.fill(0.0);
    // Four feature columns per pass: 16 FMAs for every 4 score loads and stores.
    for c in (0..HD).step_by(4) {
        let k = |i: usize| &kt[(c + i) * n..(c + i + 1) * n];
        let (k0, k1, k2, k3) = (k(0), k(1), k(2), k(3));
        let a = |r: usize| {
            [
                q[r * HD + c],
                q[r * HD + c + 1],
                q[r * HD + c + 2],
                q[r * HD + c + 3],
            ]
        };
        let (a0, a1, a2, a3) = (a(0), a(1), a(2), a(3));
        let step = |a: &[f32; 4], x: f32, v: [f32; 4]| {
            let x = fma::<FMA>(a[0], v[0], x);
            let x = fma::<FMA>(a[1], v[1], x);
            let x = fma::<FMA>(a[2], v[2], x);
            fma::<FMA>(a[3], v[3], x)
        };
        let rows = s0
            .iter_mut()
            .zip(s1.iter_mut())
            .zip(s2.iter_mut())
            .zip(s3.iter_mut());
        let keys = k0.iter().zip(k1).zip(k2).zip(k3);
        for ((((x0, x1), x2), x3), (((v0, v1), v2), v3)) in rows.zip(keys) {
            let v = [*v0, *v1, *v2, *v3];
            *x0 = step(&a0, *x0, v);
            *x1 = step(&a1, *x1, v);
            *x2 = step(&a2, *x2, v);
            *x3 = step(&a3, *x3, v);
        }
    }
}

/// Scores of one query row.
#[inline(always)]
fn qk_row<const HD: usize, const FMA: bool>(q: &[f32], kt: &[f32], s: &mut [f32], n: usize) {
    let s = &mut s[..n];
    s.fill(0.0);
    for (c, k) in kt.chunks_exact(n).take(HD).enumerate() {
        let a = q[c];
        for (x, kv) in s.iter_mut().zip(k) {
            *x = fma::<FMA>(a, *kv, *x);
        }
    }
}

/// Weighted values of `R` rows: `acc[r] = Σ_j p_r[j] · v[j]` with `v (n × HD)`. The `R × HD` accumulators
/// stay in registers; each value row loaded serves `R` query rows and each score is read once.
#[inline(always)]
fn pv_rows<const HD: usize, const R: usize, const FMA: bool>(
    p: [&[f32]; R],
    v: &[f32],
) -> [[f32; HD]; R] {
    let mut acc = [[0f32; HD]; R];
    let n = v.len() / HD;
    assert!(
        p.iter().all(|row| row.len() >= n),
        "attention: score rows shorter than the values"
    );
    for (j, vv) in v.chunks_exact(HD).enumerate() {
        let Ok(vv) = <&[f32; HD]>::try_from(vv) else {
            break;
        };
        for r in 0..R {
            // SAFETY: j < n ≤ p[r].len(), checked above; the unchecked read keeps the loop vectorisable.
            #[allow(unsafe_code)]
            let pr = unsafe { *p[r].get_unchecked(j) };
            for x in 0..HD {
                acc[r][x] = fma::<FMA>(pr, vv[x], acc[r][x]);
            }
        }
    }
    acc
}

/// Per-head operands of one sample: q (scaled) and v as `(n × HD)`, k transposed as `(HD × n)`.
struct HeadOperands {
    q: Vec<f32>,
    kt: Vec<f32>,
    v: Vec<f32>,
}

fn head_operands(
    qkv: &[f32],
    n: usize,
    d: usize,
    col: usize,
    hd: usize,
    scale: f32,
) -> HeadOperands {
    let d3 = 3 * d;
    let mut q = vec![0f32; n * hd];
    let mut kt = vec![0f32; n * hd];
    let mut v = vec![0f32; n * hd];
    for j in 0..n {
        let row = &qkv[j * d3..(j + 1) * d3];
        for c in 0..hd {
            q[j * hd + c] = row[col + c] * scale;
            kt[c * n + j] = row[d + col + c];
            v[j * hd + c] = row[2 * d + col + c];
        }
    }
    HeadOperands { q, kt, v }
}

/// One head for query rows `i0..i0+rows`: scores, softmax numerators, weighted values.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend<const HD: usize, const PR: usize, const FMA: bool>(
    ops: &HeadOperands,
    out: &mut [f32],
    scores: &mut [f32],
    i0: usize,
    rows: usize,
    n: usize,
    d: usize,
) {
    let q = &ops.q[i0 * HD..(i0 + rows) * HD];
    let full = rows - rows % ROWS;
    for r0 in (0..full).step_by(ROWS) {
        qk_rows4::<HD, FMA>(&q[r0 * HD..], &ops.kt, &mut scores[r0 * n..], n);
    }
    for r0 in full..rows {
        qk_row::<HD, FMA>(&q[r0 * HD..], &ops.kt, &mut scores[r0 * n..], n);
    }
    let mut inv = [0f32; 64];
    for (r, row) in scores.chunks_exact_mut(n).take(rows).enumerate() {
        inv[r] = 1.0 / exp_row(row);
    }
    let v = &ops.v[..n * HD];
    let mut write = |r: usize, acc: &[f32; HD]| {
        for (o, x) in out[r * d..r * d + HD].iter_mut().zip(acc) {
            *o = x * inv[r];
        }
    };
    // PR rows share each value row; PR·HD accumulators must fit the vector registers.
    let full_pv = rows - rows % PR;
    for r0 in (0..full_pv).step_by(PR) {
        let p: [&[f32]; PR] = std::array::from_fn(|r| &scores[(r0 + r) * n..(r0 + r + 1) * n]);
        let acc = pv_rows::<HD, PR, FMA>(p, v);
        for (r, a) in acc.iter().enumerate() {
            write(r0 + r, a);
        }
    }
    for r0 in full_pv..rows {
        let acc = pv_rows::<HD, 1, FMA>([&scores[r0 * n..(r0 + 1) * n]], v);
        write(r0, &acc[0]);
    }
}

macro_rules! attend_dispatch {
    ($hd:literal, $pr:literal, $ops:expr, $out:expr, $scores:expr, $i0:expr, $rows:expr, $n:expr, $d:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx2,fma")]
            #[allow(unsafe_code)]
            unsafe fn avx512(
                o: &HeadOperands,
                out: &mut [f32],
                s: &mut [f32],
                i0: usize,
                rows: usize,
                n: usize,
                d: usize,
            ) {
                attend::<$hd, $pr, true>(o, out, s, i0, rows, n, d)
            }
            #[target_feature(enable = "avx2,fma")]
            #[allow(unsafe_code)]
            unsafe fn avx2(
                o: &HeadOperands,
                out: &mut [f32],
                s: &mut [f32],
                i0: usize,
                rows: usize,
                n: usize,
                d: usize,
            ) {
                attend::<$hd, $pr, true>(o, out, s, i0, rows, n, d)
            }
            if is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports the features the function was compiled for.
                #[allow(unsafe_code)]
                unsafe {
                    avx512($ops, $out, $scores, $i0, $rows, $n, $d)
                };
                return;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                // SAFETY: as above.
                #[allow(unsafe_code)]
                unsafe {
                    avx2($ops, $out, $scores, $i0, $rows, $n, $d)
                };
                return;
            }
        }
        attend::<$hd, $pr, false>($ops, $out, $scores, $i0, $rows, $n, $d)
    }};
}

/// A head-size specialisation of [`attend`].
type AttendFn = fn(&HeadOperands, &mut [f32], &mut [f32], usize, usize, usize, usize);

fn attend_16(
    o: &HeadOperands,
    out: &mut [f32],
    s: &mut [f32],
    i0: usize,
    rows: usize,
    n: usize,
    d: usize,
) {
    attend_dispatch!(16, 4, o, out, s, i0, rows, n, d)
}

fn attend_64(
    o: &HeadOperands,
    out: &mut [f32],
    s: &mut [f32],
    i0: usize,
    rows: usize,
    n: usize,
    d: usize,
) {
    attend_dispatch!(64, 2, o, out, s, i0, rows, n, d)
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "olmoearth-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = contiguous_f32(s, l, "attention")?;
        let (b, n, heads) = (self.b, self.n, self.heads);
        let d3 = l.shape().dims().last().copied().unwrap_or(0);
        let d = d3 / 3;
        if d3 != 3 * d || heads == 0 || d % heads != 0 || qkv.len() != b * n * d3 {
            candle_core::bail!(
                "attention: qkv shape {:?} does not fit b={b} n={n} heads={heads}",
                l.shape()
            )
        }
        let hd = d / heads;
        let attend_fn: AttendFn = match hd {
            16 => attend_16,
            64 => attend_64,
            _ => candle_core::bail!("attention: no CPU kernel for head size {hd}"),
        };
        let scale = 1.0 / (hd as f32).sqrt();
        // A multiple of ROWS, at most 64 rows (the size of the `inv` buffer).
        let qb = ((BLOCK_SCORES / n.max(1)).clamp(8, 64) / ROWS) * ROWS;
        let ops: Vec<HeadOperands> = (0..b * heads)
            .into_par_iter()
            .map(|bh| {
                let (bi, h) = (bh / heads, bh % heads);
                head_operands(
                    &qkv[bi * n * d3..(bi + 1) * n * d3],
                    n,
                    d,
                    h * hd,
                    hd,
                    scale,
                )
            })
            .collect();
        let mut out = vec![0f32; b * n * d];
        out.par_chunks_mut(n * d)
            .enumerate()
            .for_each(|(bi, out_b)| {
                out_b
                    .par_chunks_mut(qb * d)
                    .enumerate()
                    .for_each(|(blk, out_blk)| {
                        let rows = out_blk.len() / d;
                        let mut scores = vec![0f32; rows * n];
                        for h in 0..heads {
                            attend_fn(
                                &ops[bi * heads + h],
                                &mut out_blk[h * hd..],
                                &mut scores,
                                blk * qb,
                                rows,
                                n,
                                d,
                            );
                        }
                    });
            });
        Ok((CpuStorage::F32(out), Shape::from((b * n, d))))
    }
}

/// Whether [`attention_from_qkv`] has a CPU kernel for this head size.
pub fn supports_head_dim(hd: usize) -> bool {
    hd == 16 || hd == 64
}

/// Multi-head softmax attention from the packed projection `qkv (B·N, 3D)` (q, k, v blocks of D columns,
/// heads of D/heads columns each); returns `(B·N, D)` with heads concatenated.
pub fn attention_from_qkv(qkv: &Tensor, b: usize, n: usize, heads: usize) -> Result<Tensor> {
    Ok(qkv
        .contiguous()?
        .apply_op1_no_bwd(&Attention { b, n, heads })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn fast_exp_and_erf_are_accurate() {
        for i in 0..2000 {
            let x = -(i as f32) * 0.05;
            let rel = (exp_nonpos(x) - x.exp()).abs() / x.exp().max(f32::MIN_POSITIVE);
            assert!(rel < 2e-6 || x < -80.0, "exp({x}): {rel}");
        }
        for i in -600..600 {
            let x = i as f32 * 0.01;
            let want = candle_core::cpu::erf::erf_f64(f64::from(x));
            assert!((f64::from(erf(x)) - want).abs() < 5e-7, "erf({x})");
        }
    }

    #[test]
    fn fused_ops_match_candle() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 2.0, (3, 1000), &dev)?;
        let d = (gelu(&x)? - x.gelu_erf()?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(d < 1e-6, "gelu {d}");
        for (b, n, heads, dm) in [(2, 37, 4, 64), (1, 70, 2, 128), (3, 5, 1, 16)] {
            let qkv = Tensor::randn(0f32, 1.0, (b * n, 3 * dm), &dev)?;
            let got = attention_from_qkv(&qkv, b, n, heads)?;
            let split = |i: usize| -> Result<Tensor> {
                Ok(qkv
                    .narrow(1, i * dm, dm)?
                    .reshape((b, n, heads, dm / heads))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let (q, k, v) = (split(0)?, split(1)?, split(2)?);
            let want = crate::encoder::attention(&q, &k, &v, true)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * n, dm))?;
            let d = (got - want)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(d < 1e-5, "attention {b}x{n} heads={heads} D={dm}: {d}");
            assert_eq!(qkv.dtype(), DType::F32);
        }
        Ok(())
    }
}
