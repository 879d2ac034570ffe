#!/usr/bin/env bash
# Scale benchmark (not a test, not run by CI): `groundwork demo` over a large synthetic area.
#
# Generates a demo scene in Earth Search's format (Sentinel-2 L2A COGs, STAC items; with BENCH_ARGS,
# Sentinel-1 and Landsat Collection 2 Level-2 as well) of the requested area, serves it as a local STAC API, and runs the whole pipeline through the REST API (acquire →
# labels → split → train → predict → combine → publish) with OlmoEarth Nano. The server (`groundwork
# demo --local-workers 0`: API, web UI, STAC API, the pipeline's driver and scoring) and the worker
# (one `groundwork worker`, which runs every step) are separate processes, so that each one's peak
# memory can be read (VmHWM in /proc/PID/status, read while it still runs). Then it prints:
#
# - acquisition: windows per second (the acquire run, request to end, through the job system),
#   against rasterio reading the same windows (every Sentinel-2 asset of every scene onto each
#   window's grid over HTTP from the same server, as scripts/bench-imagery.sh does; reads and
#   reprojection only, no compositing or writes), in a throwaway virtualenv;
# - prediction: km² per hour (the predict run: predict steps, combine, publish), against the encoder
#   alone (`groundwork model embed`, Nano-shaped fixture weights, same patch size and months) on the
#   area's windows each covered once;
# - peak memory of the server (and, apart, while the same process generates the scene first) and of
#   the worker in each phase (its peak is read and reset when the demo's log names the next phase);
# - the database's size per 1,000 windows (growth during the run, and the `project_window` table) and
#   the object store's;
# - a linear extrapolation of the times and sizes to BENCH_TARGET_KM2 (default 10,000 km²).
#
# Settings (environment):
#   BENCH_KM2       area in km² (default 1000); the scene side is √(km²) × 100 px, rounded to a
#                   multiple of 64 (128–4096 px, i.e. up to about 1,680 km²). The project's AOI lies
#                   320 m inside the scene, so the acquired area is a little smaller
#   BENCH_PX        scene side in 10 m pixels instead of BENCH_KM2 (3200 ≈ 1,024 km², roughly 40 minutes on
#                   2 cores by extrapolation; 768 ≈ 59 km², 7–9 minutes)
#   BENCH_SCENE     scene of the demo family (default classic)
#   BENCH_PATCH     encoder patch size (default 8, the demo's)
#   BENCH_EPOCHS    training epochs (default 2: training is not what this measures)
#   BENCH_LABELS    point labels per class (default 150)
#   BENCH_ARGS      extra `groundwork demo` arguments, e.g. `--modalities sentinel2_l2a,sentinel1,landsat
#                   --origin 247040,5000320` for all three sensors over an area across the UTM zone
#                   32/33 boundary (12° E); the rasterio side then reads every sensor's assets, and the
#                   encoder alone embeds every modality
#   BENCH_CONCURRENCY  steps the worker runs at once (default 2, `groundwork worker`'s default)
#   BENCH_TARGET_KM2   area of the extrapolation (default 10000)
#   BENCH_PY_WORKERS   rasterio threads (default 16: 2 acquire steps × 8 windows at once on the Rust side)
#   BENCH_ENCODER_WINDOWS  windows the encoder-alone timing embeds (default 32; also a quarter of it, and
#                   the per-window time is the difference, so loading the model does not count)
#   BENCH_SKIP_RASTERIO=1, BENCH_SKIP_ENCODER=1  leave a comparison out
#   BENCH_VENV      virtualenv with rasterio (default /tmp/groundwork-bench-venv, shared with bench-imagery.sh)
#   BENCH_PROFILE   cargo profile of the binary: dev (default; hot crates are optimised in it) or release
#   BENCH_KEEP=1    keep the temporary directory (catalogue, objects, logs, summary)
#   DATABASE_URL    PostgreSQL to use (a scratch database: the size figures are the whole database's);
#                   without it a private cluster is started in the temporary directory and stopped after
#   GROUNDWORK_MODEL_DIR  OlmoEarth checkpoints; without one the encoder starts from random weights
#                   (same cost)
#
# Needs python3 and psql (PostgreSQL's client, for the windows' grids); pip for the rasterio side.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${BENCH_PX:-}" ]; then
  px="$BENCH_PX"
