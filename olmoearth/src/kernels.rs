//! CPU kernels for f32 inference, where candle's generic ops are slow on the CPU:
//! - multi-head attention that reads q, k and v out of the packed qkv projection and handles a block of
//!   query rows at a time, so that its scores never exceed one block per thread (O(N) memory). For the
//!   head widths the presets use (16 and 64) on CPUs with AVX-512, register-tiled kernels walk the keys
//!   in chunks with an online softmax; otherwise gemm computes the two products of each block;
//! - softmax numerators and the exact (erf) GELU with AVX-512 intrinsics, or autovectorised loops on
//!   other CPUs;
//! - `stack`, the encoder's whole transformer stack on reused buffers.
//!
//! None of them has a backward pass; training and other devices use candle's ops (see
//! [`crate::encoder`]).

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

/// `$name` runs `$inner` compiled for AVX2+FMA when the CPU has them, else the generic build. CPUs with
/// AVX-512 take the [`avx512`] kernels instead.
macro_rules! dispatch_avx2 {
    ($name:ident, $inner:ident, ($($arg:ident : $ty:ty),*) -> $ret:ty) => {
        fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[expect(unsafe_code, reason = "a target_feature function is unsafe to call")]
                unsafe fn avx2($($arg: $ty),*) -> $ret {
                    $inner($($arg),*)
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports the features the function was compiled for.
                    #[expect(unsafe_code, reason = "runs only where the CPU has the features")]
                    return unsafe { avx2($($arg),*) };
                }
            }
            $inner($($arg),*)
        }
    };
}

dispatch_avx2!(gelu_avx2, gelu_slice, (xs: &mut [f32]) -> ());
dispatch_avx2!(exp_row_avx2, exp_row, (row: &mut [f32]) -> f32);

pub(crate) mod stack;

/// Whether the CPU runs the [`avx512`] kernels.
fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Exact GELU in place, with the widest kernel the CPU has.
fn gelu_dispatch(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512F.
        #[expect(unsafe_code, reason = "runs only where the CPU has the features")]
        return unsafe { avx512::gelu(xs) };
    }
    gelu_avx2(xs)
}

/// Softmax numerators of a row in place (e^(x − max)); returns their sum.
fn exp_row_dispatch(row: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512F.
        #[expect(unsafe_code, reason = "runs only where the CPU has the features")]
        return unsafe { avx512::exp_row(row) };
    }
    exp_row_avx2(row)
}

