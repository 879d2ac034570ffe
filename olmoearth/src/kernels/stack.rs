//! The encoder's transformer stack for f32 inference on the CPU, on plain slices instead of candle ops.
//!
//! Every intermediate lives in a handful of buffers allocated once per forward and reused by every
//! block: candle would allocate a fresh output per op, and on large inputs (Base at p = 4 moves about
//! 300 MB per block) the page faults of those fresh allocations cost as much as the arithmetic. Biases and
//! residual additions are folded into the matrix products (gemm's `dst = dst + x·w`), the MLP runs in
//! row chunks so that its hidden activations stay small, and attention is [`super::attention_into`].

use rayon::prelude::*;

/// Rows of the MLP's hidden activations computed at once (Base: 2,048 × 3,072 f32 = 24 MiB).
const MLP_CHUNK_ROWS: usize = 2048;

const LN_EPS: f32 = crate::encoder::LN_EPS as f32;

/// A LayerNorm's or Linear layer's parameters, borrowed from the model's tensors.
#[derive(Clone, Copy)]
pub(crate) struct Params<'a> {
    /// LayerNorm: `(d)`; Linear: `(in, out)` row-major, the transpose of PyTorch's layout.
    pub weight: &'a [f32],
    pub bias: &'a [f32],
}

/// One pre-norm block.
#[derive(Clone, Copy)]
pub(crate) struct BlockParams<'a> {
    pub norm1: Params<'a>,
    /// q, k and v stacked: `(d, 3d)`.
    pub qkv: Params<'a>,
    pub proj: Params<'a>,
    pub norm2: Params<'a>,
    pub fc1: Params<'a>,
    pub fc2: Params<'a>,
}

/// Sizes of one call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StackDims {
    /// Samples.
    pub b: usize,
    /// Tokens per sample.
    pub n: usize,
    /// Model width.
    pub d: usize,
    pub heads: usize,
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("encoder stack: {what} has the wrong size"))
    }
}

