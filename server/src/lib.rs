//! The Groundwork server: REST API v1 (axum), OpenAPI, health checks and the web UI. The commands of
//! the `groundwork` binary live in the binary (`src/cli`).
#![warn(missing_docs)]

pub mod api;
pub mod basemap;
pub mod cache;
pub mod demo_stac;
pub mod geometry;
pub mod hygiene;
pub mod labels;
pub mod maintenance;
pub mod objects;
pub mod service;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod web;

pub use api::{AppState, router};
