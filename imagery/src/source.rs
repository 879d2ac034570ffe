//! Scene sources: STAC API search and static catalogues, turned into [`Scene`]s for one modality.

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use geo::Intersects;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, redact};
use crate::http::HttpContext;
use crate::modality::{Harmonize, Modality, ModalitySpec, Profile, Rescale};
use crate::outbound::{OutboundError, OutboundPolicy};

/// Where scenes come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "url")]
pub enum Source {
    /// A STAC API root (its `/search` endpoint is used, following `next` links).
    Api(String),
    /// A static catalogue: a `catalog.json` path or URL whose children and items are walked.
    Static(String),
}

impl Source {
    /// Guesses the kind: anything ending in `.json` or naming a local file is a static catalogue (a local
    /// directory means its `catalog.json`); anything else is a STAC API root. This looks at the local
    /// file system, so it is for the trusted command line; what users name goes through
    /// [`Source::checked`].
    pub fn parse(s: &str) -> Source {
        let is_url = s.starts_with("http://") || s.starts_with("https://");
        if !is_url && Path::new(s).is_dir() {
            Source::Static(
                Path::new(s)
                    .join("catalog.json")
                    .to_string_lossy()
                    .into_owned(),
            )
        } else if s.ends_with(".json") || (!is_url && Path::new(s).exists()) {
            Source::Static(s.to_string())
        } else {
            Source::Api(s.trim_end_matches('/').to_string())
        }
    }

    /// The source a user named, under the outbound-request policy: an `http(s)` URL (a static
    /// catalogue when it ends in `.json`, else a STAC API root), or a local path or `file://` URL under
    /// a catalogue root (a directory means its `catalog.json`). The file system is consulted only
    /// after the policy allowed the path, so a refusal says nothing about which files exist.
    pub fn checked(s: &str, policy: &OutboundPolicy) -> Result<Source, OutboundError> {
        let s = s.trim();
        if OutboundPolicy::is_local(s) {
            let path = policy.check_local(s)?;
            let path = if path.is_dir() {
                path.join("catalog.json")
            } else {
                path
            };
            return Ok(Source::Static(path.to_string_lossy().into_owned()));
        }
        let url = policy.check_url_syntax(s)?;
        if url.path().ends_with(".json") {
            Ok(Source::Static(s.to_owned()))
        } else {
            Ok(Source::Api(s.trim_end_matches('/').to_owned()))
        }
    }
}

/// One acquisition (STAC item) of one modality, with resolved, readable asset hrefs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    /// STAC item id.
    pub id: String,
    /// STAC collection id.
    pub collection: String,
    /// Acquisition time.
    pub datetime: DateTime<Utc>,
    /// `eo:cloud_cover` in percent, when given.
    pub cloud_cover: Option<f64>,
    /// Footprint in EPSG:4326, when given.
    pub footprint: Option<geojson::Geometry>,
    /// Asset href per band in [`Modality::bands`] order (file path or URL); `None` where the item has
    /// no such asset (allowed for Landsat only, e.g. Collection 2 Level-2 has no pan or cirrus band).
    pub bands: Vec<Option<String>>,
    /// Per-pixel quality layer href: the scene classification (Sentinel-2) or `QA_PIXEL` (Landsat).
    pub scl: Option<String>,
    /// Per band (in [`Modality::bands`] order), how stored values become the model's units, where
    /// they need to (Landsat Level-2; see [`Rescale`]).
    pub rescale: Vec<Option<Rescale>>,
    /// Value subtracted from Sentinel-2 DN to harmonise processing baseline ≥ 04.00 with older data.
    pub offset: f32,
    /// Sentinel-1 assets already in dB (otherwise linear power, converted to dB).
    pub in_db: bool,
}

impl Scene {
    /// Whether the scene's footprint intersects a polygon (true when the footprint is unknown).
    pub fn intersects(&self, poly: &geo::Polygon<f64>) -> bool {
        match self.footprint.as_ref().map(geo::Geometry::<f64>::try_from) {
            Some(Ok(g)) => g.intersects(poly),
            _ => true,
        }
    }
}

