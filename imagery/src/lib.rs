//! Imagery acquisition for Groundwork: an AOI cut into UTM windows, scenes found through STAC, only the
//! needed pixels of each COG read over HTTP range requests and reprojected onto the window grid,
//! cloud-masked per-bin composites, and window tensors written to an object store.
//!
//! Entry points: [`windows_for_aoi`] (the grid), [`acquire()`] (what the `acquire` step calls),
//! [`cli`] (the `imagery materialize` and `demo-data` commands) and [`demo`] (an offline demo catalogue
//! and a STAC API router serving it). The crate knows nothing of the database.
#![warn(missing_docs)]

pub mod acquire;
pub mod cli;
pub mod composite;
pub mod demo;
mod error;
pub mod grid;
pub mod http;
pub mod modality;
pub mod output;
pub mod publish;
pub mod rasterize;
pub mod read;
pub mod source;
pub mod stitch;
pub mod tiles;

pub use acquire::{
    AcquireReport, AcquireRequest, OutputLayout, Progress, WindowOutcome, WindowStatus, acquire,
};
pub use composite::{Composite, TimeBin, TimeBinning};
pub use demo::{DemoOptions, demo_stac_router, generate_demo_data};
pub use error::{Error, Result};
pub use grid::{GridOptions, WindowSpec, windows_for_aoi};
pub use http::{HttpOptions, RetryPolicy};
pub use modality::{CustomProfile, Harmonize, Modality, ModalitySpec, Profile};
pub use source::{Scene, Source};
pub use tokio_util::sync::CancellationToken;
