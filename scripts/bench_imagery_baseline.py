"""Python baseline for imagery/benches/materialize.rs: the same window reads and reprojection with rasterio.

Reads every asset onto every 64x64 window grid (bilinear, nearest for SCL and QA_PIXEL; in the window's own
CRS when it names one, so windows of several UTM zones can be mixed) through GDAL /vsicurl/, with a
thread pool of the same size as the Rust side's window concurrency; datasets are kept open per thread.
Prints JSON {"seconds": ..., "rasterio": ..., "windows": ...} on stdout. Also used by scripts/bench-scale.sh
on the demo catalogue's windows (without "dump", the windows' pixels are not kept).
"""
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import rasterio
from rasterio.env import Env
from rasterio.transform import Affine
from rasterio.warp import Resampling, reproject

spec = json.load(open(sys.argv[1]))
local = threading.local()
env_opts = dict(
    GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR",
    CPL_VSIL_CURL_USE_HEAD="NO",
    GDAL_HTTP_MERGE_CONSECUTIVE_RANGES="YES",
    GDAL_INGESTED_BYTES_AT_OPEN="32768",
    VSI_CACHE="TRUE",
    CPL_VSIL_CURL_CHUNK_SIZE="65536",
)


def dataset(href):
    cache = getattr(local, "cache", None)
    if cache is None:
        local.env = Env(**env_opts)
        local.env.__enter__()
        cache = local.cache = {}
    if href not in cache:
        cache[href] = rasterio.open(href)
    return cache[href]


def window(w):
    n = w["size"]
    g = w["transform"]
    dst_transform = Affine(g[1], g[2], g[0], g[4], g[5], g[3])
    out = np.zeros((len(spec["assets"]), n, n), dtype=np.float32)
    for i, a in enumerate(spec["assets"]):
        ds = dataset(a["href"])
        reproject(
            source=rasterio.band(ds, 1),
            destination=out[i],
            dst_transform=dst_transform,
            dst_crs=w.get("crs") or spec["crs"],
            dst_nodata=np.nan,
            resampling=Resampling.nearest if a["nearest"] else Resampling.bilinear,
        )
    return out


start = time.perf_counter()
results, done = [], 0
with Env(**env_opts):
    with ThreadPoolExecutor(max_workers=spec["workers"]) as pool:
        for r in pool.map(window, spec["windows"]):
            done += 1
            # Kept only for the parity dump: thousands of windows would not fit in memory.
            if spec.get("dump"):
                results.append(r)
seconds = time.perf_counter() - start
assert done == len(spec["windows"])
if spec.get("dump"):
    # The 12 spectral bands of every window, window-major, for the parity check on the Rust side.
    np.stack([r[:12] for r in results]).astype("<f4").tofile(spec["dump"])
print(json.dumps({"seconds": seconds, "rasterio": rasterio.__version__, "windows": done}))
