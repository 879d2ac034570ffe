//! Checkpoint loading: the release `weights.pth` (the full LatentMIM state dict, spec §4.1) and safetensors.
//!
//! Only `encoder.*` tensors the v1 encoder uses are kept. `decoder.*`, `target_encoder.*`, the legacy
//! `composite_encodings.pos_embed`, the contrastive projection and the decode-only modality embeddings are ignored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::config::EncoderConfig;
use crate::error::{Error, Result};
use crate::modality::Modality;

/// Prefix of every encoder key in the release files.
pub const ENCODER_PREFIX: &str = "encoder.";

/// The frozen time table of v1-era files, equal to the computed time encoding; not loaded.
pub const LEGACY_POS_EMBED: &str = "composite_encodings.pos_embed";

/// The encoder tensors of a checkpoint, keyed by full state-dict key (`encoder.blocks.0.attn.q.weight`, …).
#[derive(Debug, Clone)]
pub struct StateDict {
    tensors: HashMap<String, Tensor>,
}

impl StateDict {
    /// Wraps tensors already in memory (keys with the `encoder.` prefix).
    pub fn from_tensors(tensors: HashMap<String, Tensor>) -> Self {
        StateDict { tensors }
    }

    /// Reads a `.pth` (torch zip pickle) or `.safetensors` file onto the CPU, keeping `encoder.*` keys.
    ///
    /// A safetensors file whose keys lack the `encoder.` prefix (a bare encoder state dict) is accepted too.
    pub fn load(path: &Path) -> Result<Self> {
        let read_err = |reason: String| Error::CheckpointRead {
            path: path.to_path_buf(),
            reason,
        };
        if !path.is_file() {
            return Err(read_err("no such file".into()));
        }
        let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
        let all: Vec<(String, Tensor)> = if is_safetensors {
            candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(|e| read_err(e.to_string()))?
                .into_iter()
                .collect()
        } else {
            candle_core::pickle::read_all(path).map_err(|e| read_err(e.to_string()))?
        };
        let has_prefix = all.iter().any(|(k, _)| k.starts_with(ENCODER_PREFIX));
        let tensors: HashMap<String, Tensor> = all
            .into_iter()
            .filter(|(k, _)| !k.ends_with(LEGACY_POS_EMBED))
            .filter_map(|(k, t)| {
                if has_prefix {
                    k.starts_with(ENCODER_PREFIX).then_some((k, t))
                } else {
                    Some((format!("{ENCODER_PREFIX}{k}"), t))
                }
            })
            .collect();
        if tensors.is_empty() {
            return Err(read_err("no encoder tensors in file".into()));
        }
        Ok(StateDict { tensors })
    }

    /// Number of tensors held.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Total number of parameters (elements) held.
    pub fn param_count(&self) -> usize {
        self.tensors.values().map(Tensor::elem_count).sum()
    }

    /// True when no tensor is held.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// A tensor by key, checked against the shape the encoder needs.
    pub fn get(&self, key: &str, expected: &[usize]) -> Result<&Tensor> {
        let t = self.tensors.get(key).ok_or_else(|| Error::MissingKey {
            key: key.to_string(),
            expected: expected.to_vec(),
        })?;
        if t.dims() != expected {
            return Err(Error::KeyShape {
                key: key.to_string(),
                expected: expected.to_vec(),
                got: t.dims().to_vec(),
            });
        }
        Ok(t)
    }

    /// Checks every key the encoder of `cfg` needs, then returns those tensors converted to `dtype`
    /// on `device`, keyed as in the file.
    pub fn encoder_tensors(
        &self,
        cfg: &EncoderConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (key, shape) in expected_shapes(cfg) {
            let t = self.get(&key, &shape)?;
            out.insert(key, t.to_dtype(dtype)?.to_device(device)?);
        }
        Ok(out)
    }

