//! The integration tests of `groundwork-server`, one test binary: the API, the web pages and access
//! control on the in-process router over a real PostgreSQL, and (`processes`) the real `groundwork`
//! binary run as separate processes. Helpers used by several modules are in `common`.
//!
//! Run one module with a filter, e.g. `cargo test -p groundwork-server --test it labels::`.

mod access;
mod acquire;
mod api;
mod assessments;
mod changes;
mod cli;
mod common;
mod demo_stac;
mod devices;
mod hostile;
mod hygiene;
mod imagery_tiles;
mod labels;
mod lifecycle;
mod models;
mod monitoring;
mod outputs;
mod package;
mod processes;
mod ranges;
mod remote;
mod shares;
mod suggestions;
mod webhooks;