else
  px="$(python3 -c 'import math, sys; print(max(128, min(4096, round(math.sqrt(float(sys.argv[1])) * 100 / 64) * 64)))' "${BENCH_KM2:-1000}")"
fi
if [ $((px % 64)) -ne 0 ] || [ "$px" -lt 128 ] || [ "$px" -gt 4096 ]; then
  echo "the scene side must be a multiple of 64 in 128–4096 px, not $px" >&2
  exit 2
fi
scene="${BENCH_SCENE:-classic}"
patch="${BENCH_PATCH:-8}"
epochs="${BENCH_EPOCHS:-2}"
labels="${BENCH_LABELS:-150}"
concurrency="${BENCH_CONCURRENCY:-2}"
target_km2="${BENCH_TARGET_KM2:-10000}"
py_workers="${BENCH_PY_WORKERS:-16}"
enc_windows="${BENCH_ENCODER_WINDOWS:-32}"
read -r -a extra <<<"${BENCH_ARGS:-}"
export GROUNDWORK_MODEL_DIR="${GROUNDWORK_MODEL_DIR:-$PWD/.groundwork/models}"

case "${BENCH_PROFILE:-dev}" in
  release) cargo build --release -p groundwork-server --bin groundwork >&2; bin="$PWD/target/release/groundwork" ;;
  dev) cargo build --workspace --bin groundwork >&2; bin="$PWD/target/debug/groundwork" ;;
  *) echo "BENCH_PROFILE must be dev or release" >&2; exit 2 ;;
esac

tmp="$(mktemp -d "${TMPDIR:-/tmp}/groundwork-bench-scale.XXXXXX")"
# A private cluster runs as the `postgres` user when we are root: it must reach its folder in here.
chmod 755 "$tmp"
demo_pid="" worker_pid="" pg_dir=""
stop_pg() {
  local dir
  dir="$(command -v pg_ctl 2>/dev/null | xargs -r dirname)"
  [ -n "$dir" ] || dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  local cmd=("$dir/pg_ctl" -D "$pg_dir/data" -m fast -w stop)
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "${cmd[@]}"; else "${cmd[@]}"; fi
}
cleanup() {
  for pid in $worker_pid $demo_pid; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $worker_pid $demo_pid; do
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$pg_dir" ]; then
    stop_pg >/dev/null 2>&1 || true
  fi
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    echo "kept $tmp" >&2
  else
    rm -rf "$tmp"
  fi
}
trap cleanup EXIT
fail() {
  echo "$1; the end of $2:" >&2
  tail -n 30 "$2" >&2
  BENCH_KEEP=1
  exit 1
}

if [ -z "${DATABASE_URL:-}" ]; then
  pg_dir="$tmp/pg"
  DATABASE_URL="$("$bin" dev-db --data-dir "$tmp" 2>"$tmp/dev-db.log" | tail -n 1)" ||
    fail "could not start a private PostgreSQL" "$tmp/dev-db.log"
fi
export DATABASE_URL
RUST_LOG=warn "$bin" migrate >/dev/null 2>"$tmp/migrate.log" || fail "migrations failed" "$tmp/migrate.log"

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
peak_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
now() { date +%s.%N; }

