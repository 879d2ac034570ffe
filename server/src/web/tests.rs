//! The pages on a real database, through the whole router: rendering, the wizard's validation, the
//! forms' redirects, organisation scoping and the embedded static files.
#![allow(clippy::unwrap_used, reason = "tests")]

use crate::api::{AppState, router};
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use groundwork_store::testing::TestDb;
use groundwork_store::{jobs, projects, workers};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;
use uuid::Uuid;

struct Site {
    app: axum::Router,
    db: TestDb,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Site {
    async fn new() -> Self {
        let db = TestDb::new().await.unwrap();
        Self {
            app: crate::testing::owner_router(AppState::new(db.pool.clone()))
                .await
                .unwrap(),
            db,
        }
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, uri: &str) -> Reply {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn post_form(&self, uri: &str, pairs: &[(&str, &str)]) -> Reply {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.send(
            Request::post(uri)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }
}

const SQUARE: &str =
    r#"{"type":"Polygon","coordinates":[[[10,0],[10.05,0],[10.05,0.05],[10,0.05],[10,0]]]}"#;

fn wizard(end: &str) -> Vec<(&'static str, String)> {
    vec![
        ("csrf", String::new()),
        ("name", "Delta mangroves".into()),
        ("description", "Loss since 2020".into()),
        ("aoi", SQUARE.into()),
        ("start", "2024-06-01".into()),
        ("end", end.into()),
        ("task", "segmentation".into()),
        ("class_name", "Mangrove".into()),
        ("class_color", "#1b9e77".into()),
        ("class_name", "Water".into()),
        ("class_color", "#0000ff".into()),
        ("modalities", "sentinel2_l2a".into()),
        ("modalities", "sentinel1".into()),
        ("model_size", "tiny".into()),
        ("patch_size", "4".into()),
        ("window_size", "64".into()),
    ]
}

fn borrow<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn the_wizard_shows_the_servers_validation_next_to_the_field_and_keeps_the_values() {
    let site = Site::new().await;
    let form = site.get("/projects/new").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains(r#"<input type="hidden" name="csrf""#));
    assert!(form.body.contains(r#"<label for="name">Name</label>"#));

    let bad = wizard("2024-01-01");
    let r = site.post_form("/projects/new", &borrow(&bad)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body.contains(
            r#"<p class="field-error" id="end-error">end 2024-01-01 is before start 2024-06-01</p>"#
        ),
        "{}",
        r.body
    );
    assert!(r.body.contains(r#"value="Delta mangroves""#));
    assert!(r.body.contains(r#"value="Water""#));
    assert!(r.body.contains(r#"value="sentinel1" checked"#));
    assert!(r.body.contains(r#"<option value="tiny" selected>"#));
    assert!(
        r.body.contains("[[10,0],[10.05,0]"),
        "the drawn area is kept"
    );
    let none = projects::list(&site.db.pool, groundwork_store::DEFAULT_ORG_ID, None, 10)
        .await
        .unwrap();
    assert!(none.is_empty());

    // What the form cannot even read is reported per field too, and creates nothing.
    let mut unreadable = wizard("2024-12-31");
    unreadable[3].1 = "{not json".into();
    unreadable[15].1 = "sixty-four".into();
    let r = site.post_form("/projects/new", &borrow(&unreadable)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body
            .contains(r#"id="aoi-error">this is not valid GeoJSON"#)
    );
    assert!(
        r.body
            .contains(r#"id="window_size-error">enter a whole number"#)
    );

    // A class row the API refuses is marked on its row.
    let mut bad_colour = wizard("2024-12-31");
    bad_colour[10].1 = "blue".into();
    let r = site.post_form("/projects/new", &borrow(&bad_colour)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("a colour must be #rrggbb"), "{}", r.body);

    let good = wizard("2024-12-31");
    let r = site.post_form("/projects/new", &borrow(&good)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let location = r.headers[header::LOCATION].to_str().unwrap().to_owned();
    let id: Uuid = location
        .strip_prefix("/projects/")
        .unwrap()
        .parse()
        .unwrap();
    let p = projects::get(&site.db.pool, groundwork_store::DEFAULT_ORG_ID, id)
        .await
        .unwrap();
    assert_eq!(p.name, "Delta mangroves");
    assert_eq!(p.task, "segmentation");
    assert_eq!(p.modalities, vec!["sentinel2_l2a", "sentinel1"]);
    assert_eq!(
        p.classes,
        json!([{"id": 0, "name": "Mangrove", "color": "#1b9e77"}, {"id": 1, "name": "Water", "color": "#0000ff"}])
    );

    let page = site.get(&location).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<h1>Delta mangroves</h1>"));
    assert!(page.body.contains("30.8 km²"), "the server's area is shown");
    let list = site.get("/projects").await;
    assert!(
        list.body
            .contains(&format!(r#"<a href="/projects/{id}">Delta mangroves</a>"#))
    );
}

#[tokio::test]
async fn another_organisations_project_is_not_found() {
    let site = Site::new().await;
    let other = Uuid::new_v4();
    sqlx::query("insert into org (id, name) values ($1, 'other')")
        .bind(other)
        .execute(&site.db.pool)
        .await
        .unwrap();
    let p = seed(&site, other).await;
    let r = site.get(&format!("/projects/{p}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(r.body.contains("project not found"));
    let r = site
        .post_form(
            &format!("/projects/{p}/runs"),
            &[("kind", "sleep"), ("seconds", "1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        jobs::list_runs(&site.db.pool, other, p, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        site.get("/projects/not-a-uuid").await.status,
        StatusCode::NOT_FOUND
    );
}

async fn seed(site: &Site, org: Uuid) -> Uuid {
    let token =
        crate::testing::member_token(&site.db.pool, org, groundwork_store::accounts::Role::Owner)
            .await
            .unwrap();
    let api =
        crate::testing::with_bearer(router(AppState::new(site.db.pool.clone())), &token).unwrap();
    let body = json!({"name": "Seeded", "aoi": serde_json::from_str::<serde_json::Value>(SQUARE).unwrap(),
        "start": "2024-01-01", "end": "2024-12-31", "task": "classification"});
    let resp = api
        .oneshot(
            Request::post("/api/v1/projects")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_run_form_starts_a_sleep_run_and_refuses_bad_seconds_next_to_the_field() {
    let site = Site::new().await;
    let p = seed(&site, groundwork_store::DEFAULT_ORG_ID).await;
    let r = site
        .post_form(
            &format!("/projects/{p}/runs"),
            &[("csrf", ""), ("kind", "sleep"), ("seconds", "-3")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body
            .contains(r#"id="seconds-error">enter a number of seconds, 0–86400"#)
    );
    assert!(r.body.contains(r#"value="-3""#));

    let r = site
        .post_form(
            &format!("/projects/{p}/runs"),
            &[("csrf", ""), ("kind", "acquire"), ("stac", " ")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body.contains(r#"id="stac-error">give a STAC API URL"#),
        "{}",
        r.body
    );

    let r = site
        .post_form(
            &format!("/projects/{p}/runs"),
            &[("csrf", ""), ("kind", "sleep"), ("seconds", "2.5")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let runs = jobs::list_runs(&site.db.pool, groundwork_store::DEFAULT_ORG_ID, p, None, 10)
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        r.headers[header::LOCATION].to_str().unwrap(),
        format!("/projects/{p}#run-{}", runs[0].id)
    );
    let run = jobs::get_run(&site.db.pool, groundwork_store::DEFAULT_ORG_ID, runs[0].id)
        .await
        .unwrap();
    assert_eq!(run.steps[0].kind, "sleep");
    assert_eq!(run.steps[0].args, json!({"seconds": 2.5}));

    let page = site.get(&format!("/projects/{p}")).await;
    let step = run.steps[0].id;
    assert!(page.body.contains(&format!(r#"id="step-{step}""#)));
    assert!(page.body.contains(&format!(
        r#"action="/projects/{p}/steps/{step}/cancel" data-action="cancel">"#
    )));
    assert!(page.body.contains(&format!(
        r#"action="/projects/{p}/steps/{step}/retry" data-action="retry" hidden>"#
    )));

    // An acquisition with the chosen catalogue profile plans the windows and starts its steps.
    let r = site
        .post_form(
            &format!("/projects/{p}/runs"),
            &[
                ("csrf", ""),
                ("kind", "acquire"),
                ("stac", "http://127.0.0.1:9/stac"),
                ("profile", "planetary-computer"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let runs = jobs::list_runs(&site.db.pool, groundwork_store::DEFAULT_ORG_ID, p, None, 10)
        .await
        .unwrap();
    let acquisition = jobs::get_run(&site.db.pool, groundwork_store::DEFAULT_ORG_ID, runs[0].id)
        .await
        .unwrap();
    assert_eq!(acquisition.steps[0].kind, "acquire");
    assert_eq!(
        acquisition.steps[0].args["profile"]["kind"],
        "planetary-computer"
    );
    assert!(
        groundwork_store::windows::counts(&site.db.pool, p)
            .await
            .unwrap()
            .total
            > 0
    );

    // Cancelling the queued step redirects back to it and marks it cancelled at once.
    let r = site
        .post_form(
            &format!("/projects/{p}/steps/{step}/cancel"),
            &[("csrf", "")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let s = jobs::get_step(&site.db.pool, groundwork_store::DEFAULT_ORG_ID, step)
        .await
        .unwrap();
    assert_eq!(s.state, "cancelled");
    let again = site
        .post_form(
            &format!("/projects/{p}/steps/{step}/cancel"),
            &[("csrf", "")],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.body.contains("<h1>409 Conflict</h1>"));
}

#[tokio::test]
async fn workers_are_listed_and_drained_from_their_page() {
    let site = Site::new().await;
    let id = workers::register(
        &site.db.pool,
        &workers::Registration {
            name: "gpu-box-1".into(),
            pool: "gpu-a100".into(),
            queues: vec!["gpu".into(), "cpu".into()],
            concurrency: 2,
            capabilities: json!({"cores": 16, "memory_bytes": 68_719_476_736_u64, "gpu_name": "NVIDIA A100", "gpu_memory_mib": 81920, "candle_device": "cuda:0"}),
            version: "0.1.0".into(),
        },
    )
    .await
    .unwrap();
    let page = site.get("/workers").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("gpu-box-1"));
    assert!(page.body.contains("NVIDIA A100 (80 GiB)"));
    assert!(page.body.contains("16 cores, 64.0 GiB, device cuda:0"));
    assert!(page.body.contains(r#"<th scope="row">gpu-a100</th>"#));
    assert!(page.body.contains(r#"data-state="active">active</span>"#));

    let r = site
        .post_form(&format!("/workers/{id}/drain"), &[("csrf", "")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        workers::get(&site.db.pool, id).await.unwrap().admin_state,
        "draining"
    );
    let page = site.get("/workers").await;
    assert!(
        page.body
            .contains(r#"data-state="draining">draining</span>"#)
    );
    assert!(
        page.body
            .contains(&format!(r#"action="/workers/{id}/resume""#))
    );
    assert!(
        !page
            .body
            .contains(&format!(r#"action="/workers/{id}/drain""#))
    );

    let r = site.post_form(&format!("/workers/{id}/explode"), &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = site
        .post_form(&format!("/workers/{}/drain", Uuid::new_v4()), &[])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn static_files_have_their_types_and_cache_headers() {
    let site = Site::new().await;
    let page = site.get("/projects").await;
    let js_url = page
        .body
        .split(r#"<script type="module" src=""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    assert!(js_url.starts_with("/static/groundwork.js?v="), "{js_url}");

    let js = site.get(&js_url).await;
    assert_eq!(js.status, StatusCode::OK);
    assert_eq!(
        js.headers[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        js.headers[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert!(js.body.contains("map.js"));

    let css = site.get("/static/map.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.headers[header::CONTENT_TYPE], "text/css; charset=utf-8");
    assert_eq!(css.headers[header::CACHE_CONTROL], "no-cache");
    let etag = css.headers[header::ETAG].to_str().unwrap().to_owned();
    let again = site
        .send(
            Request::get("/static/map.css")
                .header(header::IF_NONE_MATCH, &etag)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());

    assert_eq!(
        site.get("/static/nothing.js").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        site.get("/static/../Cargo.toml").await.status,
        StatusCode::NOT_FOUND
    );
    let root = site.get("/").await;
    assert_eq!(root.headers[header::LOCATION], "/projects");
}
