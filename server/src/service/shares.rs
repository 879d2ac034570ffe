//! Read-only share links of published outputs: members (the `member` role or higher) make a revocable,
//! optionally expiring link to one output; anyone holding it opens that output's map page, tiles,
//! downloads, TileJSON and STAC Item without an account, until the link is revoked or expires.
//!
//! The link's secret (`gws_` and 64 hex digits, 256 random bits) is shown once, when the link is made;
//! the database keeps only its SHA-256 digest ([`groundwork_store::shares`]). An unknown, revoked or
//! expired secret is the same 404. Shared data may be kept by shared caches for
//! [`SHARED_MAX_AGE_SECS`], so a revocation reaches every client within that time.

use crate::api::AppState;
use crate::api::accounts::Items;
use crate::api::auth::{Actor, Role};
use crate::api::error::{ApiError, ApiResult, FieldError};
use crate::service::outputs::{self as out, DataRoutes, stac_item};
use chrono::{DateTime, Utc};
use groundwork_store::outputs::{self, Output};
use groundwork_store::projects;
use groundwork_store::shares::{self, ShareLink, Shared};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::PathBuf;
use uuid::Uuid;

/// How long browsers and shared caches may keep a shared response (`Cache-Control: public,
/// max-age=…`): short, so that a revoked or expired link stops serving everywhere within five minutes,
/// while a map viewed by many people still draws its tiles from caches.
pub const SHARED_MAX_AGE_SECS: u64 = 300;

/// The longest lifetime a link may be given, in days (about ten years).
pub const MAX_EXPIRY_DAYS: i64 = 3650;

/// Body of `POST /api/v1/outputs/{id}/shares`; every field is optional.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateShare {
    /// What the link is for (at most 100 characters), e.g. `partners' workshop`.
    #[serde(default)]
    pub label: Option<String>,
    /// The link stops working after this many days, 1–3650 (default: only when revoked).
    #[serde(default)]
    pub expires_in_days: Option<i64>,
    /// The link stops working at this moment (RFC 3339, in the future); not with `expires_in_days`.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A new share link; its secret is shown only here.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewShare {
    /// The link's secret (`gws_…`).
    pub secret: String,
    /// The map page anyone with the link opens: `{server}/shared/{secret}`.
    pub url: String,
    /// The shared output as JSON, with links to its tiles, downloads and STAC Item:
    /// `{server}/api/v1/shared/{secret}`.
    pub api_url: String,
    /// The stored link.
    pub share_link: ShareLink,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::validation(vec![FieldError {
        field: field.into(),
        message: message.into(),
    }])
}

/// When a link made with `body` expires (none: only when revoked), or why the body is refused.
fn expiry(body: &CreateShare, now: DateTime<Utc>) -> ApiResult<Option<DateTime<Utc>>> {
    match (body.expires_in_days, body.expires_at) {
        (Some(_), Some(_)) => Err(invalid(
            "expires_at",
            "give expires_in_days or expires_at, not both",
        )),
        (None, None) => Ok(None),
        (Some(d), None) if (1..=MAX_EXPIRY_DAYS).contains(&d) => {
            Ok(Some(now + chrono::Duration::days(d)))
        }
        (Some(_), None) => Err(invalid(
            "expires_in_days",
            format!("must be 1–{MAX_EXPIRY_DAYS}"),
        )),
        (None, Some(at)) if at <= now => Err(invalid("expires_at", "must be in the future")),
        (None, Some(at)) if at > now + chrono::Duration::days(MAX_EXPIRY_DAYS) => Err(invalid(
            "expires_at",
            format!("must be within {MAX_EXPIRY_DAYS} days"),
        )),
        (None, Some(at)) => Ok(Some(at)),
    }
}