/// The element-wise kernels with AVX-512 intrinsics: 16 lanes, FMA, and `vscalefps` for the 2^n of exp.
#[cfg(target_arch = "x86_64")]
#[expect(unsafe_code, reason = "intrinsics on raw pointers")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Calls the register-tile kernel `$f::<R>` with `R = $nr`, one of the listed row counts or 1: the
    /// row count is a constant so that the tile's accumulators stay in registers.
    macro_rules! for_rows {
        ($nr:expr, $f:ident, $args:expr; $($r:literal)+) => {
            match $nr {
                $($r => $f::<$r>($args),)+
                _ => $f::<1>($args),
            }
        };
    }

    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;

    /// e^x for x ≤ 0: x = n·ln2 + r with |r| ≤ ln2/2, a degree-7 Taylor polynomial in r, scaled by 2^n.
    /// Inputs below −100 give 0 (e^−100 is below the smallest f32).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp_nonpos(x: __m512) -> __m512 {
        let x = _mm512_max_ps(x, _mm512_set1_ps(-100.0));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(1.0 / 5040.0);
        for c in [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }

    /// 2^x for x ≤ 0: x = n + r with |r| ≤ 1/2, a degree-6 Taylor polynomial of e^(r·ln2), scaled by
    /// 2^n. Inputs below −150 give 0.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp2_nonpos(x: __m512) -> __m512 {
        const LN2: f32 = std::f32::consts::LN_2;
        let x = _mm512_max_ps(x, _mm512_set1_ps(-150.0));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
        let r = _mm512_sub_ps(x, n);
        let mut p = _mm512_set1_ps(LN2.powi(6) / 720.0);
        for c in [
            LN2.powi(5) / 120.0,
            LN2.powi(4) / 24.0,
            LN2.powi(3) / 6.0,
            LN2 * LN2 / 2.0,
            LN2,
            1.0,
        ] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }

    /// Mask of the first `len % 16` lanes.
    fn tail_mask(len: usize) -> __mmask16 {
        ((1u32 << (len % 16)) - 1) as __mmask16
    }

    /// Softmax numerators in place (e^(x − max)); returns their sum.
    #[target_feature(enable = "avx512f")]
    pub(super) fn exp_row(row: &mut [f32]) -> f32 {
        let max = row_max(row);
        exp_shifted::<false>(row, max)
    }

    /// The largest value of a row (−∞ for an empty one).
    #[target_feature(enable = "avx512f")]
    pub(super) fn row_max(row: &[f32]) -> f32 {
        let len = row.len();
        let full = len - len % 16;
        let tail = tail_mask(len);
        let ptr = row.as_ptr();
        let (mut m0, mut m1) = (
            _mm512_set1_ps(f32::NEG_INFINITY),
            _mm512_set1_ps(f32::NEG_INFINITY),
        );
        let mut i = 0;
        while i + 32 <= full {
            // SAFETY: i + 32 ≤ len.
            unsafe {
                m0 = _mm512_max_ps(m0, _mm512_loadu_ps(ptr.add(i)));
                m1 = _mm512_max_ps(m1, _mm512_loadu_ps(ptr.add(i + 16)));
            }
            i += 32;
        }
        if i < full {
            // SAFETY: i + 16 ≤ full ≤ len.
            m0 = _mm512_max_ps(m0, unsafe { _mm512_loadu_ps(ptr.add(i)) });
        }
        if tail != 0 {
            // SAFETY: the masked load reads only lanes full..len.
            m1 = _mm512_max_ps(m1, unsafe { _mm512_mask_loadu_ps(m1, tail, ptr.add(full)) });
        }
        _mm512_reduce_max_ps(_mm512_max_ps(m0, m1))
    }

    /// `x ← e^(x − max)`, or with `BASE2` `x ← 2^(x − max)`, in place for a `max` at least the row's largest
    /// value; returns the sum.
    #[target_feature(enable = "avx512f")]
    pub(super) fn exp_shifted<const BASE2: bool>(row: &mut [f32], max: f32) -> f32 {
        let len = row.len();
        let full = len - len % 16;
        let tail = tail_mask(len);
        let ptr = row.as_mut_ptr();
        let max = _mm512_set1_ps(max);
        let exp = |x: __m512| {
            if BASE2 { exp2_nonpos(x) } else { exp_nonpos(x) }
        };
        let mut sum = _mm512_setzero_ps();
        let mut i = 0;
        while i < full {
            // SAFETY: i + 16 ≤ full ≤ len.
            unsafe {
                let e = exp(_mm512_sub_ps(_mm512_loadu_ps(ptr.add(i)), max));
                _mm512_storeu_ps(ptr.add(i), e);
                sum = _mm512_add_ps(sum, e);
            }
            i += 16;
        }
        if tail != 0 {
            // SAFETY: the masked load and store touch only lanes full..len.
            unsafe {
                let x = _mm512_mask_loadu_ps(max, tail, ptr.add(full));
                let e = exp(_mm512_sub_ps(x, max));
                _mm512_mask_storeu_ps(ptr.add(full), tail, e);
                sum = _mm512_mask_add_ps(sum, tail, sum, e);
            }
        }
        _mm512_reduce_add_ps(sum)
    }

    /// 0.5·x·(1 + erf(x/√2)) with erf by Abramowitz & Stegun 7.1.26.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn gelu16(x: __m512) -> __m512 {
        let z = _mm512_abs_ps(_mm512_mul_ps(
            x,
            _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2),
        ));
        let one = _mm512_set1_ps(1.0);
        // t = 1 / (1 + p·z): the 14-bit reciprocal estimate and one Newton step (a division costs about
        // 16 cycles per vector, more than the rest of the function).
        let den = _mm512_fmadd_ps(z, _mm512_set1_ps(0.327_591_1), one);
        let t0 = _mm512_rcp14_ps(den);
        let t = _mm512_mul_ps(t0, _mm512_fnmadd_ps(den, t0, _mm512_set1_ps(2.0)));
        let mut y = _mm512_set1_ps(1.061_405_4);
        for c in [-1.453_152, 1.421_413_8, -0.284_496_74, 0.254_829_6] {
            y = _mm512_fmadd_ps(y, t, _mm512_set1_ps(c));
        }
        y = _mm512_mul_ps(y, t);
        let e = _mm512_fnmadd_ps(
            y,
            exp_nonpos(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), z), z)),
            one,
        );
        // erf is odd: 1 + erf(x/√2) is 1 − e for negative x.
        let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_setzero_ps());
        let onep = _mm512_mask_sub_ps(_mm512_add_ps(one, e), neg, one, e);
        _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5), x), onep)
    }

    /// Attention scores for a head width of 16: `scores[r][j] = scale · Σ_c q[r][c]·kt[c][j]` for `rows`
    /// query rows (`q` rows `q_stride` apart) against `kt` (16 rows of n keys, `ldk` apart); score rows
    /// are `ld` apart. The 16
    /// key vectors of a strip of 16 keys stay in registers while every query row streams past them.
    #[target_feature(enable = "avx512f")]
    pub(super) fn qk16(
        q: &[f32],
        q_stride: usize,
        rows: usize,
        (kt, ldk): (&[f32], usize),
        scores: &mut [f32],
        (n, ld): (usize, usize),
        scale: f32,
    ) {
        assert!(
            kt.len() >= 15 * ldk + n
                && ld >= n
                && (rows == 0 || scores.len() >= (rows - 1) * ld + n)
                && (rows == 0 || q.len() >= (rows - 1) * q_stride + 16),
            "qk16: operand sizes do not fit"
        );
        let scale = _mm512_set1_ps(scale);
        let (qp, kp, sp) = (q.as_ptr(), kt.as_ptr(), scores.as_mut_ptr());
        let mut j = 0;
        while j < n {
            let mask = if n - j >= 16 {
                0xffff
            } else {
                tail_mask(n - j)
            };
            // SAFETY: key lanes j..j+16 are masked to j..n, and kt rows c < 16 hold n values from c·ldk;
            // q reads r·q_stride + c < (rows − 1)·q_stride + 16; score lanes are masked like the keys.
            unsafe {
                let k: [__m512; 16] =
                    std::array::from_fn(|c| _mm512_maskz_loadu_ps(mask, kp.add(c * ldk + j)));
                for r in 0..rows {
                    let qr = qp.add(r * q_stride);
                    let mut acc0 = _mm512_mul_ps(_mm512_set1_ps(*qr), k[0]);
                    let mut acc1 = _mm512_mul_ps(_mm512_set1_ps(*qr.add(1)), k[1]);
                    for c in 1..8 {
                        acc0 = _mm512_fmadd_ps(_mm512_set1_ps(*qr.add(2 * c)), k[2 * c], acc0);
                        acc1 =
                            _mm512_fmadd_ps(_mm512_set1_ps(*qr.add(2 * c + 1)), k[2 * c + 1], acc1);
                    }
                    let s = _mm512_mul_ps(_mm512_add_ps(acc0, acc1), scale);
                    _mm512_mask_storeu_ps(sp.add(r * ld + j), mask, s);
                }
            }
            j += 16;
        }
    }

    /// Weighted values for a head width of 16: `acc[r] += Σ_j p[r][j]·v[j]` for `rows` rows of `p` (rows
    /// of n values, `ld` apart), `v (n × 16)` and `acc (rows × 16)`. Eight rows share each value vector
    /// loaded, in two interleaved sets of accumulators.
    #[target_feature(enable = "avx512f")]
    pub(super) fn pv16(
        p: &[f32],
        v: &[f32],
        (n, ld): (usize, usize),
        rows: usize,
        acc: &mut [f32],
    ) {
        assert!(
            ld >= n
                && (rows == 0 || p.len() >= (rows - 1) * ld + n)
                && v.len() >= n * 16
                && acc.len() >= rows * 16,
            "pv16: operand sizes do not fit"
        );
        let mut r0 = 0;
        while r0 < rows {
            let nr = (rows - r0).min(8);
            let args = (&p[r0 * ld..], v, (n, ld), &mut acc[r0 * 16..]);
            for_rows!(nr, pv16_rows, args; 8 7 6 5 4 3 2);
            r0 += nr;
        }
    }

    /// [`pv16`] for `R` rows, with its `2R` accumulators in registers (a constant row count lets the
    /// loops unroll).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn pv16_rows<const R: usize>(
        (p, v, (n, ld), acc): (&[f32], &[f32], (usize, usize), &mut [f32]),
    ) {
        assert!(
            p.len() >= (R - 1) * ld + n && v.len() >= n * 16 && acc.len() >= R * 16,
            "pv16: operand sizes do not fit"
        );
        let (pp, vp, ap) = (p.as_ptr(), v.as_ptr(), acc.as_mut_ptr());
        // SAFETY: rows 0..R of p hold n values from i·ld; v holds n rows of 16; j + 1 < n in the paired
        // loop; acc holds R rows of 16 (all by the assertion above).
        unsafe {
            let mut a: [__m512; R] = std::array::from_fn(|i| _mm512_loadu_ps(ap.add(i * 16)));
            let mut b = [_mm512_setzero_ps(); R];
            let mut j = 0;
            while j + 1 < n {
                let v0 = _mm512_loadu_ps(vp.add(j * 16));
                let v1 = _mm512_loadu_ps(vp.add(j * 16 + 16));
                for i in 0..R {
                    let row = pp.add(i * ld + j);
                    a[i] = _mm512_fmadd_ps(_mm512_set1_ps(*row), v0, a[i]);
                    b[i] = _mm512_fmadd_ps(_mm512_set1_ps(*row.add(1)), v1, b[i]);
                }
                j += 2;
            }
            if j < n {
                let v0 = _mm512_loadu_ps(vp.add(j * 16));
                for (i, x) in a.iter_mut().enumerate() {
                    *x = _mm512_fmadd_ps(_mm512_set1_ps(*pp.add(i * ld + j)), v0, *x);
                }
            }
            for i in 0..R {
                _mm512_storeu_ps(ap.add(i * 16), _mm512_add_ps(a[i], b[i]));
            }
        }
    }

    /// Keys per strip of [`qk64`]: the strip's 64 × 64 transposed keys (16 KiB) stay in L1.
    const QK64_STRIP: usize = 64;
    /// Keys per chunk of [`pv64`]: the chunk's values (32 KiB) stay in L1.
    const PV64_CHUNK: usize = 128;

    /// Attention scores for a head width of 64: `scores[r][j] = scale · Σ_c q[r][c]·kt[c][j]` for `rows`
    /// query rows (`q` rows `q_stride` apart) against `kt` (64 rows of n keys, `ldk` apart); score rows
    /// are `ld` apart. Register
    /// tiles of 6 rows × 64 keys; each strip of keys serves every row.
    #[target_feature(enable = "avx512f")]
    pub(super) fn qk64(
        q: &[f32],
        q_stride: usize,
        rows: usize,
        (kt, ldk): (&[f32], usize),
        scores: &mut [f32],
        (n, ld): (usize, usize),
        scale: f32,
    ) {
        assert!(
            kt.len() >= 63 * ldk + n
                && ld >= n
                && (rows == 0 || scores.len() >= (rows - 1) * ld + n)
                && (rows == 0 || q.len() >= (rows - 1) * q_stride + 64),
            "qk64: operand sizes do not fit"
        );
        let mut j = 0;
        while j < n {
            let width = (n - j).min(QK64_STRIP);
            let masks: [__mmask16; 4] = std::array::from_fn(|z| {
                let lanes = width.saturating_sub(16 * z).min(16);
                ((1u32 << lanes) - 1) as __mmask16
            });
            let mut r0 = 0;
            while r0 < rows {
                let nr = (rows - r0).min(6);
                let args = QkTile {
                    q: &q[r0 * q_stride..],
                    q_stride,
                    kt: &kt[j..],
                    ldk,
                    scores: &mut scores[r0 * ld + j..],
                    ld,
                    masks,
                    scale,
                };
                for_rows!(nr, qk64_tile, args; 6 5 4 3 2);
                r0 += nr;
            }
            j += width;
        }
    }

    /// One register tile of [`qk64`]: `R` query rows against up to 64 keys (lanes off in `masks`).
    struct QkTile<'a> {
        q: &'a [f32],
        q_stride: usize,
        /// Starts at the strip's first key; rows `ldk` apart.
        kt: &'a [f32],
        ldk: usize,
        /// Starts at the tile's first row and key; rows `ld` apart.
        scores: &'a mut [f32],
        ld: usize,
        masks: [__mmask16; 4],
        scale: f32,
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn qk64_tile<const R: usize>(t: QkTile<'_>) {
        let width: usize = t.masks.iter().map(|m| m.count_ones() as usize).sum();
        assert!(
            t.q.len() >= (R - 1) * t.q_stride + 64
                && t.kt.len() >= 63 * t.ldk + width
                && t.scores.len() >= (R - 1) * t.ld + width,
            "qk64: tile operands do not fit"
        );
        let (qp, kp, sp) = (t.q.as_ptr(), t.kt.as_ptr(), t.scores.as_mut_ptr());
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        // SAFETY: q rows i < R hold 64 values from i·q_stride; key row c < 64 holds `width` values from
        // c·ldk, and the masks cover only those lanes; score rows i < R hold `width` values from i·ld.
        unsafe {
            for c in 0..64 {
                let k: [__m512; 4] = std::array::from_fn(|z| {
                    _mm512_maskz_loadu_ps(t.masks[z], kp.add(c * t.ldk + 16 * z))
                });
                for (i, row) in acc.iter_mut().enumerate() {
                    let qv = _mm512_set1_ps(*qp.add(i * t.q_stride + c));
                    for (a, kz) in row.iter_mut().zip(k) {
                        *a = _mm512_fmadd_ps(qv, kz, *a);
                    }
                }
            }
            let scale = _mm512_set1_ps(t.scale);
            for (i, row) in acc.iter().enumerate() {
                for (z, a) in row.iter().enumerate() {
                    _mm512_mask_storeu_ps(
                        sp.add(i * t.ld + 16 * z),
                        t.masks[z],
                        _mm512_mul_ps(*a, scale),
                    );
                }
            }
        }
    }

    /// Weighted values for a head width of 64: `acc[r] += Σ_j p[r][j]·v[j]` for `rows` rows of `p` (rows
    /// of n values, `ld` apart), `v (n × 64)` and `acc (rows × 64)`. Register tiles of 6 rows × 64
    /// values, over chunks of keys whose values stay in L1.
    #[target_feature(enable = "avx512f")]
    pub(super) fn pv64(
        p: &[f32],
        v: &[f32],
        (n, ld): (usize, usize),
        rows: usize,
        acc: &mut [f32],
    ) {
        assert!(
            ld >= n
                && (rows == 0 || p.len() >= (rows - 1) * ld + n)
                && v.len() >= n * 64
                && acc.len() >= rows * 64,
            "pv64: operand sizes do not fit"
        );
        let mut j0 = 0;
        while j0 < n {
            let len = (n - j0).min(PV64_CHUNK);
            let mut r0 = 0;
            while r0 < rows {
                let nr = (rows - r0).min(6);
                let args = PvTile {
                    p: &p[r0 * ld + j0..],
                    ld,
                    v: &v[j0 * 64..],
                    len,
                    acc: &mut acc[r0 * 64..],
                };
                for_rows!(nr, pv64_tile, args; 6 5 4 3 2);
                r0 += nr;
            }
            j0 += len;
        }
    }

    /// One register tile of [`pv64`]: `R` rows, `len` keys, added to `acc` (rows of 64).
    struct PvTile<'a> {
        /// Starts at the tile's first row and key; rows `ld` apart.
        p: &'a [f32],
        ld: usize,
        /// Starts at the chunk's first key; rows of 64.
        v: &'a [f32],
        len: usize,
        acc: &'a mut [f32],
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn pv64_tile<const R: usize>(t: PvTile<'_>) {
        assert!(
            t.p.len() >= (R - 1) * t.ld + t.len && t.v.len() >= t.len * 64 && t.acc.len() >= R * 64,
            "pv64: tile operands do not fit"
        );
        let (pp, vp, ap) = (t.p.as_ptr(), t.v.as_ptr(), t.acc.as_mut_ptr());
        // SAFETY: acc rows i < R hold 64 values; p rows i < R hold `len` values from i·ld; v holds `len`
        // rows of 64 (all by the assertion above).
        unsafe {
            let mut acc: [[__m512; 4]; R] = std::array::from_fn(|i| {
                std::array::from_fn(|z| _mm512_loadu_ps(ap.add(i * 64 + 16 * z)))
            });
            for j in 0..t.len {
                let v: [__m512; 4] =
                    std::array::from_fn(|z| _mm512_loadu_ps(vp.add(j * 64 + 16 * z)));
                for (i, row) in acc.iter_mut().enumerate() {
                    let pv = _mm512_set1_ps(*pp.add(i * t.ld + j));
                    for (a, vz) in row.iter_mut().zip(v) {
                        *a = _mm512_fmadd_ps(pv, vz, *a);
                    }
                }
            }
            for (i, row) in acc.iter().enumerate() {
                for (z, a) in row.iter().enumerate() {
                    _mm512_storeu_ps(ap.add(i * 64 + 16 * z), *a);
                }
            }
        }
    }

    /// Exact GELU in place.
    #[target_feature(enable = "avx512f")]
    pub(super) fn gelu(xs: &mut [f32]) {
        let len = xs.len();
        let full = len - len % 16;
        let tail = tail_mask(len);
        let ptr = xs.as_mut_ptr();
        let mut i = 0;
        while i < full {
            // SAFETY: i + 16 ≤ full ≤ len.
            unsafe { _mm512_storeu_ps(ptr.add(i), gelu16(_mm512_loadu_ps(ptr.add(i)))) };
            i += 16;
        }
        if tail != 0 {
            // SAFETY: the masked load and store touch only lanes full..len.
            unsafe {
                let x = _mm512_maskz_loadu_ps(tail, ptr.add(full));
                _mm512_mask_storeu_ps(ptr.add(full), tail, gelu16(x));
            }
        }
    }
}

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

