//! The accuracy-assessment pages on a real database, object store and GDAL, through the whole router: a
//! member draws a sample from a class map's page, a viewer may not; the blind labelling page carries no
//! map class and no class-map layer; the report is kept from viewers until every unit is answered and
//! then shows the areas with their intervals; another organisation's assessments are not found.

use crate::api::{AppState, router};
use crate::testing::{member_token, with_bearer};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use groundwork_store::accounts::{self, Role};
use groundwork_store::assessments::{self, NewSample};
use groundwork_store::audit::Who;
use groundwork_store::outputs::{self, NewOutput};
use groundwork_store::testing::TestDb;
use groundwork_store::{DEFAULT_ORG_ID, jobs};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;
use uuid::Uuid;

/// Side of the class map in pixels: the first row is nodata, columns 0–13 class 1, the rest class 2.
const W: usize = 20;
const SPLIT: usize = 14;

struct Reply {
    status: StatusCode,
    location: String,
    body: String,
}

/// A client of the router acting with a bearer token of `role` in `org`.
struct Client {
    app: axum::Router,
}

impl Client {
    async fn new(state: &AppState, org: Uuid, role: Role) -> Self {
        let token = member_token(&state.pool, org, role).await.unwrap();
        Self {
            app: with_bearer(router(state.clone()), &token).unwrap(),
        }
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            location,
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

    async fn json(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let r = self.send(req).await;
        (
            r.status,
            serde_json::from_str(&r.body).unwrap_or(Value::Null),
        )
    }
}

/// A project of `org` with a published class map whose COG lies in the state's object store (`objects`).
async fn class_map(state: &AppState, objects: &std::path::Path, org: Uuid) -> (Uuid, Uuid) {
    let pool = &state.pool;
    let owner = Client::new(state, org, Role::Owner).await;
    let (s, project) = owner
        .json(
            "POST",
            "/api/v1/projects",
            Some(json!({"name": "Forest cover", "task": "segmentation",
                "aoi": {"type": "Polygon", "coordinates": [[[15.0, 45.1], [15.02, 45.1], [15.02, 45.11], [15.0, 45.11], [15.0, 45.1]]]},
                "start": "2024-01-01", "end": "2024-12-31",
                "classes": [{"id": 1, "name": "Forest", "color": "#1b9e77"}, {"id": 2, "name": "Cleared", "color": "#d95f02"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{project}");
    let project: Uuid = project["id"].as_str().unwrap().parse().unwrap();
    let run = jobs::create_run(
        pool,
        org,
        project,
        &[jobs::NewStep::new(
            "publish",
            groundwork_types::StepKind::Train,
            json!({}),
            "cpu",
        )],
        None,
    )
    .await
    .unwrap();
    let key = format!(
        "orgs/{org}/projects/{project}/runs/{}/combine/s/class.tif",
        run.run.id
    );
    let path = objects.join(&key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let data: Vec<u8> = (0..W * W)
        .map(|i| {
            if i / W == 0 {
                255
            } else if i % W < SPLIT {
                1
            } else {
                2
            }
        })
        .collect();
    groundwork_imagery::demo::write_cog::<u8>(
        &path,
        &data,
        W,
        W,
        [500_000.0, 10.0, 0.0, 5_000_000.0, 0.0, -10.0],
        32633,
        Some(255.0),
    )
    .unwrap();
    let side = i32::try_from(W).unwrap();
    let output = outputs::upsert(
        pool,
        &NewOutput {
            org_id: org,
            project_id: project,
            run_id: run.run.id,
            kind: "class".into(),
            utm_key: key.clone(),
            web_key: key,
            epsg: 32633,
            width: side,
            height: side,
            bands: 1,
            bbox: [15.0, 45.1, 15.02, 45.11],
            bounds_3857: [0.0, 0.0, 1.0, 1.0],
            min_zoom: 0,
            max_zoom: 14,
            classes: json!([{"id": 1, "name": "Forest", "color": "#1b9e77"}, {"id": 2, "name": "Cleared", "color": "#d95f02"}]),
            stats: json!({}),
            lineage: json!({}),
            footprint: None,
        },
    )
    .await
    .unwrap();
    (project, output.id)
}

fn state_with_objects(db: &TestDb, dir: &std::path::Path) -> AppState {
    let mut state = AppState::new(db.pool.clone());
    state.objects = Some(Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(dir).unwrap(),
    ));
    state
}

#[tokio::test]
async fn a_member_draws_a_sample_a_viewer_labels_it_blind_and_the_report_shows_areas_with_intervals()
 {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = state_with_objects(&db, dir.path());
    let (_, output) = class_map(&state, dir.path(), DEFAULT_ORG_ID).await;
    let member = Client::new(&state, DEFAULT_ORG_ID, Role::Member).await;
    let viewer = Client::new(&state, DEFAULT_ORG_ID, Role::Viewer).await;

    // The map's page has the section with the form for a member, without it for a viewer.
    let page = member.get(&format!("/outputs/{output}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body
            .contains(r#"<h2 id="accuracy-heading">Accuracy assessment</h2>"#)
    );
    assert!(page.body.contains("No assessment yet."));
    assert!(
        page.body
            .contains(&format!(r#"action="/outputs/{output}/assessments""#))
    );
    assert!(page.body.contains("<summary>More settings</summary>"));
    assert!(page.body.contains("(default 0.01)"));
    assert!(page.body.contains("(default 50)"));
    let page = viewer.get(&format!("/outputs/{output}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Accuracy assessment"));
    assert!(!page.body.contains("Draw a sample"));

    // A viewer cannot draw a sample; bad settings are refused in words; nothing is drawn.
    let uri = format!("/outputs/{output}/assessments");
    let r = viewer
        .post_form(&uri, &[("target_se", "0.1"), ("min_per_class", "3")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = member.post_form(&uri, &[("target_se", "tiny")]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body
            .contains("the target standard error must be a number"),
        "{}",
        r.body
    );
    let r = member.post_form(&uri, &[("target_se", "0.5")]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body
            .contains("the target standard error must be 0.001–0.1"),
        "{}",
        r.body
    );
    assert!(
        assessments::list_for_output(&db.pool, DEFAULT_ORG_ID, output)
            .await
            .unwrap()
            .is_empty()
    );

    // A member draws one and lands on its page.
    let r = member
        .post_form(&uri, &[("target_se", "0.1"), ("min_per_class", "3")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(r.location.starts_with("/assessments/"), "{}", r.location);
    let id: Uuid = r.location["/assessments/".len()..].parse().unwrap();
    let a = assessments::get(&db.pool, DEFAULT_ORG_ID, id)
        .await
        .unwrap();
    assert_eq!(a.design["target_se"], 0.1);
    assert_eq!(a.design["min_per_class"], 3);
    let units = assessments::samples(&db.pool, id).await.unwrap();
    let n = units.len();
    assert!((6..=20).contains(&n), "{n} units");

    let page = viewer.get(&r.location).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains(&format!("0 of {n} units labelled")));
    assert!(
        page.body
            .contains(&format!(r#"href="/assessments/{id}/label""#))
    );
    assert!(page.body.contains("Label the sample"));
    assert!(
        page.body
            .contains("<dt>Target standard error of overall accuracy</dt>")
    );
    assert!(page.body.contains("<dt>Seed of the random draw</dt>"));
    assert!(page.body.contains(r#"data-table="strata""#));
    assert!(page.body.contains("</span>Forest</th>"));
    assert!(
        page.body.contains("<dt>User&#39;s accuracy</dt>")
            || page.body.contains("<dt>User's accuracy</dt>")
    );
    assert!(page.body.contains(r#"data-field="report-withheld""#));
    let page = member.get(&format!("/assessments/{id}")).await;
    assert!(
        page.body.contains("No unit is labelled yet"),
        "{}",
        page.body
    );

    // The blind labelling page: every class to answer with, no unit's map class, no class-map layer.
    let label = viewer.get(&format!("/assessments/{id}/label")).await;
    assert_eq!(label.status, StatusCode::OK, "{}", label.body);
    assert!(label.body.contains(r#"data-map="assess""#));
    assert!(label.body.contains(r#"data-class-id="1""#));
    assert!(label.body.contains(r#"data-class-id="2""#));
    assert!(label.body.contains(r#"id="assess-unsure""#));
    assert!(label.body.contains("/api/v1/projects/"));
    assert!(!label.body.contains("/tiles/"), "no class-map layer");
    assert!(!label.body.contains("map_class"));
    assert!(!label.body.contains("stratum"));

    // The viewer answers all but one unit (each with its true map class) through the API.
    let (_, open) = member
        .json(
            "GET",
            &format!("/api/v1/assessments/{id}/samples?blind=false"),
            None,
        )
        .await;
    let open = open.as_array().unwrap().clone();
    for u in &open[1..] {
        let (s, body) = viewer
            .json(
                "PUT",
                &format!("/api/v1/assessments/{id}/samples/{}", u["id"]),
                Some(json!({"reference": u["map_class"]})),
            )
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    }
    // Until the last answer, a viewer gets no report (it would tell the map class of each answer);
    // a member sees a preliminary one.
    let page = viewer.get(&format!("/assessments/{id}")).await;
    assert!(
        page.body.contains(r#"data-field="report-withheld""#),
        "{}",
        page.body
    );
    assert!(!page.body.contains(r#"data-field="overall-accuracy""#));
    let page = member.get(&format!("/assessments/{id}")).await;
    assert!(
        page.body.contains(r#"data-field="preliminary""#),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"data-field="overall-accuracy""#));

    // The last one unsure: the report is complete and shown to the viewer.
    let (s, _) = viewer
        .json(
            "PUT",
            &format!("/api/v1/assessments/{id}/samples/{}", open[0]["id"]),
            Some(json!({"unsure": true})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let page = viewer.get(&format!("/assessments/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains(r#"data-field="preliminary""#));
    assert!(page.body.contains(&format!("{n} of {n} units labelled")));
    assert!(
        page.body
            .contains(r#"<dd data-field="overall-accuracy">100.0 ± 0.0 %</dd>"#),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"<dd data-field="unsure-count">1:"#));
    // Forest: 19 rows × 14 columns of 100 m² = 2.66 ha mapped, all confirmed.
    assert!(
        page.body.contains("<td class=\"num\">2.66</td>"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains(r#"<td class="num" data-field="area">2.66 ± 0.00</td>"#),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"data-matrix="proportions""#));
    assert!(page.body.contains(r#"<td class="diagonal" title="mapped as Forest, really Forest: 70.00 % of the area">0.7000</td>"#), "{}", page.body);
    assert!(
        page.body
            .contains(&format!(r#"href="/api/v1/assessments/{id}/report""#))
    );
    assert!(
        page.body
            .contains(&format!(r#"href="/api/v1/assessments/{id}/report.csv""#))
    );

    // The map's page lists it as done.
    let page = member.get(&format!("/outputs/{output}")).await;
    assert!(
        page.body
            .contains(&format!(r#"<a href="/assessments/{id}">"#))
    );
    assert!(page.body.contains(&format!("{n} of {n} units labelled")));
    assert!(page.body.contains("(1 unsure), report ready"));
}

#[tokio::test]
async fn another_organisations_assessment_is_not_found() {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = state_with_objects(&db, dir.path());
    let other = accounts::create_org(&db.pool, &Who::cli(), "Elsewhere", None)
        .await
        .unwrap()
        .id;
    let (project, output) = class_map(&state, dir.path(), other).await;
    let theirs = assessments::create(
        &db.pool,
        other,
        project,
        output,
        None,
        &json!({"target_se": 0.1}),
        &json!([{"class_id": 1, "name": "Forest", "mapped_pixels": 266, "sample_size": 1}]),
        100.0,
        32633,
        &[NewSample {
            stratum: 1,
            inclusion_probability: 1.0 / 266.0,
            col: 1,
            row: 1,
            x: 500_015.0,
            y: 4_999_985.0,
            lon: 15.0,
            lat: 45.11,
        }],
    )
    .await
    .unwrap();
    let owner = Client::new(&state, DEFAULT_ORG_ID, Role::Owner).await;
    for uri in [
        format!("/assessments/{}", theirs.id),
        format!("/assessments/{}/label", theirs.id),
        format!("/outputs/{output}"),
    ] {
        let r = owner.get(&uri).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
        assert!(
            r.body.contains("<h1>404 Not Found</h1>"),
            "{uri}: {}",
            r.body
        );
    }
    assert_eq!(
        owner.get("/assessments/not-a-uuid").await.status,
        StatusCode::NOT_FOUND
    );
    let r = owner
        .post_form(
            &format!("/outputs/{output}/assessments"),
            &[("target_se", "0.1"), ("min_per_class", "3")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        assessments::list_for_output(&db.pool, other, output)
            .await
            .unwrap()
            .len(),
        1,
        "nothing was drawn"
    );
    // Their own viewer reads it.
    let viewer = Client::new(&state, other, Role::Viewer).await;
    assert_eq!(
        viewer
            .get(&format!("/assessments/{}", theirs.id))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        viewer
            .get(&format!("/assessments/{}/label", theirs.id))
            .await
            .status,
        StatusCode::OK
    );
}