/// Makes a read-only share link of an output of the actor's organisation (members and above); `root`
/// is the server's URL, for the link's absolute address.
pub async fn create(
    state: &AppState,
    actor: &Actor,
    output_id: Uuid,
    body: CreateShare,
    root: &str,
) -> ApiResult<NewShare> {
    actor.require(Role::Member)?;
    let label = body.label.as_deref().unwrap_or_default().trim().to_owned();
    if label.chars().count() > 100 {
        return Err(invalid("label", "a label may have at most 100 characters"));
    }
    let expires_at = expiry(&body, Utc::now())?;
    let (secret, share_link) = shares::create(
        &state.pool,
        &actor.who(),
        (actor.org_id, output_id),
        &label,
        expires_at,
    )
    .await?;
    Ok(NewShare {
        url: format!("{root}{}", page_path(&secret)),
        api_url: format!("{root}{}", DataRoutes::Shared(&secret).base(output_id)),
        secret,
        share_link,
    })
}

/// The share links of an output of the actor's organisation, newest first (never their secrets).
pub async fn list(state: &AppState, actor: &Actor, output_id: Uuid) -> ApiResult<Items<ShareLink>> {
    outputs::get(&state.pool, actor.org_id, output_id).await?;
    Ok(Items {
        items: shares::list(&state.pool, actor.org_id, output_id).await?,
    })
}

/// Revokes a share link of an output of the actor's organisation (members and above): from now on it
/// opens nothing (caches may still hold its answers for [`SHARED_MAX_AGE_SECS`]).
pub async fn revoke(
    state: &AppState,
    actor: &Actor,
    output_id: Uuid,
    share_id: Uuid,
) -> ApiResult<ShareLink> {
    actor.require(Role::Member)?;
    Ok(shares::revoke(
        &state.pool,
        &actor.who(),
        (actor.org_id, output_id),
        share_id,
    )
    .await?)
}

/// The path of the map page of a share link.
#[must_use]
pub fn page_path(secret: &str) -> String {
    format!("/shared/{secret}")
}

/// What a live share link opens; an unknown, revoked or expired secret is the same 404.
pub async fn resolve(state: &AppState, secret: &str) -> ApiResult<Shared> {
    shares::resolve(&state.pool, secret)
        .await?
        .ok_or_else(|| ApiError::not_found("share link"))
}

/// What a live share link opens: the link, the output and its project (for pages).
pub async fn shared_output_row(
    state: &AppState,
    secret: &str,
) -> ApiResult<(Shared, Output, projects::Project)> {
    let s = resolve(state, secret).await?;
    let o = outputs::get(&state.pool, s.org_id, s.output_id).await?;
    let project = projects::get(&state.pool, s.org_id, o.project_id).await?;
    Ok((s, o, project))
}

/// The shared output as JSON: what `GET /api/v1/outputs/{id}` answers members, less the object-store
/// keys and the organisation, with links under the share link's routes.
pub async fn shared_output(state: &AppState, secret: &str) -> ApiResult<Value> {
    let s = resolve(state, secret).await?;
    let routes = DataRoutes::Shared(secret);
    let mut v = out::get_output_for_org(state, s.org_id, s.output_id, routes).await?;
    scrub_object_keys(&mut v);
    if let Some(m) = v.as_object_mut() {
        for internal in ["org_id", "utm_key", "web_key"] {
            m.remove(internal);
        }
        if let Some(links) = m.get_mut("links").and_then(Value::as_object_mut) {
            links.insert(
                "tilejson".into(),
                json!(format!("{}/tilejson.json", routes.base(s.output_id))),
            );
            links.insert("page".into(), json!(page_path(secret)));
        }
    }
    Ok(v)
}

/// The TileJSON document of the shared output, its tiles under the share link.
pub async fn shared_tilejson(state: &AppState, secret: &str, root: &str) -> ApiResult<Value> {
    let s = resolve(state, secret).await?;
    out::tilejson_for_org(
        state,
        s.org_id,
        s.output_id,
        root,
        DataRoutes::Shared(secret),
    )
    .await
}