echo "== demo scene $scene, $px × $px px ($(python3 -c "print(round(($px / 100) ** 2, 1))") km²), patch $patch, in $tmp" >&2
started="$(now)"
# Without --exit: the server keeps serving the STAC API for the rasterio side; SIGTERM stops it.
RUST_LOG="${RUST_LOG:-warn}" "$bin" demo --local-workers 0 --offline --bind "127.0.0.1:$port" \
  --scene "$scene" --scene-px "$px" --patch-size "$patch" --epochs "$epochs" \
  --labels-per-class "$labels" --demo-dir "$tmp/demo" --summary-json "$tmp/summary.json" \
  "${extra[@]}" >"$tmp/demo.out" 2>"$tmp/demo.log" &
demo_pid=$!
until grep -q "Groundwork is running at" "$tmp/demo.log" 2>/dev/null; do
  kill -0 "$demo_pid" 2>/dev/null || fail "groundwork demo stopped" "$tmp/demo.log"
  sleep 0.5
done
generated="$(now)"
gen_peak_kb="$(peak_kb "$demo_pid")"
# From here on the server's peak leaves the scene generator out (5: reset the peak to the current RSS).
{ echo 5 >"/proc/$demo_pid/clear_refs"; } 2>/dev/null || echo "cannot reset the server's peak memory" >&2
RUST_LOG="${RUST_LOG:-warn}" "$bin" worker --name bench-scale --concurrency "$concurrency" \
  --object-store "file://$tmp/demo/objects" --allow-host "127.0.0.1:$port" \
  >"$tmp/worker.out" 2>"$tmp/worker.log" &
worker_pid=$!
echo "== scene generated in $(python3 -c "print(round($generated - $started))") s; the pipeline runs (progress: $tmp/demo.log)" >&2
# The worker's peak per phase: read and reset when the demo's log says the next phase starts (within
# half a second of it).
phase=acquire
declare -A worker_peak=()
next_phase() {
  worker_peak[$phase]="$(peak_kb "$worker_pid")"
  { echo 5 >"/proc/$worker_pid/clear_refs"; } 2>/dev/null || true
  phase="$1"
}
summary_done() {
  [ -s "$tmp/summary.json" ] && python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$tmp/summary.json" 2>/dev/null
}
until summary_done; do
  kill -0 "$demo_pid" 2>/dev/null || fail "groundwork demo failed" "$tmp/demo.log"
  kill -0 "$worker_pid" 2>/dev/null || fail "groundwork worker stopped" "$tmp/worker.log"
  if [ "$phase" = acquire ] && grep -q "^training (" "$tmp/demo.log"; then next_phase train; fi
  if [ "$phase" = train ] && grep -q "^predicting, combining" "$tmp/demo.log"; then next_phase predict; fi
  sleep 0.5
done
server_peak_kb="$(peak_kb "$demo_pid")"
worker_peak[$phase]="$(peak_kb "$worker_pid")"
kill -TERM "$worker_pid"
wait "$worker_pid" 2>/dev/null || true
worker_pid=""
objects_bytes="$(du -sb "$tmp/demo/objects" | cut -f1)"
catalogue_bytes="$(du -sb "$tmp/demo/data" | cut -f1)"
project_id="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["project_id"])' "$tmp/summary.json")"
# Windows per UTM zone (CRS) and status.
zones_json="$(psql "$DATABASE_URL" -XAtq -c "select coalesce(json_object_agg(crs, n), '{}') from (select crs || ' ' || status as crs, \
  count(*) as n from project_window where project_id = '$project_id' group by 1) z")"

# Rasterio on the same windows, from the same server.
rasterio_json="null"
if [ "${BENCH_SKIP_RASTERIO:-0}" != 1 ]; then
  VENV="${BENCH_VENV:-/tmp/groundwork-bench-venv}"
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import rasterio' 2>/dev/null; then
    echo "== installing rasterio into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet rasterio numpy
  fi
  psql "$DATABASE_URL" -XAtq -c "select coalesce(json_agg(json_build_object('id', id, 'transform', \
    geotransform, 'size', size, 'crs', crs) order by id), '[]') from project_window \
    where project_id = '$project_id' and status = 'acquired'" >"$tmp/windows.json"
  python3 - "$tmp/windows.json" "$tmp/demo/data" "$base" "$py_workers" "$tmp/summary.json" >"$tmp/rasterio-spec.json" <<'EOF'
