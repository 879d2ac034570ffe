//! Fires project schedules (see [`crate::service::schedules`]): first compares the maps of
//! scheduled runs that finished with their schedule's previous map, then starts the runs that are
//! due. A schedule fires again only once its last run has finished and been compared.

use crate::api::AppState;
use std::time::Duration;

/// How often it looks for due schedules and finished scheduled runs.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// One pass; returns how many runs it looked at or started.
pub async fn run_once(state: &AppState) -> anyhow::Result<u64> {
    let compared = crate::service::schedules::compare_finished(state).await?;
    let started = crate::service::schedules::fire_due(state).await?;
    Ok(compared + started)
}
