//! Model configuration: the v1 presets (spec §1) and parsing of the release `config.json` (spec §4.3).

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::modality::Modality;

pub use groundwork_types::ModelSize;

/// The encoder hyper-parameters a forward pass needs.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    /// Token width D.
    pub embedding_size: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// MLP hidden size is `mlp_ratio · D`.
    pub mlp_ratio: f64,
    /// Conv kernel size of the patch embedding (8 for every v1 model).
    pub max_patch_size: usize,
    /// Maximum number of time steps (12).
    pub max_sequence_length: usize,
    /// Encoder input modalities supported by this model (a subset of [`Modality::ALL`]).
    pub modalities: Vec<Modality>,
}

impl EncoderConfig {
    /// The preset of a released v1 size.
    pub fn preset(size: ModelSize) -> Self {
        let (embedding_size, depth, num_heads) = size.dims();
        EncoderConfig {
            embedding_size,
            depth,
            num_heads,
            mlp_ratio: 4.0,
            max_patch_size: 8,
            max_sequence_length: 12,
            modalities: Modality::ALL.to_vec(),
        }
    }

    /// OlmoEarth-v1-Nano.
    pub fn nano() -> Self {
        Self::preset(ModelSize::Nano)
    }

    /// OlmoEarth-v1-Base.
    pub fn base() -> Self {
        Self::preset(ModelSize::Base)
    }

    /// The MLP hidden width.
    pub fn mlp_hidden(&self) -> usize {
        (self.embedding_size as f64 * self.mlp_ratio).round() as usize
    }

    /// The released size whose dimensions these are, if any.
    pub fn size(&self) -> Option<ModelSize> {
        ModelSize::ALL.iter().copied().find(|s| {
            s.dims() == (self.embedding_size, self.depth, self.num_heads) && self.mlp_ratio == 4.0
        })
    }

    /// Reads a release `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text, path)
    }

    /// Parses the text of a release `config.json`; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let invalid = |reason: String| Error::ConfigInvalid {
            path: path.to_path_buf(),
            reason,
        };
        let unsupported = |reason: String| Error::UnsupportedVersion {
            path: path.to_path_buf(),
            reason,
        };
        let root: Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let enc = root
            .pointer("/model/encoder_config")
            .ok_or_else(|| invalid("no model.encoder_config".into()))?;
        check_class(enc, "EncoderConfig").map_err(invalid)?;
        if let Some(model) = root.get("model") {
            check_class(model, "LatentMIMConfig").map_err(invalid)?;
        }

        let usize_field = |name: &str| -> Result<usize> {
            enc.get(name)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| {
                    invalid(format!(
                        "model.encoder_config.{name} missing or not an integer"
                    ))
                })
        };
        let embedding_size = usize_field("embedding_size")?;
        let depth = usize_field("depth")?;
        let num_heads = usize_field("num_heads")?;
        let mlp_ratio = enc.get("mlp_ratio").and_then(Value::as_f64).unwrap_or(4.0);
        let max_patch_size = usize_field("max_patch_size")?;
        let max_sequence_length = enc
            .get("max_sequence_length")
            .and_then(Value::as_u64)
            .map_or(12, |v| v as usize);

        // Settings that later families (v1.1 linear patch embedding and band grouping, v1.2 RoPE,
        // register tokens, qk-norm) change; a v1 encoder cannot load their weights.
        if enc.get("use_linear_patch_embed").and_then(Value::as_bool) == Some(true) {
            return Err(unsupported("use_linear_patch_embed is true (v1.1+)".into()));
        }
        if let Some(t) = enc.get("tokenization_config").filter(|v| !v.is_null()) {
            return Err(unsupported(format!(
                "tokenization_config is set ({t}) (v1.1+)"
            )));
        }
        if let Some(h) = enc.get("patch_embed_hidden_sizes").filter(|v| !v.is_null()) {
            return Err(unsupported(format!(
                "patch_embed_hidden_sizes is set ({h}) (v1.1+)"
            )));
        }
        if let Some(pe) = enc
            .get("position_encoding")
            .and_then(Value::as_str)
            .filter(|pe| *pe != "absolute")
        {
            return Err(unsupported(format!("position_encoding is {pe:?} (v1.2+)")));
        }
        if enc
            .get("num_register_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            != 0
        {
            return Err(unsupported("num_register_tokens is not 0".into()));
        }
        if enc.get("qk_norm").and_then(Value::as_bool) == Some(true) {
            return Err(unsupported("qk_norm is true".into()));
        }
        if max_patch_size != 8 {
            return Err(unsupported(format!(
                "max_patch_size is {max_patch_size}, v1 uses 8"
            )));
        }
        if embedding_size % 4 != 0 || num_heads == 0 || embedding_size % num_heads != 0 {
            return Err(invalid(format!(
                "embedding_size {embedding_size} must be divisible by 4 and by num_heads {num_heads}"
            )));
        }

        let names: Vec<String> = match enc.get("supported_modality_names") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Modality::ALL.iter().map(|m| m.name().to_string()).collect(),
        };
        let decode_only: Vec<String> = root
            .pointer("/train_module/masking_config/strategy_config/only_decode_modalities")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let modalities: Vec<Modality> = Modality::ALL
            .iter()
            .copied()
            .filter(|m| {
                names.iter().any(|n| n == m.name()) && !decode_only.iter().any(|n| n == m.name())
            })
            .collect();
        if modalities.is_empty() {
            return Err(invalid(
                "no encoder input modality among supported_modality_names".into(),
            ));
        }
        Ok(EncoderConfig {
            embedding_size,
            depth,
            num_heads,
            mlp_ratio,
            max_patch_size,
            max_sequence_length,
            modalities,
        })
    }
}