    /// Infers the encoder dimensions from tensor shapes, for a weights file without a `config.json`.
    pub fn infer_config(&self) -> Result<EncoderConfig> {
        let norm = self
            .tensors
            .get("encoder.norm.weight")
            .ok_or_else(|| Error::MissingKey {
                key: "encoder.norm.weight".into(),
                expected: vec![],
            })?;
        let d = norm.dims1()?;
        let depth = (0..)
            .take_while(|i| {
                self.tensors
                    .contains_key(&format!("encoder.blocks.{i}.norm1.weight"))
            })
            .count();
        let size = crate::config::ModelSize::ALL
            .iter()
            .copied()
            .find(|s| s.dims().0 == d && s.dims().1 == depth)
            .ok_or_else(|| Error::CheckpointRead {
                path: PathBuf::from("<state dict>"),
                reason: format!(
                    "D={d}, depth={depth} is no released v1 size; put a config.json next to the weights"
                ),
            })?;
        let mut cfg = EncoderConfig::preset(size);
        cfg.modalities.retain(|m| {
            self.tensors.contains_key(&format!(
                "encoder.composite_encodings.per_modality_channel_embeddings.{m}"
            ))
        });
        Ok(cfg)
    }
}

/// A state dict with random weights (normal, std 0.02; LayerNorms at identity; the fixed month table) for
/// benchmarks and tests that need a model of a given size but not trained weights.
pub fn random_state_dict(cfg: &EncoderConfig, device: &Device) -> Result<StateDict> {
    let n = cfg.embedding_size / 4;
    let mut tensors = HashMap::new();
    for (key, shape) in expected_shapes(cfg) {
        let t = if key.ends_with("month_embed.weight") {
            Tensor::from_vec(crate::encodings::month_table(n), (12, n), device)?
        } else if key.contains("norm") && key.ends_with(".weight") {
            Tensor::ones(shape.as_slice(), DType::F32, device)?
        } else if key.ends_with(".bias") {
            Tensor::zeros(shape.as_slice(), DType::F32, device)?
        } else {
            Tensor::randn(0f32, 0.02, shape.as_slice(), device)?
        };
        tensors.insert(key, t);
    }
    Ok(StateDict { tensors })
}

/// [`random_state_dict`] drawn from `seed`: the same seed gives the same weights (each tensor's
/// stream is seeded by its key, so the draw does not depend on iteration order).
pub fn seeded_state_dict(cfg: &EncoderConfig, seed: u64, device: &Device) -> Result<StateDict> {
    let mut sd = random_state_dict(cfg, &Device::Cpu)?;
    for (key, t) in sd.tensors.iter_mut() {
        if key.ends_with("month_embed.weight")
            || key.ends_with(".bias")
            || (key.contains("norm") && key.ends_with(".weight"))
        {
            *t = t.to_device(device)?;
            continue;
        }
        // splitmix64 keyed by the tensor name, Box–Muller for normals.
        let mut state = key.bytes().fold(seed ^ 0x9E37_79B9_7F4A_7C15, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
        });
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut unit = move || ((next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let n = t.elem_count();
        let mut v = Vec::with_capacity(n + 1);
        while v.len() < n {
            let (u1, u2) = (unit(), unit());
            let r = (-2.0 * u1.ln()).sqrt() * 0.02;
            let a = std::f64::consts::TAU * u2;
            v.push((r * a.cos()) as f32);
            v.push((r * a.sin()) as f32);
        }
        v.truncate(n);
        *t = Tensor::from_vec(v, t.dims(), device)?;
    }
    Ok(sd)
}

/// Key of the conv patch embedding of band set `s` of `m` (without the `.weight`/`.bias` suffix).
pub fn patch_embed_key(m: Modality, s: usize) -> String {
    format!("encoder.patch_embeddings.per_modality_embeddings.{m}.{m}__{s}.proj")
}

/// Every key the encoder of `cfg` reads, with its shape.
pub fn expected_shapes(cfg: &EncoderConfig) -> Vec<(String, Vec<usize>)> {
    let d = cfg.embedding_size;
    let n = d / 4;
    let k = cfg.max_patch_size;
    let hid = cfg.mlp_hidden();
    let mut v = Vec::new();
    for i in 0..cfg.depth {
        let b = format!("encoder.blocks.{i}");
        for ln in ["norm1", "norm2"] {
            v.push((format!("{b}.{ln}.weight"), vec![d]));
            v.push((format!("{b}.{ln}.bias"), vec![d]));
        }
        for p in ["q", "k", "v", "proj"] {
            v.push((format!("{b}.attn.{p}.weight"), vec![d, d]));
            v.push((format!("{b}.attn.{p}.bias"), vec![d]));
        }
        v.push((format!("{b}.mlp.fc1.weight"), vec![hid, d]));
        v.push((format!("{b}.mlp.fc1.bias"), vec![hid]));
        v.push((format!("{b}.mlp.fc2.weight"), vec![d, hid]));
        v.push((format!("{b}.mlp.fc2.bias"), vec![d]));
    }
    v.push((
        "encoder.composite_encodings.month_embed.weight".into(),
        vec![12, n],
    ));
    for &m in &cfg.modalities {
        v.push((
            format!("encoder.composite_encodings.per_modality_channel_embeddings.{m}"),
            vec![m.num_band_sets(), n],
        ));
        for (s, bands) in m.band_sets().iter().enumerate() {
            let key = patch_embed_key(m, s);
            v.push((format!("{key}.weight"), vec![d, bands.len(), k, k]));
            v.push((format!("{key}.bias"), vec![d]));
        }
    }
    v.push(("encoder.norm.weight".into(), vec![d]));
    v.push(("encoder.norm.bias".into(), vec![d]));
    v
}

/// Where a model's files are: the config (if any) and the weights.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// `config.json`, when present.
    pub config: Option<PathBuf>,
    /// `weights.pth` or a `.safetensors` file.
    pub weights: PathBuf,
}

