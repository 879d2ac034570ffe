//! Reading a raster asset onto a window grid.
//!
//! Remote assets are opened through GDAL's `/vsicurl/`, which fetches only the COG header and the tiles
//! that intersect the requested pixel window with HTTP range requests. The needed source window is derived
//! from the target pixel centres projected into the source CRS; the pixels are then resampled here
//! (bilinear for continuous bands, nearest for class layers), so a window in one UTM zone can be read
//! from a scene in the neighbouring zone.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Once;

use gdal::Dataset;
use gdal::spatial_ref::CoordTransform;

use crate::error::redact;
use crate::grid::{WindowSpec, srs};
use crate::http::Attempt;
use crate::source::is_url;

/// How a band is resampled onto the window grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resampling {
    /// Bilinear, ignoring no-data neighbours (continuous bands).
    Bilinear,
    /// Nearest neighbour (class layers, masks).
    Nearest,
}

/// A target grid: a north-up raster in an EPSG CRS.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetGrid {
    /// EPSG code.
    pub epsg: u32,
    /// GDAL geotransform (no rotation).
    pub geotransform: [f64; 6],
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
}

impl TargetGrid {
    /// The grid of a window.
    pub fn of_window(w: &WindowSpec) -> TargetGrid {
        TargetGrid {
            epsg: w.epsg,
            geotransform: w.geotransform,
            width: w.size as usize,
            height: w.size as usize,
        }
    }
}

/// The pixels of one band on the target grid, row-major; `NaN` marks no data.
#[derive(Debug, Clone)]
pub struct BandRead {
    /// Values, `height × width`.
    pub values: Vec<f32>,
    /// Bytes of source pixels read (decoded size).
    pub bytes: u64,
}

static GDAL_CONFIG: Once = Once::new();

/// Sets the GDAL options for cloud-optimised reads and routes GDAL's messages to `tracing` (once per
/// process).
pub fn configure_gdal() {
    GDAL_CONFIG.call_once(|| {
        for (k, v) in [
            ("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR"),
            ("CPL_VSIL_CURL_USE_HEAD", "NO"),
            ("GDAL_HTTP_MERGE_CONSECUTIVE_RANGES", "YES"),
            ("GDAL_INGESTED_BYTES_AT_OPEN", "32768"),
            ("VSI_CACHE", "TRUE"),
            ("GDAL_HTTP_MAX_RETRY", "2"),
            ("GDAL_HTTP_RETRY_DELAY", "0.2"),
            ("GDAL_HTTP_TIMEOUT", "30"),
            ("CPL_VSIL_CURL_CHUNK_SIZE", "65536"),
        ] {
            if let Err(e) = gdal::config::set_config_option(k, v) {
                tracing::warn!(key = k, error = %e, "could not set GDAL option");
            }
        }
        // GDAL's decoded-block cache defaults to 5 % of RAM; bound it unless the operator set it (GDAL's
        // own option lookup sees its environment variable).
        if gdal::config::get_config_option("GDAL_CACHEMAX", "").is_ok_and(|v| v.is_empty())
            && let Err(e) = gdal::config::set_config_option("GDAL_CACHEMAX", "512")
        {
            tracing::warn!(error = %e, "could not set GDAL_CACHEMAX");
        }
        // GDAL prints warnings and errors to stderr by default. Failures reach callers as `Result`s
        // (and retries are logged), so its own messages go to tracing at debug level instead.
        gdal::config::set_error_handler(|class, code, msg| match class {
            gdal::errors::CplErrType::Fatal => tracing::error!(code, "GDAL: {msg}"),
            _ => tracing::debug!(code, ?class, "GDAL: {msg}"),
        });
    });
}

struct Opened {
    /// The dataset read from (a warped VRT for GCP-georeferenced files). Declared before `_source` so
    /// it is dropped first: a warped VRT refers to its source.
    ds: Dataset,
    _source: Option<Dataset>,
    gt: [f64; 6],
    srs_key: String,
    epsg: Option<u32>,
}

thread_local! {
    static DATASETS: RefCell<HashMap<String, (Rc<Opened>, u64)>> = RefCell::new(HashMap::new());
    static CLOCK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    static TRANSFORMS: RefCell<HashMap<(String, u32), Rc<CoordTransform>>> = RefCell::new(HashMap::new());
}

