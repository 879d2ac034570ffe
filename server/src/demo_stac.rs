//! The offline demo catalogue (made by `groundwork demo-data`) served as a STAC API, for `groundwork
//! serve --demo-data` and `groundwork demo`.

use std::path::Path;

/// A STAC API (in-process `stac-server`, memory backend) over the demo catalogue in `dir`, with the COGs
/// served with HTTP range support under `{base_url}/files/`. `base_url` is the public URL the router is
/// mounted at (e.g. `http://localhost:8080/demo/stac`); it is used in links and asset hrefs.
pub fn demo_stac_router(dir: &Path, base_url: &str) -> anyhow::Result<axum::Router> {
    use anyhow::Context;
    use stac::api::TransactionClient;
    let base = base_url.trim_end_matches('/');
    let (cols, items) = groundwork_imagery::demo::read_static_catalog(&dir.join("catalog.json"))
        .with_context(|| format!("reading the demo catalogue in {}", dir.display()))?;
    let root =
        std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    let mut backend = stac_server::MemoryBackend::new();
    futures::executor::block_on(async {
        for c in cols {
            backend
                .add_collection(c)
                .await
                .context("adding a collection")?;
        }
        for mut item in items {
            for a in item.assets.values_mut() {
                let abs =
                    std::fs::canonicalize(&a.href).with_context(|| format!("asset {}", a.href))?;
                let rel = abs
                    .strip_prefix(&root)
                    .with_context(|| format!("asset {} outside the demo dir", a.href))?;
                a.href = format!("{base}/files/{}", rel.to_string_lossy());
            }
            item.links.clear();
            backend.add_item(item).await.context("adding an item")?;
        }
        anyhow::Ok(())
    })?;
    let api =
        stac_server::Api::new(backend, &format!("{base}/")).context("building the STAC API")?;
    Ok(stac_server::routes::from_api(api)
        .nest_service("/files", tower_http::services::ServeDir::new(root)))
}
