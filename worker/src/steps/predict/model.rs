//! The models a prediction can run: a constant (tests), the encoder with a light head, and a task
//! model trained by a `train` step.

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use object_store::ObjectStoreExt;
use olmoearth::EncoderInput;
use olmoearth::ModelSize;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use uuid::Uuid;

/// A model that maps a batch of normalised windows to per-pixel outputs.
pub trait WindowModel: Send + Sync {
    /// K: classes (probabilities) or values per pixel.
    fn num_outputs(&self) -> usize;
    /// Whether the outputs are values (regression) rather than class probabilities.
    fn is_regression(&self) -> bool;
    /// normalised input (B windows) -> (B, K, H, W) f32 probabilities or values
    fn predict(&self, input: &olmoearth::EncoderInput) -> olmoearth::Result<candle_core::Tensor>;
}

/// Predicts the same outputs at every pixel.
#[derive(Debug, Clone)]
pub struct ConstantModel {
    /// One value per output.
    pub values: Vec<f32>,
    /// Values rather than probabilities.
    pub regression: bool,
}

fn input_dims(input: &EncoderInput) -> olmoearth::Result<(usize, usize, usize, Device)> {
    let first = input
        .modalities
        .values()
        .next()
        .ok_or_else(|| olmoearth::Error::InvalidInput("no modality in the input".into()))?;
    let (b, h, w, _, _) = first.data.dims5()?;
    Ok((b, h, w, first.data.device().clone()))
}

impl WindowModel for ConstantModel {
    fn num_outputs(&self) -> usize {
        self.values.len()
    }

    fn is_regression(&self) -> bool {
        self.regression
    }

    fn predict(&self, input: &EncoderInput) -> olmoearth::Result<Tensor> {
        let (b, h, w, device) = input_dims(input)?;
        let k = self.values.len();
        let plane = Tensor::from_vec(self.values.clone(), (1, k, 1, 1), &device)?;
        Ok(plane.broadcast_as((b, k, h, w))?.contiguous()?)
    }
}

/// The OlmoEarth encoder with a light segmentation head (bilinear upsampling and a 1×1 convolution)
/// and a softmax over classes, or raw values for regression.
#[derive(Debug)]
pub struct EncoderSegmentation {
    encoder: olmoearth::Encoder,
    head: olmoearth::heads::LightSegmentationHead,
    patch_size: usize,
    outputs: usize,
    regression: bool,
}

impl EncoderSegmentation {
    /// Loads the encoder from a checkpoint (a model directory or weights file) and initialises a fresh
    /// head for `outputs` outputs.
    pub fn from_checkpoint(
        path: &std::path::Path,
        outputs: usize,
        patch_size: usize,
        regression: bool,
        device: &Device,
    ) -> olmoearth::Result<Self> {
        let (cfg, sd) = olmoearth::ModelFiles::resolve(path)?.load()?;
        // bf16 on GPUs that support it, f32 elsewhere; the head is f32 and gets f32 features.
        let encoder =
            olmoearth::Encoder::load(&cfg, &sd, olmoearth::device::compute_dtype(device), device)?;
        let varmap = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, device);
        let head = olmoearth::heads::LightSegmentationHead::new(
            cfg.embedding_size,
            outputs,
            patch_size,
            vb.pp("head"),
        )?;
        Ok(Self {
            encoder,
            head,
            patch_size,
            outputs,
            regression,
        })
    }

    /// The encoder alone (for comparisons).
    #[must_use]
    pub fn encoder(&self) -> &olmoearth::Encoder {
        &self.encoder
    }

    /// Patch size the model runs at.
    #[must_use]
    pub fn patch_size(&self) -> usize {
        self.patch_size
    }
}

impl WindowModel for EncoderSegmentation {
    fn num_outputs(&self) -> usize {
        self.outputs
    }

    fn is_regression(&self) -> bool {
        self.regression
    }

    fn predict(&self, input: &EncoderInput) -> olmoearth::Result<Tensor> {
        let out = self.encoder.forward(input, self.patch_size)?;
        let features = olmoearth::heads::feature_map(&out)?.to_dtype(DType::F32)?;
        let y = self.head.forward(&features)?;
        if self.regression {
            Ok(y)
        } else {
            Ok(candle_nn::ops::softmax(&y, 1)?)
        }
    }
}

/// A task model trained by a `train` step, with the class id of each of its outputs.
pub struct TrainedModel {
    model: olmoearth::task::TaskModel,
}

impl TrainedModel {
    /// Rebuilds the model from its manifest (`model.json`) and weights.
    pub fn load(
        manifest: &super::super::train::ModelManifest,
        weights: &[u8],
        device: &Device,
    ) -> anyhow::Result<Self> {
        use sha2::Digest;
        let sha = hex_of(&sha2::Sha256::digest(weights));
        anyhow::ensure!(
            sha == manifest.weights_sha256,
            "the model weights do not match their manifest (sha256 {sha}, expected {})",
            manifest.weights_sha256
        );
        let model = olmoearth::task::TaskModel::load(manifest.config.clone(), weights, device)?;
        Ok(Self { model })
    }
}