/// A scene search for one modality.
#[derive(Debug, Clone)]
pub struct SceneQuery<'a> {
    /// Catalogue.
    pub source: &'a Source,
    /// Profile (collection names, asset keys, signing).
    pub profile: &'a Profile,
    /// Modality.
    pub modality: Modality,
    /// `[west, south, east, north]` in EPSG:4326.
    pub bbox: [f64; 4],
    /// First day (inclusive).
    pub start: NaiveDate,
    /// Last day (inclusive).
    pub end: NaiveDate,
    /// Maximum `eo:cloud_cover` (Sentinel-2 and Landsat), percent.
    pub max_cloud: Option<f64>,
    /// Items per page of an API search.
    pub page_size: u64,
}

/// Finds the scenes of one modality over a bounding box and date range.
pub async fn search_scenes(q: &SceneQuery<'_>, http: &HttpContext) -> Result<Vec<Scene>> {
    let spec = q.profile.spec(q.modality);
    let items: Vec<(stac::Item, String)> = match q.source {
        Source::Api(url) => api_search(url, &spec, q, http).await?,
        Source::Static(root) => {
            let mut out = Vec::new();
            walk_static(root, http, &mut out, 0).await?;
            out
        }
    };
    let start = q.start.and_hms_opt(0, 0, 0).map(|d| d.and_utc());
    let end = q.end.and_hms_opt(23, 59, 59).map(|d| d.and_utc());
    let bbox = geo::Rect::new(
        geo::coord! { x: q.bbox[0], y: q.bbox[1] },
        geo::coord! { x: q.bbox[2], y: q.bbox[3] },
    )
    .to_polygon();
    let mut scenes = Vec::new();
    for (item, base) in items {
        if item.collection.as_deref() != Some(spec.collection.as_str()) {
            continue;
        }
        let scene = match scene_from_item(&item, &base, q.modality, &spec) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(item = %item.id, error = %e, "skipping item");
                continue;
            }
        };
        if start.is_some_and(|s| scene.datetime < s) || end.is_some_and(|e| scene.datetime > e) {
            continue;
        }
        if let (Some(max), Some(cc)) = (q.max_cloud, scene.cloud_cover)
            && q.modality != Modality::Sentinel1
            && cc > max
        {
            continue;
        }
        if !scene.intersects(&bbox) {
            continue;
        }
        scenes.push(scene);
    }
    if let Profile::PlanetaryComputer { sas_endpoint } = q.profile {
        // Only hrefs on Azure blob storage (or on the token service's own host) are signed; a
        // catalogue that uses the profile for its asset keys but serves its files elsewhere never
        // causes a token request.
        for s in &mut scenes {
            let hrefs: Vec<&mut String> = s
                .bands
                .iter_mut()
                .flatten()
                .chain(s.scl.iter_mut())
                .filter(|h| signed_by(h, sas_endpoint))
                .collect();
            if hrefs.is_empty() {
                continue;
            }
            let token = sas_token(sas_endpoint, &s.collection, http).await?;
            let mut signed = http.signed.lock().await;
            for h in hrefs {
                let unsigned = std::mem::take(h);
                *h = sign_href(&unsigned, &token);
                signed.insert(
                    h.clone(),
                    crate::http::Signature {
                        unsigned,
                        endpoint: sas_endpoint.clone(),
                        collection: s.collection.clone(),
                        token: token.clone(),
                    },
                );
            }
        }
    }
    scenes.sort_by(|a, b| a.datetime.cmp(&b.datetime).then(a.id.cmp(&b.id)));
    scenes.dedup_by(|a, b| a.id == b.id);
    Ok(scenes)
}

/// Pages of one API search followed at most.
pub const MAX_SEARCH_PAGES: usize = 1000;