/// A z/x/y PNG tile of the shared output.
pub async fn shared_tile(
    state: &AppState,
    secret: &str,
    zxy: (u8, u32, u32),
    band: Option<usize>,
) -> ApiResult<Vec<u8>> {
    let s = resolve(state, secret).await?;
    out::tile_png_for_org(state, s.org_id, s.output_id, zxy, band).await
}

/// The shared output's UTM COG (the output and the local copy of the file).
pub async fn shared_cog(state: &AppState, secret: &str) -> ApiResult<(Output, PathBuf)> {
    let s = resolve(state, secret).await?;
    out::utm_cog_for_org(state, s.org_id, s.output_id, None).await
}

/// The shared class map as GeoJSON polygons.
pub async fn shared_polygons(state: &AppState, secret: &str) -> ApiResult<Value> {
    let s = resolve(state, secret).await?;
    out::class_polygons_for_org(state, s.org_id, s.output_id).await
}

/// The STAC Item of the shared output, its hrefs under the share link ([`share_stac_item`]).
pub async fn shared_stac_item(state: &AppState, secret: &str, root: &str) -> ApiResult<Value> {
    let (_, o, project) = shared_output_row(state, secret).await?;
    Ok(share_stac_item(
        stac_item(root, &project, &o),
        root,
        o.id,
        secret,
    ))
}

/// An output's STAC Item (as [`stac_item`] writes it for members) rewritten for a share link: every
/// `{root}/api/v1/outputs/{id}/…` href (data, polygons, tiles, TileJSON) moves under
/// `{root}/api/v1/shared/{secret}/…`, `self` is the shared Item, and links or assets that still point
/// at routes needing an account (the project's Collection) are left out, with the `collection` field
/// (STAC allows it only beside a `collection` link).
#[must_use]
pub fn share_stac_item(mut item: Value, root: &str, output_id: Uuid, secret: &str) -> Value {
    scrub_object_keys(&mut item);
    let private = format!("{root}/api/v1/outputs/{output_id}/");
    let shared = format!("{root}/api/v1/shared/{secret}/");
    rewrite_prefix(&mut item, &private, &shared);
    let api = format!("{root}/api/");
    let needs_account = |v: &Value| {
        v.get("href")
            .and_then(Value::as_str)
            .is_some_and(|h| h.starts_with(&api) && !h.starts_with(&shared))
    };
    if let Some(m) = item.as_object_mut() {
        m.remove("collection");
        if let Some(links) = m.get_mut("links").and_then(Value::as_array_mut) {
            links.retain(|l| {
                l.get("rel").and_then(Value::as_str) != Some("self") && !needs_account(l)
            });
            links.insert(
                0,
                json!({"rel": "self", "href": format!("{shared}stac/item.json"), "type": "application/geo+json"}),
            );
        }
        if let Some(assets) = m.get_mut("assets").and_then(Value::as_object_mut) {
            assets.retain(|_, a| !needs_account(a));
        }
    }
    item
}

/// Removes, at any depth, every field whose value is an object-store key (`orgs/{org}/…`): the lineage
/// of older outputs carries model keys inside its metrics, which name the organisation and the store's
/// layout to whoever holds a share link.
fn scrub_object_keys(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.as_str().is_some_and(|s| s.starts_with("orgs/")));
            m.values_mut().for_each(scrub_object_keys);
        }
        Value::Array(a) => {
            a.retain(|x| !x.as_str().is_some_and(|s| s.starts_with("orgs/")));
            a.iter_mut().for_each(scrub_object_keys);
        }
        _ => {}
    }
}

