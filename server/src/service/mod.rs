//! What the server does, apart from HTTP: one module per resource, each a set of plain async functions
//! taking the state, the acting principal and a typed input, and returning a typed result or an
//! [`ApiError`](crate::api::error::ApiError). The API handlers extract, call one of them and respond;
//! the web pages call the same functions.

pub mod accounts;
pub mod assessments;
pub mod changes;
pub mod imagery;
pub mod labels;
pub mod models;
pub mod outputs;
pub mod package;
pub mod projects;
pub mod runs;
pub mod schedules;
pub mod shares;
pub mod suggestions;
pub mod tokens;
pub mod usage;
pub mod webhooks;
pub mod workers;