async fn api_search(
    url: &str,
    spec: &ModalitySpec,
    q: &SceneQuery<'_>,
    http: &HttpContext,
) -> Result<Vec<(stac::Item, String)>> {
    let base = format!("{url}/search");
    let stac_error = |op: &'static str, reason: String| Error::Stac {
        op,
        url: redact(url),
        reason,
    };
    let body = serde_json::json!({
        "collections": [spec.collection],
        "bbox": q.bbox,
        "datetime": format!("{}T00:00:00Z/{}T23:59:59Z", q.start, q.end),
        "limit": q.page_size.max(1),
    });
    let mut next = Some((reqwest::Method::POST, base.clone(), Some(body)));
    let mut out = Vec::new();
    let mut pages = 0;
    while let Some((method, href, body)) = next.take() {
        pages += 1;
        if pages > MAX_SEARCH_PAGES {
            return Err(stac_error(
                "search",
                format!("more than {MAX_SEARCH_PAGES} result pages"),
            ));
        }
        let page = http
            .request_json(method, &href, body.as_ref())
            .await
            .map_err(|e| stac_error("search", e.to_string()))?;
        let features = page
            .get("features")
            .and_then(|f| f.as_array())
            .ok_or_else(|| stac_error("search", "the response has no `features` list".into()))?;
        for f in features {
            let item = serde_json::from_value::<stac::Item>(f.clone())
                .map_err(|e| stac_error("item", e.to_string()))?;
            out.push((item, base.clone()));
        }
        if features.is_empty() {
            break;
        }
        next = page
            .get("links")
            .and_then(|l| l.as_array())
            .and_then(|links| {
                links
                    .iter()
                    .find(|l| l.get("rel").and_then(|r| r.as_str()) == Some("next"))
            })
            .and_then(|link| next_request(link, &href, body.as_ref()));
    }
    Ok(out)
}

/// The request a STAC API `next` link asks for: its method (GET unless it says POST), its href
/// (resolved against the page), and for POST its body, merged into the previous one when `merge` is
/// true.
fn next_request(
    link: &serde_json::Value,
    page: &str,
    previous: Option<&serde_json::Value>,
) -> Option<(reqwest::Method, String, Option<serde_json::Value>)> {
    let href = resolve_href(page, link.get("href")?.as_str()?);
    let post = link
        .get("method")
        .and_then(|m| m.as_str())
        .is_some_and(|m| m.eq_ignore_ascii_case("POST"));
    if !post {
        return Some((reqwest::Method::GET, href, None));
    }
    let given = link.get("body").cloned();
    let merge = link
        .get("merge")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let body = match (merge, previous, given) {
        (true, Some(serde_json::Value::Object(prev)), Some(serde_json::Value::Object(add))) => {
            let mut all = prev.clone();
            all.extend(add);
            Some(serde_json::Value::Object(all))
        }
        (true, Some(prev), None) => Some(prev.clone()),
        (_, _, given) => given,
    };
    Some((reqwest::Method::POST, href, body))
}

/// Reads a JSON document from a path or URL.
async fn read_json(href: &str, http: &HttpContext) -> Result<serde_json::Value> {
    if is_url(href) {
        http.get_json(href).await
    } else if !OutboundPolicy::is_local(href) {
        Err(Error::Stac {
            op: "catalogue",
            url: redact(href),
            reason: OutboundError::Refused("only http(s) catalogue links are followed".into())
                .to_string(),
        })
    } else {
        let path = http.policy.check_local(href).map_err(|e| Error::Stac {
            op: "catalogue",
            url: href.to_string(),
            reason: e.to_string(),
        })?;
        let size = tokio::fs::metadata(&path)
            .await
            .map_err(|source| Error::Io {
                path: href.to_string(),
                source,
            })?
            .len();
        if size > crate::http::MAX_JSON_BYTES as u64 {
            return Err(Error::Stac {
                op: "catalogue",
                url: href.to_string(),
                reason: format!("larger than {} MiB", crate::http::MAX_JSON_BYTES >> 20),
            });
        }
        let bytes = tokio::fs::read(&path).await.map_err(|source| Error::Io {
            path: href.to_string(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Stac {
            op: "catalogue",
            url: href.to_string(),
            reason: e.to_string(),
        })
    }
}

/// Walks a static catalogue from `href`, collecting items with the href they were read from.
fn walk_static<'a>(
    href: &'a str,
    http: &'a HttpContext,
    out: &'a mut Vec<(stac::Item, String)>,
    depth: usize,
) -> futures::future::BoxFuture<'a, Result<()>> {
    Box::pin(async move {
        if depth > 8 {
            return Err(Error::Stac {
                op: "catalogue",
                url: href.to_string(),
                reason: "catalogue nested deeper than 8 levels".into(),
            });
        }
        let v = read_json(href, http).await?;
        if v.get("type").and_then(|t| t.as_str()) == Some("Feature") {
            let item: stac::Item = serde_json::from_value(v).map_err(|e| Error::Stac {
                op: "item",
                url: href.to_string(),
                reason: e.to_string(),
            })?;
            out.push((item, href.to_string()));
            return Ok(());
        }
        let links = v
            .get("links")
            .and_then(|l| l.as_array())
            .cloned()
            .unwrap_or_default();
        for link in links {
            let rel = link.get("rel").and_then(|r| r.as_str()).unwrap_or_default();
            if rel != "child" && rel != "item" {
                continue;
            }
            if let Some(h) = link.get("href").and_then(|h| h.as_str()) {
                let child = resolve_href(href, h);
                walk_static(&child, http, out, depth + 1).await?;
            }
        }
        Ok(())
    })
}