import glob, json, os, sys
windows = json.load(open(sys.argv[1]))
data, base, workers = sys.argv[2], sys.argv[3], int(sys.argv[4])
modalities = json.load(open(sys.argv[5])).get("modalities") or ["sentinel2_l2a"]
collections = {"sentinel2_l2a": "sentinel-2-l2a", "sentinel1": "sentinel-1-grd", "landsat": "landsat-c2-l2"}
assets = []
# Every scene of the catalogue covers the whole area and lies in the project's period: the
# acquisition reads all of them for every window (Sentinel-2: ≤ 2 a month, 12 bands and SCL;
# Sentinel-1: 1 a month, VV and VH; Landsat: 1 a month, 8 bands and QA_PIXEL), of the project's
# modalities.
for m in modalities:
    for path in sorted(glob.glob(os.path.join(data, collections[m], "*", "*.json"))):
        item = json.load(open(path))
        folder = os.path.relpath(os.path.dirname(path), data)
        for key, a in sorted(item["assets"].items()):
            href = f"{base}/demo/stac/files/{folder}/{os.path.normpath(a['href'])}"
            assets.append({"href": href, "nearest": key in ("scl", "qa_pixel")})
crs = windows[0]["crs"] if windows else "EPSG:4326"
json.dump({"windows": windows, "crs": crs, "assets": assets, "workers": workers}, sys.stdout)
EOF
  echo "== rasterio: the same $(python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(len(d["windows"]), "windows ×", len(d["assets"]), "assets")' "$tmp/rasterio-spec.json")" >&2
  if rasterio_json="$("$VENV/bin/python" scripts/bench_imagery_baseline.py "$tmp/rasterio-spec.json" 2>"$tmp/rasterio.log" | tail -n 1)"; then
    :
  else
    echo "rasterio failed (see below); going on without it" >&2
    tail -n 5 "$tmp/rasterio.log" >&2
    rasterio_json="null"
  fi
fi
kill -TERM "$demo_pid"
wait "$demo_pid" 2>/dev/null || true
demo_pid=""

# The encoder alone on the area's windows, each once: embed n1 and n2 windows, per window (t2 - t1) / (n2 - n1).
encoder_json="null"
if [ "${BENCH_SKIP_ENCODER:-0}" != 1 ]; then
  model="$GROUNDWORK_MODEL_DIR/OlmoEarth-v1-Nano"
  [ -f "$model/config.json" ] || model="$PWD/olmoearth/tests/fixtures/olmoearth-nano"
  months="$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["months"]))' "$tmp/demo/data/demo-options.json")"
  n2="$enc_windows"
  n1=$((n2 / 4 > 1 ? n2 / 4 : 1))
  times=()
  for n in "$n1" "$n2"; do
    python3 - "$tmp/embed-$n.safetensors" "$n" "$months" "$tmp/summary.json" <<'EOF'
import array, json, struct, sys
path, b, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
modalities = json.load(open(sys.argv[4])).get("modalities") or ["sentinel2_l2a"]
# Channels and band sets of each modality; Landsat Level-2 has no pan band, so its first band set is
# missing (mask 3), as in the acquired windows.
shapes = {"sentinel2_l2a": (12, 3, ()), "sentinel1": (2, 1, ()), "landsat": (11, 2, (0,))}
side = 64
tensors = []
for m in modalities:
    c, s, missing = shapes[m]
    # Normalised values in about -1…1; every pixel present.
    pattern = array.array("f", [((i * 37) % 200) / 100.0 - 1.0 for i in range(c * t * 97)])
    n = b * side * side * t * c
    data = (pattern * (n // len(pattern) + 1))[:n].tobytes()
    mask = bytes([3 if k in missing else 0 for k in range(s)] * (b * side * side * t))
    tensors += [(m, "F32", [b, side, side, t, c], data), (m + "_mask", "U8", [b, side, side, t, s], mask)]
ts = array.array("i", [v for _ in range(b) for m in range(t) for v in (15, 3 + m, 2024)]).tobytes()
tensors.append(("timestamps", "I32", [b, t, 3], ts))
header, offset = {}, 0
for name, dtype, shape, buf in tensors:
    header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(buf)]}
    offset += len(buf)
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for *_, buf in tensors:
        f.write(buf)
