//! The server's maintenance tasks, one file per task, each with its own interval: deleting the objects
//! of deleted projects ([`objects`]), pruning done dispatch messages ([`dispatch`]) and expired
//! sessions, invitations and sign-in attempts ([`accounts`]), sending the webhook deliveries of
//! finished runs ([`webhooks`]), and firing project schedules ([`schedules`]). Every task survives its own errors (a
//! database outage, a flaky object store): it logs and tries again at its next interval.

pub mod accounts;
pub mod dispatch;
pub mod objects;
pub mod schedules;
pub mod webhooks;

use crate::api::AppState;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Starts every maintenance task; they stop when `stop` is cancelled.
pub fn spawn(state: &AppState, stop: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    let s = state.clone();
    let objects = every("objects", objects::INTERVAL, stop.clone(), move || {
        let s = s.clone();
        async move { objects::run_once(&s).await }
    });
    let s = state.clone();
    let dispatch = every("dispatch", dispatch::INTERVAL, stop.clone(), move || {
        let s = s.clone();
        async move { dispatch::run_once(&s).await }
    });
    let s = state.clone();
    let accounts = every("accounts", accounts::INTERVAL, stop.clone(), move || {
        let s = s.clone();
        async move { accounts::run_once(&s).await }
    });
    let s = state.clone();
    let webhooks = every("webhooks", webhooks::INTERVAL, stop.clone(), move || {
        let s = s.clone();
        async move { webhooks::run_once(&s).await }
    });
    let s = state.clone();
    let schedules = every("schedules", schedules::INTERVAL, stop.clone(), move || {
        let s = s.clone();
        async move { schedules::run_once(&s).await }
    });
    vec![
        tokio::spawn(schedules),
        tokio::spawn(objects),
        tokio::spawn(dispatch),
        tokio::spawn(accounts),
        tokio::spawn(webhooks),
    ]
}

/// Runs `pass` every `interval` (the first right away) until `stop`.
async fn every<F, Fut>(name: &'static str, interval: Duration, stop: CancellationToken, pass: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<u64>>,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match pass().await {
            Ok(0) => {}
            Ok(n) => debug!(task = name, done = n, "maintenance pass"),
            Err(e) => {
                warn!(task = name, error = %format!("{e:#}"), "maintenance pass failed; trying again later")
            }
        }
    }
}
