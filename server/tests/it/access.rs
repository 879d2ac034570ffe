//! Access control over the real router and database: every v1 route and every page that acts on an
//! organisation × every kind of caller × own and other organisation, plus sessions, CSRF, token
//! scopes and revocation, the sign-in rate limit, first-run setup, invitations, password changes,
//! organisation deletion, the audit log and the `Secure` cookie setting.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use groundwork_server::{AppState, router};
use groundwork_store::accounts::{self, Role, Scope};
use groundwork_store::audit::Who;
use groundwork_store::models::{self, NewEvaluation};
use groundwork_store::outputs::{self, NewOutput};
use groundwork_store::testing::TestDb;
use groundwork_store::{PgPool, projects, workers};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::net::SocketAddr;
use tower::ServiceExt;
use uuid::Uuid;

const PASSWORD: &str = "a long password";

/// A signed-in browser: cookie and CSRF token.
#[derive(Clone)]
struct Session {
    cookie: String,
    csrf: String,
}

/// Who sends a request.
#[derive(Clone)]
enum Caller {
    Anonymous,
    Bearer(String),
    Browser(Session),
    /// A browser with no session, holding these cookies (`name=value; …`).
    Cookies(String),
}

struct Resp {
    status: StatusCode,
    body: Value,
    headers: axum::http::HeaderMap,
}

async fn send(
    app: &axum::Router,
    caller: &Caller,
    method: &str,
    uri: &str,
    body: Option<Value>,
    ip: &str,
) -> Resp {
    // A JSON string body is an HTML form's (the pages' routes); anything else is sent as JSON.
    let content_type = match &body {
        Some(Value::String(_)) => "application/x-www-form-urlencoded",
        _ => "application/json",
    };
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type);
    match caller {
        Caller::Anonymous => {}
        Caller::Bearer(t) => req = req.header("authorization", format!("Bearer {t}")),
        Caller::Browser(s) => {
            req = req
                .header("cookie", format!("gw_session={}", s.cookie))
                .header("x-csrf-token", &s.csrf);
        }
        Caller::Cookies(c) => req = req.header("cookie", c),
    }
    let mut req = req
        .body(body.map_or_else(Body::empty, |b| match b {
            Value::String(form) => Body::from(form),
            json => Body::from(json.to_string()),
        }))
        .unwrap();
    let addr: SocketAddr = format!("{ip}:40000").parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(addr));
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        headers,
    }
}

/// The `gw_form` cookie a sign-in or setup page set (its value is also the form's token).
fn form_cookie(r: &Resp) -> String {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("gw_form="))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_owned()
}

fn cookie_of(r: &Resp) -> String {
    let set = r.headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    set.trim_start_matches("gw_session=")
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

async fn login(app: &axum::Router, email: &str, password: &str) -> Session {
    let r = send(
        app,
        &Caller::Anonymous,
        "POST",
        "/api/v1/auth/login",
        Some(json!({"email": email, "password": password})),
        "10.0.0.1",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    Session {
        cookie: cookie_of(&r),
        csrf: r.body["csrf_token"].as_str().unwrap().to_owned(),
    }
}

async fn user_in(pool: &PgPool, org: Uuid, email: &str, role: Role) -> Uuid {
    let who = Who::cli();
    let u = accounts::create_user(pool, &who, email, PASSWORD)
        .await
        .unwrap();
    accounts::add_member(pool, &who, org, u.id, role)
        .await
        .unwrap();
    u.id
}

async fn token_of(pool: &PgPool, user: Uuid, org: Uuid, scope: Scope) -> String {
    accounts::create_api_token(pool, &Who::cli(), user, org, "t", scope, None)
        .await
        .unwrap()
        .0
}

fn aoi() -> Value {
    json!({"type": "Polygon", "coordinates": [[[10.0, 50.0], [10.01, 50.0], [10.01, 50.01], [10.0, 50.01], [10.0, 50.0]]]})
}

/// One organisation's resources, created by its owner's token.
struct OrgFixture {
    id: Uuid,
    owner: Caller,
    project: String,
    run: String,
    step: String,
    worker: Uuid,
    output: Uuid,
}

struct Fixture {
    app: axum::Router,
    pool: PgPool,
    own: OrgFixture,
    other: OrgFixture,
    callers: Vec<(&'static str, Option<Role>, Caller)>,
    _db: TestDb,
    _objects: tempfile::TempDir,
}

/// Two labelled points inside [`aoi`], one of each class.
fn label_file() -> Value {
    json!({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [10.005, 50.005]}, "properties": {"class": "water"}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [10.006, 50.006]}, "properties": {"class": "land"}}]})
}

