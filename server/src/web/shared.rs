//! The page a read-only share link opens (`/shared/{secret}`), without an account: the output's map
//! (its tiles under the link), its legend and its downloads under the link. No imagery (that needs an
//! account), no lineage links into the project.
//!
//! An unknown, revoked or expired link is the same "not found" page. The page is never stored
//! (`Cache-Control: no-store`, like other pages whose address holds a secret), so a revoked link stops
//! opening it at once; the data it draws may stay in caches for
//! [`crate::service::shares::SHARED_MAX_AGE_SECS`].

use super::error::PageResult;
use super::results::{LegendRow, Ramp, legend_and_ramp};
use super::{Layout, when};
use crate::api::AppState;
use crate::api::extract::Path;
use crate::service::outputs::DataRoutes;
use crate::service::shares as service;
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use groundwork_store::outputs::Output;
use groundwork_store::projects::Project;

#[derive(Template, WebTemplate)]
#[template(path = "shared_output.html")]
struct SharedPage {
    layout: Layout,
    output: Output,
    project: Project,
    created: String,
    /// When the link expires; empty when only a revocation ends it.
    expires: String,
    tiles_url: String,
    bounds_json: String,
    legend: Vec<LegendRow>,
    ramp: Option<Ramp>,
    tif_url: String,
    geojson_url: String,
    stac_url: String,
    tilejson_url: String,
}

/// `GET /shared/{secret}`: the shared output's map, legend and downloads, for anyone with the link.
pub async fn show(
    State(state): State<AppState>,
    Path(secret): Path<String>,
) -> PageResult<Response> {
    let (shared, output, project) = service::shared_output_row(&state, &secret).await?;
    let routes = DataRoutes::Shared(&secret);
    let base = routes.base(output.id);
    let (legend, ramp) = legend_and_ramp(&output);
    let [w, s, e, n] = output.bbox;
    let mut layout = Layout::bare(format!("Shared map · {}", project.name));
    layout.basemap_url = state.basemap_url.clone().unwrap_or_default();
    layout.basemap_attribution = state.basemap_attribution.clone().unwrap_or_default();
    let page = SharedPage {
        layout,
        created: when(&output.created_at),
        expires: shared.expires_at.as_ref().map(when).unwrap_or_default(),
        tiles_url: format!("{base}/tiles/{{z}}/{{x}}/{{y}}.png"),
        bounds_json: serde_json::json!([w, s, e, n]).to_string(),
        legend,
        ramp,
        tif_url: format!("{base}/download.tif"),
        geojson_url: if output.kind == "class" {
            format!("{base}/download.geojson")
        } else {
            String::new()
        },
        stac_url: routes.stac_item(&output),
        tilejson_url: format!("{base}/tilejson.json"),
        output,
        project,
    };
    let mut resp = page.into_response();
    resp.headers_mut().insert(
        HeaderName::from_static("x-robots-tag"),
        HeaderValue::from_static("noindex, nofollow"),
    );
    Ok(resp)
}