/// Source pixels read per window pixel at most (16: pixels up to 4 × finer on each axis, e.g. 2.5 m
/// imagery for a 10 m window).
pub const MAX_SOURCE_PIXELS_PER_WINDOW_PIXEL: usize = 16;

/// Open datasets kept per reader thread (least recently used are closed first).
const MAX_OPEN_PER_THREAD: usize = 128;

/// The GDAL drivers asset hrefs are opened with (GeoTIFF, which includes COG, and JPEG 2000).
pub const ASSET_DRIVERS: [&str; 2] = ["GTiff", "JP2OpenJPEG"];

/// The GDAL path of an href.
pub fn gdal_path(href: &str) -> String {
    if is_url(href) {
        format!("/vsicurl/{href}")
    } else {
        href.to_string()
    }
}

fn open(href: &str) -> Result<Rc<Opened>, Attempt> {
    let now = CLOCK.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    let hit = DATASETS.with(|c| {
        c.borrow_mut().get_mut(href).map(|(o, used)| {
            *used = now;
            o.clone()
        })
    });
    if let Some(o) = hit {
        return Ok(o);
    }
    // Raster drivers only, and only the formats catalogues serve imagery in: a VRT or other
    // format that names further files could make GDAL read paths and addresses the outbound-request
    // policy never saw.
    let src = Dataset::open_ex(
        gdal_path(href),
        gdal::DatasetOptions {
            open_flags: gdal::GdalOpenFlags::GDAL_OF_RASTER | gdal::GdalOpenFlags::GDAL_OF_READONLY,
            allowed_drivers: Some(&ASSET_DRIVERS),
            ..gdal::DatasetOptions::default()
        },
    )
    .map_err(|e| classify_gdal(&e.to_string()))?;
    let (ds, source) = match src.geo_transform() {
        Ok(_) => (src, None),
        // Radar-geometry products (e.g. Sentinel-1 GRD) carry ground control points instead of a
        // geotransform: read them through a warped VRT in EPSG:4326, fetched lazily like the source.
        Err(_) if !src.gcps().is_empty() => (warped_vrt(&src)?, Some(src)),
        Err(e) => {
            return Err(Attempt::Permanent(format!(
                "neither a geotransform nor GCPs: {e}"
            )));
        }
    };
    let gt = ds
        .geo_transform()
        .map_err(|e| Attempt::Permanent(format!("no geotransform: {e}")))?;
    if gt[2] != 0.0 || gt[4] != 0.0 {
        return Err(Attempt::Permanent(
            "rotated rasters are not supported".into(),
        ));
    }
    let sr = ds
        .spatial_ref()
        .map_err(|e| Attempt::Permanent(format!("no CRS: {e}")))?;
    let epsg = sr.auth_code().ok().and_then(|c| u32::try_from(c).ok());
    let srs_key = match epsg {
        Some(c) => format!("EPSG:{c}"),
        None => sr
            .to_wkt()
            .map_err(|e| Attempt::Permanent(format!("CRS: {e}")))?,
    };
    let o = Rc::new(Opened {
        ds,
        _source: source,
        gt,
        srs_key,
        epsg,
    });
    DATASETS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= MAX_OPEN_PER_THREAD
            && let Some(oldest) = c
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            c.remove(&oldest);
        }
        c.insert(href.to_string(), (o.clone(), now));
    });
    Ok(o)
}

/// A north-up warped VRT (EPSG:4326, bilinear) over a GCP-georeferenced dataset.
fn warped_vrt(src: &Dataset) -> Result<Dataset, Attempt> {
    let wkt = srs(4326)
        .and_then(|s| {
            s.to_wkt()
                .map_err(crate::error::Error::gdal("EPSG:4326 WKT"))
        })
        .map_err(|e| Attempt::Permanent(e.to_string()))?;
    let wkt = std::ffi::CString::new(wkt).map_err(|e| Attempt::Permanent(e.to_string()))?;
    #[expect(
        unsafe_code,
        reason = "the gdal crate has no wrapper for GDALAutoCreateWarpedVRT"
    )]
    // SAFETY: `src` is a valid open dataset that the caller keeps alive longer than the VRT (see
    // `Opened`); `wkt` is NUL-terminated and outlives the call; null source WKT and options ask GDAL
    // for the GCP projection and default options. A non-null result is a new dataset we own.
    let vrt = unsafe {
        let h = gdal_sys::GDALAutoCreateWarpedVRT(
            src.c_dataset(),
            std::ptr::null(),
            wkt.as_ptr(),
            gdal_sys::GDALResampleAlg::GRA_Bilinear,
            0.125,
            std::ptr::null(),
        );
        if h.is_null() {
            None
        } else {
            Some(Dataset::from_c_dataset(h))
        }
    };
    vrt.ok_or_else(|| Attempt::Permanent("could not warp the GCP-georeferenced raster".into()))
}

