#!/usr/bin/env bash
# Quality benchmark: `groundwork demo` end to end on scenes of the demo family (not run by CI).
#
# Builds the release binary, runs one demo per scene (acquire → labels → split → train + evaluate →
# predict/combine/publish) with its own data folder under a temporary directory, and prints markdown
# tables: each candidate model's map accuracy on every pixel of the test windows against the ground
# truth, the published candidate and map (overall and within 30 m of a class edge), its gaps to the
# best baseline and to the raw-pixel model, the wall time; then each candidate's accuracy on the
# labelled test pixels.
#
# Settings (environment):
#   BENCH_SCENES   scenes, in order (default: tropical-haze us-cropland smallholder boreal-lakes dryland)
#   BENCH_SEEDS    seeds (default: 101 102 103 104 105); the i-th scene runs with the i-th seed
#   BENCH_ALL_SEEDS=1  run every scene with every seed instead
#   BENCH_PATCH    encoder patch size (default 4)
#   BENCH_PX       scene side in pixels (default 256, about 1–2 minutes a scene on 2 cores)
#   BENCH_ARGS     extra `groundwork demo` arguments (e.g. "--epochs 10")
#   BENCH_KEEP=1   keep the temporary directory (data, logs, summaries)
#   BENCH_PROFILE  cargo profile of the binary: release (default) or dev (the test build's binary, whose
#                  hot crates are optimised too: no release build needed, somewhat slower runs)
#   DATABASE_URL   PostgreSQL to use; without it every run starts a private cluster in its folder
#   GROUNDWORK_MODEL_DIR  OlmoEarth checkpoints (`groundwork model fetch`); without them the encoder
#                  starts from random weights
set -euo pipefail
cd "$(dirname "$0")/.."

read -r -a scenes <<<"${BENCH_SCENES:-tropical-haze us-cropland smallholder boreal-lakes dryland}"
read -r -a seeds <<<"${BENCH_SEEDS:-101 102 103 104 105}"
read -r -a extra <<<"${BENCH_ARGS:-}"
px="${BENCH_PX:-256}"
patch="${BENCH_PATCH:-4}"
if [ "${#scenes[@]}" -eq 0 ] || [ "${#seeds[@]}" -eq 0 ]; then
  echo "BENCH_SCENES and BENCH_SEEDS must not be empty" >&2
  exit 2
fi

profile="${BENCH_PROFILE:-release}"
case "$profile" in
  release) cargo build --release -p groundwork-server --bin groundwork >&2; bin="$PWD/target/release/groundwork" ;;
  dev) cargo build --workspace --bin groundwork >&2; bin="$PWD/target/debug/groundwork" ;;
  *) echo "BENCH_PROFILE must be release or dev" >&2; exit 2 ;;
esac

tmp="$(mktemp -d "${TMPDIR:-/tmp}/groundwork-bench-quality.XXXXXX")"
# A private cluster's server runs as `postgres` when this runs as root: it must reach its folder.
chmod 755 "$tmp"
if [ "${BENCH_KEEP:-0}" = 1 ]; then
  echo "keeping $tmp" >&2
else
  trap 'rm -rf "$tmp"' EXIT
fi

runs=()
if [ "${BENCH_ALL_SEEDS:-0}" = 1 ]; then
  for scene in "${scenes[@]}"; do
    for seed in "${seeds[@]}"; do runs+=("$scene:$seed"); done
  done
else
  for i in "${!scenes[@]}"; do runs+=("${scenes[$i]}:${seeds[$((i % ${#seeds[@]}))]}"); done
fi

summaries=()
for run in "${runs[@]}"; do
  scene="${run%%:*}"
  seed="${run##*:}"
  dir="$tmp/$scene-$seed"
  mkdir -p "$dir"
  echo "== $scene seed $seed (${px} px)" >&2
  if ! RUST_LOG="${RUST_LOG:-warn}" "$bin" demo --exit --bind 127.0.0.1:0 \
      --scene "$scene" --seed "$seed" --scene-px "$px" --patch-size "$patch" \
      --demo-dir "$dir/demo" --summary-json "$dir/summary.json" \
      "${extra[@]}" >"$dir/stdout.log" 2>"$dir/stderr.log"; then
    echo "groundwork demo --scene $scene --seed $seed failed; the end of its log ($dir/stderr.log):" >&2
    tail -n 30 "$dir/stderr.log" >&2
    trap - EXIT
    echo "kept $tmp" >&2
    exit 1
  fi
  summaries+=("$dir/summary.json")
done

python3 - "${summaries[@]}" <<'EOF'
import json
import sys

CANDIDATES = ["raw_pixels", "pixel_context", "linear_probe", "knn_probe", "hybrid_linear", "fine_tuned"]
BASELINES = [c for c in CANDIDATES if c != "fine_tuned"]


def fmt(v):
    return "n/a" if v is None else f"{v:.3f}"


def table(title, head, rows):
    print(title)
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()


runs = [json.load(open(p)) for p in sys.argv[1:]]
maps, labels = [], []
published, raws, gaps = [], [], []
for r in runs:
    by_name = {c["name"]: c for c in r.get("candidates", [])}
    m = {n: by_name.get(n, {}).get("map_accuracy") for n in CANDIDATES}
    lab = {n: by_name.get(n, {}).get("accuracy") for n in CANDIDATES}
    best = max((m[n] for n in BASELINES if m[n] is not None), default=None)
    gap = None if best is None else r["accuracy"] - best
    if gap is not None:
        gaps.append(gap)
    if m["raw_pixels"] is not None:
        published.append(r["accuracy"])
        raws.append(m["raw_pixels"])
    maps.append([
        r["scene"], str(r["seed"]), *(fmt(m[n]) for n in CANDIDATES), r.get("chosen") or "n/a",
        fmt(r["accuracy"]), "n/a" if gap is None else f"{gap:+.3f}",
        "n/a" if m["raw_pixels"] is None else f"{r['accuracy'] - m['raw_pixels']:+.3f}",
        fmt(r.get("edge_accuracy")), f"{r['seconds']:.0f}",
    ])
    labels.append([r["scene"], str(r["seed"]), *(fmt(lab[n]) for n in CANDIDATES), str(r.get("test_windows"))])
table(
    "Map accuracy on every pixel of the test windows against the ground truth",
    ["scene", "seed", *CANDIDATES, "chosen", "published", "vs best baseline", "vs raw_pixels", "published edge", "seconds"],
    maps,
)
table(
    "Accuracy on the labelled test pixels (the evaluation report)",
    ["scene", "seed", *CANDIDATES, "test windows"],
    labels,
)
print("Candidate map columns: each candidate's own predictions of the test windows in the training run;")
print("published: the published map on the same windows; baselines: every candidate but fine_tuned;")
print("edge: within 30 m of a class edge.")
if published:
    p, q = sum(published) / len(published), sum(raws) / len(raws)
    print()
    print(
        f"mean published {p:.3f} - mean raw_pixels {q:.3f} = {p - q:+.3f} ({len(published)} runs); "
        f"worst published - best baseline {min(gaps):+.3f}"
    )
EOF