impl ModelFiles {
    /// Resolves `path`: a model directory (`config.json` plus `weights.pth` or `encoder.safetensors`)
    /// or a weights file (with an optional `config.json` beside it).
    pub fn resolve(path: &Path) -> Result<Self> {
        if path.is_dir() {
            let config = path.join("config.json");
            let weights = ["weights.pth", "encoder.safetensors", "model.safetensors"]
                .iter()
                .map(|f| path.join(f))
                .find(|p| p.is_file())
                .ok_or_else(|| Error::CheckpointRead {
                    path: path.to_path_buf(),
                    reason:
                        "directory has no weights.pth, encoder.safetensors or model.safetensors"
                            .into(),
                })?;
            Ok(ModelFiles {
                config: config.is_file().then_some(config),
                weights,
            })
        } else if path.is_file() {
            let config = path
                .parent()
                .map(|p| p.join("config.json"))
                .filter(|p| p.is_file());
            Ok(ModelFiles {
                config,
                weights: path.to_path_buf(),
            })
        } else {
            Err(Error::CheckpointRead {
                path: path.to_path_buf(),
                reason: "no such file or directory".into(),
            })
        }
    }

    /// Reads the config (or infers it from the weights) and the encoder state dict.
    pub fn load(&self) -> Result<(EncoderConfig, StateDict)> {
        let sd = StateDict::load(&self.weights)?;
        let cfg = match &self.config {
            Some(c) => EncoderConfig::from_file(c)?,
            None => sd.infer_config()?,
        };
        Ok((cfg, sd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelSize;

    #[test]
    fn seeded_weights_repeat_for_a_seed_and_have_the_init_scale() -> Result<()> {
        let cfg = EncoderConfig::preset(ModelSize::Nano);
        let a = seeded_state_dict(&cfg, 3, &Device::Cpu)?;
        let b = seeded_state_dict(&cfg, 3, &Device::Cpu)?;
        let c = seeded_state_dict(&cfg, 4, &Device::Cpu)?;
        let key = "encoder.blocks.0.attn.q.weight";
        let get = |sd: &StateDict| -> Result<Vec<f32>> {
            Ok(sd.tensors[key].flatten_all()?.to_vec1::<f32>()?)
        };
        let (va, vb, vc) = (get(&a)?, get(&b)?, get(&c)?);
        assert_eq!(va, vb);
        assert_ne!(va, vc);
        let n = va.len() as f64;
        let mean = va.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let std = (va
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        assert!(
            mean.abs() < 2e-3 && (std - 0.02).abs() < 2e-3,
            "{mean} {std}"
        );
        // LayerNorms stay at identity and biases at zero.
        let ln: Vec<f32> = a.tensors["encoder.blocks.0.norm1.weight"].to_vec1()?;
        assert!(ln.iter().all(|&x| x == 1.0));
        Ok(())
    }
}
