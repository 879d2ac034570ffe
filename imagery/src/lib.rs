//! Imagery acquisition for Groundwork: an AOI cut into UTM windows, scenes found through STAC, only the
//! needed pixels of each COG read over HTTP range requests and reprojected onto the window grid,
//! cloud-masked per-bin composites, and window tensors written to an object store.
//!
//! Entry points: [`windows_for_aoi`] (the grid), [`acquire()`] (what the `acquire` step calls),
//! [`materialize`] (an AOI into a local folder, what `groundwork imagery materialize` runs) and [`demo`]
//! (an offline demo catalogue); [`preview`] draws map tiles of acquired window tensors. The crate
//! knows nothing of the database, serves no HTTP and reads no command line.
#![warn(missing_docs)]

pub mod acquire;
pub mod assessment;
pub mod change;
pub mod composite;
pub mod demo;
mod error;
pub mod footprint;
mod gdal_proxy;
pub mod grid;
pub mod http;
pub mod materialize;
pub mod modality;
pub mod mosaic;
pub mod outbound;
pub mod output;
pub mod package;
pub mod preview;
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
pub use demo::{DemoOptions, generate_demo_data};
pub use error::{Error, Result};
pub use grid::{GridOptions, WindowSpec, windows_for_aoi};
pub use http::{HttpOptions, RetryPolicy};
pub use modality::{CustomProfile, Harmonize, Modality, ModalitySpec, Profile};
pub use outbound::{AllowedHost, OutboundError, OutboundPolicy};
pub use source::{Scene, Source};
pub use tokio_util::sync::CancellationToken;
