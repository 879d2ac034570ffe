//! Read-only share links of a published class map over the real API, database, object store and GDAL:
//! a member makes a link; without any credential it opens the output's JSON, tiles, TileJSON, a ranged
//! download, the polygons, the STAC Item and the map page, publicly cacheable, while the members'
//! routes stay private; viewers cannot make links, another organisation can neither list nor revoke
//! them, and a revoked or expired link opens nothing, exactly like an unknown one.
#![expect(clippy::unwrap_used, reason = "tests")]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use groundwork_server::AppState;
use groundwork_server::testing::{member_token, with_bearer};
use groundwork_store::DEFAULT_ORG_ID;
use groundwork_store::accounts::{self, Role};
use groundwork_store::audit::Who;
use groundwork_store::testing::TestDb;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

const W: usize = 64;

fn get(uri: &str) -> Request<Body> {
    Request::builder().uri(uri).body(Body::empty()).unwrap()
}

/// Every shared route of a link, as `(what, uri)`.
fn shared_uris(secret: &str) -> Vec<String> {
    vec![
        format!("/api/v1/shared/{secret}"),
        format!("/api/v1/shared/{secret}/tilejson.json"),
        format!("/api/v1/shared/{secret}/tiles/0/0/0.png"),
        format!("/api/v1/shared/{secret}/download.tif"),
        format!("/api/v1/shared/{secret}/download.geojson"),
        format!("/api/v1/shared/{secret}/stac/item.json"),
    ]
}

struct World {
    _db: TestDb,
    _dir: tempfile::TempDir,
    pool: groundwork_store::PgPool,
    /// Without any credential.
    anonymous: axum::Router,
    member: axum::Router,
    viewer: axum::Router,
    /// An owner of another organisation.
    stranger: axum::Router,
    output: groundwork_store::outputs::Output,
    cog: Vec<u8>,
}

async fn world() -> World {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut state = AppState::new(db.pool.clone());
    state.objects = Some(Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap(),
    ));
    state.cors_origins =
        vec![groundwork_server::hygiene::cors_origin("https://viewer.example.org").unwrap()];
    let project = crate::common::project(&db.pool, "shared project").await;
    let data: Vec<u8> = (0..W * W).map(|i| if i % W < 40 { 1 } else { 2 }).collect();
    let output = crate::common::class_map(
        &db.pool,
        dir.path(),
        project,
        &data,
        W,
        json!([{"id": 1, "name": "forest", "color": "#00aa00"}, {"id": 2, "name": "water", "color": "#0000ff"}]),
    )
    .await;
    let cog = std::fs::read(dir.path().join(&output.utm_key)).unwrap();
    let router_of =
        |token: &str| with_bearer(groundwork_server::router(state.clone()), token).unwrap();
    let member = router_of(
        &member_token(&db.pool, DEFAULT_ORG_ID, Role::Member)
            .await
            .unwrap(),
    );
    let viewer = router_of(
        &member_token(&db.pool, DEFAULT_ORG_ID, Role::Viewer)
            .await
            .unwrap(),
    );
    let other = accounts::create_org(&db.pool, &Who::cli(), "other", None)
        .await
        .unwrap();
    let stranger = router_of(&member_token(&db.pool, other.id, Role::Owner).await.unwrap());
    World {
        pool: db.pool.clone(),
        anonymous: groundwork_server::router(state),
        member,
        viewer,
        stranger,
        output,
        cog,
        _db: db,
        _dir: dir,
    }
}

