//! Published outputs: metadata and legend, z/x/y PNG tiles from the web-mercator COG, downloads (the
//! UTM COG, the class map as GeoJSON polygons) and a STAC Collection per project with an Item per output.
//!
//! COGs are read from the object store into a local cache folder on first use (outputs are immutable
//! under their keys), then read per tile with GDAL.

use crate::api::auth::Actor;
use crate::api::error::{ApiError, ApiResult, ErrorCode};
use crate::api::{AppState, Page, PageQuery};
use groundwork_imagery::publish::{LegendClass, NODATA_U8, PROBABILITY_SCALE};
use groundwork_imagery::tiles::{TileStyle, render_tile_png};
use groundwork_store::outputs::{self, Output};
use groundwork_store::projects::{self, Project};
use object_store::ObjectStoreExt;
use serde_json::{Value, json};
use std::path::PathBuf;
use uuid::Uuid;

/// STAC version of the documents served.
pub const STAC_VERSION: &str = "1.1.0";
/// Extensions the Items use.
///
/// Raster v1.1.0 takes `"nan"` as a float band's nodata, and classification v1.1.0 names a class's
/// colour `color_hint` (v1.0.0 took only numbers, and `color-hint`).
/// Web-map-links v1.2.0 defines the `xyz` and `tilejson` links to the tiles.
pub const STAC_EXTENSIONS: [&str; 4] = [
    "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/classification/v1.1.0/schema.json",
    "https://stac-extensions.github.io/web-map-links/v1.2.0/schema.json",
];

/// A class map's legend, from its output row.
pub(crate) fn legend(o: &Output) -> Vec<LegendClass> {
    serde_json::from_value(o.classes.clone()).unwrap_or_default()
}

/// Where an output's tiles, downloads and STAC Item are served: its own routes, for members of its
/// organisation, or a share link's, for anyone holding the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataRoutes<'a> {
    /// `/api/v1/outputs/{id}/…` (behind authentication).
    Private,
    /// `/api/v1/shared/{secret}/…` (the secret of a share link).
    Shared(&'a str),
}

impl DataRoutes<'_> {
    /// The path the output's tiles and downloads are under, e.g. `/api/v1/outputs/{id}`.
    #[must_use]
    pub fn base(&self, id: Uuid) -> String {
        match self {
            Self::Private => format!("/api/v1/outputs/{id}"),
            Self::Shared(secret) => format!("/api/v1/shared/{secret}"),
        }
    }

    /// The path of the output's STAC Item.
    #[must_use]
    pub fn stac_item(&self, o: &Output) -> String {
        match self {
            Self::Private => format!("/api/v1/projects/{}/stac/items/{}", o.project_id, o.id),
            Self::Shared(secret) => format!("/api/v1/shared/{secret}/stac/item.json"),
        }
    }
}

/// An output with its legend and its links under `routes`.
fn describe(o: &Output, routes: DataRoutes<'_>) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or_default();
    let legend: Vec<Value> = match o.kind.as_str() {
        "class" => legend(o)
            .iter()
            .map(|c| json!({"value": c.id, "name": c.name, "color": c.color}))
            .collect(),
        "probability" => legend(o)
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"band": i + 1, "name": c.name, "color": c.color, "scale": 1.0 / PROBABILITY_SCALE}))
            .collect(),
        _ => vec![json!({"ramp": "viridis", "min": o.stats.get("min"), "max": o.stats.get("max")})],
    };
    let base = routes.base(o.id);
    if let Some(m) = v.as_object_mut() {
        m.insert("legend".into(), json!(legend));
        m.insert(
            "links".into(),
            json!({
                "tiles": format!("{base}/tiles/{{z}}/{{x}}/{{y}}.png"),
                "download_tif": format!("{base}/download.tif"),
                // A map across UTM zones: each zone's own map in its own CRS.
                "download_zones": match routes {
                    DataRoutes::Private => zones_of(o)
                        .iter()
                        .map(|(epsg, _)| json!({"epsg": epsg, "href": format!("{base}/download.tif?zone={epsg}")}))
                        .collect::<Vec<_>>(),
                    DataRoutes::Shared(_) => Vec::new(),
                },
                "download_geojson": (o.kind == "class").then(|| format!("{base}/download.geojson")),
                "stac_item": routes.stac_item(o),
            }),
        );
    }
    v
}