/// Accepts `helios.*` and `olmoearth_pretrain.*` class names whose last segment is `expected`.
fn check_class(v: &Value, expected: &str) -> std::result::Result<(), String> {
    let Some(class) = v.get("_CLASS_").and_then(Value::as_str) else {
        return Ok(());
    };
    let known_prefix = class.starts_with("helios.") || class.starts_with("olmoearth_pretrain.");
    let last = class.rsplit('.').next().unwrap_or_default();
    if !known_prefix || last != expected {
        return Err(format!(
            "unexpected class {class:?}, expected helios.* or olmoearth_pretrain.* {expected}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal(extra: &str) -> String {
        format!(
            r#"{{"model": {{"_CLASS_": "olmoearth_pretrain.nn.latent_mim.LatentMIMConfig",
              "encoder_config": {{"_CLASS_": "olmoearth_pretrain.nn.flexi_vit.EncoderConfig",
              "embedding_size": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4.0, "max_patch_size": 8,
              "max_sequence_length": 12, "supported_modality_names": ["sentinel2_l2a", "sentinel1", "worldcover"]
              {extra}}}}}}}"#
        )
    }

    #[test]
    fn olmoearth_pretrain_prefix_and_absent_linear_patch_embed_parse_as_v1() {
        let cfg = EncoderConfig::from_json_str(&minimal(""), Path::new("c.json")).expect("parses");
        assert_eq!(cfg.size(), Some(ModelSize::Base));
        assert_eq!(
            cfg.modalities,
            vec![Modality::Sentinel2L2a, Modality::Sentinel1]
        );
    }

    #[test]
    fn later_versions_are_refused_with_the_reason() {
        for extra in [
            r#","use_linear_patch_embed": true"#,
            r#","tokenization_config": {"x": 1}"#,
            r#","position_encoding": "rope_3d_mixed""#,
        ] {
            let err = EncoderConfig::from_json_str(&minimal(extra), Path::new("c.json"))
                .expect_err("refused");
            assert!(
                matches!(err, Error::UnsupportedVersion { .. }),
                "{extra}: {err}"
            );
            assert!(err.to_string().contains("only OlmoEarth v1"), "{err}");
        }
        // Explicit false is v1 as well.
        let ok = EncoderConfig::from_json_str(
            &minimal(r#","use_linear_patch_embed": false"#),
            Path::new("c"),
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn foreign_classes_are_refused() {
        let text = minimal("").replace("olmoearth_pretrain.nn.flexi_vit", "other.nn");
        let err = EncoderConfig::from_json_str(&text, Path::new("c.json")).expect_err("refused");
        assert!(matches!(err, Error::ConfigInvalid { .. }), "{err}");
    }

    #[test]
    fn presets_match_the_released_sizes() {
        for size in ModelSize::ALL {
            assert_eq!(EncoderConfig::preset(*size).size(), Some(*size));
            assert_eq!(size.name().parse::<ModelSize>().ok(), Some(*size));
        }
        assert_eq!(EncoderConfig::base().mlp_hidden(), 3072);
        assert!("huge".parse::<ModelSize>().is_err());
    }
}