/// Shapes of one attention call, in elements.
#[derive(Clone, Copy)]
struct AttnDims {
    /// Tokens per sample.
    n: usize,
    /// Model width; qkv rows hold 3·d values.
    d: usize,
    /// Head width.
    hd: usize,
}

/// Distance between score rows: at least `n`, padded so that successive rows do not map to the same
/// L1 cache sets (a row of 3,072 scores is exactly 12 KiB, a multiple of the 4 KiB set stride).
fn score_stride(n: usize) -> usize {
    n.next_multiple_of(16) + 16
}

/// Keys and values of one head of one sample, laid out for the two products: k transposed (hd rows of n
/// keys, [`score_stride`] apart) and v `(n × hd)` contiguous. gemm reads a column-major right operand
/// about a third slower, and the score kernels read each row of kᵀ in turn.
struct HeadOperands<'a> {
    kt: &'a [f32],
    v: &'a [f32],
}

/// Fills `kt` and `v` of one head from the packed projection of one sample.
fn head_operands(
    qkv: &[f32],
    col: usize,
    AttnDims { n, d, hd }: AttnDims,
    kt: &mut [f32],
    v: &mut [f32],
) {
    let d3 = 3 * d;
    let ld = score_stride(n);
    // kᵀ in tiles of 16 keys, so that both the reads (16 rows) and the writes (hd runs of 16) stay in L1.
    for j0 in (0..n).step_by(16) {
        let keys = (n - j0).min(16);
        for c in 0..hd {
            let dst = &mut kt[c * ld + j0..c * ld + j0 + keys];
            for (jj, x) in dst.iter_mut().enumerate() {
                *x = qkv[(j0 + jj) * d3 + d + col + c];
            }
        }
    }
    for (j, row) in qkv.chunks_exact(d3).take(n).enumerate() {
        v[j * hd..(j + 1) * hd].copy_from_slice(&row[2 * d + col..2 * d + col + hd]);
    }
}

