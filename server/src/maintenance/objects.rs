//! Deletes the objects of deleted projects: every object under each prefix queued in
//! `object_cleanup` (by `projects::delete`, in the transaction that deleted the rows), and the server's
//! cached copies of them.

use crate::api::AppState;
use futures::TryStreamExt;
use groundwork_store::maintenance;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use std::time::Duration;

/// How often the queue is looked at.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// One pass: works through the pending clean-ups; returns the objects deleted. A clean-up that fails
/// is recorded with its error and tried again on the next pass.
pub async fn run_once(state: &AppState) -> anyhow::Result<u64> {
    let Some(store) = state.objects.clone() else {
        return Ok(0);
    };
    let mut deleted = 0;
    for job in maintenance::pending_cleanups(&state.pool, 20).await? {
        let prefix = ObjectPath::from(job.prefix.as_str());
        let result: anyhow::Result<u64> = async {
            let keys: Vec<ObjectPath> = store
                .list(Some(&prefix))
                .map_ok(|m| m.location)
                .try_collect()
                .await?;
            let mut n = 0;
            for key in keys {
                match store.delete(&key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => n += 1,
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(n)
        }
        .await;
        match result {
            Ok(n) => {
                let cache = state.cache.clone();
                let p = job.prefix.clone();
                tokio::task::spawn_blocking(move || cache.remove_prefix(&p)).await?;
                maintenance::cleanup_done(&state.pool, job.id).await?;
                deleted += n;
            }
            Err(e) => {
                maintenance::cleanup_failed(&state.pool, job.id, &format!("{e:#}")).await?;
            }
        }
    }
    Ok(deleted)
}
