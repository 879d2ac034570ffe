#!/usr/bin/env bash
# Installs CUDA 13's compiler, headers and libraries from PyPI into a throwaway virtualenv, so that
# `--features cuda` compiles on a machine without a GPU or a system CUDA toolkit.
#
# Source it to export what the build needs into the current shell:
#
#   . scripts/setup-cuda.sh
#   cargo check -p olmoearth --features cuda --target-dir target/cuda
#
# or run it with a command, which runs in that environment:
#
#   scripts/setup-cuda.sh cargo build -p olmoearth --features cuda --example gpu_check
#
# Settings (environment):
#   CUDA_VENV          the virtualenv (default /tmp/groundwork-cuda-venv)
#   CUDA_COMPUTE_CAP   the GPU architecture the kernels are compiled for (default 80: A100; H100 is 90)
#
# The wheels: nvidia-cuda-nvcc (nvcc, ptxas), nvidia-cuda-crt and nvidia-cuda-cccl (headers candle's
# kernels include: cuda_fp16.h pulls in <nv/target>), nvidia-cuda-runtime, nvidia-cublas and
# nvidia-curand (the libraries candle links at run time). cudarc 0.19 names CUDA versions up to 13.4,
# so a newer nvcc is announced to it as 13.4 (CUDARC_CUDA_VERSION), whose API the later 13.x keep.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
fi
_gw_cuda_main() {
  local venv="${CUDA_VENV:-/tmp/groundwork-cuda-venv}"
  if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
      # Debian ships venv (and its pip) separately.
      local sudo=""
      [ "$(id -u)" -eq 0 ] || sudo="sudo"
      echo "setup-cuda: installing python3-venv" >&2
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        python3-venv python3-pip >/dev/null
      rm -rf "$venv"
      python3 -m venv "$venv"
    fi
  fi
  if ! "$venv/bin/python" -c 'import nvidia.cu13' 2>/dev/null \
      || [ ! -x "$(ls -d "$venv"/lib/python3*/site-packages/nvidia/cu13 2>/dev/null | head -n1)/bin/nvcc" ]; then
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet \
      "nvidia-cuda-nvcc>=13,<14" "nvidia-cuda-crt>=13,<14" "nvidia-cuda-cccl>=13,<14" \
      "nvidia-cuda-runtime>=13,<14" "nvidia-cublas>=13,<14" nvidia-curand
  fi
  local root
  root="$(ls -d "$venv"/lib/python3*/site-packages/nvidia/cu13 | head -n1)"
  if [ ! -x "$root/bin/nvcc" ]; then
    echo "setup-cuda: no nvcc under $root" >&2
    return 1
  fi
  export PATH="$root/bin:$PATH"
  export CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_HOME="$root"
  export LIBRARY_PATH="$root/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
  export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
  local version
  version="$(nvcc --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')"
  read -r major minor <<<"$version"
  if [ "$major" = 13 ] && [ "$minor" -gt 4 ]; then
    minor=4
  fi
  export CUDARC_CUDA_VERSION="${major}0${minor}0"
  echo "setup-cuda: nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p') in $root (sm_$CUDA_COMPUTE_CAP, cudarc $CUDARC_CUDA_VERSION)" >&2
}
_gw_cuda_main || { [ "${BASH_SOURCE[0]}" = "$0" ] && exit 1; return 1; }
if [ "${BASH_SOURCE[0]}" = "$0" ] && [ "$#" -gt 0 ]; then
  exec "$@"
fi