/// An output: metadata, legend and links.
pub async fn get_output(state: &AppState, actor: &Actor, id: Uuid) -> ApiResult<Value> {
    get_output_for_org(state, actor.org_id, id, DataRoutes::Private).await
}

/// An output of `org_id`: metadata, legend and links under `routes`.
pub async fn get_output_for_org(
    state: &AppState,
    org_id: Uuid,
    id: Uuid,
    routes: DataRoutes<'_>,
) -> ApiResult<Value> {
    let o = outputs::get(&state.pool, org_id, id).await?;
    Ok(describe(&o, routes))
}

/// The TileJSON 3.0.0 document of an output's tiles (what Leaflet, OpenLayers, MapLibre and QGIS
/// read): the tile URL template, zoom range, bounds and centre; `root` is the server's URL.
pub async fn tilejson(state: &AppState, actor: &Actor, id: Uuid, root: &str) -> ApiResult<Value> {
    tilejson_for_org(state, actor.org_id, id, root, DataRoutes::Private).await
}

/// [`tilejson`] of an output of `org_id`, its tiles under `routes`.
pub async fn tilejson_for_org(
    state: &AppState,
    org_id: Uuid,
    id: Uuid,
    root: &str,
    routes: DataRoutes<'_>,
) -> ApiResult<Value> {
    let o = outputs::get(&state.pool, org_id, id).await?;
    let project = projects::get(&state.pool, org_id, o.project_id).await?;
    let b = o.bbox;
    Ok(json!({
        "tilejson": "3.0.0",
        "name": format!("{} — {}", project.name, o.kind),
        "tiles": [format!("{root}{}/tiles/{{z}}/{{x}}/{{y}}.png", routes.base(id))],
        "scheme": "xyz",
        "minzoom": o.min_zoom,
        "maxzoom": o.max_zoom,
        "bounds": b,
        "center": [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, o.max_zoom.min(o.min_zoom.max(12))],
    }))
}

/// A project's outputs, newest first, each with its legend and links.
pub async fn list_outputs(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    q: &PageQuery,
) -> ApiResult<Page<Value>> {
    projects::get(&state.pool, actor.org_id, project_id).await?;
    let limit = q.limit()?;
    let items = outputs::list(
        &state.pool,
        actor.org_id,
        project_id,
        q.cursor()?,
        limit + 1,
    )
    .await?;
    let page = Page::new(items, limit, |o| o.id);
    Ok(Page {
        items: page
            .items
            .iter()
            .map(|o| describe(o, DataRoutes::Private))
            .collect(),
        next_cursor: page.next_cursor,
    })
}

/// The local copy of an object, from the server's file cache (fetched once while it stays cached;
/// keys are never overwritten).
pub(crate) async fn local_copy(state: &AppState, key: &str) -> ApiResult<PathBuf> {
    let cache = state.cache.clone();
    let k = key.to_owned();
    if let Some(path) = tokio::task::spawn_blocking(move || cache.get(&k))
        .await
        .map_err(|e| ApiError::internal(&e))?
    {
        return Ok(path);
    }
    let objects = state
        .objects
        .clone()
        .ok_or_else(|| ApiError::internal(&"the server has no object store"))?;
    let object = object_store::path::Path::from(key);
    let bytes = async { objects.get(&object).await?.bytes().await }
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let cache = state.cache.clone();
    let k = key.to_owned();
    tokio::task::spawn_blocking(move || cache.put(&k, &bytes))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::internal(&e))
}

/// The z/x/y tile of an output as PNG (transparent outside its data); `band` picks a probability
/// band (1-based, default 1).
pub async fn tile_png(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    zxy: (u8, u32, u32),
    band: Option<usize>,
) -> ApiResult<Vec<u8>> {
    tile_png_for_org(state, actor.org_id, id, zxy, band).await
}

