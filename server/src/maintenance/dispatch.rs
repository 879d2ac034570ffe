//! Prunes dispatch messages done over a day ago (a claim retires its message; the step rows keep
//! every state users see) and clean-ups done over thirty days ago.

use crate::api::AppState;
use std::time::Duration;

/// How often it runs.
pub const INTERVAL: Duration = Duration::from_secs(3600);

/// One pass; returns the rows deleted.
pub async fn run_once(state: &AppState) -> anyhow::Result<u64> {
    Ok(groundwork_store::maintenance::prune_dispatch(&state.pool).await?)
}