/// Makes a share link as the member; its secret.
async fn share(w: &World, body: Value) -> (String, Value) {
    let uri = format!("/api/v1/outputs/{}/shares", w.output.id);
    let (s, created) = crate::common::call(&w.member, "POST", &uri, Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    (secret, created)
}

/// The answer of `uri` to a request without credentials.
async fn anonymous(
    w: &World,
    req: Request<Body>,
) -> (StatusCode, HashMap<String, String>, Vec<u8>) {
    crate::common::send(&w.anonymous, req).await
}

#[tokio::test]
async fn a_share_link_opens_one_output_without_an_account_until_it_is_revoked() {
    let w = world().await;
    let id = w.output.id;
    let shares = format!("/api/v1/outputs/{id}/shares");

    // Viewers cannot make links; bad expiries are refused.
    let (s, _) = crate::common::call(&w.viewer, "POST", &shares, Some(json!({}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for bad in [
        json!({"expires_in_days": 0}),
        json!({"expires_in_days": 2, "expires_at": "2099-01-01T00:00:00Z"}),
        json!({"expires_at": "2001-01-01T00:00:00Z"}),
        json!({"label": "x".repeat(101)}),
    ] {
        let (s, e) = crate::common::call(&w.member, "POST", &shares, Some(bad.clone())).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {e}");
    }
    // Another organisation's member cannot share this output.
    let (s, _) = crate::common::call(&w.stranger, "POST", &shares, Some(json!({}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The secret is shown once, never stored by a cache.
    let req = Request::builder()
        .method("POST")
        .uri(&shares)
        .header("content-type", "application/json")
        .header("host", "maps.example.org")
        .body(Body::from(json!({"label": "workshop"}).to_string()))
        .unwrap();
    let (s, h, body) = crate::common::send(&w.member, req).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(h["cache-control"], "no-store");
    let created: Value = serde_json::from_slice(&body).unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("gws_") && secret.len() == 4 + 64,
        "{secret}"
    );
    assert_eq!(
        created["url"],
        format!("http://maps.example.org/shared/{secret}")
    );
    assert_eq!(
        created["api_url"],
        format!("http://maps.example.org/api/v1/shared/{secret}")
    );
    assert_eq!(created["share_link"]["status"], "active");
    assert_eq!(created["share_link"]["label"], "workshop");
    assert!(created["share_link"]["expires_at"].is_null());
    let share_id = created["share_link"]["id"].as_str().unwrap().to_owned();
    // Only the digest is stored.
    let stored: Vec<u8> =
        sqlx::query_scalar("select token_hash from share_link where id = $1::uuid")
            .bind(&share_id)
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert_eq!(stored, accounts::digest(&secret));

    // Without any credential: the output, with links under the share link and no storage keys.
    let (s, h, body) = anonymous(&w, get(&format!("/api/v1/shared/{secret}"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["cache-control"], "public, max-age=300");
    assert_ne!(
        h.get("vary").map(String::as_str),
        Some("Authorization, Cookie")
    );
    let o: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(o["id"], id.to_string());
    assert_eq!(o["legend"].as_array().unwrap().len(), 2);
    assert_eq!(
        o["links"]["tiles"],
        format!("/api/v1/shared/{secret}/tiles/{{z}}/{{x}}/{{y}}.png")
    );
    assert_eq!(
        o["links"]["download_tif"],
        format!("/api/v1/shared/{secret}/download.tif")
    );
    assert_eq!(
        o["links"]["stac_item"],
        format!("/api/v1/shared/{secret}/stac/item.json")
    );
    for internal in ["utm_key", "web_key", "org_id"] {
        assert!(o.get(internal).is_none(), "{internal}: {o}");
    }

    // A tile, and its validator.
    let (s, h, png) = anonymous(&w, get(&format!("/api/v1/shared/{secret}/tiles/0/0/0.png"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "image/png");
    assert_eq!(h["cache-control"], "public, max-age=300");
    assert!(png.starts_with(b"\x89PNG"));
    let etag = h["etag"].clone();
    let req = Request::builder()
        .uri(format!("/api/v1/shared/{secret}/tiles/0/0/0.png"))
        .header("if-none-match", &etag)
        .body(Body::empty())
        .unwrap();
    let (s, h, _) = anonymous(&w, req).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    assert_eq!(h["cache-control"], "public, max-age=300");
    let (s, _, _) = anonymous(
        &w,
        get(&format!("/api/v1/shared/{secret}/tiles/30/0/0.png")),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // The COG, by ranges.
    let req = Request::builder()
        .uri(format!("/api/v1/shared/{secret}/download.tif"))
        .header("range", "bytes=100-199")
        .body(Body::empty())
        .unwrap();
    let (s, h, part) = anonymous(&w, req).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(h["content-range"], format!("bytes 100-199/{}", w.cog.len()));
    assert_eq!(part, &w.cog[100..200]);
    assert_eq!(h["cache-control"], "public, max-age=300");
    let (s, _, whole) = anonymous(&w, get(&format!("/api/v1/shared/{secret}/download.tif"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(whole, w.cog);

    // The polygons.
    let (s, h, body) = anonymous(
        &w,
        get(&format!("/api/v1/shared/{secret}/download.geojson")),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(h["content-type"], "application/geo+json");
    let fc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(fc["type"], "FeatureCollection");
    assert!(!fc["features"].as_array().unwrap().is_empty());

    // TileJSON and the STAC Item point only at shared routes.
    let req = Request::builder()
        .uri(format!("/api/v1/shared/{secret}/tilejson.json"))
        .header("host", "maps.example.org")
        .body(Body::empty())
        .unwrap();
    let (s, _, body) = anonymous(&w, req).await;
    assert_eq!(s, StatusCode::OK);
    let tj: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        tj["tiles"][0],
        format!("http://maps.example.org/api/v1/shared/{secret}/tiles/{{z}}/{{x}}/{{y}}.png")
    );
    let req = Request::builder()
        .uri(format!("/api/v1/shared/{secret}/stac/item.json"))
        .header("host", "maps.example.org")
        .body(Body::empty())
        .unwrap();
    let (s, h, body) = anonymous(&w, req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "application/geo+json");
    assert_eq!(h["cache-control"], "public, max-age=300");
    let item: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(item["type"], "Feature");
    assert_eq!(item["id"], id.to_string());
    let base = format!("http://maps.example.org/api/v1/shared/{secret}");
    assert_eq!(
        item["assets"]["data"]["href"],
        format!("{base}/download.tif")
    );
    assert_eq!(
        item["assets"]["polygons"]["href"],
        format!("{base}/download.geojson")
    );
    let text = item.to_string();
    assert!(!text.contains("/api/v1/projects/"), "{text}");
    assert!(!text.contains("/api/v1/outputs/"), "{text}");
    assert!(
        item["links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["rel"] == "self" && l["href"] == format!("{base}/stac/item.json"))
    );

    // The map page, never stored.
    let (s, h, body) = anonymous(&w, get(&format!("/shared/{secret}"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["cache-control"], "no-store");
    assert!(h["content-security-policy"].contains("default-src 'self'"));
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("Shared read-only view"), "{html}");
    assert!(html.contains(&format!("data-tiles=\"/api/v1/shared/{secret}/tiles/")));
    assert!(html.contains("forest") && html.contains("water"));
    assert!(!html.contains("output-imagery"), "no imagery for strangers");
    assert!(!html.contains(&format!("/api/v1/outputs/{id}")));

    // CORS covers the shared routes as it covers the private ones.
    let req = Request::builder()
        .uri(format!("/api/v1/shared/{secret}/tilejson.json"))
        .header("origin", "https://viewer.example.org")
        .body(Body::empty())
        .unwrap();
    let (_, h, _) = anonymous(&w, req).await;
    assert_eq!(
        h["access-control-allow-origin"],
        "https://viewer.example.org"
    );

    // The members' routes stay private, and closed to strangers.
    let (s, h, _) = crate::common::send(
        &w.member,
        get(&format!("/api/v1/outputs/{id}/tiles/0/0/0.png")),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["cache-control"].starts_with("private"), "{h:?}");
    let (s, _, _) = anonymous(&w, get(&format!("/api/v1/outputs/{id}/download.tif"))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Listing: members and viewers of the organisation, never the secret; nobody else.
    let (s, list) = crate::common::call(&w.viewer, "GET", &shares, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["id"], share_id);
    assert!(!list.to_string().contains(&secret[4..]));
    assert!(list["items"][0].get("token_hash").is_none());
    let (s, _) = crate::common::call(&w.stranger, "GET", &shares, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Revoking: not by strangers or viewers.
    let revoke = format!("{shares}/{share_id}");
    let (s, _) = crate::common::call(&w.stranger, "DELETE", &revoke, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = crate::common::call(&w.viewer, "DELETE", &revoke, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = crate::common::call(
        &w.stranger,
        "GET",
        &format!("/api/v1/shared/{secret}"),
        None,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the link works for anyone, whatever their credentials"
    );
    let (s, _) = crate::common::call(&w.member, "DELETE", &revoke, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = crate::common::call(&w.member, "DELETE", &revoke, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "revoking again changes nothing");

    // Revoked: every route is the same 404 as an unknown link's, never stored.
    let unknown = format!("gws_{}", "0".repeat(64));
    for (uri, same) in shared_uris(&secret).iter().zip(shared_uris(&unknown)) {
        let (s, h, body) = anonymous(&w, get(uri)).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(h["cache-control"], "no-store", "{uri}");
        let (s2, _, body2) = anonymous(&w, get(&same)).await;
        assert_eq!(s2, StatusCode::NOT_FOUND);
        assert_eq!(body, body2, "{uri}");
    }
    let (s, _, _) = anonymous(&w, get("/api/v1/shared/nonsense/download.tif")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, h, body) = anonymous(&w, get(&format!("/shared/{secret}"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(h["cache-control"], "no-store");
    assert!(String::from_utf8(body).unwrap().contains("Not Found"));
    let (_, list) = crate::common::call(&w.member, "GET", &shares, None).await;
    assert_eq!(list["items"][0]["status"], "revoked");

    // Both are in the audit log.
    let actions: Vec<String> = sqlx::query_scalar(
        "select action from audit_log where target_type = 'share_link' and target_id = $1 order by id",
    )
    .bind(&share_id)
    .fetch_all(&w.pool)
    .await
    .unwrap();
    assert_eq!(actions, ["share_link.create", "share_link.revoke"]);
}

#[tokio::test]
async fn an_expired_share_link_opens_nothing() {
    let w = world().await;
    let (secret, created) = share(&w, json!({"expires_in_days": 1})).await;
    let expires: chrono::DateTime<chrono::Utc> = created["share_link"]["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let left = expires - chrono::Utc::now();
    assert!(left > chrono::Duration::hours(23) && left <= chrono::Duration::days(1));
    let (s, _, _) = anonymous(&w, get(&format!("/api/v1/shared/{secret}"))).await;
    assert_eq!(s, StatusCode::OK);
    let at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (other, _) = share(&w, json!({"expires_at": at})).await;

    sqlx::query(
        "update share_link set expires_at = now() - interval '1 second' where output_id = $1",
    )
    .bind(w.output.id)
    .execute(&w.pool)
    .await
    .unwrap();
    for secret in [&secret, &other] {
        for uri in shared_uris(secret) {
            let (s, _, _) = anonymous(&w, get(&uri)).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{uri}");
        }
        let (s, _, _) = anonymous(&w, get(&format!("/shared/{secret}"))).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    let (_, list) = crate::common::call(
        &w.member,
        "GET",
        &format!("/api/v1/outputs/{}/shares", w.output.id),
        None,
    )
    .await;
    let statuses: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["expired", "expired"]);
}

#[tokio::test]
async fn a_member_shares_and_revokes_from_the_map_page() {
    let w = world().await;
    let id = w.output.id;
    let form = |uri: String, body: &str| {
        Request::builder()
            .method("POST")
            .uri(uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    // Viewers see no "Share" section and cannot post to it.
    let (s, _, page) = crate::common::send(&w.viewer, get(&format!("/outputs/{id}"))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!String::from_utf8(page).unwrap().contains("share-heading"));
    let (s, _, _) =
        crate::common::send(&w.viewer, form(format!("/outputs/{id}/shares"), "label=x")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let (s, _, page) = crate::common::send(&w.member, get(&format!("/outputs/{id}"))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        String::from_utf8(page)
            .unwrap()
            .contains("No share links yet")
    );
    let (s, _, page) = crate::common::send(
        &w.member,
        form(
            format!("/outputs/{id}/shares"),
            "label=&expires_in_days=soon",
        ),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(String::from_utf8(page).unwrap().contains("share-error"));
    let (s, h, page) = crate::common::send(
        &w.member,
        form(
            format!("/outputs/{id}/shares"),
            "label=partners&expires_in_days=30",
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(h["cache-control"], "no-store");
    let page = String::from_utf8(page).unwrap();
    let start = page
        .find("http://localhost/shared/gws_")
        .expect("the link is shown");
    let url = &page[start..start + "http://localhost/shared/".len() + 4 + 64];
    let path = url.trim_start_matches("http://localhost");
    let (s, _, _) = anonymous(&w, get(path)).await;
    assert_eq!(s, StatusCode::OK);

    // Shown once: the page lists the link without it.
    let (_, _, page) = crate::common::send(&w.member, get(&format!("/outputs/{id}"))).await;
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("partners") && !page.contains(url));
    let (_, list) = crate::common::call(
        &w.member,
        "GET",
        &format!("/api/v1/outputs/{id}/shares"),
        None,
    )
    .await;
    let share_id = list["items"][0]["id"].as_str().unwrap().to_owned();
    assert!(page.contains(&format!("/outputs/{id}/shares/{share_id}/revoke")));

    let (s, h, _) = crate::common::send(
        &w.member,
        form(format!("/outputs/{id}/shares/{share_id}/revoke"), ""),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h["location"], format!("/outputs/{id}#share-{share_id}"));
    let (s, _, _) = anonymous(&w, get(path)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Another organisation cannot revoke through the page either.
    let (s, _, _) = crate::common::send(
        &w.stranger,
        form(format!("/outputs/{id}/shares/{share_id}/revoke"), ""),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
