//! Prunes expired sessions, invitations that expired unaccepted over a week ago and sign-in attempts
//! older than a day (the sign-in limit looks back less far).

use crate::api::AppState;
use std::time::Duration;

/// How often it runs.
pub const INTERVAL: Duration = Duration::from_secs(3600);

/// One pass; returns the rows deleted.
pub async fn run_once(state: &AppState) -> anyhow::Result<u64> {
    Ok(groundwork_store::maintenance::prune_accounts(&state.pool).await?)
}