/// [`tile_png`] of an output of `org_id`.
pub async fn tile_png_for_org(
    state: &AppState,
    org_id: Uuid,
    id: Uuid,
    (z, x, y): (u8, u32, u32),
    band: Option<usize>,
) -> ApiResult<Vec<u8>> {
    let bad = |m: String| ApiError::new(ErrorCode::InvalidTile, m);
    if z > 24 {
        return Err(bad(format!("zoom {z} is above 24")));
    }
    if u64::from(x) >= 1u64 << z || u64::from(y) >= 1u64 << z {
        return Err(bad(format!("tile {z}/{x}/{y} does not exist")));
    }
    let o = outputs::get(&state.pool, org_id, id).await?;
    let style = match o.kind.as_str() {
        "class" => TileStyle::Classes(legend(&o).iter().map(|c| (c.id, c.rgb())).collect()),
        "probability" => {
            let band = band.unwrap_or(1);
            if band == 0 || band > usize::try_from(o.bands).unwrap_or(0) {
                return Err(bad(format!("band must be 1–{}", o.bands)));
            }
            TileStyle::Ramp {
                band,
                min: 0.0,
                max: PROBABILITY_SCALE,
                nodata: Some(f32::from(NODATA_U8)),
            }
        }
        _ => TileStyle::Ramp {
            band: band.unwrap_or(1).max(1),
            min: o.stats.get("min").and_then(Value::as_f64).unwrap_or(0.0) as f32,
            max: o.stats.get("max").and_then(Value::as_f64).unwrap_or(1.0) as f32,
            nodata: None,
        },
    };
    let path = local_copy(state, &o.web_key).await?;
    let png = tokio::task::spawn_blocking(move || render_tile_png(&path, z, x, y, &style))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::internal(&e))?;
    Ok(png)
}

/// The output's COG in its UTM CRS, or with `zone` its own map of that UTM zone (a map across
/// zones has one per zone): the output and the local copy of the file.
pub async fn utm_cog(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    zone: Option<u32>,
) -> ApiResult<(Output, PathBuf)> {
    utm_cog_for_org(state, actor.org_id, id, zone).await
}

