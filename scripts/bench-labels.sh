#!/usr/bin/env bash
# Label-efficiency benchmark (not run by CI): on the offline demo scene, models trained on point labels
# drawn at random (stratified per class) against points picked by the `suggest` step's logic answered by a
# simulated user from the ground truth, for 10, 20, 40 and 80 points per class, three seeds each. Prints
# the settings, the machine's load at the start and the end, a line per fit, tables of test accuracy and
# macro-F1 (mean ± sd over seeds; rows budgets, columns strategy × model), and the smallest suggested
# budget that reaches random labels at 80 per class (the target: at most half as many). About 20–30
# minutes on 2 cores. The benchmark itself: worker/benches/label_efficiency.rs.
#
# Settings (environment):
#   BENCH_PROFILE  cargo profile: dev (default: the test build, whose dependencies and hot crates are
#                  optimised, so no release build is needed) or release (`cargo bench`, a release build
#                  of the workspace)
#   SCENE          demo scene (default classic; see `groundwork demo --help`), SCENE_SEED (default 42)
#   SEEDS          seeds (default "1 2 3"); BUDGETS points per class (default "10 20 40 80")
#   EPOCHS         fine-tuning epochs, encoder frozen (default 2); TUNE_BATCH windows a step (default 4)
#   COLD_START     cold-start points (default 10); SUGGEST_BATCH points per suggestion round (default 10)
#   POOL_WINDOWS   pool windows each seed labels within (default 40 of 48)
#   PATCH          encoder patch size (default 4)
#   MODEL_DIR      OlmoEarth checkpoint directory; without it the Nano test fixture
#                  (olmoearth/tests/fixtures/olmoearth-nano: random weights, not pretrained)
#   THREADS        worker threads (RAYON_NUM_THREADS; default all cores)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${THREADS:-}" ]; then
  export RAYON_NUM_THREADS="$THREADS"
fi

profile="${BENCH_PROFILE:-dev}"
case "$profile" in
  release)
    exec cargo bench --workspace --bench label_efficiency
    ;;
  dev)
    # The same feature set as the workspace's tests (never `-p groundwork-worker`, which would rebuild
    # the dependencies with other features).
    bin="$(cargo build --workspace --bench label_efficiency --message-format=json-render-diagnostics |
      python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "label_efficiency" and m.get("executable"):
        print(m["executable"])
')"
    if [ -z "$bin" ]; then
      echo "the label_efficiency benchmark did not build" >&2
      exit 1
    fi
    exec "$bin"
    ;;
  *)
    echo "BENCH_PROFILE must be dev or release" >&2
    exit 2
    ;;
esac