/// Empties GDAL's process-wide `/vsicurl/` cache (file sizes, headers, downloaded blocks), so that a
/// benchmark's second run reads over HTTP like its first.
pub fn clear_http_cache() {
    #[expect(
        unsafe_code,
        reason = "GDAL has no safe wrapper for clearing the /vsicurl/ cache"
    )]
    // SAFETY: takes no arguments; GDAL locks its cache itself.
    unsafe {
        gdal_sys::VSICurlClearCache();
    }
}

/// Forgets a failed asset: drops this thread's handle and GDAL's cached HTTP state for it.
pub(crate) fn forget(href: &str) {
    DATASETS.with(|c| c.borrow_mut().remove(href));
    if is_url(href)
        && let Ok(p) = std::ffi::CString::new(gdal_path(href))
    {
        #[expect(
            unsafe_code,
            reason = "GDAL has no safe wrapper for clearing the /vsicurl/ cache"
        )]
        // SAFETY: `p` is a valid NUL-terminated string that outlives the call; GDAL copies what it needs.
        unsafe {
            gdal_sys::VSICurlPartialClearCache(p.as_ptr());
        }
    }
}

fn source_transform(src: &Opened, dst_epsg: u32) -> Result<Rc<CoordTransform>, Attempt> {
    let key = (src.srs_key.clone(), dst_epsg);
    if let Some(t) = TRANSFORMS.with(|c| c.borrow().get(&key).cloned()) {
        return Ok(t);
    }
    let from = match src.epsg {
        Some(c) => srs(c).map_err(|e| Attempt::Permanent(e.to_string()))?,
        None => {
            let mut s = gdal::spatial_ref::SpatialRef::from_wkt(&src.srs_key)
                .map_err(|e| Attempt::Permanent(format!("CRS: {e}")))?;
            s.set_axis_mapping_strategy(
                gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder,
            );
            s
        }
    };
    let to = srs(dst_epsg).map_err(|e| Attempt::Permanent(e.to_string()))?;
    // Target → source: we project target pixel centres into the source raster.
    let t = Rc::new(
        CoordTransform::new(&to, &from)
            .map_err(|e| Attempt::Permanent(format!("transform: {e}")))?,
    );
    TRANSFORMS.with(|c| c.borrow_mut().insert(key, t.clone()));
    Ok(t)
}

