//! The pages on a real database, through the whole router: rendering, the wizard's validation, the
//! forms' redirects, organisation scoping, members, invitations, tokens, the organisation switcher,
//! the account page and the embedded static files.

use crate::api::{AppState, router};
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use groundwork_store::accounts::{self, Role};
use groundwork_store::audit::Who;
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
        serde_json::to_value(&p.classes).unwrap(),
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
                ("stac", "https://stac.example.org/v1"),
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
    // An installation pool, marked as such.
    assert!(page.body.contains(
        r#"<th scope="row">gpu-a100 <span class="kind" data-field="shared">installation, shared</span></th>"#
    ));
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
async fn the_workers_page_shows_and_acts_on_the_organisations_own_workers_only() {
    let site = Site::new().await;
    let reg = |name: &str| workers::Registration {
        name: name.into(),
        pool: "cpu".into(),
        queues: vec!["cpu".into()],
        concurrency: 1,
        capabilities: json!({}),
        version: "0.1.0".into(),
    };
    let own = workers::register(&site.db.pool, &reg("own-box"))
        .await
        .unwrap();
    // Another organisation's worker, registered with that organisation's worker token.
    let who = groundwork_store::audit::Who::cli();
    let other = groundwork_store::accounts::create_org(&site.db.pool, &who, "other", None)
        .await
        .unwrap();
    let (secret, _) =
        groundwork_store::accounts::create_worker_token(&site.db.pool, &who, other.id, "w")
            .await
            .unwrap();
    let theirs = workers::register_with_token(&site.db.pool, &reg("their-box"), Some(&secret))
        .await
        .unwrap();
    let page = site.get("/workers").await;
    assert!(page.body.contains("own-box"));
    assert!(
        !page.body.contains("their-box"),
        "another organisation's worker is listed"
    );
    assert!(!page.body.contains(&theirs.to_string()));
    // Their worker cannot be drained from here, and the attempt changes nothing.
    let r = site
        .post_form(&format!("/workers/{theirs}/drain"), &[("csrf", "")])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        workers::get(&site.db.pool, theirs)
            .await
            .unwrap()
            .admin_state,
        "active"
    );
    // A member sees the page without the buttons only administrators can use.
    let member = crate::testing::member_token(
        &site.db.pool,
        groundwork_store::DEFAULT_ORG_ID,
        groundwork_store::accounts::Role::Member,
    )
    .await
    .unwrap();
    let as_member =
        crate::testing::with_bearer(router(AppState::new(site.db.pool.clone())), &member).unwrap();
    let req = axum::http::Request::builder()
        .uri("/workers")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(as_member, req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("own-box"));
    assert!(
        !body.contains(&format!(r#"action="/workers/{own}/drain""#)),
        "{body}"
    );
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

/// A signed-in browser on the plain router: a session cookie and its CSRF token.
struct Browser {
    app: axum::Router,
    cookie: String,
    csrf: String,
}

const PASSWORD: &str = "a long test password";

/// A user with `role` in `org` (no organisation when `None`).
async fn user(pool: &groundwork_store::PgPool, email: &str, org: Option<(Uuid, Role)>) -> Uuid {
    let who = Who::cli();
    let u = accounts::create_user(pool, &who, email, PASSWORD)
        .await
        .unwrap();
    if let Some((org, role)) = org {
        accounts::add_member(pool, &who, org, u.id, role)
            .await
            .unwrap();
    }
    u.id
}

impl Browser {
    async fn signed_in(pool: &groundwork_store::PgPool, user: Uuid) -> Self {
        let (secret, session) = accounts::create_session(pool, user, None, Some("10.1.0.1"))
            .await
            .unwrap();
        Self {
            app: router(AppState::new(pool.clone())),
            cookie: format!("gw_session={secret}"),
            csrf: session.csrf_token,
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
        self.send(
            Request::get(uri)
                .header(header::COOKIE, &self.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    /// Posts a form carrying the session's CSRF token (`csrf: false` leaves it out).
    async fn post(&self, uri: &str, pairs: &[(&str, &str)], csrf: bool) -> Reply {
        let mut all = pairs.to_vec();
        if csrf {
            all.push(("csrf", self.csrf.as_str()));
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(all)
            .finish();
        self.send(
            Request::post(uri)
                .header(header::COOKIE, &self.cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }
}

/// An anonymous visitor's form post.
async fn post_anonymous(app: &axum::Router, uri: &str, pairs: &[(&str, &str)]) -> Reply {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let resp = app
        .clone()
        .oneshot(
            Request::post(uri)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// The `/invite/{token}` path a members page shows once.
fn invite_path(body: &str) -> String {
    let start = body.find("/invite/").unwrap();
    body[start..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn admins_manage_members_on_their_page_and_viewers_only_read_it() {
    let db = TestDb::new().await.unwrap();
    let pool = &db.pool;
    let org = accounts::create_org(pool, &Who::cli(), "Field team", None)
        .await
        .unwrap()
        .id;
    let owner = user(pool, "owner@example.org", Some((org, Role::Owner))).await;
    let viewer = user(pool, "viewer@example.org", Some((org, Role::Viewer))).await;
    let admin = Browser::signed_in(pool, owner).await;

    let page = admin.get("/members").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<h1>Members of Field team</h1>"));
    assert!(
        page.body
            .contains(r#"<a href="/members" aria-current="page">Members</a>"#)
    );
    assert!(page.body.contains("viewer@example.org"));
    assert!(
        page.body
            .contains(r#"<label for="invite-email">Their email</label>"#)
    );
    assert!(
        page.body
            .contains(&format!(r#"action="/members/{viewer}/role""#))
    );

    // An invitation link is shown in the answer to the form, once.
    let made = admin
        .post(
            "/members/invitations",
            &[("email", "colleague@example.org"), ("role", "member")],
            true,
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let link = invite_path(&made.body);
    assert!(
        made.body
            .contains("Invitation link for colleague@example.org")
    );
    assert!(made.body.contains(r#"data-copy="invite-link""#));
    let again = admin.get("/members").await;
    assert!(!again.body.contains(&link), "the link is not shown again");
    assert!(
        again
            .body
            .contains(r#"data-invitation="colleague@example.org""#)
    );

    // A refused invitation keeps the values and says why.
    let bad = admin
        .post(
            "/members/invitations",
            &[("email", "not an email"), ("role", "member")],
            true,
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains(r#"role="alert""#));
    assert!(bad.body.contains(r#"value="not an email""#));

    // Role changes and removal go through the API's rules: the last owner stays.
    let r = admin
        .post(
            &format!("/members/{viewer}/role"),
            &[("role", "admin")],
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        accounts::role_in(pool, org, viewer).await.unwrap(),
        Some(Role::Admin)
    );
    let r = admin
        .post(
            &format!("/members/{owner}/role"),
            &[("role", "member")],
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains(r#"id="members-error""#));
    let r = admin
        .post(
            &format!("/members/{viewer}/role"),
            &[("role", "admin")],
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no CSRF token, no change");

    // The invitation is revoked from its row.
    let inv = accounts::invitations(pool, org).await.unwrap()[0].id;
    let r = admin
        .post(&format!("/members/invitations/{inv}/revoke"), &[], true)
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(accounts::invitations(pool, org).await.unwrap().is_empty());

    // A viewer reads the list without any form.
    let reader = user(pool, "reader@example.org", Some((org, Role::Viewer))).await;
    let reader = Browser::signed_in(pool, reader).await;
    let page = reader.get("/members").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("owner@example.org"));
    assert!(!page.body.contains("/members/invitations"));
    assert!(!page.body.contains("/role\""));
    assert!(!page.body.contains("/remove\""));
    let r = reader
        .post(&format!("/members/{viewer}/remove"), &[], true)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // The admin removes the (now admin) member.
    let r = admin
        .post(&format!("/members/{viewer}/remove"), &[], true)
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(accounts::role_in(pool, org, viewer).await.unwrap(), None);
}

#[tokio::test]
async fn an_invitation_link_makes_an_account_or_joins_the_signed_in_user_and_then_is_used_up() {
    let db = TestDb::new().await.unwrap();
    let pool = &db.pool;
    let app = router(AppState::new(pool.clone()));
    let org = accounts::create_org(pool, &Who::cli(), "Field team", None)
        .await
        .unwrap()
        .id;
    let who = Who::cli();

    // A visitor without an account sees the organisation and role, and makes the account.
    let (secret, _) = accounts::create_invitation(pool, &who, org, "new@example.org", Role::Member)
        .await
        .unwrap();
    let page = app
        .clone()
        .oneshot(
            Request::get(format!("/invite/{secret}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let body = String::from_utf8(
        page.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(body.contains("<h1>Join Field team</h1>"));
    assert!(body.contains(r#"<strong id="invited-role">member</strong>"#));
    assert!(body.contains("Create account and join"));
    let short = post_anonymous(&app, &format!("/invite/{secret}"), &[("password", "short")]).await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(short.body.contains(r#"id="invite-error""#));
    let joined = post_anonymous(
        &app,
        &format!("/invite/{secret}"),
        &[("password", PASSWORD)],
    )
    .await;
    assert_eq!(joined.status, StatusCode::SEE_OTHER, "{}", joined.body);
    assert_eq!(joined.headers[header::LOCATION], "/projects");
    let cookie = joined.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.starts_with("gw_session=") && cookie.contains("HttpOnly"));
    let new = accounts::user_by_email(pool, "new@example.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        accounts::role_in(pool, org, new.id).await.unwrap(),
        Some(Role::Member)
    );

    // Used up: a clear page, not an error of ours.
    let used = post_anonymous(
        &app,
        &format!("/invite/{secret}"),
        &[("password", PASSWORD)],
    )
    .await;
    assert_eq!(used.status, StatusCode::GONE);
    assert!(used.body.contains("already been used"));
    let r = app
        .clone()
        .oneshot(
            Request::get("/invite/not-a-token")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (expired, _) =
        accounts::create_invitation(pool, &who, org, "late@example.org", Role::Viewer)
            .await
            .unwrap();
    sqlx::query("update invitation set expires_at = now() - interval '1 hour' where email = 'late@example.org'")
        .execute(pool)
        .await
        .unwrap();
    let r = post_anonymous(
        &app,
        &format!("/invite/{expired}"),
        &[("password", PASSWORD)],
    )
    .await;
    assert_eq!(r.status, StatusCode::GONE);
    assert!(r.body.contains("This invitation expired on"));

    // A signed-in user with the invited email joins with one button; the session moves there.
    let elsewhere = accounts::create_org(pool, &who, "Elsewhere", None)
        .await
        .unwrap()
        .id;
    let existing = user(pool, "existing@example.org", Some((elsewhere, Role::Owner))).await;
    let browser = Browser::signed_in(pool, existing).await;
    let (secret, _) =
        accounts::create_invitation(pool, &who, org, "Existing@example.org", Role::Viewer)
            .await
            .unwrap();
    let page = browser.get(&format!("/invite/{secret}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(">Join Field team</button>"));
    assert!(!page.body.contains(r#"name="password""#));
    let r = browser.post(&format!("/invite/{secret}"), &[], false).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "a session's post needs its CSRF token"
    );
    let r = browser.post(&format!("/invite/{secret}"), &[], true).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        accounts::role_in(pool, org, existing).await.unwrap(),
        Some(Role::Viewer)
    );
    let projects = browser.get("/projects").await;
    assert!(
        projects.body.contains(&format!(
            r#"<option value="{org}" selected>Field team</option>"#
        )),
        "the session acts in the organisation joined"
    );

    // Someone signed in as another user is told to sign out; the link stays open.
    let (secret, _) =
        accounts::create_invitation(pool, &who, org, "third@example.org", Role::Viewer)
            .await
            .unwrap();
    let page = browser.get(&format!("/invite/{secret}")).await;
    assert!(
        page.body
            .contains("but the invitation is for third@example.org")
    );
    let r = browser.post(&format!("/invite/{secret}"), &[], true).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        accounts::open_invitation(pool, &secret)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn the_tokens_page_shows_a_new_token_once_and_revokes_it() {
    let db = TestDb::new().await.unwrap();
    let pool = &db.pool;
    let org = accounts::create_org(pool, &Who::cli(), "Field team", None)
        .await
        .unwrap()
        .id;
    let owner = user(pool, "owner@example.org", Some((org, Role::Owner))).await;
    let browser = Browser::signed_in(pool, owner).await;

    let page = browser.get("/tokens").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("You have no API tokens here."));
    assert!(
        page.body.contains("Worker tokens"),
        "owners see worker tokens"
    );

    let made = browser
        .post(
            "/tokens",
            &[("name", "nightly import"), ("scope", "write")],
            true,
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let secret = made
        .body
        .split(r#"id="new-token" type="text" class="mono" readonly value=""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    assert!(secret.starts_with("gw_"));
    let principal = accounts::authenticate_api_token(pool, &secret)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(principal.scope, accounts::Scope::Write);
    let page = browser.get("/tokens").await;
    assert!(!page.body.contains(&secret), "shown once");
    assert!(page.body.contains(r#"data-token="nightly import""#));

    let bad = browser
        .post("/tokens", &[("name", ""), ("scope", "write")], true)
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains(r#"id="token-error""#));

    let id = principal.token_id;
    let r = browser
        .post(&format!("/tokens/{id}/revoke"), &[], true)
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        accounts::authenticate_api_token(pool, &secret)
            .await
            .unwrap()
            .is_none()
    );
    let page = browser.get("/tokens").await;
    assert!(page.body.contains(r#"data-state="revoked">revoked</span>"#));

    // Worker tokens, likewise.
    let made = browser
        .post("/tokens/workers", &[("name", "gpu box")], true)
        .await;
    assert_eq!(made.status, StatusCode::CREATED);
    assert!(made.body.contains("Worker token “gpu box” created"));
    let wt = accounts::worker_tokens(pool, org).await.unwrap()[0].id;
    let r = browser
        .post(&format!("/tokens/workers/{wt}/revoke"), &[], true)
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        accounts::worker_tokens(pool, org).await.unwrap()[0]
            .revoked_at
            .is_some()
    );

    // A member sees their own tokens only, and no worker tokens.
    let member = user(pool, "member@example.org", Some((org, Role::Member))).await;
    let member = Browser::signed_in(pool, member).await;
    let page = member.get("/tokens").await;
    assert!(!page.body.contains(r#"data-token="nightly import""#));
    assert!(!page.body.contains("Worker tokens"));
    let r = member
        .post("/tokens/workers", &[("name", "sneaky")], true)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_org_switcher_moves_the_session_between_the_users_organisations_only() {
    let db = TestDb::new().await.unwrap();
    let pool = &db.pool;
    let who = Who::cli();
    let a = accounts::create_org(pool, &who, "Alpha", None)
        .await
        .unwrap()
        .id;
    let b = accounts::create_org(pool, &who, "Beta", None)
        .await
        .unwrap()
        .id;
    let c = accounts::create_org(pool, &who, "Gamma", None)
        .await
        .unwrap()
        .id;
    let u = user(pool, "both@example.org", Some((a, Role::Owner))).await;
    accounts::add_member(pool, &who, b, u, Role::Viewer)
        .await
        .unwrap();
    let browser = Browser::signed_in(pool, u).await;

    let page = browser.get("/projects").await;
    assert!(page.body.contains(r#"<form method="post" action="/org""#));
    assert!(
        page.body
            .contains(&format!(r#"<option value="{a}" selected>Alpha</option>"#))
    );
    assert!(
        page.body
            .contains(&format!(r#"<option value="{b}">Beta</option>"#))
    );
    assert!(!page.body.contains("Gamma"));
    assert!(
        page.body
            .contains(r#"<a href="/tokens" aria-current="false">Tokens</a>"#)
    );

    let r = browser
        .post("/org", &[("org_id", b.to_string().as_str())], false)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no CSRF token, no switch");
    let r = browser
        .post("/org", &[("org_id", b.to_string().as_str())], true)
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers[header::LOCATION], "/projects");
    let page = browser.get("/members").await;
    assert!(page.body.contains("<h1>Members of Beta</h1>"));
    assert!(
        !page.body.contains("/members/invitations"),
        "a viewer in Beta"
    );

    let r = browser
        .post("/org", &[("org_id", c.to_string().as_str())], true)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "not a member of Gamma");
    let r = browser.post("/org", &[("org_id", "nonsense")], true).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_account_page_changes_the_password_and_ends_the_other_sessions() {
    let db = TestDb::new().await.unwrap();
    let pool = &db.pool;
    let u = user(
        pool,
        "me@example.org",
        Some((groundwork_store::DEFAULT_ORG_ID, Role::Member)),
    )
    .await;
    let browser = Browser::signed_in(pool, u).await;
    let other = Browser::signed_in(pool, u).await;

    let page = browser.get("/account").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains(r#"<dd id="account-email">me@example.org</dd>"#)
    );
    assert!(
        page.body
            .contains(r#"<label for="current_password">Current password</label>"#)
    );

    let r = browser
        .post(
            "/account/password",
            &[
                ("current_password", "wrong one"),
                ("new_password", "a new long password"),
            ],
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains(r#"id="current_password-error""#));
    let r = browser
        .post(
            "/account/password",
            &[("current_password", PASSWORD), ("new_password", "short")],
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains(r#"id="new_password-error""#));
    let r = browser
        .post(
            "/account/password",
            &[
                ("current_password", PASSWORD),
                ("new_password", "a new long password"),
            ],
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains(r#"id="password-changed""#));
    assert!(matches!(
        accounts::login(pool, "me@example.org", "a new long password", "10.1.0.9")
            .await
            .unwrap(),
        accounts::LoginOutcome::Ok(_)
    ));
    // This session goes on; the other one has ended.
    assert_eq!(browser.get("/account").await.status, StatusCode::OK);
    let r = other.get("/account").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        r.headers[header::LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/login")
    );
}

/// A trained run of `project` with two recorded epochs, an evaluation report (two classes) and a
/// published class map: what the result pages show.
async fn seed_results(pool: &groundwork_store::PgPool, org: Uuid, project: Uuid) -> (Uuid, Uuid) {
    use groundwork_store::models::{self, NewEvaluation, TrainingEpoch};
    use groundwork_store::outputs::{self, NewOutput};
    sqlx::query("update project set classes = $2 where id = $1")
        .bind(project)
        .bind(json!([{"id": 0, "name": "Water", "color": "#0000ff"}, {"id": 1, "name": "Forest", "color": "#1b9e77"}]))
        .execute(pool)
        .await
        .unwrap();
    let run = jobs::create_run(
        pool,
        org,
        project,
        &[jobs::NewStep::new(
            "train",
            groundwork_types::StepKind::Train,
            json!({}),
            "cpu",
        )],
        None,
    )
    .await
    .unwrap();
    let (run_id, step_id) = (run.run.id, run.steps[0].id);
    sqlx::query(
        "update step set state = 'succeeded', output = $2, finished_at = now() where id = $1",
    )
    .bind(step_id)
    .bind(json!({"label_set_version": 1, "metrics": {"metric": "accuracy", "val_metric": 0.8}}))
    .execute(pool)
    .await
    .unwrap();
    for epoch in 1..=3 {
        models::record_epoch(
            pool,
            run_id,
            &TrainingEpoch {
                step_id,
                epoch,
                phase: "frozen".into(),
                train_loss: 1.0 / f64::from(epoch),
                val_loss: Some(1.2 / f64::from(epoch)),
                val_metric: Some(0.5 + 0.1 * f64::from(epoch)),
                metric: "accuracy".into(),
                seconds: 1.0,
            },
        )
        .await
        .unwrap();
    }
    let per_class = |p: f64| {
        json!([{"index": 0, "class_id": 0, "precision": p, "recall": 0.9, "f1": 0.85, "iou": 0.7, "support": 10},
               {"index": 1, "class_id": 1, "precision": 0.7, "recall": 0.6, "f1": 0.65, "iou": 0.5, "support": 5}])
    };
    models::record_evaluation(
        pool,
        &NewEvaluation {
            run_id,
            step_id: None,
            label_set_version: Some(1),
            model_key: "model.json".into(),
            report: json!({
                "task": "classification", "split": "test", "label_set_version": 1, "windows": 15,
                "class_ids": [0, 1],
                "model": {"accuracy": 0.8, "macro_f1": 0.75, "per_class": per_class(0.8),
                          "confusion_matrix": [[9, 1], [2, 3]], "samples": 15},
                "baseline": {"accuracy": 0.6, "macro_f1": 0.5, "per_class": per_class(0.6),
                             "confusion_matrix": [[7, 3], [3, 2]], "samples": 15, "method": "linear_probe"},
                "candidates": [
                    {"name": "raw_pixels", "description": "raw-pixel linear model", "publishable": true,
                     "chosen": true, "val_score": 0.77, "cross_validated": true, "judge_score": 0.8,
                     "test": {"accuracy": 0.8, "macro_f1": 0.75, "per_class": per_class(0.8),
                              "confusion_matrix": [[9, 1], [2, 3]], "samples": 15}},
                    {"name": "fine_tuned", "description": "fine-tuned hybrid head", "publishable": true,
                     "chosen": false, "val_score": 0.41,
                     "test": {"accuracy": 0.5, "macro_f1": 0.45, "per_class": per_class(0.5),
                              "confusion_matrix": [[5, 5], [2, 3]], "samples": 15}},
                ],
                "warnings": ["Class 1 has only 5 test sample(s): its scores are rough."],
                "selection": {"metric": "macro_f1", "chosen": "raw_pixels", "fine_tuned_lost": true,
                              "reason": "fine-tuning did not help: the raw-pixel linear model scored validation macro_f1 0.770 against 0.410 for the fine-tuned model, so the map uses it"},
            }),
        },
    )
    .await
    .unwrap();
    let output = outputs::upsert(
        pool,
        &NewOutput {
            org_id: org,
            project_id: project,
            run_id,
            kind: "class".into(),
            utm_key: "utm.tif".into(),
            web_key: "web.tif".into(),
            epsg: 32632,
            width: 4,
            height: 4,
            bands: 1,
            bbox: [10.0, 0.0, 10.05, 0.05],
            bounds_3857: [1_113_194.9, 0.0, 1_118_760.9, 5_565.9],
            min_zoom: 8,
            max_zoom: 14,
            classes: json!([{"id": 0, "name": "Water", "color": "#0000ff"}, {"id": 1, "name": "Forest", "color": "#1b9e77"}]),
            stats: json!({"areas_ha": {"0": 12_400.4, "1": 42.26}}),
            lineage: json!({"model": {"kind": "trained"}, "training_run_id": run_id, "label_set_version": 1,
                            "initialised_from": "random", "model_choice": "the best validation accuracy (0.800) of the project's 2 trained models",
                            "checkpoint_sha256": "abcdef0123456789",
                            "metrics": {"validation": {"metric": "accuracy", "val_metric": 0.8, "best_epoch": 3,
                                                       "chosen_description": "raw-pixel linear model"}}}),
            footprint: None,
        },
    )
    .await
    .unwrap();
    (run_id, output.id)
}

#[tokio::test]
async fn result_pages_show_the_map_the_curves_and_the_report_and_members_start_training() {
    let site = Site::new().await;
    let org = groundwork_store::DEFAULT_ORG_ID;
    let p = seed(&site, org).await;
    let (run, output) = seed_results(&site.db.pool, org, p).await;

    let page = site.get(&format!("/projects/{p}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body
            .contains(r#"<h2 id="results-heading">Results</h2>"#)
    );
    assert!(
        page.body
            .contains(&format!(r#"<a href="/outputs/{output}">class map</a>"#))
    );
    assert!(page.body.contains(r#"data-chart="training""#));
    assert!(page.body.contains("<title id=\"curve-title-"));
    assert_eq!(
        page.body.matches("<tr><th scope=\"row\">").count(),
        3,
        "a row per epoch"
    );
    assert!(
        page.body
            .contains(&format!(r#"href="/runs/{run}/evaluation""#))
    );
    assert!(
        page.body
            .contains("accuracy 0.800 (baseline: accuracy 0.600)")
    );
    assert!(
        page.body
            .contains(&format!(r#"action="/projects/{p}/train""#))
    );
    assert!(
        page.body
            .contains(&format!(r#"action="/projects/{p}/predict""#))
    );

    let map = site.get(&format!("/outputs/{output}")).await;
    assert_eq!(map.status, StatusCode::OK, "{}", map.body);
    assert!(map.body.contains(r#"data-map="output""#));
    assert!(map.body.contains(&format!(
        r#"data-tiles="/api/v1/outputs/{output}/tiles/{{z}}/{{x}}/{{y}}.png""#
    )));
    assert!(map.body.contains("data-bounds=\"[10.0,0.0,10.05,0.05]\""));
    assert!(
        map.body
            .contains(r#"<label for="opacity">Layer opacity</label>"#)
    );
    assert!(map.body.contains(r#"<input type="range" id="opacity""#));
    assert!(map.body.contains("#0000ff\"></span>Water</li>"));
    assert!(map.body.contains("</span>Forest</li>"));
    assert!(
        map.body
            .contains(&format!(r#"href="/api/v1/outputs/{output}/download.tif""#))
    );
    assert!(map.body.contains(&format!(
        r#"href="/api/v1/outputs/{output}/download.geojson""#
    )));
    assert!(map.body.contains(&format!(
        r#"href="/api/v1/projects/{p}/stac/items/{output}""#
    )));
    assert!(
        map.body
            .contains(&format!(r#"<a href="/projects/{p}">Seeded</a>"#))
    );
    assert!(map.body.contains("accuracy 0.800 (best epoch 3)"));
    assert!(map.body.contains("sha256 abcdef012345…"));
    // Provenance first: random encoder weights said plainly, and why this model made the map.
    assert!(map.body.contains(r#"data-provenance="random""#));
    assert!(
        map.body
            .contains("random initialisation: no released OlmoEarth checkpoint was used")
    );
    assert!(
        map.body
            .contains("the best validation accuracy (0.800) of the project")
    );
    // Hectares per class, the project's outline, and no comparison with only one class map.
    assert!(
        map.body.contains(r#"<td class="num">12,400</td>"#),
        "{}",
        map.body
    );
    assert!(map.body.contains(r#"<td class="num">42.3</td>"#));
    assert!(
        map.body.contains(r#"<td class="num">12,443</td>"#),
        "the total"
    );
    let outline = map.body.split("data-outline=\"").nth(1).unwrap_or_default();
    assert!(
        outline.starts_with('{') && outline[..200.min(outline.len())].contains("Polygon"),
        "{outline:.200}"
    );
    assert!(!map.body.contains(r#"id="compare-with""#));
    // A second class map of the project is offered for comparison.
    let second = {
        use groundwork_store::outputs::{self, NewOutput};
        let run = jobs::create_run(
            &site.db.pool,
            org,
            p,
            &[jobs::NewStep::new(
                "publish",
                groundwork_types::StepKind::Publish,
                json!({}),
                "cpu",
            )],
            None,
        )
        .await
        .unwrap();
        let mut o = outputs::get(&site.db.pool, org, output).await.unwrap();
        o.run_id = run.run.id;
        outputs::upsert(
            &site.db.pool,
            &NewOutput {
                org_id: org,
                project_id: p,
                run_id: run.run.id,
                kind: o.kind,
                utm_key: "utm2.tif".into(),
                web_key: "web2.tif".into(),
                epsg: o.epsg,
                width: o.width,
                height: o.height,
                bands: o.bands,
                bbox: o.bbox,
                bounds_3857: [1_113_194.9, 0.0, 1_118_760.9, 5_565.9],
                min_zoom: o.min_zoom,
                max_zoom: o.max_zoom,
                classes: o.classes,
                stats: json!({}),
                lineage: json!({}),
                footprint: None,
            },
        )
        .await
        .unwrap()
        .id
    };
    let map = site.get(&format!("/outputs/{output}")).await;
    assert!(map.body.contains(r#"id="compare-with""#));
    assert!(map.body.contains(&format!(
        r#"<option value="/api/v1/outputs/{second}/tiles/{{z}}/{{x}}/{{y}}.png""#
    )));
    assert!(
        map.body
            .contains(r#"<input type="range" id="compare-swipe""#)
    );

    let report = site.get(&format!("/runs/{run}/evaluation")).await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.body);
    // The published model is the chosen candidate; every candidate is listed, and the page says plainly
    // that fine-tuning lost.
    assert!(
        report
            .body
            .contains("Published model: raw-pixel linear model")
    );
    assert!(report.body.contains("Frozen baseline (linear probe)"));
    assert!(
        report
            .body
            .contains(r#"data-candidate="raw_pixels" data-chosen="true""#)
    );
    assert!(report.body.contains(r#"data-candidate="fine_tuned">"#));
    // A cross-validated score says so; a judging-half one is the bare number.
    assert!(report.body.contains("<td>0.770 (cross-validated)</td>"));
    assert!(report.body.contains("<td>0.410</td>"));
    assert!(report.body.contains(r#"data-fine-tuned-lost="true""#));
    // How far to trust the numbers, in plain words.
    assert!(report.body.contains(r#"data-section="warnings""#));
    assert!(
        report
            .body
            .contains("Class 1 has only 5 test sample(s): its scores are rough.")
    );
    assert!(report.body.contains("fine-tuning did not help"));
    assert!(map.body.contains("raw-pixel linear model"));
    assert!(
        report
            .body
            .contains(r#"<dd data-field="test-windows">15</dd>"#)
    );
    assert!(report.body.contains(r#"data-matrix="model""#));
    // Each term has its plain-language meaning on the page.
    for term in [
        "<dt>Macro-F1</dt>",
        "<dt>Precision</dt>",
        "<dt>Recall</dt>",
        "<dt>mIoU</dt>",
    ] {
        assert!(report.body.contains(term), "{term}");
    }
    assert!(
        report
            .body
            .contains(r#"title="true Forest, predicted Water: 2 of 5">2</td>"#)
    );
    assert!(report.body.contains(r#"style="width: 80.0%""#));

    // The project has no acquired imagery: the buttons are disabled and say what is missing, and a
    // post anyway is refused on the page with the same words (the API answers them as a 409).
    let page = site.get(&format!("/projects/{p}")).await;
    assert!(
        page.body
            .contains(r#"id="train-button" disabled aria-describedby="train-hint""#),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("Training: Acquire imagery first"),
        "{}",
        page.body
    );
    let r = site
        .post_form(&format!("/projects/{p}/train"), &[("csrf", "")])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body.contains("Acquire imagery first"), "{}", r.body);
    let runs = jobs::list_runs(&site.db.pool, org, p, None, 10)
        .await
        .unwrap();
    assert_eq!(
        runs.len(),
        2,
        "no training run was started (the seeded one and the second map's)"
    );
    let r = site
        .post_form(&format!("/projects/{p}/predict"), &[("csrf", "")])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body.contains(r#"id="results-error""#), "{}", r.body);
}

#[tokio::test]
async fn members_map_another_period_and_set_and_remove_a_schedule_from_the_project_page() {
    let site = Site::new().await;
    let org = groundwork_store::DEFAULT_ORG_ID;
    let p = seed(&site, org).await;
    seed_results(&site.db.pool, org, p).await;
    let page = site.get(&format!("/projects/{p}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    // The predict form offers another period; the page says there is no schedule yet.
    assert!(
        page.body
            .contains(r#"<input id="predict-start" name="start" type="date""#)
    );
    assert!(
        page.body
            .contains("monthly steps, like the project's period")
    );
    assert!(
        page.body
            .contains("No schedule: maps are made when someone presses Predict.")
    );
    assert!(
        page.body
            .contains(&format!(r#"action="/projects/{p}/schedule""#))
    );
    // The published map says which period it maps once its lineage records it.
    sqlx::query("update output set lineage = lineage || $2 where project_id = $1")
        .bind(p)
        .bind(json!({"period": {"start": "2025-04-01", "end": "2025-05-31", "area": "given"}}))
        .execute(&site.db.pool)
        .await
        .unwrap();
    let page = site.get(&format!("/projects/{p}")).await;
    assert!(
        page.body.contains("Apr 2025 – May 2025 · another area"),
        "{}",
        page.body
    );

    // A date the form cannot read, and a schedule without a catalogue to read from, are refused
    // next to the buttons.
    let r = site
        .post_form(
            &format!("/projects/{p}/predict"),
            &[("csrf", ""), ("start", "April"), ("end", "2025-05-31")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(
        r.body.contains("first day of the period: give a date"),
        "{}",
        r.body
    );
    let r = site
        .post_form(
            &format!("/projects/{p}/schedule"),
            &[
                ("csrf", ""),
                ("cadence", "monthly"),
                ("change_alert_km2", ""),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(
        r.body.contains("no acquisition to take the catalogue from"),
        "{}",
        r.body
    );

    // After an acquisition, the schedule takes its catalogue.
    jobs::create_run(
        &site.db.pool,
        org,
        p,
        &[jobs::NewStep::new(
            "acquire-0",
            groundwork_types::StepKind::Acquire,
            json!({"stac": "https://earth-search.aws.element84.com/v1", "max_cloud": 40.0}),
            "cpu",
        )],
        None,
    )
    .await
    .unwrap();
    let r = site
        .post_form(
            &format!("/projects/{p}/schedule"),
            &[
                ("csrf", ""),
                ("cadence", "quarterly"),
                ("change_alert_km2", "2.5"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let (stac, max_cloud, alert, by): (String, Option<f64>, Option<f64>, Uuid) = sqlx::query_as(
        "select stac, max_cloud, change_alert_km2, created_by from project_schedule where project_id = $1",
    )
    .bind(p)
    .fetch_one(&site.db.pool)
    .await
    .unwrap();
    assert_eq!(stac, "https://earth-search.aws.element84.com/v1");
    assert_eq!(max_cloud, Some(40.0));
    assert_eq!(alert, Some(2.5));
    let owner: Uuid = sqlx::query_scalar(
        "select user_id from membership where org_id = $1 and role = 'owner' limit 1",
    )
    .bind(org)
    .fetch_one(&site.db.pool)
    .await
    .unwrap();
    assert_eq!(by, owner);
    let page = site.get(&format!("/projects/{p}")).await;
    assert!(
        page.body.contains(r#"<option value="quarterly" selected>"#),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(
            "alerting the webhook when a change between two maps covers more than 2.5 km²"
        )
    );
    // "Never" removes it.
    let r = site
        .post_form(
            &format!("/projects/{p}/schedule"),
            &[("csrf", ""), ("cadence", "")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let left: i64 = sqlx::query_scalar("select count(*) from project_schedule")
        .fetch_one(&site.db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn result_pages_of_another_organisation_are_not_found_and_viewers_get_no_buttons() {
    let db = TestDb::new().await.unwrap();
    let pool = &db.pool;
    let site = Site {
        app: crate::testing::owner_router(AppState::new(pool.clone()))
            .await
            .unwrap(),
        db,
    };
    let pool = &site.db.pool;
    let other = accounts::create_org(pool, &Who::cli(), "Elsewhere", None)
        .await
        .unwrap()
        .id;
    let theirs = seed(&site, other).await;
    let (their_run, their_output) = seed_results(pool, other, theirs).await;
    for uri in [
        format!("/outputs/{their_output}"),
        format!("/runs/{their_run}/evaluation"),
    ] {
        let r = site.get(&uri).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
        assert!(
            r.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }
    for action in ["train", "predict"] {
        let r = site
            .post_form(&format!("/projects/{theirs}/{action}"), &[("csrf", "")])
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{action}");
    }
    assert_eq!(
        jobs::list_runs(pool, other, theirs, None, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // A viewer of the other organisation reads its results but has no buttons, and may not post.
    let viewer = user(pool, "viewer@elsewhere.org", Some((other, Role::Viewer))).await;
    let browser = Browser::signed_in(pool, viewer).await;
    let page = browser.get(&format!("/projects/{theirs}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains(r#"data-chart="training""#));
    assert!(!page.body.contains("Train a model"));
    assert!(!page.body.contains("Predict with the best model"));
    assert_eq!(
        browser
            .get(&format!("/outputs/{their_output}"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        browser
            .get(&format!("/runs/{their_run}/evaluation"))
            .await
            .status,
        StatusCode::OK
    );
    let r = browser
        .post(&format!("/projects/{theirs}/train"), &[], true)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = browser
        .post(&format!("/projects/{theirs}/train"), &[], false)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no CSRF token, no run");
}

#[tokio::test]
async fn pages_carry_the_openstreetmap_basemap_by_default_and_none_offline() {
    use crate::basemap::{Basemap, BasemapArgs, OSM_ATTRIBUTION, OSM_TILES};

    async fn site_with(basemap: Option<Basemap>) -> Site {
        let db = TestDb::new().await.unwrap();
        let state = AppState::new(db.pool.clone()).with_basemap(basemap);
        Site {
            app: crate::testing::owner_router(state).await.unwrap(),
            db,
        }
    }

    // `serve` with no basemap option: OpenStreetMap's tiles, credited on the map, allowed by the CSP.
    let online = site_with(BasemapArgs::default().basemap()).await;
    for page in ["/projects", "/projects/new"] {
        let r = online.get(page).await;
        assert_eq!(r.status, StatusCode::OK, "{page}");
        assert!(
            r.body.contains(&format!(r#"data-basemap="{OSM_TILES}""#)),
            "{page}: {}",
            r.body
        );
        assert!(
            r.body
                .contains(&format!(r#"data-basemap-attribution="{OSM_ATTRIBUTION}""#)),
            "{page}"
        );
        let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.contains("img-src 'self' data: blob: https://tile.openstreetmap.org;"),
            "{csp}"
        );
    }

    // Another provider with its own credit.
    let other = site_with(Basemap::from_settings(
        Some("https://tiles.example.org/{z}/{x}/{y}.png"),
        Some("Tiles © Example <Maps>"),
        false,
    ))
    .await;
    let r = other.get("/projects/new").await;
    assert!(
        r.body
            .contains(r#"data-basemap="https://tiles.example.org/{z}/{x}/{y}.png""#)
    );
    assert!(
        r.body
            .contains(r#"data-basemap-attribution="Tiles © Example &#60;Maps&#62;""#)
            || r.body
                .contains(r#"data-basemap-attribution="Tiles © Example &lt;Maps&gt;""#),
        "the attribution is escaped: {}",
        r.body
    );

    // Offline (`serve --offline`, `GROUNDWORK_OFFLINE=1`, or `--basemap-url none`): no basemap, no
    // attribution, and the pages may reach no other origin.
    for args in [
        BasemapArgs {
            offline: Some(true),
            ..BasemapArgs::default()
        },
        BasemapArgs {
            basemap_url: Some("none".into()),
            ..BasemapArgs::default()
        },
    ] {
        let offline = site_with(args.basemap()).await;
        for page in ["/projects", "/projects/new"] {
            let r = offline.get(page).await;
            assert_eq!(r.status, StatusCode::OK, "{page}");
            assert!(
                r.body
                    .contains(r#"data-basemap="" data-basemap-attribution="""#),
                "{args:?} {page}"
            );
            assert!(!r.body.contains("openstreetmap"), "{args:?} {page}");
            let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(!csp.contains("https:"), "{args:?}: {csp}");
        }
    }
}

#[tokio::test]
async fn the_project_page_edits_the_settings_and_deletes_the_project_after_its_name_is_typed() {
    let site = Site::new().await;
    let org = groundwork_store::DEFAULT_ORG_ID;
    let good = wizard("2024-12-31");
    let r = site.post_form("/projects/new", &borrow(&good)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let p = projects::list(&site.db.pool, org, None, 10).await.unwrap()[0].id;
    let page = site.get(&format!("/projects/{p}")).await;
    assert!(
        page.body
            .contains(r#"<label for="settings-name">Name</label>"#)
    );
    assert!(page.body.contains(r#"<label for="delete-confirm">"#));

    // New name and dates are saved; a date it cannot read is said next to the form and nothing changes.
    let r = site
        .post_form(
            &format!("/projects/{p}/settings"),
            &[
                ("csrf", ""),
                ("name", "Delta, dry season"),
                ("description", "Second look"),
                ("start", "2024-11-01"),
                ("end", "2025-03-31"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let saved = projects::get(&site.db.pool, org, p).await.unwrap();
    assert_eq!(saved.name, "Delta, dry season");
    assert_eq!(saved.description, "Second look");
    assert_eq!(saved.end.to_string(), "2025-03-31");
    let r = site
        .post_form(
            &format!("/projects/{p}/settings"),
            &[("csrf", ""), ("name", "x"), ("start", "soon")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains(r#"id="settings-error""#), "{}", r.body);
    assert!(r.body.contains("start: not a date"), "{}", r.body);
    assert_eq!(
        projects::get(&site.db.pool, org, p).await.unwrap().name,
        "Delta, dry season"
    );

    // Deleting needs the name typed exactly.
    let r = site
        .post_form(
            &format!("/projects/{p}/delete"),
            &[("csrf", ""), ("confirm", "Delta")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("type the project"), "{}", r.body);
    assert!(projects::get(&site.db.pool, org, p).await.is_ok());
    let r = site
        .post_form(
            &format!("/projects/{p}/delete"),
            &[("csrf", ""), ("confirm", "Delta, dry season")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.headers[header::LOCATION], "/projects");
    assert!(projects::get(&site.db.pool, org, p).await.is_err());
}

#[tokio::test]
async fn device_time_quotas_and_runs_held_for_approval_are_shown() {
    let site = Site::new().await;
    let pool = &site.db.pool;
    let org = groundwork_store::DEFAULT_ORG_ID;
    let project = seed(&site, org).await;
    let gpu = workers::register(
        pool,
        &workers::Registration {
            name: "gpu-box".into(),
            pool: "gpu".into(),
            queues: vec!["gpu".into()],
            concurrency: 1,
            capabilities: json!({"candle_device": "cuda:0"}),
            version: "0.1.0".into(),
        },
    )
    .await
    .unwrap();
    // A step that ran 1.5 hours on the GPU, and a run held for approval.
    let run = jobs::create_run(
        pool,
        org,
        project,
        &[jobs::NewStep::new(
            "s",
            "noop".parse().unwrap(),
            json!({}),
            "gpu",
        )],
        None,
    )
    .await
    .unwrap();
    let c = jobs::claim(
        pool,
        run.steps[0].id,
        gpu,
        std::time::Duration::from_secs(60),
        None,
    )
    .await
    .unwrap()
    .unwrap();
    sqlx::query(
        "update step_attempt set started_at = now() - interval '90 minutes' where claim_id = $1",
    )
    .bind(c.claim_id)
    .execute(pool)
    .await
    .unwrap();
    jobs::complete(pool, &c, &json!({}), &[]).await.unwrap();
    let held = jobs::create_run_with(
        pool,
        org,
        project,
        &[jobs::NewStep::new(
            "p",
            "noop".parse().unwrap(),
            json!({}),
            "gpu",
        )],
        None,
        &jobs::RunExtras {
            estimate: Some(json!({"device_hours": 4.25, "device_kind": "gpu"})),
            awaiting_approval: true,
            quota: None,
        },
    )
    .await
    .unwrap();
    groundwork_store::usage::set_quota(
        pool,
        &Who::cli(),
        org,
        groundwork_types::DeviceKind::Gpu,
        Some(2.0),
    )
    .await
    .unwrap();
    groundwork_store::usage::set_price(pool, groundwork_types::DeviceKind::Gpu, Some((3.0, "EUR")))
        .await
        .unwrap();

    let page = site.get(&format!("/projects/{project}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("Device time: 1.50 GPU-hours"),
        "{}",
        page.body
    );
    let waiting = format!("id=\"run-{}\"", held.run.id);
    let at = page.body.find(&waiting).expect("the held run is listed");
    let held_html = &page.body[at..];
    assert!(
        held_html.contains(
            "Waiting for an administrator&#39;s approval: this run (about 4.25 GPU-hours)"
        ) || held_html
            .contains("Waiting for an administrator's approval: this run (about 4.25 GPU-hours)"),
        "{held_html}"
    );

    // The workers page shows the month's device time, the quota, what is left and the cost.
    let page = site.get("/workers").await;
    assert_eq!(page.status, StatusCode::OK);
    let at = page
        .body
        .find("data-field=\"usage\"")
        .expect("a usage table");
    let table = &page.body[at..];
    let gpu_row = &table[table.find(">GPU<").unwrap()..];
    let gpu_row = &gpu_row[..gpu_row.find("</tr>").unwrap()];
    for cell in ["1.50", "2.00", "0.50", "4.50 EUR"] {
        assert!(gpu_row.contains(cell), "{cell} in {gpu_row}");
    }
}
