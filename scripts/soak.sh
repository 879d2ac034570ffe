#!/usr/bin/env bash
# The full soak test: the demo pipeline run by two `groundwork worker` processes while one of them is
# SIGKILLed and restarted every three seconds, 20 times (CI runs 8). Prints the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
GROUNDWORK_SOAK_KILLS="${GROUNDWORK_SOAK_KILLS:-20}" \
  cargo test --workspace --test it -- --exact \
  processes::the_pipeline_finishes_while_workers_are_killed_again_and_again --nocapture