/// Imports one label into `project` as its owner and returns the label's id.
async fn new_label(app: &axum::Router, pool: &PgPool, owner: &Caller, project: &str) -> i64 {
    let r = send(
        app,
        owner,
        "POST",
        &format!("/api/v1/projects/{project}/labels/import"),
        Some(label_file()),
        "10.0.0.9",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    sqlx::query_scalar("select max(id) from label where project_id = $1")
        .bind(project.parse::<Uuid>().unwrap())
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A published class map of `run` (a 4 × 4 COG near the AOI, as both of its files).
async fn new_output(
    pool: &PgPool,
    objects: &std::path::Path,
    org: Uuid,
    project: Uuid,
    run: Uuid,
) -> Uuid {
    let key = format!("orgs/{org}/outputs/{run}/class.tif");
    let path = objects.join(&key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let (x, y) = (1_113_194.9, 6_446_275.8);
    groundwork_imagery::demo::write_cog::<u8>(
        &path,
        &[0; 16],
        4,
        4,
        [x, 10.0, 0.0, y, 0.0, -10.0],
        3857,
        Some(255.0),
    )
    .unwrap();
    let o = outputs::upsert(
        pool,
        &NewOutput {
            org_id: org,
            project_id: project,
            run_id: run,
            kind: "class".into(),
            utm_key: key.clone(),
            web_key: key,
            epsg: 3857,
            width: 4,
            height: 4,
            bands: 1,
            bbox: [10.0, 50.0, 10.0004, 50.0003],
            bounds_3857: [x, y - 40.0, x + 40.0, y],
            min_zoom: 0,
            max_zoom: 14,
            classes: json!([{"id": 0, "name": "water", "color": "#0000ff"}]),
            stats: json!({}),
            lineage: json!({}),
            footprint: None,
        },
    )
    .await
    .unwrap();
    o.id
}

async fn org_fixture(
    app: &axum::Router,
    pool: &PgPool,
    objects: &std::path::Path,
    name: &str,
) -> OrgFixture {
    let org = accounts::create_org(pool, &Who::cli(), name, None)
        .await
        .unwrap();
    let owner_id = user_in(pool, org.id, &format!("owner@{name}.org"), Role::Owner).await;
    let owner = Caller::Bearer(token_of(pool, owner_id, org.id, Scope::Write).await);
    let r = send(
        app,
        &owner,
        "POST",
        "/api/v1/projects",
        Some(json!({"name": name, "aoi": aoi(), "start": "2024-01-01", "end": "2024-02-01", "task": "classification",
            "classes": [{"id": 0, "name": "water", "color": "#0000ff"}, {"id": 1, "name": "land", "color": "#00aa00"}]})),
        "10.0.0.9",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let project = r.body["id"].as_str().unwrap().to_owned();
    let (run, step) = new_run(app, &owner, &project).await;
    // Acquired windows with a label (the split needs them), an evaluation of the run and an output.
    let project_id: Uuid = project.parse().unwrap();
    let p = projects::get(pool, org.id, project_id).await.unwrap();
    let specs = groundwork_worker::steps::plan_windows(pool, &p)
        .await
        .unwrap();
    // Their imagery, under the windows' fixed keys: what the imagery tiles draw.
    let keys = groundwork_types::keys::ProjectKeys::new(org.id, project_id);
    for w in &specs {
        let path = objects.join(keys.window(&w.id, groundwork_types::Modality::Sentinel2L2a));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = crate::common::s2_window_file(w, |_, _| [1000.0; 12], &[1]);
        std::fs::write(path, file).unwrap();
    }
    sqlx::query("update project_window set status = 'acquired' where project_id = $1")
        .bind(project_id)
        .execute(pool)
        .await
        .unwrap();
    new_label(app, pool, &owner, &project).await;
    // Every window in training: the project is ready to train.
    let r = send(
        app,
        &owner,
        "POST",
        &format!("/api/v1/projects/{project}/labels/split"),
        Some(json!({"fractions": [1.0, 0.0, 0.0]})),
        "10.0.0.9",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let run_id: Uuid = run.parse().unwrap();
    models::record_evaluation(
        pool,
        &NewEvaluation {
            run_id,
            step_id: None,
            label_set_version: None,
            model_key: "model.json".into(),
            report: json!({}),
        },
    )
    .await
    .unwrap();
    let output = new_output(pool, objects, org.id, project_id, run_id).await;
    // A trained model to predict with: a run whose `train` step succeeded.
    let trained = groundwork_store::jobs::create_run(
        pool,
        org.id,
        project_id,
        &[groundwork_store::jobs::NewStep::new(
            "train",
            "train".parse().unwrap(),
            json!({}),
            "cpu",
        )],
        None,
    )
    .await
    .unwrap();
    sqlx::query(
        "update step set state = 'succeeded', output = '{}'::jsonb, finished_at = now() where id = $1",
    )
    .bind(trained.steps[0].id)
    .execute(pool)
    .await
    .unwrap();
    let (secret, _) = accounts::create_worker_token(pool, &Who::cli(), org.id, "w")
        .await
        .unwrap();
    let worker = workers::register_with_token(
        pool,
        &workers::Registration {
            name: format!("{name}-worker"),
            pool: "cpu".into(),
            queues: vec!["cpu".into()],
            concurrency: 1,
            capabilities: json!({}),
            version: "test".into(),
        },
        Some(&secret),
    )
    .await
    .unwrap();
    OrgFixture {
        id: org.id,
        owner,
        project,
        run,
        step,
        worker,
        output,
    }
}

async fn new_run(app: &axum::Router, owner: &Caller, project: &str) -> (String, String) {
    let r = send(
        app,
        owner,
        "POST",
        &format!("/api/v1/projects/{project}/runs"),
        Some(json!({"steps": [{"name": "a", "kind": "noop"}]})),
        "10.0.0.9",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (
        r.body["id"].as_str().unwrap().to_owned(),
        r.body["steps"][0]["id"].as_str().unwrap().to_owned(),
    )
}

impl Fixture {
    async fn new() -> Self {
        let db = TestDb::new().await.unwrap();
        let pool = db.pool.clone();
        let dir = tempfile::tempdir().unwrap();
        let mut state = AppState::new(pool.clone());
        state.objects = Some(std::sync::Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap(),
        ));
        let app = router(state);
        let own = org_fixture(&app, &pool, dir.path(), "alpha").await;
        let other = org_fixture(&app, &pool, dir.path(), "beta").await;
        let mut callers = vec![("anonymous", None, Caller::Anonymous)];
        for role in [Role::Viewer, Role::Member, Role::Admin, Role::Owner] {
            let email = format!("{role}.user@alpha.org");
            user_in(&pool, own.id, &email, role).await;
            callers.push((
                "session",
                Some(role),
                Caller::Browser(login(&app, &email, PASSWORD).await),
            ));
        }
        let reader = user_in(&pool, own.id, "reader@alpha.org", Role::Owner).await;
        callers.push((
            "read-token",
            Some(Role::Owner),
            Caller::Bearer(token_of(&pool, reader, own.id, Scope::Read).await),
        ));
        let writer = user_in(&pool, own.id, "writer@alpha.org", Role::Member).await;
        callers.push((
            "write-token",
            Some(Role::Member),
            Caller::Bearer(token_of(&pool, writer, own.id, Scope::Write).await),
        ));
        Self {
            app,
            pool,
            own,
            other,
            callers,
            _db: db,
            _objects: dir,
        }
    }

    async fn send(&self, caller: &Caller, method: &str, uri: &str, body: Option<Value>) -> Resp {
        send(&self.app, caller, method, uri, body, "10.0.0.2").await
    }

    /// The URI and body of `case` aimed at `org`'s resources; resources a call consumes are made
    /// afresh.
    async fn target(&self, case: &str, org: &OrgFixture) -> (String, Option<Value>) {
        let (p, run, step, w, o) = (&org.project, &org.run, &org.step, org.worker, org.output);
        let form = |pairs: &[(&str, &str)]| {
            Some(Value::String(
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(pairs)
                    .finish(),
            ))
        };
        match case {
            "list projects" => ("/api/v1/projects".into(), None),
            "create project" => (
                "/api/v1/projects".into(),
                Some(
                    json!({"name": "x", "aoi": aoi(), "start": "2024-01-01", "end": "2024-02-01", "task": "classification"}),
                ),
            ),
            "get project" => (format!("/api/v1/projects/{p}"), None),
            "update project" => (
                format!("/api/v1/projects/{p}"),
                Some(json!({"description": "d"})),
            ),
            "delete project" => {
                let r = self
                    .send(
                        &org.owner,
                        "POST",
                        "/api/v1/projects",
                        Some(json!({"name": "doomed", "aoi": aoi(), "start": "2024-01-01", "end": "2024-02-01", "task": "classification"})),
                    )
                    .await;
                (
                    format!("/api/v1/projects/{}", r.body["id"].as_str().unwrap()),
                    None,
                )
            }
            "create run" => (
                format!("/api/v1/projects/{p}/runs"),
                Some(json!({"steps": [{"name": "a", "kind": "noop"}]})),
            ),
            "list runs" => (format!("/api/v1/projects/{p}/runs"), None),
            "acquire" => {
                // One acquisition at a time: the previous caller's run is closed first.
                sqlx::query(
                    "update pipeline_run r set state = 'cancelled', finished_at = now() \
                     where r.project_id = $1 and r.state in ('queued', 'running') \
                       and exists (select 1 from step s where s.run_id = r.id and s.kind = 'acquire')",
                )
                .bind(p.parse::<Uuid>().unwrap())
                .execute(&self.pool)
                .await
                .unwrap();
                (
                    format!("/api/v1/projects/{p}/acquire"),
                    Some(json!({"stac": "https://stac.example.org/v1"})),
                )
            }
            "list windows" => (format!("/api/v1/projects/{p}/windows"), None),
            "get run" => (format!("/api/v1/runs/{run}"), None),
            "get step" => (format!("/api/v1/steps/{step}"), None),
            "cancel step" => {
                let (_, s) = new_run(&self.app, &org.owner, p).await;
                (format!("/api/v1/steps/{s}/cancel"), None)
            }
            "retry step" => {
                let (_, s) = new_run(&self.app, &org.owner, p).await;
                let r = self
                    .send(
                        &org.owner,
                        "POST",
                        &format!("/api/v1/steps/{s}/cancel"),
                        None,
                    )
                    .await;
                assert!(r.status.is_success(), "{}", r.body);
                (format!("/api/v1/steps/{s}/retry"), None)
            }
            "step kinds" => ("/api/v1/step-kinds".into(), None),
            "list workers" => ("/api/v1/workers".into(), None),
            "drain worker" => (format!("/api/v1/workers/{w}/drain"), None),
            "pause worker" => (format!("/api/v1/workers/{w}/pause"), None),
            "resume worker" => (format!("/api/v1/workers/{w}/resume"), None),
            "list pools" => ("/api/v1/pools".into(), None),
            "me" => ("/api/v1/me".into(), None),
            "switch org" => ("/api/v1/me/org".into(), Some(json!({"org_id": org.id}))),
            "list orgs" => ("/api/v1/orgs".into(), None),
            "create org" => (
                "/api/v1/orgs".into(),
                Some(json!({"name": format!("org-{}", Uuid::new_v4())})),
            ),
            "list members" => ("/api/v1/members".into(), None),
            "add member" => {
                let u = accounts::create_user(
                    &self.pool,
                    &Who::cli(),
                    &format!("{}@example.org", Uuid::new_v4()),
                    PASSWORD,
                )
                .await
                .unwrap();
                (
                    "/api/v1/members".into(),
                    Some(json!({"email": u.email, "role": "viewer"})),
                )
            }
            "update member" | "remove member" => {
                let u = user_in(
                    &self.pool,
                    org.id,
                    &format!("{}@example.org", Uuid::new_v4()),
                    Role::Viewer,
                )
                .await;
                let body = (case == "update member").then(|| json!({"role": "member"}));
                (format!("/api/v1/members/{u}"), body)
            }
            "list invitations" => ("/api/v1/invitations".into(), None),
            "create invitation" => (
                "/api/v1/invitations".into(),
                Some(json!({"email": "new@example.org", "role": "member"})),
            ),
            "revoke invitation" => {
                let (_, inv) = accounts::create_invitation(
                    &self.pool,
                    &Who::cli(),
                    org.id,
                    "x@example.org",
                    Role::Viewer,
                )
                .await
                .unwrap();
                (format!("/api/v1/invitations/{}", inv.id), None)
            }
            "list tokens" => ("/api/v1/tokens".into(), None),
            "create token" => (
                "/api/v1/tokens".into(),
                Some(json!({"scope": "read", "name": "n"})),
            ),
            "revoke token" => {
                // Somebody else's token: only admins may revoke it.
                let owner = accounts::members(&self.pool, org.id)
                    .await
                    .unwrap()
                    .into_iter()
                    .find(|m| m.email.starts_with("owner@"))
                    .unwrap();
                let (_, t) = accounts::create_api_token(
                    &self.pool,
                    &Who::cli(),
                    owner.user_id,
                    org.id,
                    "victim",
                    Scope::Read,
                    None,
                )
                .await
                .unwrap();
                (format!("/api/v1/tokens/{}", t.id), None)
            }
            "list worker tokens" => ("/api/v1/worker-tokens".into(), None),
            "create worker token" => (
                "/api/v1/worker-tokens".into(),
                Some(json!({"name": "gpu box"})),
            ),
            "revoke worker token" => {
                let (_, t) = accounts::create_worker_token(&self.pool, &Who::cli(), org.id, "old")
                    .await
                    .unwrap();
                (format!("/api/v1/worker-tokens/{}", t.id), None)
            }
            "audit" => ("/api/v1/audit".into(), None),
            "import labels" => (
                format!("/api/v1/projects/{p}/labels/import"),
                Some(label_file()),
            ),
            "export labels" => (format!("/api/v1/projects/{p}/labels"), None),
            "label summary" => (format!("/api/v1/projects/{p}/labels/summary"), None),
            "split windows" => (
                format!("/api/v1/projects/{p}/labels/split"),
                Some(json!({})),
            ),
            "delete label" => {
                let label = new_label(&self.app, &self.pool, &org.owner, p).await;
                (format!("/api/v1/projects/{p}/labels/{label}"), None)
            }
            "start training" => (format!("/api/v1/projects/{p}/train"), Some(json!({}))),
            "list suggestions" => (format!("/api/v1/projects/{p}/suggestions"), None),
            "start suggestions" => (format!("/api/v1/projects/{p}/suggestions"), Some(json!({}))),
            "start prediction" => (format!("/api/v1/projects/{p}/predict"), Some(json!({}))),
            "list evaluations" => (format!("/api/v1/projects/{p}/evaluations"), None),
            "get training" => (format!("/api/v1/runs/{run}/training"), None),
            "get evaluation" => (format!("/api/v1/runs/{run}/evaluation"), None),
            "get output" => (format!("/api/v1/outputs/{o}"), None),
            "list outputs" => (format!("/api/v1/projects/{p}/outputs"), None),
            "output tile" => (format!("/api/v1/outputs/{o}/tiles/0/0/0.png"), None),
            "imagery layers" => (format!("/api/v1/projects/{p}/imagery"), None),
            "imagery tile" => {
                // The tile over the AOI's centre, which its windows cover.
                let (x, y) = groundwork_imagery::tiles::tile_of(10.005, 50.005, 14);
                (
                    format!(
                        "/api/v1/projects/{p}/imagery/sentinel2_l2a/0/true_color/14/{x}/{y}.png"
                    ),
                    None,
                )
            }
            "download tif" => (format!("/api/v1/outputs/{o}/download.tif"), None),
            "download geojson" => (format!("/api/v1/outputs/{o}/download.geojson"), None),
            "stac collection" => (format!("/api/v1/projects/{p}/stac"), None),
            "stac items" => (format!("/api/v1/projects/{p}/stac/items"), None),
            "stac item" => (format!("/api/v1/projects/{p}/stac/items/{o}"), None),
            // The pages (HTML forms).
            "members page" => ("/members".into(), None),
            "invite on page" => (
                "/members/invitations".into(),
                form(&[("email", "new@example.org"), ("role", "member")]),
            ),
            "revoke invitation on page" => {
                let (_, inv) = accounts::create_invitation(
                    &self.pool,
                    &Who::cli(),
                    org.id,
                    "x@example.org",
                    Role::Viewer,
                )
                .await
                .unwrap();
                (format!("/members/invitations/{}/revoke", inv.id), form(&[]))
            }
            "change role on page" | "remove member on page" => {
                let u = user_in(
                    &self.pool,
                    org.id,
                    &format!("{}@example.org", Uuid::new_v4()),
                    Role::Viewer,
                )
                .await;
                if case == "change role on page" {
                    (format!("/members/{u}/role"), form(&[("role", "member")]))
                } else {
                    (format!("/members/{u}/remove"), form(&[]))
                }
            }
            "invitation page" => {
                let (secret, _) = accounts::create_invitation(
                    &self.pool,
                    &Who::cli(),
                    org.id,
                    &format!("{}@example.org", Uuid::new_v4()),
                    Role::Viewer,
                )
                .await
                .unwrap();
                (format!("/invite/{secret}"), None)
            }
            "tokens page" => ("/tokens".into(), None),
            "workers page" => ("/workers".into(), None),
            "drain worker on page" => (format!("/workers/{w}/drain"), form(&[])),
            "resume worker on page" => (format!("/workers/{w}/resume"), form(&[])),
            "create token on page" => ("/tokens".into(), form(&[("name", "n"), ("scope", "read")])),
            "revoke token on page" => {
                let owner = accounts::members(&self.pool, org.id)
                    .await
                    .unwrap()
                    .into_iter()
                    .find(|m| m.email.starts_with("owner@"))
                    .unwrap();
                let (_, t) = accounts::create_api_token(
                    &self.pool,
                    &Who::cli(),
                    owner.user_id,
                    org.id,
                    "victim",
                    Scope::Read,
                    None,
                )
                .await
                .unwrap();
                (format!("/tokens/{}/revoke", t.id), form(&[]))
            }
            "create worker token on page" => ("/tokens/workers".into(), form(&[("name", "box")])),
            "revoke worker token on page" => {
                let (_, t) = accounts::create_worker_token(&self.pool, &Who::cli(), org.id, "old")
                    .await
                    .unwrap();
                (format!("/tokens/workers/{}/revoke", t.id), form(&[]))
            }
            "account page" => ("/account".into(), None),
            "project page" => (format!("/projects/{p}"), None),
            "train on page" => (format!("/projects/{p}/train"), form(&[])),
            "predict on page" => (format!("/projects/{p}/predict"), form(&[])),
            "output map page" => (format!("/outputs/{o}"), None),
            "evaluation page" => (format!("/runs/{run}/evaluation"), None),
            "change password on page" => (
                "/account/password".into(),
                form(&[("current_password", PASSWORD), ("new_password", PASSWORD)]),
            ),
            "switch org on page" => (
                "/org".into(),
                form(&[("org_id", org.id.to_string().as_str())]),
            ),
            other => panic!("no target for {other}"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Class {
    Ok,
    Unauthorized,
    Forbidden,
    NotFound,
}

/// A page's redirect to sign-in is its 401; any other redirect (a form's POST-redirect-GET) is done.
fn class(r: &Resp) -> Option<Class> {
    let location = r
        .headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match r.status.as_u16() {
        300..=399 if location.starts_with("/login") => Some(Class::Unauthorized),
        200..=399 => Some(Class::Ok),
        401 => Some(Class::Unauthorized),
        403 => Some(Class::Forbidden),
        404 => Some(Class::NotFound),
        _ => None,
    }
}

#[tokio::test]
async fn every_route_answers_each_caller_by_role_scope_and_organisation() {
    let fx = Fixture::new().await;
    // (case, method, least role, refused below it with, has an other-organisation variant)
    let cases: &[(&str, &str, Role, Class, bool)] = &[
        (
            "list projects",
            "GET",
            Role::Viewer,
            Class::Forbidden,
            false,
        ),
        (
            "create project",
            "POST",
            Role::Member,
            Class::Forbidden,
            false,
        ),
        ("get project", "GET", Role::Viewer, Class::Forbidden, true),
        (
            "update project",
            "PATCH",
            Role::Member,
            Class::Forbidden,
            true,
        ),
        (
            "delete project",
            "DELETE",
            Role::Admin,
            Class::Forbidden,
            true,
        ),
        ("create run", "POST", Role::Member, Class::Forbidden, true),
        ("list runs", "GET", Role::Viewer, Class::Forbidden, true),
        ("acquire", "POST", Role::Member, Class::Forbidden, true),
        ("list windows", "GET", Role::Viewer, Class::Forbidden, true),
        ("get run", "GET", Role::Viewer, Class::Forbidden, true),
        ("get step", "GET", Role::Viewer, Class::Forbidden, true),
        ("cancel step", "POST", Role::Member, Class::Forbidden, true),
        ("retry step", "POST", Role::Member, Class::Forbidden, true),
        ("step kinds", "GET", Role::Viewer, Class::Forbidden, false),
        ("list workers", "GET", Role::Viewer, Class::Forbidden, false),
        ("drain worker", "POST", Role::Admin, Class::Forbidden, true),
        ("pause worker", "POST", Role::Admin, Class::Forbidden, true),
        ("resume worker", "POST", Role::Admin, Class::Forbidden, true),
        ("list pools", "GET", Role::Viewer, Class::Forbidden, false),
        ("me", "GET", Role::Viewer, Class::Forbidden, false),
        ("switch org", "POST", Role::Viewer, Class::Forbidden, true),
        ("list orgs", "GET", Role::Viewer, Class::Forbidden, false),
        ("create org", "POST", Role::Viewer, Class::Forbidden, false),
        ("list members", "GET", Role::Viewer, Class::Forbidden, false),
        ("add member", "POST", Role::Admin, Class::Forbidden, false),
        (
            "update member",
            "PATCH",
            Role::Admin,
            Class::Forbidden,
            true,
        ),
        (
            "remove member",
            "DELETE",
            Role::Admin,
            Class::Forbidden,
            true,
        ),
        (
            "list invitations",
            "GET",
            Role::Admin,
            Class::Forbidden,
            false,
        ),
        (
            "create invitation",
            "POST",
            Role::Admin,
            Class::Forbidden,
            false,
        ),
        (
            "revoke invitation",
            "DELETE",
            Role::Admin,
            Class::Forbidden,
            true,
        ),
        ("list tokens", "GET", Role::Viewer, Class::Forbidden, false),
        (
            "create token",
            "POST",
            Role::Viewer,
            Class::Forbidden,
            false,
        ),
        ("revoke token", "DELETE", Role::Admin, Class::NotFound, true),
        (
            "list worker tokens",
            "GET",
            Role::Admin,
            Class::Forbidden,
            false,
        ),
        (
            "create worker token",
            "POST",
            Role::Admin,
            Class::Forbidden,
            false,
        ),
        (
            "revoke worker token",
            "DELETE",
            Role::Admin,
            Class::Forbidden,
            true,
        ),
        ("audit", "GET", Role::Admin, Class::Forbidden, false),
        (
            "import labels",
            "POST",
            Role::Member,
            Class::Forbidden,
            true,
        ),
        ("export labels", "GET", Role::Viewer, Class::Forbidden, true),
        ("label summary", "GET", Role::Viewer, Class::Forbidden, true),
        (
            "split windows",
            "POST",
            Role::Member,
            Class::Forbidden,
            true,
        ),
        (
            "delete label",
            "DELETE",
            Role::Member,
            Class::Forbidden,
            true,
        ),
        (
            "start training",
            "POST",
            Role::Member,
            Class::Forbidden,
            true,
        ),
        (
            "list suggestions",
            "GET",
            Role::Viewer,
            Class::Forbidden,
            true,
        ),
        (
            "start suggestions",
            "POST",
            Role::Member,
            Class::Forbidden,
            true,
        ),
        (
            "start prediction",
            "POST",
            Role::Member,
            Class::Forbidden,
            true,
        ),
        (
            "list evaluations",
            "GET",
            Role::Viewer,
            Class::Forbidden,
            true,
        ),
        ("get training", "GET", Role::Viewer, Class::Forbidden, true),
        (
            "get evaluation",
            "GET",
            Role::Viewer,
            Class::Forbidden,
            true,
        ),
        ("get output", "GET", Role::Viewer, Class::Forbidden, true),
        ("list outputs", "GET", Role::Viewer, Class::Forbidden, true),
        ("output tile", "GET", Role::Viewer, Class::Forbidden, true),
        (
            "imagery layers",
            "GET",
            Role::Viewer,
            Class::Forbidden,
            true,
        ),
        ("imagery tile", "GET", Role::Viewer, Class::Forbidden, true),
        ("download tif", "GET", Role::Viewer, Class::Forbidden, true),
        (
            "download geojson",
            "GET",
            Role::Viewer,
            Class::Forbidden,
            true,
        ),
        (
            "stac collection",
            "GET",
            Role::Viewer,
            Class::Forbidden,
            true,
        ),
        ("stac items", "GET", Role::Viewer, Class::Forbidden, true),
        ("stac item", "GET", Role::Viewer, Class::Forbidden, true),
        ("members page", "GET", Role::Viewer, Class::Forbidden, false),
        (
            "invite on page",
            "POST",
            Role::Admin,
            Class::Forbidden,
            false,
        ),
        (
            "revoke invitation on page",
            "POST",
            Role::Admin,
            Class::Forbidden,
            true,
        ),
        (
            "change role on page",
            "POST",
            Role::Admin,
            Class::Forbidden,
            true,
        ),
        (
            "remove member on page",
            "POST",
            Role::Admin,
            Class::Forbidden,
            true,
        ),
        (
            "invitation page",
            "GET",
            Role::Viewer,
            Class::Forbidden,
            false,
        ),
        ("tokens page", "GET", Role::Viewer, Class::Forbidden, false),
        ("workers page", "GET", Role::Viewer, Class::Forbidden, false),
        (
            "drain worker on page",
            "POST",
            Role::Admin,
            Class::Forbidden,
            true,
        ),
        (
            "resume worker on page",
            "POST",
            Role::Admin,
            Class::Forbidden,
            true,
        ),
        (
            "create token on page",
            "POST",
            Role::Viewer,
            Class::Forbidden,
            false,
        ),
        (
            "revoke token on page",
            "POST",
            Role::Admin,
            Class::NotFound,
            true,
        ),
        (
            "create worker token on page",
            "POST",
            Role::Admin,
            Class::Forbidden,
            false,
        ),
        (
            "revoke worker token on page",
            "POST",
            Role::Admin,
            Class::Forbidden,
            true,
        ),
        ("account page", "GET", Role::Viewer, Class::Forbidden, false),
        ("project page", "GET", Role::Viewer, Class::Forbidden, true),
        (
            "train on page",
            "POST",
            Role::Member,
            Class::Forbidden,
            true,
        ),
        (
            "predict on page",
            "POST",
            Role::Member,
            Class::Forbidden,
            true,
        ),
        (
            "output map page",
            "GET",
            Role::Viewer,
            Class::Forbidden,
            true,
        ),
        (
            "evaluation page",
            "GET",
            Role::Viewer,
            Class::Forbidden,
            true,
        ),
        (
            "change password on page",
            "POST",
            Role::Viewer,
            Class::Forbidden,
            false,
        ),
        (
            "switch org on page",
            "POST",
            Role::Viewer,
            Class::Forbidden,
            true,
        ),
    ];
    let mut failures = Vec::new();
    let mut checked = 0;
    for &(case, method, least, below, has_other) in cases {
        for (kind, role, caller) in &fx.callers {
            for other in [false, true] {
                if other && !has_other {
                    continue;
                }
                let org = if other { &fx.other } else { &fx.own };
                let (uri, body) = fx.target(case, org).await;
                let writes = method != "GET";
                let switch = case == "switch org" || case == "switch org on page";
                let expected = match (caller, role) {
                    // The invitation page is for visitors too: the link is the credential.
                    _ if case == "invitation page" => Class::Ok,
                    (Caller::Anonymous, _) => Class::Unauthorized,
                    _ if *kind == "read-token" && writes => Class::Forbidden,
                    // Organisations are chosen per session; a token stays in its own.
                    _ if case == "create org" && matches!(caller, Caller::Bearer(_)) => {
                        Class::Forbidden
                    }
                    _ if switch && matches!(caller, Caller::Bearer(_)) => {
                        if other {
                            Class::NotFound
                        } else {
                            Class::Ok
                        }
                    }
                    (_, Some(r)) if *r < least => below,
                    _ if other => Class::NotFound,
                    _ => Class::Ok,
                };
                let r = fx.send(caller, method, &uri, body).await;
                checked += 1;
                if class(&r) != Some(expected) {
                    failures.push(format!(
                        "{case} ({method} {uri}) as {kind} {role:?}{}: expected {expected:?}, got {} {}",
                        if other { " on the other org" } else { "" },
                        r.status,
                        r.body
                    ));
                }
                // A session switched to the other org would spoil later rows: switch back.
                if case == "switch org"
                    && other
                    && let Caller::Browser(_) = caller
                {
                    let back = fx
                        .send(
                            caller,
                            "POST",
                            "/api/v1/me/org",
                            Some(json!({"org_id": fx.own.id})),
                        )
                        .await;
                    assert!(back.status.is_success());
                }
            }
        }
    }
    assert!(checked > 750, "{checked}");
    assert!(
        failures.is_empty(),
        "{} of {checked} wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A router on a fresh database with one organisation `alpha` owned by `owner@alpha.org`.
async fn fresh() -> (TestDb, axum::Router, Uuid) {
    let db = TestDb::new().await.unwrap();
    let app = router(AppState::new(db.pool.clone()));
    let org = accounts::create_org(&db.pool, &Who::cli(), "alpha", None)
        .await
        .unwrap();
    user_in(&db.pool, org.id, "owner@alpha.org", Role::Owner).await;
    (db, app, org.id)
}

#[tokio::test]
async fn the_session_cookie_is_secure_only_when_the_server_is_told_so() {
    let (db, _, _) = fresh().await;
    for secure in [false, true] {
        let mut state = AppState::new(db.pool.clone());
        state.secure_cookies = secure;
        let app = router(state);
        let has_secure = |r: &Resp| {
            let set = r.headers.get("set-cookie").unwrap().to_str().unwrap();
            set.split(';').any(|a| a.trim() == "Secure")
        };

        // Signed in through the API and through the sign-in page.
        let r = send(
            &app,
            &Caller::Anonymous,
            "POST",
            "/api/v1/auth/login",
            Some(json!({"email": "owner@alpha.org", "password": PASSWORD})),
            "10.8.0.1",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(has_secure(&r), secure, "API sign-in, secure={secure}");
        let session = Session {
            cookie: cookie_of(&r),
            csrf: r.body["csrf_token"].as_str().unwrap().to_owned(),
        };
        // The sign-in page's form token comes in a cookie with the same attributes.
        let page = send(&app, &Caller::Anonymous, "GET", "/login", None, "10.8.0.1").await;
        assert_eq!(has_secure(&page), secure, "form cookie, secure={secure}");
        let token = form_cookie(&page);
        let form = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("email", "owner@alpha.org"),
                ("password", PASSWORD),
                ("form_token", token.as_str()),
            ])
            .finish();
        let r = send(
            &app,
            &Caller::Cookies(format!("gw_form={token}")),
            "POST",
            "/login",
            Some(Value::String(form)),
            "10.8.0.1",
        )
        .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert_eq!(has_secure(&r), secure, "page sign-in, secure={secure}");

        // Signing out clears the cookie with the same attributes.
        let r = send(
            &app,
            &Caller::Browser(session),
            "POST",
            "/api/v1/auth/logout",
            None,
            "10.8.0.1",
        )
        .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert!(
            r.headers["set-cookie"]
                .to_str()
                .unwrap()
                .contains("Max-Age=0")
        );
        assert_eq!(has_secure(&r), secure, "sign-out, secure={secure}");
    }
}

/// The owner of [`fresh`]'s organisation and a read token of theirs.
async fn owner_read_token(pool: &PgPool, org: Uuid) -> (Uuid, String) {
    let user = accounts::user_by_email(pool, "owner@alpha.org")
        .await
        .unwrap()
        .unwrap();
    (user.id, token_of(pool, user.id, org, Scope::Read).await)
}

#[tokio::test]
async fn a_token_row_held_by_an_open_transaction_does_not_hold_up_requests_with_the_token() {
    let (db, app, org) = fresh().await;
    let (_, token) = owner_read_token(&db.pool, org).await;
    // A transaction left open on the token's row (a request cut off mid-query, say).
    let mut held = db.pool.begin().await.unwrap();
    sqlx::query("select id from api_token where org_id = $1 for update")
        .bind(org)
        .fetch_all(&mut *held)
        .await
        .unwrap();
    let caller = Caller::Bearer(token);
    for _ in 0..3 {
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            send(&app, &caller, "GET", "/api/v1/me", None, "10.0.0.3"),
        )
        .await
        .expect("the request waited on the token's row");
        assert_eq!(r.status, StatusCode::OK);
    }
    held.rollback().await.unwrap();
}

#[tokio::test]
async fn a_read_token_only_reads_and_a_revoked_token_is_refused() {
    let (db, app, org) = fresh().await;
    let (user, read) = owner_read_token(&db.pool, org).await;
    assert!(read.starts_with("gw_"));
    let caller = Caller::Bearer(read.clone());
    let listed =
        |pool: PgPool| async move { accounts::api_tokens(&pool, org, None).await.unwrap() };
    assert!(listed(db.pool.clone()).await[0].last_used_at.is_none());

    let r = send(&app, &caller, "GET", "/api/v1/projects", None, "10.0.0.3").await;
    assert_eq!(r.status, StatusCode::OK);
    let used = listed(db.pool.clone()).await[0].last_used_at.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    send(&app, &caller, "GET", "/api/v1/me", None, "10.0.0.3").await;
    assert!(listed(db.pool.clone()).await[0].last_used_at.unwrap() > used);

    let r = send(
        &app,
        &caller,
        "POST",
        "/api/v1/projects",
        Some(json!({})),
        "10.0.0.3",
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["error"]["code"], "read_only_token");

    // Revoked through the API by its owner (signed in), then refused.
    let s = Caller::Browser(login(&app, "owner@alpha.org", PASSWORD).await);
    let id = listed(db.pool.clone()).await[0].id;
    let r = send(
        &app,
        &s,
        "DELETE",
        &format!("/api/v1/tokens/{id}"),
        None,
        "10.0.0.3",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = send(&app, &caller, "GET", "/api/v1/projects", None, "10.0.0.3").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["error"]["code"], "unauthorized");
    // Neither a made-up token nor a malformed header gets in.
    for header in ["Bearer gw_0000", "Basic abc", "Bearer "] {
        let req = Request::builder()
            .uri("/api/v1/projects")
            .header("authorization", header)
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            app.clone().oneshot(req).await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "{header}"
        );
    }

    // A write token created through the API is shown once and works.
    let r = send(
        &app,
        &s,
        "POST",
        "/api/v1/tokens",
        Some(json!({"scope": "write", "name": "ci"})),
        "10.0.0.3",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let write = Caller::Bearer(r.body["token"].as_str().unwrap().to_owned());
    assert!(r.body["api_token"].get("token_hash").is_none());
    let r = send(
        &app,
        &write,
        "POST",
        "/api/v1/projects",
        Some(json!({"name": "w", "aoi": aoi(), "start": "2024-01-01", "end": "2024-02-01", "task": "classification"})),
        "10.0.0.3",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Removing the user from the organisation ends their tokens there.
    let other_owner = user_in(&db.pool, org, "second@alpha.org", Role::Owner).await;
    accounts::remove_member(&db.pool, &Who::cli(), org, user)
        .await
        .unwrap();
    let r = send(&app, &write, "GET", "/api/v1/projects", None, "10.0.0.3").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_ne!(other_owner, user);
}

#[tokio::test]
async fn cookie_requests_that_change_state_must_carry_the_csrf_token() {
    let (_db, app, _) = fresh().await;
    let s = login(&app, "owner@alpha.org", PASSWORD).await;
    let project = json!({"name": "c", "aoi": aoi(), "start": "2024-01-01", "end": "2024-02-01", "task": "classification"});
    let no_csrf = Session {
        cookie: s.cookie.clone(),
        csrf: String::new(),
    };
    let wrong_csrf = Session {
        cookie: s.cookie.clone(),
        csrf: "0".repeat(64),
    };
    for bad in [no_csrf.clone(), wrong_csrf] {
        let r = send(
            &app,
            &Caller::Browser(bad),
            "POST",
            "/api/v1/projects",
            Some(project.clone()),
            "10.0.0.4",
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.body["error"]["code"], "csrf_failed");
    }
    // Reading needs no token.
    let r = send(
        &app,
        &Caller::Browser(no_csrf),
        "GET",
        "/api/v1/projects",
        None,
        "10.0.0.4",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body["items"].as_array().unwrap().is_empty(),
        "the refused posts created nothing"
    );
    let r = send(
        &app,
        &Caller::Browser(s.clone()),
        "POST",
        "/api/v1/projects",
        Some(project),
        "10.0.0.4",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);

    // An HTML form post carries it in the `csrf` field.
    let form = |body: String| {
        Request::builder()
            .method("POST")
            .uri("/api/v1/auth/logout")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", format!("gw_session={}", s.cookie))
            .body(Body::from(body))
            .unwrap()
    };
    let r = app.clone().oneshot(form("other=1".into())).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = app
        .clone()
        .oneshot(form(format!("other=1&csrf={}", s.csrf)))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let cleared = r.headers().get("set-cookie").unwrap().to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // The session is over.
    let r = send(
        &app,
        &Caller::Browser(s),
        "GET",
        "/api/v1/me",
        None,
        "10.0.0.4",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sign_in_is_rate_limited_per_account_and_per_address() {
    let (db, app, org) = fresh().await;
    let attempt = |email: &'static str, password: &'static str, ip: &'static str| {
        let app = app.clone();
        async move {
            send(
                &app,
                &Caller::Anonymous,
                "POST",
                "/api/v1/auth/login",
                Some(json!({"email": email, "password": password})),
                ip,
            )
            .await
        }
    };
    for _ in 0..5 {
        let r = attempt("owner@alpha.org", "wrong password", "10.1.0.1").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.body["error"]["code"], "invalid_credentials");
    }
    let r = attempt("owner@alpha.org", "wrong password", "10.1.0.2").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    let retry: u64 = r
        .headers
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    // The right password is refused too while the account is limited, from any address.
    let r = attempt("owner@alpha.org", PASSWORD, "10.1.0.3").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // Another account is unaffected.
    user_in(&db.pool, org, "other@alpha.org", Role::Viewer).await;
    assert_eq!(
        attempt("other@alpha.org", PASSWORD, "10.1.0.1")
            .await
            .status,
        StatusCode::OK
    );
    // Twenty failures from one address lock that address out, whatever the account.
    for i in 0..20 {
        let email: &'static str = Box::leak(format!("nobody{i}@alpha.org").into_boxed_str());
        let r = attempt(email, "wrong password", "10.2.0.1").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    assert_eq!(
        attempt("other@alpha.org", PASSWORD, "10.2.0.1")
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        attempt("other@alpha.org", PASSWORD, "10.2.0.2")
            .await
            .status,
        StatusCode::OK
    );
    // The count lives in the database: a second server on the same database sees it.
    let second = router(AppState::new(db.pool.clone()));
    let r = send(
        &second,
        &Caller::Anonymous,
        "POST",
        "/api/v1/auth/login",
        Some(json!({"email": "owner@alpha.org", "password": PASSWORD})),
        "10.1.0.9",
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn setup_creates_the_first_owner_once() {
    let db = TestDb::new().await.unwrap();
    let app = router(AppState::new(db.pool.clone()));
    let anon = Caller::Anonymous;
    let r = send(&app, &anon, "GET", "/api/v1/setup", None, "10.3.0.1").await;
    assert_eq!(r.body["required"], true);
    let r = send(
        &app,
        &anon,
        "POST",
        "/api/v1/setup",
        Some(json!({"email": "not an email", "password": "short"})),
        "10.3.0.1",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["error"]["details"].as_array().unwrap().len(), 2);
    let r = send(
        &app,
        &anon,
        "POST",
        "/api/v1/setup",
        Some(json!({"email": "first@example.org", "password": PASSWORD, "org_name": "Mangrove Watch"})),
        "10.3.0.1",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let s = Caller::Browser(Session {
        cookie: cookie_of(&r),
        csrf: r.body["csrf_token"].as_str().unwrap().to_owned(),
    });
    // Signed in as owner of the default organisation, renamed.
    let me = send(&app, &s, "GET", "/api/v1/me", None, "10.3.0.1").await;
    assert_eq!(me.body["current_org"]["name"], "Mangrove Watch");
    assert_eq!(me.body["current_org"]["role"], "owner");
    assert_eq!(
        me.body["current_org"]["id"],
        groundwork_store::DEFAULT_ORG_ID.to_string()
    );
    let r = send(
        &app,
        &anon,
        "POST",
        "/api/v1/setup",
        Some(json!({"email": "second@example.org", "password": PASSWORD})),
        "10.3.0.1",
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        accounts::user_by_email(&db.pool, "second@example.org")
            .await
            .unwrap()
            .is_none()
    );
    let r = send(&app, &anon, "GET", "/api/v1/setup", None, "10.3.0.1").await;
    assert_eq!(r.body["required"], false);
    // Health checks and the OpenAPI document stay public.
    for uri in ["/healthz", "/readyz", "/api/openapi.json"] {
        assert_eq!(
            send(&app, &anon, "GET", uri, None, "10.3.0.1").await.status,
            StatusCode::OK,
            "{uri}"
        );
    }
}

#[tokio::test]
async fn an_invitation_link_creates_or_links_the_account_once() {
    let (db, app, org) = fresh().await;
    let owner = Caller::Browser(login(&app, "owner@alpha.org", PASSWORD).await);
    let invite = |email: &'static str, role: &'static str| {
        let (app, owner) = (app.clone(), owner.clone());
        async move {
            let r = send(
                &app,
                &owner,
                "POST",
                "/api/v1/invitations",
                Some(json!({"email": email, "role": role})),
                "10.4.0.1",
            )
            .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
            assert!(
                r.body["url"]
                    .as_str()
                    .unwrap()
                    .ends_with(r.body["token"].as_str().unwrap())
            );
            r.body["token"].as_str().unwrap().to_owned()
        }
    };
    let accept = |token: String, password: &'static str| {
        let app = app.clone();
        async move {
            send(
                &app,
                &Caller::Anonymous,
                "POST",
                &format!("/api/v1/invitations/{token}/accept"),
                Some(json!({"password": password})),
                "10.4.0.2",
            )
            .await
        }
    };
    // A new person: the password must be acceptable, and the link is not used up by a refusal.
    let token = invite("Newcomer@Example.org", "member").await;
    assert_eq!(
        accept(token.clone(), "short").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let r = accept(token.clone(), PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let s = Caller::Browser(Session {
        cookie: cookie_of(&r),
        csrf: r.body["csrf_token"].as_str().unwrap().to_owned(),
    });
    let me = send(&app, &s, "GET", "/api/v1/me", None, "10.4.0.2").await;
    assert_eq!(me.body["current_org"]["id"], org.to_string());
    assert_eq!(me.body["current_org"]["role"], "member");
    assert_eq!(
        accept(token, PASSWORD).await.status,
        StatusCode::NOT_FOUND,
        "one use only"
    );
    assert_eq!(
        accept("nonsense".into(), PASSWORD).await.status,
        StatusCode::NOT_FOUND
    );

    // Someone with an account elsewhere proves it with their password.
    let beta = accounts::create_org(&db.pool, &Who::cli(), "beta", None)
        .await
        .unwrap();
    user_in(&db.pool, beta.id, "elsewhere@example.org", Role::Owner).await;
    let token = invite("elsewhere@example.org", "admin").await;
    assert_eq!(
        accept(token.clone(), "not their password").await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = accept(token, PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let u = accounts::user_by_email(&db.pool, "elsewhere@example.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        accounts::role_in(&db.pool, org, u.id).await.unwrap(),
        Some(Role::Admin)
    );
    assert_eq!(
        accounts::role_in(&db.pool, beta.id, u.id).await.unwrap(),
        Some(Role::Owner)
    );

    // Only owners invite owners; members do not invite at all.
    let r = send(
        &app,
        &s,
        "POST",
        "/api/v1/invitations",
        Some(json!({"email": "x@example.org", "role": "viewer"})),
        "10.4.0.2",
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let admin = Caller::Browser(login(&app, "elsewhere@example.org", PASSWORD).await);
    let r = send(
        &app,
        &admin,
        "POST",
        "/api/v1/me/org",
        Some(json!({"org_id": org})),
        "10.4.0.2",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(
        &app,
        &admin,
        "POST",
        "/api/v1/invitations",
        Some(json!({"email": "x@example.org", "role": "owner"})),
        "10.4.0.2",
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(
        &app,
        &admin,
        "POST",
        "/api/v1/invitations",
        Some(json!({"email": "x@example.org", "role": "admin"})),
        "10.4.0.2",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn a_password_change_ends_the_other_sessions() {
    let (_db, app, _) = fresh().await;
    let one = Caller::Browser(login(&app, "owner@alpha.org", PASSWORD).await);
    let two = Caller::Browser(login(&app, "owner@alpha.org", PASSWORD).await);
    let change = |current: &'static str, new: &'static str| {
        let (app, one) = (app.clone(), one.clone());
        async move {
            send(
                &app,
                &one,
                "POST",
                "/api/v1/me/password",
                Some(json!({"current_password": current, "new_password": new})),
                "10.5.0.1",
            )
            .await
        }
    };
    assert_eq!(
        change("wrong password", "a new long password").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        change(PASSWORD, "short").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        send(&app, &two, "GET", "/api/v1/me", None, "10.5.0.1")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        change(PASSWORD, "a new long password").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        send(&app, &two, "GET", "/api/v1/me", None, "10.5.0.1")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, &one, "GET", "/api/v1/me", None, "10.5.0.1")
            .await
            .status,
        StatusCode::OK
    );
    let r = send(
        &app,
        &Caller::Anonymous,
        "POST",
        "/api/v1/auth/login",
        Some(json!({"email": "owner@alpha.org", "password": PASSWORD})),
        "10.5.0.2",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    login(&app, "OWNER@alpha.org", "a new long password").await;
}

#[tokio::test]
async fn owners_delete_empty_organisations_and_keep_an_owner() {
    let (db, app, org) = fresh().await;
    let owner = Caller::Browser(login(&app, "owner@alpha.org", PASSWORD).await);
    let me = send(&app, &owner, "GET", "/api/v1/me", None, "10.6.0.1").await;
    let owner_id = me.body["user"]["id"].as_str().unwrap().to_owned();
    // The last owner can neither leave nor be demoted.
    let r = send(
        &app,
        &owner,
        "PATCH",
        &format!("/api/v1/members/{owner_id}"),
        Some(json!({"role": "admin"})),
        "10.6.0.1",
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = send(
        &app,
        &owner,
        "DELETE",
        &format!("/api/v1/members/{owner_id}"),
        None,
        "10.6.0.1",
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // Admins cannot touch owners or delete the organisation.
    user_in(&db.pool, org, "admin@alpha.org", Role::Admin).await;
    let admin = Caller::Browser(login(&app, "admin@alpha.org", PASSWORD).await);
    let r = send(
        &app,
        &admin,
        "PATCH",
        &format!("/api/v1/members/{owner_id}"),
        Some(json!({"role": "viewer"})),
        "10.6.0.1",
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(
        &app,
        &admin,
        "DELETE",
        &format!("/api/v1/orgs/{org}"),
        None,
        "10.6.0.1",
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Another organisation's id is not found, even for an owner.
    let r = send(
        &app,
        &owner,
        "DELETE",
        &format!("/api/v1/orgs/{}", groundwork_store::DEFAULT_ORG_ID),
        None,
        "10.6.0.1",
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Not while it has projects.
    let r = send(&app, &owner, "POST", "/api/v1/projects", Some(json!({"name": "p", "aoi": aoi(), "start": "2024-01-01", "end": "2024-02-01", "task": "classification"})), "10.6.0.1").await;
    let pid = r.body["id"].as_str().unwrap().to_owned();
    let r = send(
        &app,
        &owner,
        "DELETE",
        &format!("/api/v1/orgs/{org}"),
        None,
        "10.6.0.1",
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    send(
        &app,
        &owner,
        "DELETE",
        &format!("/api/v1/projects/{pid}"),
        None,
        "10.6.0.1",
    )
    .await;
    let r = send(
        &app,
        &owner,
        "DELETE",
        &format!("/api/v1/orgs/{org}"),
        None,
        "10.6.0.1",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    // Its members now act in no organisation.
    let r = send(&app, &owner, "GET", "/api/v1/projects", None, "10.6.0.1").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["error"]["code"], "no_organisation");
    let r = send(&app, &owner, "GET", "/api/v1/me", None, "10.6.0.1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["current_org"].is_null());
}

#[tokio::test]
async fn the_audit_log_records_who_did_what_from_where() {
    let (_db, app, org) = fresh().await;
    let owner = Caller::Browser(login(&app, "owner@alpha.org", PASSWORD).await);
    let r = send(&app, &owner, "POST", "/api/v1/projects", Some(json!({"name": "p", "aoi": aoi(), "start": "2024-01-01", "end": "2024-02-01", "task": "classification"})), "10.7.0.1").await;
    let pid = r.body["id"].as_str().unwrap().to_owned();
    send(
        &app,
        &owner,
        "POST",
        "/api/v1/invitations",
        Some(json!({"email": "v@example.org", "role": "viewer"})),
        "10.7.0.1",
    )
    .await;
    send(
        &app,
        &owner,
        "POST",
        "/api/v1/worker-tokens",
        Some(json!({})),
        "10.7.0.1",
    )
    .await;
    let r = send(
        &app,
        &owner,
        "GET",
        "/api/v1/audit?limit=200",
        None,
        "10.7.0.1",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let items = r.body["items"].as_array().unwrap();
    let find = |action: &str| items.iter().find(|i| i["action"] == action).cloned();
    let created = find("project.create").unwrap();
    assert_eq!(created["target_id"], pid);
    assert_eq!(created["user_email"], "owner@alpha.org");
    assert_eq!(created["ip"], "10.7.0.1");
    assert_eq!(created["org_id"], org.to_string());
    assert!(find("invitation.create").is_some());
    assert!(find("worker_token.create").is_some());
    assert!(find("auth.login").is_some());
    assert!(
        !r.body.to_string().contains("gwk_"),
        "no secrets in the log"
    );
    // Newest first, and paged.
    let r = send(
        &app,
        &owner,
        "GET",
        "/api/v1/audit?limit=1",
        None,
        "10.7.0.1",
    )
    .await;
    assert_eq!(r.body["items"][0]["action"], "worker_token.create");
    assert!(r.body["next_cursor"].is_string());
}

#[tokio::test]
async fn workers_register_with_a_valid_worker_token_only() {
    let (db, app, org) = fresh().await;
    let reg = workers::Registration {
        name: "box".into(),
        pool: "cpu".into(),
        queues: vec!["cpu".into()],
        concurrency: 1,
        capabilities: json!({}),
        version: "test".into(),
    };
    // Zero setup: without any worker token, a tokenless worker joins the default organisation.
    let local = workers::register_with_token(&db.pool, &reg, None)
        .await
        .unwrap();
    assert_eq!(
        workers::get(&db.pool, local).await.unwrap().org_id,
        groundwork_store::DEFAULT_ORG_ID
    );

    let owner = Caller::Browser(login(&app, "owner@alpha.org", PASSWORD).await);
    let r = send(
        &app,
        &owner,
        "POST",
        "/api/v1/worker-tokens",
        Some(json!({"name": "donated gpu"})),
        "10.8.0.1",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let secret = r.body["token"].as_str().unwrap().to_owned();
    let token_id = r.body["worker_token"]["id"].as_str().unwrap().to_owned();

    let err = workers::register_with_token(&db.pool, &reg, Some("gwk_not-a-token"))
        .await
        .unwrap_err();
    assert!(matches!(err, groundwork_store::Error::Unauthorized(_)));
    assert!(
        err.to_string().contains("unknown or has been revoked"),
        "{err}"
    );
    let err = workers::register_with_token(&db.pool, &reg, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("requires a worker token"), "{err}");

    let id = workers::register_with_token(&db.pool, &reg, Some(&secret))
        .await
        .unwrap();
    // It belongs to the token's organisation; the installation's worker shows there too, read-only.
    let r = send(&app, &owner, "GET", "/api/v1/workers", None, "10.8.0.1").await;
    let items = r.body["items"].as_array().unwrap();
    let own: Vec<&str> = items
        .iter()
        .filter(|w| w["installation"] == json!(false))
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(own, [id.to_string().as_str()]);
    assert!(
        items
            .iter()
            .any(|w| w["id"] == json!(local.to_string()) && w["installation"] == json!(true)),
        "{items:?}"
    );
    assert_eq!(workers::heartbeat(&db.pool, id).await.unwrap(), "active");

    // Revoked: no new registrations, and its workers drain.
    let r = send(
        &app,
        &owner,
        "DELETE",
        &format!("/api/v1/worker-tokens/{token_id}"),
        None,
        "10.8.0.1",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(
        workers::register_with_token(&db.pool, &reg, Some(&secret))
            .await
            .is_err()
    );
    assert_eq!(workers::heartbeat(&db.pool, id).await.unwrap(), "draining");
    assert_eq!(
        org,
        accounts::org_by_name(&db.pool, "alpha")
            .await
            .unwrap()
            .unwrap()
            .id
    );
}

#[tokio::test]
async fn adding_a_member_invites_and_answers_alike_whether_or_not_the_email_has_an_account() {
    let (db, app, org) = fresh().await;
    let owner = Caller::Browser(login(&app, "owner@alpha.org", PASSWORD).await);
    // Someone with an account elsewhere, and someone without one.
    accounts::create_user(&db.pool, &Who::cli(), "known@beta.org", PASSWORD)
        .await
        .unwrap();
    let mut shapes = Vec::new();
    for email in ["known@beta.org", "nobody@beta.org"] {
        let r = send(
            &app,
            &owner,
            "POST",
            "/api/v1/members",
            Some(json!({"email": email, "role": "member"})),
            "10.6.0.1",
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert!(r.body["url"].as_str().unwrap().starts_with("/invite/"));
        assert_eq!(r.body["invitation"]["email"], email);
        let mut keys: Vec<String> = r.body.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        shapes.push(keys);
    }
    assert_eq!(shapes[0], shapes[1]);
    // Nobody was put in the organisation without accepting.
    let members = accounts::members(&db.pool, org).await.unwrap();
    assert_eq!(members.len(), 1, "{members:?}");
}

#[tokio::test]
async fn a_password_change_can_revoke_api_tokens_and_wrong_passwords_are_limited() {
    let (db, app, org) = fresh().await;
    let owner_id = accounts::user_by_email(&db.pool, "owner@alpha.org")
        .await
        .unwrap()
        .unwrap()
        .id;
    let one = Caller::Browser(login(&app, "owner@alpha.org", PASSWORD).await);
    let kept = Caller::Bearer(token_of(&db.pool, owner_id, org, Scope::Read).await);
    let change = |current: &str, new: &str, revoke: bool| {
        let body =
            json!({"current_password": current, "new_password": new, "revoke_tokens": revoke});
        let (app, one) = (app.clone(), one.clone());
        async move {
            send(
                &app,
                &one,
                "POST",
                "/api/v1/me/password",
                Some(body),
                "10.6.1.1",
            )
            .await
            .status
        }
    };
    let me = |who: Caller| {
        let app = app.clone();
        async move {
            send(&app, &who, "GET", "/api/v1/me", None, "10.6.1.1")
                .await
                .status
        }
    };
    // Without the flag, API tokens keep working.
    assert_eq!(
        change(PASSWORD, "second long password", false).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(me(kept.clone()).await, StatusCode::OK);
    // With it, every token of the user stops working.
    assert_eq!(
        change("second long password", "third long password", true).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(me(kept).await, StatusCode::UNAUTHORIZED);
    // Wrong current passwords count as failed sign-ins: after the limit even the right one waits.
    for _ in 0..accounts::MAX_FAILURES_PER_ACCOUNT {
        assert_eq!(
            change("not it at all", "fourth long password", false).await,
            StatusCode::FORBIDDEN
        );
    }
    assert_eq!(
        change("third long password", "fourth long password", false).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn the_sign_in_and_setup_forms_need_their_form_token() {
    let db = TestDb::new().await.unwrap();
    let mut state = AppState::new(db.pool.clone());
    state.setup_code = Some("0123456789abcdef01234567".into());
    let app = router(state);
    let post = |uri: &'static str, cookies: Option<String>, pairs: Vec<(&'static str, String)>| {
        let app = app.clone();
        async move {
            let form = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish();
            let caller = cookies.map_or(Caller::Anonymous, Caller::Cookies);
            send(
                &app,
                &caller,
                "POST",
                uri,
                Some(Value::String(form)),
                "10.9.9.1",
            )
            .await
        }
    };
    let setup = |token: &str, code: &str| {
        vec![
            ("email", "first@alpha.org".to_owned()),
            ("password", PASSWORD.to_owned()),
            ("form_token", token.to_owned()),
            ("setup_code", code.to_owned()),
        ]
    };
    let page = send(&app, &Caller::Anonymous, "GET", "/setup", None, "10.9.9.1").await;
    let token = form_cookie(&page);
    // A post from another site: it can send neither the cookie nor its token.
    let r = post("/setup", None, setup("", "0123456789abcdef01234567")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = post(
        "/setup",
        Some("gw_form=someone-elses".into()),
        setup(&token, "0123456789abcdef01234567"),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The right token but no setup code, or a wrong one.
    let cookie = Some(format!("gw_form={token}"));
    for code in ["", "0123456789abcdef01234568"] {
        let r = post("/setup", cookie.clone(), setup(&token, code)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{code}");
    }
    let r = send(
        &app,
        &Caller::Anonymous,
        "POST",
        "/api/v1/setup",
        Some(json!({"email": "first@alpha.org", "password": PASSWORD})),
        "10.9.9.1",
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(!accounts::any_user(&db.pool).await.unwrap());
    let r = post("/setup", cookie, setup(&token, "0123456789abcdef01234567")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(accounts::any_user(&db.pool).await.unwrap());

    // Sign-in: without the token, even the right password is refused.
    let creds = |token: &str| {
        vec![
            ("email", "first@alpha.org".to_owned()),
            ("password", PASSWORD.to_owned()),
            ("form_token", token.to_owned()),
        ]
    };
    let r = post("/login", None, creds("")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let page = send(&app, &Caller::Anonymous, "GET", "/login", None, "10.9.9.1").await;
    let token = form_cookie(&page);
    let r = post("/login", Some(format!("gw_form={token}")), creds(&token)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

/// A page's HTML, fetched as `caller`.
async fn page_html(app: &axum::Router, caller: &Caller, uri: &str) -> (StatusCode, String) {
    let Caller::Browser(s) = caller else {
        panic!("pages are fetched by a signed-in browser")
    };
    let req = Request::builder()
        .uri(uri)
        .header("cookie", format!("gw_session={}", s.cookie))
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn installation_workers_are_shown_read_only_to_the_organisations_that_use_them() {
    let fx = Fixture::new().await;
    // An installation worker: registered without a worker token, by the installation itself.
    let shared = workers::register(
        &fx.pool,
        &workers::Registration {
            name: "shared-gpu-box".into(),
            pool: "gpu".into(),
            queues: vec!["gpu".into()],
            concurrency: 2,
            capabilities: json!({}),
            version: "test".into(),
        },
    )
    .await
    .unwrap();
    let admin = &fx
        .callers
        .iter()
        .find(|(kind, role, _)| *kind == "session" && *role == Some(Role::Admin))
        .unwrap()
        .2;

    // The API lists the organisation's own worker and the shared one (marked), never the other
    // organisation's private worker.
    let r = fx.send(admin, "GET", "/api/v1/workers", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let items = r.body["items"].as_array().unwrap();
    let find = |id: Uuid| {
        items
            .iter()
            .find(|w| w["id"] == json!(id.to_string()))
            .cloned()
    };
    assert_eq!(find(fx.own.worker).unwrap()["installation"], json!(false));
    assert_eq!(find(shared).unwrap()["installation"], json!(true));
    assert!(find(fx.other.worker).is_none(), "{items:?}");
    let r = fx.send(admin, "GET", "/api/v1/pools", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let pools = r.body["items"].as_array().unwrap();
    assert!(
        pools
            .iter()
            .any(|p| p["name"] == "gpu" && p["installation"] == json!(true) && p["active"] == 1),
        "{pools:?}"
    );
    assert!(
        pools
            .iter()
            .any(|p| p["name"] == "cpu" && p["installation"] == json!(false) && p["active"] == 1),
        "{pools:?}"
    );

    // Read-only: an organisation admin cannot drain it, by the API or the page, and it stays active.
    for (uri, body) in [
        (format!("/api/v1/workers/{shared}/drain"), None),
        (format!("/workers/{shared}/drain"), Some(json!(""))),
    ] {
        let r = fx.send(admin, "POST", &uri, body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri}: {}", r.body);
    }
    assert_eq!(
        workers::get(&fx.pool, shared).await.unwrap().admin_state,
        "active"
    );

    // The page shows it, marked, with no buttons; the organisation's own worker has its buttons.
    let (status, html) = page_html(&fx.app, admin, "/workers").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("shared-gpu-box"), "{html}");
    assert!(html.contains("installation, shared"), "{html}");
    assert!(!html.contains(&format!("/workers/{shared}/")), "{html}");
    assert!(html.contains(&format!("/workers/{}/drain", fx.own.worker)));
    assert!(!html.contains("beta-worker"), "{html}");

    // An organisation that may not use the installation's workers does not see them at all.
    accounts::set_installation_workers(&fx.pool, &Who::cli(), fx.own.id, false)
        .await
        .unwrap();
    let r = fx.send(admin, "GET", "/api/v1/workers", None).await;
    let items = r.body["items"].as_array().unwrap();
    assert!(
        items.iter().all(|w| w["id"] != json!(shared.to_string())),
        "{items:?}"
    );
    let r = fx
        .send(
            admin,
            "POST",
            &format!("/api/v1/workers/{shared}/drain"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let (_, html) = page_html(&fx.app, admin, "/workers").await;
    assert!(!html.contains("shared-gpu-box"), "{html}");
}
