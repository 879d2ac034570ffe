//! The Groundwork server: REST API v1 (axum), OpenAPI, health checks, and the commands of the
//! `groundwork` binary.
#![warn(missing_docs)]

pub mod api;
pub mod bench;
pub mod demo;
pub mod geometry;
pub mod labels;
pub mod labels_cli;
pub mod objects;
pub mod service;
pub mod telemetry;
pub mod testing;
pub mod web;

pub use api::{AppState, router};