/// Replaces the leading `from` of every string in `v` by `to`.
fn rewrite_prefix(v: &mut Value, from: &str, to: &str) {
    match v {
        Value::String(s) => {
            if let Some(rest) = s.strip_prefix(from) {
                *s = format!("{to}{rest}");
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| rewrite_prefix(i, from, to)),
        Value::Object(m) => m.values_mut().for_each(|i| rewrite_prefix(i, from, to)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_are_scrubbed_at_any_depth() {
        let mut v = json!({
            "lineage": {"metrics": {"test": {"model_key": "orgs/1/projects/2/runs/3/model/model.json",
                                              "accuracy": 0.9, "per_class": [{"f1": 0.8}]}},
                        "input_scenes": ["S2B_1", "orgs/1/x"]},
            "kind": "class",
        });
        scrub_object_keys(&mut v);
        assert!(!v.to_string().contains("orgs/"), "{v}");
        assert_eq!(v["lineage"]["metrics"]["test"]["accuracy"], 0.9);
        assert_eq!(v["lineage"]["input_scenes"], json!(["S2B_1"]));
        assert_eq!(v["kind"], "class");
    }

    #[test]
    fn expiry_is_days_or_a_moment_never_both_and_never_past() {
        let now = Utc::now();
        let body = |days, at| CreateShare {
            label: None,
            expires_in_days: days,
            expires_at: at,
        };
        assert_eq!(expiry(&body(None, None), now).ok(), Some(None));
        assert_eq!(
            expiry(&body(Some(7), None), now).ok(),
            Some(Some(now + chrono::Duration::days(7)))
        );
        let later = now + chrono::Duration::hours(2);
        assert_eq!(
            expiry(&body(None, Some(later)), now).ok(),
            Some(Some(later))
        );
        for bad in [
            body(Some(0), None),
            body(Some(3651), None),
            body(Some(1), Some(later)),
            body(None, Some(now - chrono::Duration::seconds(1))),
            body(None, Some(now + chrono::Duration::days(3651))),
        ] {
            assert!(expiry(&bad, now).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_shared_stac_item_points_only_at_shared_routes() {
        let id = Uuid::nil();
        let root = "http://h";
        let item = json!({
            "type": "Feature",
            "id": id.to_string(),
            "collection": "groundwork-p",
            "properties": {"groundwork:tiles": format!("{root}/api/v1/outputs/{id}/tiles/{{z}}/{{x}}/{{y}}.png")},
            "assets": {
                "data": {"href": format!("{root}/api/v1/outputs/{id}/download.tif")},
                "polygons": {"href": format!("{root}/api/v1/outputs/{id}/download.geojson")},
                "report": {"href": format!("{root}/api/v1/projects/p/report")},
                "elsewhere": {"href": "https://example.org/doc.pdf"},
            },
            "links": [
                {"rel": "self", "href": format!("{root}/api/v1/projects/p/stac/items/{id}")},
                {"rel": "collection", "href": format!("{root}/api/v1/projects/p/stac")},
                {"rel": "root", "href": format!("{root}/api/v1/projects/p/stac")},
                {"rel": "tilejson", "href": format!("{root}/api/v1/outputs/{id}/tilejson.json")},
                {"rel": "license", "href": "https://example.org/licence"},
            ],
        });
        let s = share_stac_item(item, root, id, "gws_x");
        assert!(s.get("collection").is_none());
        assert_eq!(
            s["properties"]["groundwork:tiles"],
            "http://h/api/v1/shared/gws_x/tiles/{z}/{x}/{y}.png"
        );
        assert_eq!(
            s["assets"]["data"]["href"],
            "http://h/api/v1/shared/gws_x/download.tif"
        );
        assert_eq!(
            s["assets"]["polygons"]["href"],
            "http://h/api/v1/shared/gws_x/download.geojson"
        );
        assert!(s["assets"].get("report").is_none());
        assert!(s["assets"].get("elsewhere").is_some());
        let links: Vec<(&str, &str)> = s["links"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|l| {
                        (
                            l["rel"].as_str().unwrap_or_default(),
                            l["href"].as_str().unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            links,
            [
                ("self", "http://h/api/v1/shared/gws_x/stac/item.json"),
                ("tilejson", "http://h/api/v1/shared/gws_x/tilejson.json"),
                ("license", "https://example.org/licence"),
            ]
        );
    }
}