/// One head for the query rows `i0..i0 + rows` of one sample: scores `q kᵀ·scale` into `scores`, softmax
/// numerators in place, then `p v` into `out` (rows of `d` values, written at columns `col..col + hd`)
/// divided by the row sums. Both products are single-threaded gemm calls; q is read straight from the
/// packed projection `qkv (n × 3d)`. The caller parallelises over samples and query blocks.
fn attend(
    qkv: &[f32],
    ops: &HeadOperands<'_>,
    out: &mut [f32],
    scores: &mut [f32],
    (i0, rows): (usize, usize),
    col: usize,
    AttnDims { n, d, hd }: AttnDims,
) {
    let d3 = 3 * d;
    let ld = score_stride(n);
    assert!(
        qkv.len() == n * d3
            && ops.kt.len() == hd * ld
            && ops.v.len() == n * hd
            && i0 + rows <= n
            && col + hd <= d
            && (rows == 0 || out.len() >= (rows - 1) * d + col + hd),
        "attention: operand sizes do not fit"
    );
    #[cfg(target_arch = "x86_64")]
    if (hd == 16 || hd == 64) && has_avx512() {
        // SAFETY: the CPU has AVX-512F.
        #[expect(unsafe_code, reason = "runs only where the CPU has the features")]
        unsafe {
            attend_avx512(
                &qkv[i0 * d3 + col..],
                ops,
                out,
                scores,
                rows,
                col,
                AttnDims { n, d, hd },
            )
        };
        return;
    }
    assert!(
        rows <= 64 && (rows == 0 || scores.len() >= (rows - 1) * ld + n),
        "attention: score buffer too small"
    );
    let scale = 1.0 / (hd as f32).sqrt();
    // SAFETY: every access is inside the slices, by the assertions above: q rows i0..i0+rows read columns
    // col..col+hd of a 3d-wide row; kt is hd rows of n, ld apart; v is n × hd; scores are rows of n
    // values, ld apart; out rows are d apart with hd columns from col.
    #[expect(unsafe_code, reason = "gemm takes raw pointers")]
    unsafe {
        gemm::gemm(
            rows,
            n,
            hd,
            scores.as_mut_ptr(),
            1,
            ld as isize,
            false,
            qkv.as_ptr().add(i0 * d3 + col),
            1,
            d3 as isize,
            ops.kt.as_ptr(),
            1,
            ld as isize,
            0.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    let mut inv = [0f32; 64];
    for (r, row) in scores.chunks_mut(ld).take(rows).enumerate() {
        inv[r] = 1.0 / exp_row_dispatch(&mut row[..n]);
    }
    // SAFETY: as above.
    #[expect(unsafe_code, reason = "gemm takes raw pointers")]
    unsafe {
        gemm::gemm(
            rows,
            hd,
            n,
            out.as_mut_ptr().add(col),
            1,
            d as isize,
            false,
            scores.as_ptr(),
            1,
            ld as isize,
            ops.v.as_ptr(),
            1,
            hd as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    for (r, &s) in inv.iter().enumerate().take(rows) {
        for o in &mut out[r * d + col..r * d + col + hd] {
            *o *= s;
        }
    }
}

/// Most query rows of one block of [`attend_avx512`].
const FLASH_ROWS: usize = 128;

/// Keys per chunk of [`attend_avx512`]: a chunk's keys, values and scores for a block of query rows stay
/// in L2 (64 KiB each for 64 rows of a 64-wide head).
const KEY_CHUNK: usize = 256;

/// [`attend`] for head widths 16 and 64 with the AVX-512 kernels, one chunk of keys at a time with an
/// online softmax in base 2: each row keeps its running maximum `m` and sum `l`, and the accumulated
/// weighted values are rescaled by `2^(m_old − m_new)` when a chunk raises the maximum. `q` starts at the block's
/// first query row and head column, rows `3d` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn attend_avx512(
    q: &[f32],
    ops: &HeadOperands<'_>,
    out: &mut [f32],
    scores: &mut [f32],
    rows: usize,
    col: usize,
    AttnDims { n, d, hd }: AttnDims,
) {
    let ldk = score_stride(n);
    let ls = score_stride(KEY_CHUNK.min(n));
    assert!(
        rows <= FLASH_ROWS && (rows == 0 || scores.len() >= (rows - 1) * ls + KEY_CHUNK.min(n)),
        "attention: score buffer too small"
    );
    // Scores in base 2 (log2(e) folded into the scale), so that the numerators are 2^(s − max).
    let scale = std::f32::consts::LOG2_E / (hd as f32).sqrt();
    let mut m = [f32::NEG_INFINITY; FLASH_ROWS];
    let mut l = [0f32; FLASH_ROWS];
    let mut acc = vec![0f32; rows * hd];
    let mut j0 = 0;
    while j0 < n {
        let w = KEY_CHUNK.min(n - j0);
        let kt = (&ops.kt[j0..], ldk);
        if hd == 16 {
            avx512::qk16(q, 3 * d, rows, kt, scores, (w, ls), scale);
        } else {
            avx512::qk64(q, 3 * d, rows, kt, scores, (w, ls), scale);
        }
        for (r, row) in scores.chunks_mut(ls).take(rows).enumerate() {
            let row = &mut row[..w];
            let new_m = m[r].max(avx512::row_max(row));
            // The maximum seldom moves after the first chunks; skip the scalar exp2 when it stays.
            let alpha = if new_m == m[r] {
                1.0
            } else {
                (m[r] - new_m).exp2()
            };
            l[r] = l[r] * alpha + avx512::exp_shifted::<true>(row, new_m);
            m[r] = new_m;
            if alpha != 1.0 {
                acc[r * hd..(r + 1) * hd]
                    .iter_mut()
                    .for_each(|a| *a *= alpha);
            }
        }
        let v = &ops.v[j0 * hd..];
        if hd == 16 {
            avx512::pv16(scores, v, (w, ls), rows, &mut acc);
        } else {
            avx512::pv64(scores, v, (w, ls), rows, &mut acc);
        }
        j0 += w;
    }
    for r in 0..rows {
        let inv = 1.0 / l[r];
        for (o, a) in out[r * d + col..r * d + col + hd]
            .iter_mut()
            .zip(&acc[r * hd..(r + 1) * hd])
        {
            *o = a * inv;
        }
    }
}

/// Multi-head softmax attention of `b` samples of `n` tokens from the packed projection `qkv (b·n × 3d)`
/// into `out (b·n × d)`, every element of which is written. `scratch` holds the per-head keys and values
/// between calls (resized to about `2·b·n·d`).
pub(crate) fn attention_into(
    qkv: &[f32],
    out: &mut [f32],
    (b, n, heads): (usize, usize, usize),
    scratch: &mut Vec<f32>,
) -> std::result::Result<(), String> {
    let d3 = qkv.len().checked_div(b * n).unwrap_or(0);
    let d = d3 / 3;
    if b * n == 0
        || d3 != 3 * d
        || heads == 0
        || d % heads != 0
        || qkv.len() != b * n * d3
        || out.len() != b * n * d
    {
        return Err(format!(
            "attention: {} qkv values and {} outputs do not fit b={b} n={n} heads={heads}",
            qkv.len(),
            out.len()
        ));
    }
    let dims = AttnDims {
        n,
        d,
        hd: d / heads,
    };
    let per_head = (score_stride(n) + n) * dims.hd;
    scratch.resize(b * heads * per_head, 0.0);
    scratch
        .par_chunks_mut(per_head)
        .enumerate()
        .for_each(|(bh, buf)| {
            let (bi, h) = (bh / heads, bh % heads);
            let (kt, v) = buf.split_at_mut(score_stride(n) * dims.hd);
            head_operands(
                &qkv[bi * n * d3..(bi + 1) * n * d3],
                h * dims.hd,
                dims,
                kt,
                v,
            );
        });
    let scratch: &[f32] = scratch;
    // Query rows per block: a multiple of 4, at most 64 (the size of the `inv` buffer), with the
    // block's scores small enough to stay in L2.
    let flash = cfg!(target_arch = "x86_64") && (dims.hd == 16 || dims.hd == 64) && has_avx512();
    let qb = if flash {
        // As many rows as keep every thread busy, up to FLASH_ROWS: each block streams all keys and
        // values of every head once.
        let threads = rayon::current_num_threads().max(1);
        let mut qb = FLASH_ROWS;
        while qb > 16 && b * n.div_ceil(qb) < 4 * threads {
            qb /= 2;
        }
        qb
    } else {
        ((BLOCK_SCORES / n).clamp(8, 64) / 4) * 4
    };
    let score_rows = if flash {
        score_stride(KEY_CHUNK.min(n))
    } else {
        score_stride(n)
    };
    out.par_chunks_mut(n * d)
        .zip(qkv.par_chunks(n * d3))
        .zip(scratch.par_chunks(heads * per_head))
        .for_each(|((out_b, qkv_b), ops_b)| {
            out_b.par_chunks_mut(qb * d).enumerate().for_each_init(
                || vec![0f32; qb * score_rows],
                |scores, (blk, out_blk)| {
                    let rows = out_blk.len() / d;
                    for (h, buf) in ops_b.chunks_exact(per_head).enumerate() {
                        let (kt, v) = buf.split_at(score_stride(n) * dims.hd);
                        attend(
                            qkv_b,
                            &HeadOperands { kt, v },
                            out_blk,
                            scores,
                            (blk * qb, rows),
                            h * dims.hd,
                            dims,
                        );
                    }
                },
            );
        });
    Ok(())
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "olmoearth-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = contiguous_f32(s, l, "attention")?;
        let (b, n, heads) = (self.b, self.n, self.heads);
        let d = qkv.len() / (3 * b * n).max(1);
        let mut out = vec![0f32; b * n * d];
        attention_into(qkv, &mut out, (b, n, heads), &mut Vec::new())
            .map_err(candle_core::Error::msg)?;
        Ok((CpuStorage::F32(out), Shape::from((b * n, d))))
    }
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
        // Head widths 16 and 64 take the AVX-512 kernels where the CPU has them (with several key
        // chunks at n = 600), 32 and 8 the gemm path.
        for (b, n, heads, dm) in [
            (2, 37, 4, 64),
            (1, 70, 2, 128),
            (3, 5, 1, 16),
            (1, 600, 2, 128),
            (2, 300, 4, 64),
            (2, 45, 2, 64),
            (1, 33, 4, 32),
        ] {
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