/// Runs the blocks and the final LayerNorm on `x (b·n × d)`; returns the normalised output.
pub(crate) fn run(
    mut x: Vec<f32>,
    dims: StackDims,
    blocks: &[BlockParams<'_>],
    norm: Params<'_>,
) -> Result<Vec<f32>, String> {
    let StackDims { b, n, d, heads } = dims;
    let rows = b * n;
    check(x.len() == rows * d && d > 0, "the input")?;
    check(
        norm.weight.len() == d && norm.bias.len() == d,
        "the final norm",
    )?;
    let hidden = blocks.first().map_or(0, |blk| blk.fc1.bias.len());
    for blk in blocks {
        for p in [blk.norm1, blk.norm2] {
            check(p.weight.len() == d && p.bias.len() == d, "a block's norm")?;
        }
        check(
            blk.qkv.weight.len() == 3 * d * d && blk.qkv.bias.len() == 3 * d,
            "a qkv projection",
        )?;
        check(
            blk.proj.weight.len() == d * d && blk.proj.bias.len() == d,
            "an output projection",
        )?;
        check(
            blk.fc1.weight.len() == hidden * d && blk.fc1.bias.len() == hidden,
            "an MLP input layer",
        )?;
        check(
            blk.fc2.weight.len() == d * hidden && blk.fc2.bias.len() == d,
            "an MLP output layer",
        )?;
    }
    let mut y = vec![0f32; rows * d];
    let mut qkv = vec![0f32; rows * 3 * d];
    let mut attn = vec![0f32; rows * d];
    let mut scratch = Vec::new();
    let chunk = MLP_CHUNK_ROWS.min(rows);
    let mut h = vec![0f32; chunk * hidden];
    let mut tt = [0f64; 7];
    for blk in blocks {
        let mut t = std::time::Instant::now();
        let mut lap = |i: usize, t: &mut std::time::Instant| {
            tt[i] += t.elapsed().as_secs_f64() * 1e3;
            *t = std::time::Instant::now();
        };
        layer_norm(&x, blk.norm1, &mut y, d);
        lap(0, &mut t);
        linear(&y, blk.qkv, &mut qkv, (d, 3 * d), false);
        lap(1, &mut t);
        super::attention_into(&qkv, &mut attn, (b, n, heads), &mut scratch)?;
        lap(2, &mut t);
        linear(&attn, blk.proj, &mut x, (d, d), true);
        lap(3, &mut t);
        layer_norm(&x, blk.norm2, &mut y, d);
        lap(0, &mut t);
        for (yc, xc) in y.chunks(chunk * d).zip(x.chunks_mut(chunk * d)) {
            let hc = &mut h[..yc.len() / d * hidden];
            linear(yc, blk.fc1, hc, (d, hidden), false);
            lap(4, &mut t);
            hc.par_chunks_mut(1 << 14).for_each(super::gelu_dispatch);
            lap(5, &mut t);
            linear(hc, blk.fc2, xc, (hidden, d), true);
            lap(6, &mut t);
        }
    }
    let r = rows as f64 * d as f64 * d as f64 * 2.0 / 1e6;
    // Per-stage milliseconds of this pass (and GFLOP/s of the matmuls), for profiling.
    tracing::trace!(
        "ln {:.1} qkv {:.1} ({:.0} GF) attn {:.1} proj {:.1} ({:.0}) fc1 {:.1} ({:.0}) gelu {:.1} fc2 {:.1} ({:.0})",
        tt[0],
        tt[1],
        3.0 * r * 12.0 / tt[1],
        tt[2],
        tt[3],
        r * 12.0 / tt[3],
        tt[4],
        4.0 * r * 12.0 / tt[4],
        tt[5],
        tt[6],
        4.0 * r * 12.0 / tt[6]
    );
    layer_norm(&x, norm, &mut y, d);
    Ok(y)
}

/// `y = x·w + bias`, or with `accumulate` `y += x·w + bias`, for `x (rows × inp)`, `w (inp × out)`.
fn linear(x: &[f32], p: Params<'_>, y: &mut [f32], (inp, out): (usize, usize), accumulate: bool) {
    let rows = x.len() / inp;
    assert!(
        x.len() == rows * inp
            && y.len() == rows * out
            && p.weight.len() == out * inp
            && p.bias.len() == out,
        "linear: operand sizes do not fit"
    );
    y.par_chunks_mut(out).for_each(|row| {
        if accumulate {
            row.iter_mut().zip(p.bias).for_each(|(v, b)| *v += b);
        } else {
            row.copy_from_slice(p.bias);
        }
    });
    let threads = rayon::current_num_threads();
    let par = if threads > 1 && rows * inp * out > 1 << 20 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: by the assertion above, y is rows × out (row stride out), x is rows × inp (row stride
    // inp) and w is inp × out (row stride out).
    #[expect(unsafe_code, reason = "gemm takes raw pointers")]
    unsafe {
        gemm::gemm(
            rows,
            out,
            inp,
            y.as_mut_ptr(),
            1,
            out as isize,
            true,
            x.as_ptr(),
            1,
            inp as isize,
            p.weight.as_ptr(),
            1,
            out as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// LayerNorm of each row of `x (rows × d)` into `y`.
fn layer_norm(x: &[f32], p: Params<'_>, y: &mut [f32], d: usize) {
    let rows_per_task = (1 << 15) / d + 1;
    x.par_chunks(rows_per_task * d)
        .zip(y.par_chunks_mut(rows_per_task * d))
        .for_each(|(xs, ys)| norm_rows(xs, ys, p.weight, p.bias));
}

dispatch_avx2!(norm_rows, norm_rows_generic, (x: &[f32], y: &mut [f32], w: &[f32], b: &[f32]) -> ());

#[inline(always)]
fn norm_rows_generic(x: &[f32], y: &mut [f32], w: &[f32], b: &[f32]) {
    let d = w.len();
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let mean = lane_sum(xr, |v| v) / d as f32;
        let var = lane_sum(xr, |v| (v - mean) * (v - mean)) / d as f32;
        let inv = 1.0 / (var + LN_EPS).sqrt();
        for (((o, &v), &g), &c) in yr.iter_mut().zip(xr).zip(w).zip(b) {
            *o = (v - mean) * inv * g + c;
        }
    }
}

/// `Σ f(x)` in sixteen interleaved lanes, so that the loop vectorises.
#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    chunks.remainder().iter().map(|&v| f(v)).sum::<f32>() + acc.iter().sum::<f32>()
}