/// Reads band 1 of `href` onto `grid` (blocking; call from `spawn_blocking`).
///
/// `nodata` is used when the file declares none. Values equal to the no-data value become `NaN`.
pub(crate) fn read_on_grid(
    href: &str,
    grid: &TargetGrid,
    resampling: Resampling,
    nodata: Option<f64>,
) -> Result<BandRead, Attempt> {
    configure_gdal();
    let src = open(href)?;
    let (w, h) = (grid.width, grid.height);
    let g = grid.geotransform;
    let mut xs = Vec::with_capacity(w * h);
    let mut ys = Vec::with_capacity(w * h);
    for j in 0..h {
        for i in 0..w {
            xs.push(g[0] + (i as f64 + 0.5) * g[1]);
            ys.push(g[3] + (j as f64 + 0.5) * g[5]);
        }
    }
    if src.epsg != Some(grid.epsg) {
        let t = source_transform(&src, grid.epsg)?;
        t.transform_coords(&mut xs, &mut ys, &mut [])
            .map_err(|e| Attempt::Permanent(format!("projecting window: {e}")))?;
    }
    let sgt = src.gt;
    // Fractional source pixel coordinates of every target pixel centre.
    for (x, y) in xs.iter_mut().zip(ys.iter_mut()) {
        *x = (*x - sgt[0]) / sgt[1];
        *y = (*y - sgt[3]) / sgt[5];
    }
    let band = src
        .ds
        .rasterband(1)
        .map_err(|e| Attempt::Permanent(format!("band 1: {e}")))?;
    let (sw, sh) = band.size();
    let nodata = band.no_data_value().or(nodata);
    let min_max = |v: &[f64]| {
        v.iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
                (a.min(*x), b.max(*x))
            })
    };
    let (u0, u1) = min_max(&xs);
    let (v0, v1) = min_max(&ys);
    let c0 = ((u0 - 1.0).floor().max(0.0)) as usize;
    let r0 = ((v0 - 1.0).floor().max(0.0)) as usize;
    let c1 = ((u1 + 1.0).ceil().max(0.0) as usize).min(sw);
    let r1 = ((v1 + 1.0).ceil().max(0.0) as usize).min(sh);
    let mut out = vec![f32::NAN; w * h];
    if c0 >= c1 || r0 >= r1 || !u0.is_finite() || !v0.is_finite() {
        return Ok(BandRead {
            values: out,
            bytes: 0,
        });
    }
    let (rw, rh) = (c1 - c0, r1 - r0);
    // The source pixels one window needs, capped before anything is allocated: a raster whose pixels
    // are far finer than the window's (or whose geotransform is absurd) fails this window with the
    // reason instead of exhausting memory.
    let cap = MAX_SOURCE_PIXELS_PER_WINDOW_PIXEL.saturating_mul((w * h).max(1));
    if rw.saturating_mul(rh) > cap {
        return Err(Attempt::Permanent(format!(
            "the raster's pixels are too fine for this window: covering its {w} × {h} pixels would \
             read {rw} × {rh} source pixels (at most {cap})"
        )));
    }
    let mut buf = vec![0f32; rw * rh];
    band.read_into_slice::<f32>(
        (c0 as isize, r0 as isize),
        (rw, rh),
        (rw, rh),
        &mut buf,
        None,
    )
    .map_err(|e| classify_gdal(&e.to_string()))?;
    let bytes = (rw * rh * band.band_type().bytes() as usize) as u64;
    if let Some(nd) = nodata {
        let nd = nd as f32;
        for v in &mut buf {
            if *v == nd {
                *v = f32::NAN;
            }
        }
    }
    let at = |c: i64, r: i64| -> f32 {
        let (c, r) = (c - c0 as i64, r - r0 as i64);
        if c < 0 || r < 0 || c >= rw as i64 || r >= rh as i64 {
            f32::NAN
        } else {
            buf[r as usize * rw + c as usize]
        }
    };
    for k in 0..w * h {
        let (u, v) = (xs[k], ys[k]);
        if u < 0.0 || v < 0.0 || u >= sw as f64 || v >= sh as f64 {
            continue;
        }
        out[k] = match resampling {
            Resampling::Nearest => at(u.floor() as i64, v.floor() as i64),
            Resampling::Bilinear => {
                let (uu, vv) = (u - 0.5, v - 0.5);
                let (cx, cy) = (uu.floor(), vv.floor());
                let (fx, fy) = ((uu - cx) as f32, (vv - cy) as f32);
                let (cx, cy) = (cx as i64, cy as i64);
                let taps = [
                    (at(cx, cy), (1.0 - fx) * (1.0 - fy)),
                    (at(cx + 1, cy), fx * (1.0 - fy)),
                    (at(cx, cy + 1), (1.0 - fx) * fy),
                    (at(cx + 1, cy + 1), fx * fy),
                ];
                let (mut sum, mut wsum) = (0f32, 0f32);
                for (val, wt) in taps {
                    if !val.is_nan() && wt > 0.0 {
                        sum += val * wt;
                        wsum += wt;
                    }
                }
                if wsum > 1e-6 {
                    sum / wsum
                } else {
                    at(u.floor() as i64, v.floor() as i64)
                }
            }
        };
    }
    Ok(BandRead { values: out, bytes })
}

