//! The OlmoEarth v1 encoder in candle: config and checkpoint loading, the exact encoder forward pass,
//! normalisation helpers, task heads, and training blocks.
//!
//! The model is specified in the project's `docs/olmoearth-v1.md`; parity with the reference PyTorch code is
//! checked against fixtures in `tests/fixtures/olmoearth-nano/`.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod device;
pub mod embed;
pub mod encoder;
pub mod encodings;
pub mod error;
pub mod fetch;
pub mod finetune;
pub mod heads;
pub mod info;
pub mod kernels;
pub mod modality;
pub mod normalize;
pub mod resize;
pub mod task;
pub mod train;

pub use checkpoint::{ModelFiles, StateDict};
pub use config::{EncoderConfig, ModelSize};
pub use encoder::{Encoder, EncoderInput, EncoderOutput, ModalityInput};
pub use error::{Error, Result};
pub use info::{ModelInfo, model_info};
pub use modality::Modality;