EOF
    t0="$(now)"
    "$bin" model embed --model "$model" --input "$tmp/embed-$n.safetensors" --patch-size "$patch" \
      --output "$tmp/embedded-$n.safetensors" --batch-size 8 >"$tmp/embed-$n.log" 2>&1 ||
      fail "groundwork model embed failed" "$tmp/embed-$n.log"
    t1="$(now)"
    times+=("$(python3 -c "print($t1 - $t0)")")
    rm -f "$tmp/embed-$n.safetensors" "$tmp/embedded-$n.safetensors"
  done
  encoder_json="{\"n1\": $n1, \"t1\": ${times[0]}, \"n2\": $n2, \"t2\": ${times[1]}, \"model\": \"$model\"}"
fi

python3 - "$tmp/summary.json" <<EOF
import json, sys

s = json.load(open(sys.argv[1]))
p = s["phases"]
rasterio = json.loads('''$rasterio_json''')
zones = json.loads('''$zones_json''')
encoder = json.loads('''$encoder_json''')
gen_s, target = $generated - $started, float($target_km2)
peaks = {
    "server (demo process: API, STAC API, pipeline driver, scoring)": $server_peak_kb,
    "same process while generating the scene, before the pipeline": $gen_peak_kb,
    "worker, acquisition": ${worker_peak[acquire]:-0},
    "worker, training and evaluation": ${worker_peak[train]:-0},
    "worker, prediction (predict, combine, publish)": ${worker_peak[predict]:-0},
}
objects_bytes, catalogue_bytes = $objects_bytes, $catalogue_bytes


def rate(n, secs):
    return n / secs if secs and secs > 0 else float("nan")


def steps(phase):
    return ", ".join(
        f"{k} ×{v['count']}: span {v['span_seconds']:.0f} s, busy {v['busy_seconds']:.0f} s"
        for k, v in p[phase]["steps"].items()
    )


windows = p.get("windows_acquired") or 0
acq_s = p["acquire"]["seconds"]
wps = rate(windows, acq_s)
km2 = p["predicted_km2"]
pred_s = p["predict"]["seconds"]
km2h = rate(km2, pred_s) * 3600
window_km2 = km2 / p["predicted_windows"] if p["predicted_windows"] else 0.4096
print(f"Scale benchmark: scene {s['scene']} (seed {s['seed']}), {s['scene_px']} × {s['scene_px']} px "
      f"= {(s['scene_px'] / 100) ** 2:.1f} km²; {p.get('windows')} windows planned, {windows} acquired "
      f"({windows * window_km2:.1f} km²); Nano, patch $patch; worker concurrency $concurrency")
print(f"  modalities {', '.join(s.get('modalities') or ['sentinel2_l2a'])}; scene EPSG:{s.get('epsg')} from "
      f"{s.get('origin')}; windows per zone and status: "
      + ", ".join(f"{k} {v}" for k, v in sorted(zones.items())))
print(f"  scene generated in {gen_s:.0f} s ({catalogue_bytes / 1e6:.0f} MB of COGs and STAC items); "
      f"whole run {s['seconds']:.0f} s; chosen model: {s.get('chosen')}; map accuracy {s['accuracy']:.3f}")