pub(crate) fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Resolves `href` relative to the document at `base` (a URL or a file path).
///
/// Against a URL, references resolve as RFC 3986 says: an absolute path names a path on the same
/// host, never a local file.
pub fn resolve_href(base: &str, href: &str) -> String {
    if is_url(base) {
        return match reqwest::Url::parse(base).and_then(|b| b.join(href)) {
            Ok(u) => u.to_string(),
            Err(_) => href.to_string(),
        };
    }
    if href.contains("://") || href.starts_with('/') {
        return href.to_string();
    }
    let dir = Path::new(base).parent().unwrap_or(Path::new(""));
    let mut out = PathBuf::new();
    for c in dir.join(href).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out.to_string_lossy().into_owned()
}

fn scene_from_item(
    item: &stac::Item,
    base: &str,
    m: Modality,
    spec: &ModalitySpec,
) -> Result<Scene> {
    let props = &item.properties.additional_fields;
    let datetime = item
        .properties
        .datetime
        .or(item.properties.start_datetime)
        .ok_or_else(|| Error::Stac {
            op: "item",
            url: item.id.clone(),
            reason: "no datetime".into(),
        })?;
    let asset = |key: &str| -> Result<String> {
        item.assets
            .get(key)
            .map(|a| resolve_href(base, &a.href))
            .ok_or_else(|| Error::Stac {
                op: "item",
                url: item.id.clone(),
                reason: format!("no asset {key:?}"),
            })
    };
    let bands = spec
        .assets
        .iter()
        .map(|k| match asset(k) {
            Ok(h) => Ok(Some(h)),
            Err(_) if m == Modality::Landsat => Ok(None),
            Err(e) => Err(e),
        })
        .collect::<Result<Vec<_>>>()?;
    if bands.iter().all(Option::is_none) {
        return Err(Error::Stac {
            op: "item",
            url: item.id.clone(),
            reason: format!("none of the assets {:?}", spec.assets),
        });
    }
    let scl = match (&spec.scl_asset, m) {
        (Some(k), Modality::Sentinel2L2a) => Some(asset(k)?),
        // Landsat's QA_PIXEL is used when the item has it.
        (Some(k), Modality::Landsat) => asset(k).ok(),
        _ => None,
    };
    let rescale = if m == Modality::Landsat && landsat_level2(item) {
        spec.assets
            .iter()
            .enumerate()
            .map(|(i, k)| {
                item.assets
                    .get(k)
                    .map(|a| Rescale::landsat_level2(i, asset_scale_offset(a)))
            })
            .collect()
    } else {
        vec![None; bands.len()]
    };
    let baseline = props.get("s2:processing_baseline").and_then(|v| match v {
        serde_json::Value::String(s) => s.parse::<f64>().ok(),
        serde_json::Value::Number(n) => n.as_f64(),
        _ => None,
    });
    let applied = props
        .get("earthsearch:boa_offset_applied")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let offset = if m == Modality::Sentinel2L2a
        && spec.harmonize == Harmonize::ByBaseline
        && baseline.is_some_and(|b| b >= 4.0)
        && !applied
    {
        1000.0
    } else {
        0.0
    };
    let in_db = m == Modality::Sentinel1
        && (!spec.s1_linear
            || spec
                .assets
                .first()
                .and_then(|k| item.assets.get(k))
                .is_some_and(asset_unit_is_db));
    Ok(Scene {
        id: item.id.clone(),
        collection: item.collection.clone().unwrap_or_default(),
        datetime,
        cloud_cover: props.get("eo:cloud_cover").and_then(|v| v.as_f64()),
        footprint: item.geometry.clone(),
        bands,
        scl,
        rescale,
        offset,
        in_db,
    })
}