impl WindowModel for TrainedModel {
    fn num_outputs(&self) -> usize {
        self.model.config().num_outputs
    }

    fn is_regression(&self) -> bool {
        self.model.config().task == olmoearth::task::Task::Regression
    }

    fn predict(&self, input: &EncoderInput) -> olmoearth::Result<Tensor> {
        self.model.predict(input)
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which model a prediction runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSpec {
    /// The same outputs everywhere.
    Constant {
        /// One value per output.
        values: Vec<f32>,
        /// Values rather than probabilities.
        #[serde(default)]
        regression: bool,
    },
    /// A released OlmoEarth checkpoint from the worker's own model folder (`groundwork model fetch`)
    /// with a freshly initialised segmentation head. Arguments name the size, never a path: which files
    /// a worker reads is its own configuration.
    Released {
        /// The released size.
        size: ModelSize,
        /// Outputs of the head.
        outputs: usize,
        /// Values rather than probabilities.
        #[serde(default)]
        regression: bool,
    },
    /// The model a training run of the project wrote (the folder its `train` step's output names).
    Trained {
        /// The training run.
        run_id: Uuid,
    },
}

impl ModelSpec {
    /// Builds the model; a trained model comes from [`ModelSpec::fetch_trained`] instead.
    pub fn load(
        &self,
        model_dir: Option<&Path>,
        patch_size: usize,
        device: &Device,
    ) -> anyhow::Result<Arc<dyn WindowModel>> {
        Ok(match self {
            ModelSpec::Trained { run_id } => {
                anyhow::bail!("the model of run {run_id} must be fetched from the object store")
            }
            ModelSpec::Constant { values, regression } => {
                anyhow::ensure!(
                    !values.is_empty(),
                    "a constant model needs at least one value"
                );
                Arc::new(ConstantModel {
                    values: values.clone(),
                    regression: *regression,
                })
            }
            ModelSpec::Released {
                size,
                outputs,
                regression,
            } => {
                anyhow::ensure!(*outputs > 0, "a model needs at least one output");
                let root = model_dir.with_context(|| {
                    format!("this worker has no model folder for the released {size} checkpoint")
                })?;
                let path = olmoearth::fetch::model_dir(root, *size);
                Arc::new(
                    EncoderSegmentation::from_checkpoint(
                        &path,
                        *outputs,
                        patch_size,
                        *regression,
                        device,
                    )
                    .with_context(|| format!("loading the model at {}", path.display()))?,
                )
            }
        })
    }

    /// Reads the manifest and weights of a trained model of `project` from the object store.
    pub async fn fetch_trained(
        ctx: &crate::StepContext,
        objects: &dyn object_store::ObjectStore,
        run_id: Uuid,
    ) -> anyhow::Result<(super::super::train::ModelManifest, Vec<u8>)> {
        let manifest_key = super::super::train::model_keys(ctx, run_id)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .manifest;
        let path = object_store::path::Path::from(manifest_key.as_str());
        let bytes = async { objects.get(&path).await?.bytes().await }
            .await
            .with_context(|| format!("run {run_id} has no trained model ({manifest_key})"))?;
        let manifest: super::super::train::ModelManifest =
            serde_json::from_slice(&bytes).context("the model manifest is not readable")?;
        let path = object_store::path::Path::from(manifest.weights_key.as_str());
        let weights = async { objects.get(&path).await?.bytes().await }
            .await
            .with_context(|| format!("reading the model weights {}", manifest.weights_key))?;
        Ok((manifest, weights.to_vec()))
    }

    /// What lineage records about the model (`model_dir`: the worker's model folder).
    #[must_use]
    pub fn lineage(&self, model_dir: Option<&Path>) -> serde_json::Value {
        match self {
            ModelSpec::Trained { run_id } => json!({"kind": "trained", "run_id": run_id}),
            ModelSpec::Constant { values, regression } => {
                json!({"kind": "constant", "outputs": values.len(), "regression": regression})
            }
            ModelSpec::Released {
                size,
                outputs,
                regression,
            } => {
                let hash = model_dir
                    .and_then(|root| checkpoint_hash(&olmoearth::fetch::model_dir(root, *size)));
                json!({"kind": "released", "name": size.hf_repo(), "outputs": outputs,
                       "regression": regression, "checkpoint_sha256": hash})
            }
        }
    }
}

/// SHA-256 of the checkpoint's weights file, hex; `None` when it cannot be read.
fn checkpoint_hash(path: &std::path::Path) -> Option<String> {
    use sha2::Digest;
    let files = olmoearth::ModelFiles::resolve(path).ok()?;
    let bytes = std::fs::read(&files.weights).ok()?;
    let digest = sha2::Sha256::digest(&bytes);
    Some(digest.iter().map(|b| format!("{b:02x}")).collect())
}