/// The zones of a map across UTM zones and their own COGs' keys (`stats.zones`).
fn zones_of(o: &Output) -> Vec<(u32, String)> {
    o.stats["zones"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|z| {
            Some((
                u32::try_from(z["epsg"].as_u64()?).ok()?,
                z["key"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// [`utm_cog`] of an output of `org_id`.
pub async fn utm_cog_for_org(
    state: &AppState,
    org_id: Uuid,
    id: Uuid,
    zone: Option<u32>,
) -> ApiResult<(Output, PathBuf)> {
    let o = outputs::get(&state.pool, org_id, id).await?;
    let key = match zone {
        None => o.utm_key.clone(),
        // One zone's own map of an area across zones.
        Some(zone) => {
            let keys = groundwork_types::keys::ProjectKeys::new(o.org_id, o.project_id);
            zones_of(&o)
                .into_iter()
                .find(|(epsg, _)| *epsg == zone)
                .map(|(_, key)| key)
                .filter(|key| keys.owns(key))
                .ok_or_else(|| {
                    ApiError::not_found(&format!(
                        "a separate map of EPSG:{zone} (only maps across UTM zones have one per zone)"
                    ))
                })?
        }
    };
    let path = local_copy(state, &key).await?;
    Ok((o, path))
}

/// A class map as polygons (a GeoJSON FeatureCollection in EPSG:4326); other outputs are refused.
pub async fn class_polygons(state: &AppState, actor: &Actor, id: Uuid) -> ApiResult<Value> {
    class_polygons_for_org(state, actor.org_id, id).await
}

/// [`class_polygons`] of an output of `org_id`.
pub async fn class_polygons_for_org(state: &AppState, org_id: Uuid, id: Uuid) -> ApiResult<Value> {
    let o = outputs::get(&state.pool, org_id, id).await?;
    if o.kind != "class" {
        return Err(ApiError::new(
            ErrorCode::NotAClassMap,
            format!(
                "only class maps are vectorised; this output holds {}",
                o.kind
            ),
        ));
    }
    // Polygonising a large map takes a while: the result is cached beside the raster's copy (an
    // output's raster and legend never change).
    let cache_key = format!("{}.polygons.geojson", o.utm_key);
    let cache = state.cache.clone();
    let k = cache_key.clone();
    let cached = tokio::task::spawn_blocking(move || -> Option<Value> {
        let path = cache.get(&k)?;
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    if let Some(fc) = cached {
        return Ok(fc);
    }
    let path = local_copy(state, &o.utm_key).await?;
    let legend = legend(&o);
    let cache = state.cache.clone();
    let fc = tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
        let fc = groundwork_imagery::publish::polygonize_classes(&path, &legend)?;
        // A cache that cannot be written costs the next request the same work, nothing more.
        let _ = cache.put(&cache_key, &serde_json::to_vec(&fc)?);
        Ok(fc)
    })
    .await
    .map_err(|e| ApiError::internal(&e))?
    .map_err(|e| ApiError::internal(&e))?;
    Ok(fc)
}

fn collection_id(project: &Project) -> String {
    format!("groundwork-{}", project.id)
}

fn bbox_polygon(b: [f64; 4]) -> Value {
    json!({"type": "Polygon", "coordinates": [[[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]], [b[0], b[1]]]]})
}

/// Pages of licences projects commonly choose; other SPDX identifiers link to SPDX's page.
const LICENSE_PAGES: [(&str, &str); 8] = [
    ("CC-BY-4.0", "https://creativecommons.org/licenses/by/4.0/"),
    (
        "CC-BY-SA-4.0",
        "https://creativecommons.org/licenses/by-sa/4.0/",
    ),
    (
        "CC-BY-NC-4.0",
        "https://creativecommons.org/licenses/by-nc/4.0/",
    ),
    (
        "CC-BY-NC-SA-4.0",
        "https://creativecommons.org/licenses/by-nc-sa/4.0/",
    ),
    (
        "CC0-1.0",
        "https://creativecommons.org/publicdomain/zero/1.0/",
    ),
    ("ODbL-1.0", "https://opendatacommons.org/licenses/odbl/1-0/"),
    ("PDDL-1.0", "https://opendatacommons.org/licenses/pddl/1-0/"),
    ("ODC-By-1.0", "https://opendatacommons.org/licenses/by/1-0/"),
];

/// Where the terms of the project's licence are: its own link, or the licence's page.
#[must_use]
pub fn license_href(project: &Project) -> String {
    if let Some(url) = &project.license_url {
        return url.clone();
    }
    LICENSE_PAGES
        .iter()
        .find(|(id, _)| id.eq_ignore_ascii_case(&project.license))
        .map_or_else(
            || format!("https://spdx.org/licenses/{}.html", project.license),
            |(_, url)| (*url).to_string(),
        )
}

/// STAC's `rel: license` link to the licence's terms.
fn license_link(project: &Project) -> Value {
    json!({"rel": "license", "href": license_href(project), "type": "text/html",
           "title": format!("Licence: {}", project.license)})
}

/// Who made the data: the imagery's producers (whose terms ask for credit) and the processor.
fn providers(project: &Project) -> Vec<Value> {
    use groundwork_imagery::Modality;
    let years = if project.start.format("%Y").to_string() == project.end.format("%Y").to_string() {
        project.start.format("%Y").to_string()
    } else {
        format!(
            "{}–{}",
            project.start.format("%Y"),
            project.end.format("%Y")
        )
    };
    let mut out = Vec::new();
    if project
        .modalities
        .iter()
        .any(|m| matches!(m, Modality::Sentinel2L2a | Modality::Sentinel1))
    {
        out.push(json!({
            "name": format!("Contains modified Copernicus Sentinel data {years}"),
            "roles": ["producer", "licensor"],
            "url": "https://sentinels.copernicus.eu/",
        }));
    }
    if project.modalities.contains(&Modality::Landsat) {
        out.push(json!({
            "name": "Landsat imagery courtesy of the U.S. Geological Survey",
            "roles": ["producer", "licensor"],
            "url": "https://www.usgs.gov/landsat-missions",
        }));
    }
    out.push(json!({
        "name": "Groundwork (OlmoEarth foundation model)",
        "roles": ["processor"],
        "description": "Mapped with a model fine-tuned from the OlmoEarth encoder; see groundwork:encoder_weights.",
    }));
    out
}

/// The STAC Item of an output; `root` is the server's URL (`http://host:port`), links are absolute.
#[must_use]
pub fn stac_item(root: &str, project: &Project, o: &Output) -> Value {
    let base = format!("{root}/api/v1/projects/{}/stac", project.id);
    let id = o.id;
    let lineage = &o.lineage;
    let resolution = lineage
        .get("resolution_m")
        .and_then(Value::as_f64)
        .unwrap_or(10.0);
    let band = |_: usize| -> Value {
        match o.kind.as_str() {
            "class" => {
                json!({"data_type": "uint8", "nodata": NODATA_U8, "spatial_resolution": resolution})
            }
            "probability" => {
                json!({"data_type": "uint8", "nodata": NODATA_U8, "scale": 1.0 / PROBABILITY_SCALE,
                                   "offset": 0.0, "spatial_resolution": resolution})
            }
            _ => json!({"data_type": "float32", "nodata": "nan", "spatial_resolution": resolution}),
        }
    };
    let bands: Vec<Value> = (0..usize::try_from(o.bands).unwrap_or(1))
        .map(band)
        .collect();
    let mut data = json!({
        "href": format!("{root}/api/v1/outputs/{id}/download.tif"),
        "type": "image/tiff; application=geotiff; profile=cloud-optimized",
        "title": format!("{} raster (EPSG:{})", o.kind, o.epsg),
        "roles": ["data"],
        "proj:epsg": o.epsg,
        "proj:shape": [o.height, o.width],
        "raster:bands": bands,
    });
    // What each probability band holds, in STAC 1.1's own `bands` (raster v1.1.0 has no description).
    if o.kind == "probability"
        && let Some(m) = data.as_object_mut()
    {
        let described: Vec<Value> = legend(o)
            .iter()
            .map(|c| {
                json!({"name": format!("p_{}", c.id), "description": format!("probability of {} (0–1 after scale)", c.name)})
            })
            .collect();
        if !described.is_empty() {
            m.insert("bands".into(), json!(described));
        }
    }
    if o.kind == "class"
        && let Some(m) = data.as_object_mut()
    {
        let classes: Vec<Value> = legend(o)
            .iter()
            .map(|c| {
                json!({"value": c.id, "name": c.name, "description": c.name,
                            "color_hint": c.color.trim_start_matches('#').to_uppercase()})
            })
            .collect();
        if !classes.is_empty() {
            m.insert("classification:classes".into(), json!(classes));
        }
    }
    let mut assets = serde_json::Map::new();
    assets.insert("data".into(), data);
    if o.kind == "class" {
        assets.insert(
            "polygons".into(),
            json!({"href": format!("{root}/api/v1/outputs/{id}/download.geojson"), "type": "application/geo+json",
                   "title": "class map as polygons (EPSG:4326)", "roles": ["data"]}),
        );
    }
    let model = lineage.get("model").cloned().unwrap_or(Value::Null);
    let project_info = lineage.get("project").cloned().unwrap_or(Value::Null);
    // The map describes the imagery period, not the moment it was published: `datetime` is null and
    // the period is `start_datetime`–`end_datetime` (STAC's rule for a range).
    let mut properties = json!({
        "datetime": null,
        "start_datetime": format!("{}T00:00:00Z", project.start),
        "end_datetime": format!("{}T23:59:59Z", project.end),
        "created": o.created_at.to_rfc3339(),
        "title": format!("{} — {}", project.name, o.kind),
        "proj:epsg": o.epsg,
        "proj:shape": [o.height, o.width],
        "groundwork:kind": o.kind,
        "groundwork:run_id": o.run_id,
        "groundwork:task": project.task,
        "groundwork:model_size": project_info.get("model_size").cloned().unwrap_or(json!(project.model_size)),
        "groundwork:model": model,
        "groundwork:checkpoint_sha256": model.get("checkpoint_sha256").cloned().unwrap_or(Value::Null),
        "groundwork:label_set_version": lineage.get("label_set_version").cloned().unwrap_or(Value::Null),
        "groundwork:metrics": lineage.get("metrics").cloned().unwrap_or(Value::Null),
        "groundwork:input_scenes": lineage.get("input_scenes").cloned().unwrap_or(json!([])),
        "groundwork:tiles": format!("{root}/api/v1/outputs/{id}/tiles/{{z}}/{{x}}/{{y}}.png"),
        "groundwork:zoom": [o.min_zoom, o.max_zoom],
    });
    if let (Some(p), Some(extra)) = (properties.as_object_mut(), lineage.as_object()) {
        for (k, v) in extra {
            if !matches!(
                k.as_str(),
                "model" | "project" | "input_scenes" | "label_set_version" | "metrics"
            ) {
                p.insert(format!("groundwork:{k}"), v.clone());
            }
        }
    }
    if let Some(p) = properties.as_object_mut() {
        p.insert("license".into(), json!(project.license));
        p.insert("providers".into(), json!(providers(project)));
        // Which encoder weights the model started from: a released checkpoint or random weights.
        let weights = lineage
            .get("initialised_from")
            .and_then(Value::as_str)
            .or_else(|| model.get("initialised_from").and_then(Value::as_str));
        p.insert(
            "groundwork:encoder_weights".into(),
            json!(weights.map(|w| if w == "random" {
                "random initialisation (no pretrained checkpoint)".to_string()
            } else {
                w.to_string()
            })),
        );
    }
    json!({
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": STAC_EXTENSIONS,
        "id": id.to_string(),
        "collection": collection_id(project),
        // The outline of the data itself; outputs published before footprints were recorded have
        // only their bounds.
        "geometry": o.footprint.clone().unwrap_or_else(|| bbox_polygon(o.bbox)),
        "bbox": o.bbox,
        "properties": properties,
        "assets": assets,
        "links": [
            {"rel": "self", "href": format!("{base}/items/{id}"), "type": "application/geo+json"},
            {"rel": "collection", "href": base, "type": "application/json"},
            {"rel": "parent", "href": base, "type": "application/json"},
            {"rel": "root", "href": base, "type": "application/json"},
            license_link(project),
            {"rel": "xyz", "href": format!("{root}/api/v1/outputs/{id}/tiles/{{z}}/{{x}}/{{y}}.png"),
             "type": "image/png", "title": format!("{} tiles (XYZ)", o.kind)},
            {"rel": "tilejson", "href": format!("{root}/api/v1/outputs/{id}/tilejson.json"),
             "type": "application/json", "title": format!("{} tiles (TileJSON)", o.kind)},
        ],
    })
}

/// The STAC Collection of a project's outputs; `root` as for [`stac_item`].
#[must_use]
pub fn stac_collection(root: &str, project: &Project, items: &[Output]) -> Value {
    let base = format!("{root}/api/v1/projects/{}/stac", project.id);
    let mut bbox = project.bbox;
    for o in items {
        bbox = [
            bbox[0].min(o.bbox[0]),
            bbox[1].min(o.bbox[1]),
            bbox[2].max(o.bbox[2]),
            bbox[3].max(o.bbox[3]),
        ];
    }
    let mut links = vec![
        json!({"rel": "self", "href": base, "type": "application/json"}),
        json!({"rel": "root", "href": base, "type": "application/json"}),
        license_link(project),
        json!({"rel": "items", "href": format!("{base}/items"), "type": "application/geo+json"}),
    ];
    links.extend(items.iter().map(|o| {
        json!({"rel": "item", "href": format!("{base}/items/{}", o.id), "type": "application/geo+json"})
    }));
    json!({
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [],
        "id": collection_id(project),
        "title": project.name,
        "description": if project.description.trim().is_empty() {
            format!("Prediction outputs of the Groundwork project {}", project.name)
        } else { project.description.clone() },
        "license": project.license,
        "providers": providers(project),
        "extent": {
            "spatial": {"bbox": [bbox]},
            "temporal": {"interval": [[format!("{}T00:00:00Z", project.start), format!("{}T23:59:59Z", project.end)]]},
        },
        "links": links,
    })
}

async fn all_outputs(state: &AppState, org: Uuid, project: Uuid) -> ApiResult<Vec<Output>> {
    Ok(outputs::list(&state.pool, org, project, None, 10_000).await?)
}

/// The project's STAC Collection; `root` is the server's URL as the client addressed it.
pub async fn project_stac_collection(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    root: &str,
) -> ApiResult<Value> {
    let project = projects::get(&state.pool, actor.org_id, project_id).await?;
    let items = all_outputs(state, actor.org_id, project_id).await?;
    Ok(stac_collection(root, &project, &items))
}

/// The project's STAC Items as a FeatureCollection.
pub async fn project_stac_items(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    root: &str,
) -> ApiResult<Value> {
    let project = projects::get(&state.pool, actor.org_id, project_id).await?;
    let items = all_outputs(state, actor.org_id, project_id).await?;
    let mut features = Vec::with_capacity(items.len());
    for o in &items {
        let mut item = stac_item(root, &project, o);
        add_assessment_assets(state, &mut item, o, root).await?;
        features.push(item);
    }
    let base = format!("{root}/api/v1/projects/{}/stac", project.id);
    Ok(json!({
        "type": "FeatureCollection",
        "features": features,
        "links": [{"rel": "self", "href": format!("{base}/items"), "type": "application/geo+json"},
                  {"rel": "root", "href": base, "type": "application/json"},
                  {"rel": "collection", "href": base, "type": "application/json"}],
    }))
}

/// One STAC Item of the project (an output of another project is not found).
pub async fn project_stac_item(
    state: &AppState,
    actor: &Actor,
    (project_id, item): (Uuid, Uuid),
    root: &str,
) -> ApiResult<Value> {
    let project = projects::get(&state.pool, actor.org_id, project_id).await?;
    let o = outputs::get(&state.pool, actor.org_id, item).await?;
    if o.project_id != project.id {
        return Err(ApiError::not_found("output"));
    }
    let mut item = stac_item(root, &project, &o);
    add_assessment_assets(state, &mut item, &o, root).await?;
    Ok(item)
}

/// Adds what members may download to a class map's Item: the offline package, and the newest finished
/// accuracy assessment (every sample unit answered) as the report in JSON and CSV, each with the
/// estimates and their confidence intervals.
async fn add_assessment_assets(
    state: &AppState,
    item: &mut Value,
    o: &Output,
    root: &str,
) -> ApiResult<()> {
    if o.kind != "class" {
        return Ok(());
    }
    // The offline package (members' route: a share link's Item does not carry it).
    if let Some(assets) = item["assets"].as_object_mut() {
        assets.insert(
            "package".into(),
            json!({"href": format!("{root}/api/v1/outputs/{}/package.gpkg", o.id),
                   "type": super::package::MEDIA_TYPE, "roles": ["data"],
                   "title": "offline package: class map and imagery tiles with class polygons (GeoPackage)"}),
        );
    }
    for a in groundwork_store::assessments::list_for_output(&state.pool, o.org_id, o.id).await? {
        let (drawn, labelled, unsure) =
            groundwork_store::assessments::progress(&state.pool, a.id).await?;
        if drawn == 0 || labelled == 0 || labelled + unsure < drawn {
            continue;
        }
        let report = format!("{root}/api/v1/assessments/{}/report", a.id);
        if let Some(assets) = item["assets"].as_object_mut() {
            assets.insert(
                "accuracy_assessment".into(),
                json!({"href": report, "type": "application/json", "roles": ["metadata"],
                       "title": "Accuracy assessment and error-adjusted areas with 95 % confidence intervals (Olofsson et al. 2014)"}),
            );
            assets.insert(
                "accuracy_assessment_csv".into(),
                json!({"href": format!("{report}.csv"), "type": "text/csv", "roles": ["metadata"],
                       "title": "Accuracy assessment and error-adjusted areas (CSV)"}),
            );
        }
        break;
    }
    Ok(())
}