/// Whether a Landsat item holds Collection 2 Level-2 products (surface reflectance and temperature,
/// scaled integers), by its `landsat:correction` (`L2SP`, `L2SR`) or else its collection id.
fn landsat_level2(item: &stac::Item) -> bool {
    match item
        .properties
        .additional_fields
        .get("landsat:correction")
        .and_then(|v| v.as_str())
    {
        Some(c) => c.to_ascii_uppercase().starts_with("L2"),
        None => item
            .collection
            .as_deref()
            .is_some_and(|c| c.to_ascii_lowercase().contains("l2")),
    }
}

/// The `scale` and `offset` of an asset's first band (`raster:bands`, or STAC 1.1 `bands`), when it
/// gives a scale.
fn asset_scale_offset(a: &stac::Asset) -> Option<(f64, f64)> {
    let v = serde_json::to_value(a).ok()?;
    ["raster:bands", "bands"].iter().find_map(|k| {
        let b = v.get(k)?.get(0)?;
        let scale = b.get("scale").or_else(|| b.get("raster:scale"))?.as_f64()?;
        let offset = b
            .get("offset")
            .or_else(|| b.get("raster:offset"))
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0);
        (scale.is_finite() && scale != 0.0 && offset.is_finite()).then_some((scale, offset))
    })
}

fn asset_unit_is_db(a: &stac::Asset) -> bool {
    let v = serde_json::to_value(a).unwrap_or_default();
    ["raster:bands", "bands"].iter().any(|k| {
        v.get(k)
            .and_then(|b| b.get(0))
            .and_then(|b| b.get("unit"))
            .and_then(|u| u.as_str())
            .is_some_and(|u| u.eq_ignore_ascii_case("db"))
    })
}

/// Gets (and caches until shortly before expiry) a Planetary Computer SAS token for a collection.
pub async fn sas_token(endpoint: &str, collection: &str, http: &HttpContext) -> Result<String> {
    token_other_than(endpoint, collection, None, http).await
}

/// A token for the collection that is not `stale`: the cached one when it is still valid and differs
/// from `stale` (another read renewed it already), else a new one from the endpoint.
pub(crate) async fn token_other_than(
    endpoint: &str,
    collection: &str,
    stale: Option<&str>,
    http: &HttpContext,
) -> Result<String> {
    let mut cache = http.tokens.lock().await;
    if let Some((t, until)) = cache.get(collection)
        && *until > Instant::now()
        && stale != Some(t.as_str())
    {
        return Ok(t.clone());
    }
    let url = format!(
        "{}/api/sas/v1/token/{collection}",
        endpoint.trim_end_matches('/')
    );
    let v = http.get_json(&url).await?;
    let token = v
        .get("token")
        .and_then(|t| t.as_str())
        .ok_or_else(|| Error::Http {
            url: url.clone(),
            reason: "token response has no `token`".into(),
        })?
        .to_string();
    let ttl = v
        .get("msft:expiry")
        .and_then(|e| e.as_str())
        .and_then(|e| DateTime::parse_from_rfc3339(e).ok())
        .map(|e| (e.with_timezone(&Utc) - Utc::now()).num_seconds() - 300)
        .filter(|s| *s > 0)
        .map_or(Duration::from_secs(600), |s| Duration::from_secs(s as u64));
    cache.insert(
        collection.to_string(),
        (token.clone(), Instant::now() + ttl),
    );
    Ok(token)
}

/// Whether an href is an `https` URL on Azure blob storage (`*.blob.core.windows.net`), where the
/// Planetary Computer's assets live (see [`signed_by`]).
#[must_use]
pub fn on_azure_blob_storage(href: &str) -> bool {
    reqwest::Url::parse(href).is_ok_and(|u| {
        u.scheme() == "https"
            && u.host_str()
                .is_some_and(|h| h.to_ascii_lowercase().ends_with(".blob.core.windows.net"))
    })
}

