//! HTTP hygiene on the in-process router: security headers on pages and on every response, private
//! caching of data behind authentication, `no-store` on pages that show a secret, same-site `next=`
//! targets after sign-in, and CSV exports that a spreadsheet cannot run as formulas.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use groundwork_server::AppState;
use groundwork_store::testing::TestDb;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;

use crate::common::{call, send};

fn get(uri: &str) -> Request<Body> {
    Request::builder().uri(uri).body(Body::empty()).unwrap()
}

fn form(uri: &str, body: &str) -> Request<Body> {
    let mut req = Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let addr: SocketAddr = "10.0.0.7:40000".parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(addr));
    req
}

fn aoi() -> Value {
    json!({"type": "Polygon", "coordinates": [[[3.0, 45.0], [3.03, 45.0], [3.03, 45.02], [3.0, 45.02], [3.0, 45.0]]]})
}

async fn create_project(app: &axum::Router, task: &str, classes: Value) -> String {
    let (s, p) = call(
        app,
        "POST",
        "/api/v1/projects",
        Some(
            json!({"name": "hygiene", "aoi": aoi(), "start": "2024-04-01", "end": "2024-07-31",
                    "task": task, "classes": classes}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{p:#}");
    p["id"].as_str().unwrap().to_owned()
}

fn assert_page_policies(h: &HashMap<String, String>, what: &str) {
    let csp = &h["content-security-policy"];
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'self'",
    ] {
        assert!(csp.contains(directive), "{what}: {directive} in {csp}");
    }
    assert!(!csp.contains("'unsafe-eval'"), "{what}: {csp}");
    assert_eq!(h["referrer-policy"], "same-origin", "{what}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
}

#[tokio::test]
async fn pages_carry_security_policies_and_every_response_nosniff() {
    let db = TestDb::new().await.unwrap();
    let state = AppState::new(db.pool.clone())
        .with_basemap_url(Some("https://tiles.example.org/{z}/{x}/{y}.png"));
    let app = groundwork_server::testing::owner_router(state)
        .await
        .unwrap();

    for page in ["/projects", "/tokens", "/members", "/account", "/login"] {
        let (s, h, _) = send(&app, get(page)).await;
        assert!(s.is_success(), "{page}: {s}");
        assert!(h["content-type"].starts_with("text/html"), "{page}");
        assert_page_policies(&h, page);
        let csp = &h["content-security-policy"];
        assert!(
            csp.contains("img-src 'self' data: blob: https://tiles.example.org;"),
            "{csp}"
        );
        assert!(
            csp.contains("connect-src 'self' https://tiles.example.org;"),
            "{csp}"
        );
    }
    // An error page is a page too.
    let (s, h, _) = send(&app, get("/projects/00000000-0000-0000-0000-000000000000")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_page_policies(&h, "the not-found page");

    // JSON, static files, redirects and API errors: nosniff, and no page policy.
    for uri in [
        "/api/v1/projects",
        "/healthz",
        "/api/v1/nowhere",
        "/static/groundwork.css",
        "/",
    ] {
        let (_, h, _) = send(&app, get(uri)).await;
        assert_eq!(h["x-content-type-options"], "nosniff", "{uri}");
        assert!(!h.contains_key("content-security-policy"), "{uri}");
    }

    // Without a basemap the pages reach no other origin.
    let db2 = TestDb::new().await.unwrap();
    let app2 = groundwork_server::testing::owner_router(AppState::new(db2.pool.clone()))
        .await
        .unwrap();
    let (_, h, _) = send(&app2, get("/projects")).await;
    assert_page_policies(&h, "/projects without a basemap");
    let csp = &h["content-security-policy"];
    assert!(!csp.contains("https:") && !csp.contains('*'), "{csp}");
}

#[tokio::test]
async fn data_behind_authentication_is_cached_privately() {
    let db = TestDb::new().await.unwrap();
    let app = groundwork_server::testing::owner_router(AppState::new(db.pool.clone()))
        .await
        .unwrap();
    let pid = create_project(
        &app,
        "classification",
        json!([{"id": 0, "name": "water", "color": "#0000ff"}]),
    )
    .await;
    let unknown = "00000000-0000-0000-0000-000000000000";
    for uri in [
        format!("/api/v1/projects/{pid}/stac"),
        format!("/api/v1/projects/{pid}/stac/items"),
        format!("/api/v1/projects/{pid}/stac/items/{unknown}"),
        format!("/api/v1/outputs/{unknown}/tiles/3/4/2.png"),
        format!("/api/v1/outputs/{unknown}/download.tif"),
        format!("/api/v1/outputs/{unknown}/download.geojson"),
    ] {
        let (_, h, _) = send(&app, get(&uri)).await;
        assert_eq!(h["cache-control"], "private", "{uri}");
        assert_eq!(h["vary"], "Authorization, Cookie", "{uri}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{uri}");
    }
    let (s, _, _) = send(&app, get(&format!("/api/v1/projects/{pid}/stac"))).await;
    assert_eq!(s, StatusCode::OK);
    // Other API answers are not marked.
    let (_, h, _) = send(&app, get(&format!("/api/v1/projects/{pid}"))).await;
    assert!(!h.contains_key("vary"));
}

#[tokio::test]
async fn pages_that_show_a_secret_are_never_stored() {
    let db = TestDb::new().await.unwrap();
    let app = groundwork_server::testing::owner_router(AppState::new(db.pool.clone()))
        .await
        .unwrap();
    for (uri, body) in [
        ("/tokens", "name=laptop&scope=read"),
        ("/tokens/workers", "name=gpu-box"),
        (
            "/members/invitations",
            "email=new%40example.org&role=member",
        ),
    ] {
        let (s, h, _) = send(&app, form(uri, body)).await;
        assert_eq!(s, StatusCode::CREATED, "{uri}");
        assert_eq!(h["cache-control"], "no-store", "{uri}");
        assert_page_policies(&h, uri);
    }
    // The invitation page's address is the secret.
    let (_, h, _) = send(&app, get("/invite/not-a-real-invitation")).await;
    assert_eq!(h["cache-control"], "no-store");
    // Pages without a secret are not marked.
    let (_, h, _) = send(&app, get("/tokens")).await;
    assert!(!h.contains_key("cache-control"));
}

#[tokio::test]
async fn sign_in_follows_only_same_site_paths() {
    use groundwork_store::{DEFAULT_ORG_ID, accounts, audit::Who};
    let db = TestDb::new().await.unwrap();
    let who = Who::cli();
    let user = accounts::create_user(&db.pool, &who, "me@example.org", "a long password")
        .await
        .unwrap();
    accounts::add_member(
        &db.pool,
        &who,
        DEFAULT_ORG_ID,
        user.id,
        accounts::Role::Owner,
    )
    .await
    .unwrap();
    let app = groundwork_server::router(AppState::new(db.pool.clone()));
    let (_, h, _) = send(&app, get("/login")).await;
    // The sign-in form's token, which its cookie holds too.
    let token = h["set-cookie"]
        .strip_prefix("gw_form=")
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_owned();
    for (next, to) in [
        ("%2Fprojects%3Fa%3D1", "/projects?a=1"),
        ("%2F%2Fevil.example", "/"),
        ("%2F%5Cevil.example", "/"),
        ("%2F%09%2Fevil.example", "/"),
        ("https%3A%2F%2Fevil.example", "/"),
    ] {
        let body = format!(
            "email=me%40example.org&password=a+long+password&next={next}&form_token={token}"
        );
        let mut req = form("/login", &body);
        req.headers_mut()
            .insert("cookie", format!("gw_form={token}").parse().unwrap());
        let (s, h, _) = send(&app, req).await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{next}");
        assert_eq!(h["location"], to, "{next}");
    }
    // The form keeps only a safe target too.
    let (_, _, page) = send(&app, get("/login?next=%2F%2Fevil.example")).await;
    assert!(!String::from_utf8(page).unwrap().contains("evil.example"));
}

#[tokio::test]
async fn csv_exports_neutralise_formulas_in_text_cells_only() {
    let db = TestDb::new().await.unwrap();
    let app = groundwork_server::testing::owner_router(AppState::new(db.pool.clone()))
        .await
        .unwrap();
    let formula = r#"=HYPERLINK("https://evil.example","x")"#;
    let classes = json!([{"id": 0, "name": formula, "color": "#0000ff"},
                         {"id": 1, "name": "@sum", "color": "#00ff00"}]);
    let pid = create_project(&app, "classification", classes.clone()).await;
    let file = json!({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [3.01, 45.01]}, "properties": {"class": 0}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [3.02, 45.01]}, "properties": {"class": 1}}]});
    let (s, r) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/labels/import"),
        Some(file),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r:#}");
    let (s, _, csv) = send(
        &app,
        get(&format!("/api/v1/projects/{pid}/labels?format=csv")),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let csv = String::from_utf8(csv).unwrap();
    assert_eq!(
        csv,
        "lon,lat,class,window_id\n\
         3.01,45.01,\"'=HYPERLINK(\"\"https://evil.example\"\",\"\"x\"\")\",\n\
         3.02,45.01,'@sum,\n"
    );

    // The file imports back to the same classes.
    let again = create_project(&app, "classification", classes).await;
    let req = Request::builder()
        .method("POST")
        .uri(format!("/api/v1/projects/{again}/labels/import"))
        .header("content-type", "text/csv")
        .body(Body::from(csv.clone()))
        .unwrap();
    let (s, _, r) = send(&app, req).await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&r));
    let (_, _, csv_again) = send(
        &app,
        get(&format!("/api/v1/projects/{again}/labels?format=csv")),
    )
    .await;
    assert_eq!(String::from_utf8(csv_again).unwrap(), csv);

    // Negative numbers in numeric columns stay numbers.
    let reg = create_project(&app, "regression", json!([])).await;
    let (s, r) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{reg}/labels/import"),
        Some(json!({"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [3.01, 45.01]}, "properties": {"value": -3.5}}]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r:#}");
    let (_, _, csv) = send(
        &app,
        get(&format!("/api/v1/projects/{reg}/labels?format=csv")),
    )
    .await;
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "lon,lat,value,window_id\n3.01,45.01,-3.5,\n"
    );
}

#[tokio::test]
async fn configured_origins_may_read_stac_tiles_and_downloads_with_cors_and_no_others() {
    let db = TestDb::new().await.unwrap();
    let mut state = AppState::new(db.pool.clone());
    state.cors_origins =
        vec![groundwork_server::hygiene::cors_origin("https://Viewer.example.org/").unwrap()];
    let app = groundwork_server::testing::owner_router(state)
        .await
        .unwrap();
    let pid = create_project(
        &app,
        "classification",
        json!([{"id": 0, "name": "water", "color": "#0000ff"}]),
    )
    .await;
    let stac = format!("/api/v1/projects/{pid}/stac");
    let with_origin = |origin: &str| {
        Request::builder()
            .uri(&stac)
            .header("origin", origin)
            .body(Body::empty())
            .unwrap()
    };
    let (s, h, _) = send(&app, with_origin("https://viewer.example.org")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        h["access-control-allow-origin"],
        "https://viewer.example.org"
    );
    // Never with credentials: a cookie session is not usable from another site.
    assert!(!h.contains_key("access-control-allow-credentials"));
    let (_, h, _) = send(&app, with_origin("https://evil.example")).await;
    assert!(!h.contains_key("access-control-allow-origin"), "{h:?}");
    // The preflight of a ranged, authenticated read.
    let preflight = Request::builder()
        .method("OPTIONS")
        .uri(format!("/api/v1/outputs/{pid}/download.tif"))
        .header("origin", "https://viewer.example.org")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization,range")
        .body(Body::empty())
        .unwrap();
    let (s, h, _) = send(&app, preflight).await;
    assert!(s.is_success(), "{s}");
    let allowed = h["access-control-allow-headers"].to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("range"),
        "{allowed}"
    );
    // Without configured origins there is no CORS at all.
    let plain = groundwork_server::testing::owner_router(AppState::new(db.pool.clone()))
        .await
        .unwrap();
    let (_, h, _) = send(&plain, with_origin("https://viewer.example.org")).await;
    assert!(!h.contains_key("access-control-allow-origin"));
    // Origins are checked when they are configured.
    assert_eq!(
        groundwork_server::hygiene::cors_origin("ftp://x.example"),
        None
    );
    assert_eq!(
        groundwork_server::hygiene::cors_origin("https://x.example/path"),
        None
    );
    assert_eq!(
        groundwork_server::hygiene::cors_origin("http://127.0.0.1:8000").as_deref(),
        Some("http://127.0.0.1:8000")
    );
}
