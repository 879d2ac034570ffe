#!/usr/bin/env bash
# Imagery benchmark: Rust acquisition vs a Python/rasterio baseline on the same local COGs over HTTP.
# Creates a throwaway venv with rasterio from PyPI (BENCH_VENV, default /tmp/groundwork-bench-venv).
# PROFILE=dev runs an unoptimised build of the crate (faster to build, slower to run).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${BENCH_VENV:-/tmp/groundwork-bench-venv}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import rasterio' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet rasterio numpy
fi
export BENCH_PYTHON="$VENV/bin/python"
cargo bench -p groundwork-imagery --bench materialize --profile "${PROFILE:-bench}"
