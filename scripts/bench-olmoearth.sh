#!/usr/bin/env bash
# Encoder throughput: the Rust (candle) encoder against the reference PyTorch implementation
# (olmoearth-pretrain-minimal), on the same shapes in the same run: Nano and Base at p = 8 and 4,
# Sentinel-2 64x64, T = 4, batch 2, fp32 CPU, random weights. Prints both sides and the ratio.
#
# The reference is installed into a throwaway virtualenv (default /tmp/olmoearth-bench-venv; reused if it
# already imports torch). The PyPI Linux torch wheel cannot be imported without its CUDA runtime wheels
# (`import torch` dlopens libcudart/libcublas even on CPU), so `pip install --no-deps torch` is not enough:
# the script tries that first and falls back to the full dependency set (several GB).
#
# Usage: scripts/bench-olmoearth.sh            (env: VENV, THREADS, REPEATS, SKIP_RUST=1, SKIP_TORCH=1)
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${VENV:-/tmp/olmoearth-bench-venv}"
THREADS="${THREADS:-$(nproc)}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

if [[ "${SKIP_TORCH:-0}" != 1 ]]; then
  if ! "$VENV/bin/python" -c "import torch, olmoearth_pretrain_minimal" 2>/dev/null; then
    echo "== installing the reference into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q --no-deps torch==2.15.0
    "$VENV/bin/pip" install -q filelock typing-extensions sympy networkx jinja2 fsspec numpy einops \
      "olmoearth-pretrain-minimal==0.1.5" 2>/dev/null || true
    if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
      echo "== torch without its CUDA wheels does not import; installing the full dependency set"
      "$VENV/bin/pip" install -q torch==2.15.0 "olmoearth-pretrain-minimal==0.1.5" einops
    fi
    "$VENV/bin/python" -c "import torch; print('torch', torch.__version__)"
  fi

  cat > "$OUT/ref.py" <<'PY'
import resource, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
from olmoearth_pretrain_minimal import OlmoEarthPretrain_v1
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.datatypes import MaskedOlmoEarthSample

size, p, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
torch.manual_seed(0)
enc = OlmoEarthPretrain_v1(size, "v1").model.encoder.eval()
B, H, W, T = 2, 64, 64, 4
x = torch.randn(B, H, W, T, 12)
ts = torch.tensor([[[1, t, 2024] for t in range(T)]] * B)
sample = MaskedOlmoEarthSample(timestamps=ts, sentinel2_l2a=x,
                               sentinel2_l2a_mask=torch.zeros(B, H, W, T, 3, dtype=torch.long))
tokens = B * (H // p) * (W // p) * T * 3
with torch.no_grad():
    enc(sample, patch_size=p, fast_pass=True)
    n, start = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - start < 5.0:
        enc(sample, patch_size=p, fast_pass=True)
        n += 1
    secs = (time.perf_counter() - start) / n
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(f"RESULT torch {size} {p} {secs*1e3:.2f} {tokens/secs:.1f} {peak:.1f}  # {tokens} tokens/forward, {n} iterations")
PY
  echo "== reference (torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'), $THREADS threads)"
fi

if [[ "${SKIP_RUST:-0}" != 1 ]]; then
  cargo bench -q -p olmoearth --bench encoder --no-run 2>/dev/null
fi

# Each shape runs torch then rust back to back, REPEATS times, so that load from other processes hits both
# sides alike; the summary keeps each side's fastest run.
for rep in $(seq "${REPEATS:-2}"); do
  echo "== round $rep"
  for shape in "nano 8" "nano 4" "base 8" "base 4"; do
    if [[ "${SKIP_TORCH:-0}" != 1 ]]; then
      # shellcheck disable=SC2086
      "$VENV/bin/python" "$OUT/ref.py" $shape "$THREADS" | tee -a "$OUT/results.txt"
    fi
    if [[ "${SKIP_RUST:-0}" != 1 ]]; then
      # shellcheck disable=SC2086
      RAYON_NUM_THREADS="$THREADS" cargo bench -q -p olmoearth --bench encoder -- $shape 2>/dev/null | tee -a "$OUT/results.txt"
    fi
  done
done

echo
echo "== summary (S2 64x64, T=4, batch 2, fp32 CPU, $THREADS threads)"
python3 - "$OUT/results.txt" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    if line.startswith("RESULT"):
        _, side, size, p, ms, tps, peak = line.split()[:7]
        row = (float(ms), float(tps), float(peak))
        prev = rows.get((side, size, p))
        # Fastest run per side; peak memory is the largest seen.
        if prev:
            row = min(prev, row)[:2] + (max(prev[2], row[2]),)
        rows[(side, size, p)] = row
print(f"{'model':<6}{'p':>3} | {'rust ms':>10}{'tok/s':>11}{'peak MiB':>10} | {'torch ms':>10}{'tok/s':>11}{'peak MiB':>10} | {'speed-up':>8}")
for size in ("nano", "base"):
    for p in ("8", "4"):
        r, t = rows.get(("rust", size, p)), rows.get(("torch", size, p))
        fmt = lambda v: f"{v[0]:>10.1f}{v[1]:>11.0f}{v[2]:>10.0f}" if v else f"{'-':>10}{'-':>11}{'-':>10}"
        ratio = f"{t[0] / r[0]:>7.2f}x" if r and t else f"{'-':>8}"
        print(f"{size:<6}{p:>3} | {fmt(r)} | {fmt(t)} | {ratio}")
PY