/// Sorts a GDAL failure into worth-retrying (network, throttling) or not (missing, corrupt).
pub(crate) fn classify_gdal(msg: &str) -> Attempt {
    let m = msg.to_ascii_lowercase();
    // GDAL words it "HTTP response code: 429", "HTTP error code: 429 - url" or
    // "HTTP response code on url: 429": take the first `: NNN` with an HTTP error status.
    let http_code = m
        .contains("http")
        .then(|| {
            m.match_indices(": ").find_map(|(i, _)| {
                let digits: String = m[i + 2..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits
                    .parse::<u16>()
                    .ok()
                    .filter(|c| digits.len() == 3 && (400..600).contains(c))
            })
        })
        .flatten();
    match http_code {
        Some(c) => crate::http::classify_status(c),
        None if m.contains("timed out")
            || m.contains("timeout")
            || m.contains("connection")
            || m.contains("curl error")
            || m.contains("couldn't connect") =>
        {
            Attempt::Transient(msg.to_string())
        }
        // GDAL gave up without saying why (a NULL dataset and an empty error message): seen when an
        // HTTP read through /vsicurl/ failed under load. Retried, within the usual bounds; a file
        // that is really unreadable fails again with the same words.
        None if m.contains("null pointer") && m.trim_end().ends_with("''") => {
            Attempt::Transient(msg.to_string())
        }
        None => Attempt::Permanent(msg.to_string()),
    }
}

pub(crate) fn describe(href: &str) -> String {
    redact(href)
}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of reader threads. GDAL calls block and GDAL handles are not shareable between threads,
/// so each thread keeps its own open datasets (header bytes, decoded tiles); a fixed, small set of
/// threads makes those caches effective, unlike an elastic blocking pool.
pub(crate) struct ReaderPool {
    queues: Vec<std::sync::mpsc::Sender<Job>>,
}

impl ReaderPool {
    /// Starts `n` reader threads whose HTTP requests time out after `timeout`; they exit when the
    /// pool is dropped.
    ///
    /// With `proxy` (`host:port`), every HTTP request GDAL makes on these threads goes through it
    /// (the outbound-request policy's proxy, [`crate::gdal_proxy`]).
    pub(crate) fn new(
        n: usize,
        timeout: std::time::Duration,
        proxy: Option<String>,
    ) -> std::io::Result<ReaderPool> {
        let mut queues = Vec::with_capacity(n.max(1));
        let secs = timeout.as_secs().max(1).to_string();
        for i in 0..n.max(1) {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            let secs = secs.clone();
            let proxy = proxy.clone();
            std::thread::Builder::new()
                .name(format!("imagery-read-{i}"))
                .spawn(move || {
                    if let Err(e) =
                        gdal::config::set_thread_local_config_option("GDAL_HTTP_TIMEOUT", &secs)
                    {
                        tracing::warn!(error = %e, "could not set the GDAL HTTP timeout");
                    }
                    if let Some(p) = &proxy
                        && let Err(e) =
                            gdal::config::set_thread_local_config_option("GDAL_HTTP_PROXY", p)
                    {
                        tracing::warn!(error = %e, "could not set the GDAL HTTP proxy");
                    }
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                })?;
            queues.push(tx);
        }
        Ok(ReaderPool { queues })
    }

    /// Runs `f` on the reader thread that owns `href`: every read of one file goes to the same thread,
    /// so the file is opened once and its decoded tiles are reused by neighbouring windows.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        href: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Attempt> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        href.hash(&mut h);
        let queue = &self.queues[(h.finish() % self.queues.len() as u64) as usize];
        let (otx, orx) = tokio::sync::oneshot::channel();
        queue
            .send(Box::new(move || {
                let _ = otx.send(f());
            }))
            .map_err(|_| Attempt::Permanent("reader threads are gone".into()))?;
        orx.await
            .map_err(|_| Attempt::Permanent("reader thread failed".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdal_failures_are_classified() {
        assert!(matches!(
            classify_gdal("HTTP response code: 429"),
            Attempt::Transient(_)
        ));
        assert!(matches!(
            classify_gdal("HTTP response code: 503"),
            Attempt::Transient(_)
        ));
        assert!(matches!(
            classify_gdal("HTTP response code: 404"),
            Attempt::Permanent(_)
        ));
        assert!(matches!(
            classify_gdal("not recognized as a supported file format"),
            Attempt::Permanent(_)
        ));
        assert!(matches!(
            classify_gdal("GDAL method 'GDALOpenEx' returned a NULL pointer. Error msg: ''"),
            Attempt::Transient(_)
        ));
        assert!(matches!(
            classify_gdal(
                "GDAL method 'GDALOpenEx' returned a NULL pointer. Error msg: 'x.tif: not recognized as a supported file format'"
            ),
            Attempt::Permanent(_)
        ));
    }
}