/// Whether the Planetary Computer profile signs an href: `https` on Azure blob storage, or on the
/// token service's own origin (a mirror or private deployment serving its files beside its tokens).
#[must_use]
pub fn signed_by(href: &str, sas_endpoint: &str) -> bool {
    let origin = |u: &str| {
        reqwest::Url::parse(u).ok().map(|u| {
            (
                u.scheme().to_owned(),
                u.host_str().map(str::to_ascii_lowercase),
                u.port_or_known_default(),
            )
        })
    };
    on_azure_blob_storage(href) || origin(href).is_some_and(|o| Some(o) == origin(sas_endpoint))
}

/// Appends a SAS token to an asset href (replacing nothing else in its query).
pub fn sign_href(href: &str, token: &str) -> String {
    if !is_url(href) {
        return href.to_string();
    }
    let token = token.trim_start_matches('?');
    if href.contains('?') {
        format!("{href}&{token}")
    } else {
        format!("{href}?{token}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_hrefs_resolve_against_files_and_urls() {
        assert_eq!(resolve_href("/d/c/item.json", "./B04.tif"), "/d/c/B04.tif");
        assert_eq!(
            resolve_href("/d/c/item.json", "../x/B04.tif"),
            "/d/x/B04.tif"
        );
        assert_eq!(
            resolve_href("http://h:1/a/catalog.json", "s2/collection.json"),
            "http://h:1/a/s2/collection.json"
        );
        assert_eq!(
            resolve_href("http://h:1/a/catalog.json", "/etc/passwd"),
            "http://h:1/etc/passwd"
        );
        assert_eq!(
            resolve_href("http://h:1/a/catalog.json", "file:///etc/passwd"),
            "file:///etc/passwd"
        );
        assert_eq!(
            resolve_href("/d/c/item.json", "/vsicurl/http://x/a.tif"),
            "/vsicurl/http://x/a.tif"
        );
        assert_eq!(
            sign_href("http://h/a.tif", "se=1&sig=x"),
            "http://h/a.tif?se=1&sig=x"
        );
        assert_eq!(
            sign_href("http://h/a.tif?v=1", "sig=x"),
            "http://h/a.tif?v=1&sig=x"
        );
        assert_eq!(
            Source::parse("https://earth-search.aws.element84.com/v1/"),
            Source::Api("https://earth-search.aws.element84.com/v1".into())
        );
    }

    #[test]
    fn only_azure_blob_hrefs_are_signed() {
        assert!(on_azure_blob_storage(
            "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/a/B04.tif"
        ));
        for other in [
            "http://sentinel2l2a01.blob.core.windows.net/a.tif",
            "https://blob.core.windows.net.evil.example/a.tif",
            "https://127.0.0.1:9000/a.tif",
            "/data/a.tif",
        ] {
            assert!(!on_azure_blob_storage(other), "{other}");
        }
    }

    #[test]
    fn user_sources_go_through_the_policy() {
        let strict = OutboundPolicy::default();
        assert_eq!(
            Source::checked("https://stac.example/v1/", &strict),
            Ok(Source::Api("https://stac.example/v1".into()))
        );
        assert_eq!(
            Source::checked("https://stac.example/catalog.json", &strict),
            Ok(Source::Static("https://stac.example/catalog.json".into()))
        );
        for bad in [
            "/etc",
            "/etc/passwd",
            "file:///etc/passwd",
            "catalog.json",
            "http://127.0.0.1:8080/stac",
            "http://169.254.169.254/latest/meta-data",
            "s3://bucket/catalog.json",
        ] {
            assert!(
                Source::checked(bad, &strict)
                    .unwrap_err()
                    .to_string()
                    .starts_with(crate::outbound::REFUSED),
                "{bad}"
            );
        }
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("catalog.json"), "{}").unwrap();
        let p = OutboundPolicy::default()
            .with_catalog_root(root.path())
            .unwrap();
        let expected = std::fs::canonicalize(root.path())
            .unwrap()
            .join("catalog.json");
        assert_eq!(
            Source::checked(root.path().to_str().unwrap(), &p),
            Ok(Source::Static(expected.to_string_lossy().into_owned()))
        );
    }
}
