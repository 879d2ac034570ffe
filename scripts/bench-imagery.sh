#!/usr/bin/env bash
# Imagery benchmark: Rust acquisition vs a Python/rasterio baseline on the same local COGs over HTTP.
# Creates a throwaway venv with rasterio from PyPI (BENCH_VENV, default /tmp/groundwork-bench-venv).
# By default the dev profile is used (dependencies are already built at opt-level 2) with the imagery
# crate itself at opt-level 3; PROFILE=bench builds everything in release mode instead (slow to build).
# BENCH_WORKERS (default 8) sets the concurrency of both sides; BENCH_SIDE (default 16) the window grid side.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${BENCH_VENV:-/tmp/groundwork-bench-venv}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import rasterio' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet rasterio numpy
fi
export BENCH_PYTHON="$VENV/bin/python"
if [ "${PROFILE:-dev}" = dev ]; then
  cargo bench -p groundwork-imagery --bench materialize --profile dev \
    --config 'profile.dev.package.groundwork-imagery.opt-level=3' 2>&1 | grep -v '^Warning 1: HTTP'
else
  cargo bench -p groundwork-imagery --bench materialize --profile "$PROFILE" 2>&1 | grep -v '^Warning 1: HTTP'
fi