print()
print("| measure | value |")
print("|---|---:|")
print(f"| acquisition: windows/s (acquire run, request to end) | {wps:.2f} ({windows} windows in {acq_s:.0f} s) |")
print(f"| training + evaluation, s | {p['train']['seconds']:.0f} |")
print(f"| prediction: km²/h (predict + combine + publish) | {km2h:.0f} ({km2:.1f} km² in {pred_s:.0f} s) |")
pspan = p["predict"]["steps"].get("predict", {}).get("span_seconds")
if pspan:
    print(f"| prediction: km²/h (predict steps alone, first start to last end) | {rate(km2, pspan) * 3600:.0f} ({pspan:.0f} s) |")
for name, kb in peaks.items():
    print(f"| peak memory, {name} | {kb / 1024:.0f} MiB |")
db0, db1, wt = p.get("db_bytes_before"), p.get("db_bytes_after"), p.get("window_table_bytes")
per_k = lambda b: b / windows * 1000 if b is not None and windows else None
db_growth = None if db0 is None or db1 is None else db1 - db0
if db_growth is not None:
    print(f"| database growth per 1,000 windows (whole run; {db1 / 1e6:.1f} MB in all) | {per_k(db_growth) / 1e6:.2f} MB |")
if wt is not None:
    print(f"| project_window table per 1,000 windows | {per_k(wt) / 1e6:.2f} MB |")
print(f"| object store per 1,000 windows (tensors, models, maps) | {per_k(objects_bytes) / 1e6:.0f} MB |")
print()
print("Steps: acquisition " + steps("acquire") + "; prediction " + steps("predict") + ".")
print()
print("Comparisons (both sides, ratio):")
if rasterio:
    r_wps = rate(rasterio["windows"], rasterio["seconds"])
    print(f"  acquisition: groundwork {wps:.2f} windows/s (job system: search, reads, composites, writes) vs "
          f"rasterio {r_wps:.2f} windows/s (reads and reprojection only, {rasterio['windows']} windows, "
          f"$py_workers threads, rasterio {rasterio['rasterio']}): {wps / r_wps:.2f}x")
else:
    print("  acquisition vs rasterio: skipped")
if encoder:
    per_window = (encoder["t2"] - encoder["t1"]) / (encoder["n2"] - encoder["n1"])
    enc_s = per_window * p["predicted_windows"]
    print(f"  prediction: groundwork {pred_s:.0f} s (predict + combine + publish; predict steps "
          f"{pspan or float('nan'):.0f} s) vs the encoder alone on the {p['predicted_windows']} windows "
          f"once {enc_s:.0f} s ({per_window * 1000:.0f} ms a window, batch 8, {encoder['model']}): "
          f"{pred_s / enc_s:.2f}x" + (f" ({pspan / enc_s:.2f}x for the predict steps)" if pspan else ""))
else:
    print("  prediction vs the encoder alone: skipped")
print()
scale = target / (windows * window_km2) if windows else float("nan")
tw = windows * scale
print(f"Linear extrapolation to {target:,.0f} km² ({tw:,.0f} windows, on this machine):")
print(f"  acquisition {tw / wps / 3600:.1f} h; prediction {target / km2h:.1f} h; "
      f"training unchanged for the same labels ({p['train']['seconds']:.0f} s here)")
if db_growth is not None:
    print(f"  database +{db_growth * scale / 1e9:.2f} GB (an upper bound: the run's fixed rows count as per window; project_window "
          f"{(wt or 0) * scale / 1e9:.2f} GB); object store {objects_bytes * scale / 1e9:.1f} GB; "
          f"catalogue of this kind {catalogue_bytes * scale / 1e9:.1f} GB")
print("  peak memory is not extrapolated: steps work on bounded partitions and combine mosaics on disk one")
print("  partition at a time, but the demo process's own scoring reads the whole scene's ground truth (a")
print("  benchmark cost, not the product's); compare two BENCH_KM2 runs to see the trend")
EOF
