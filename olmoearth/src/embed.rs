//! Embedding safetensors files: the library side of `groundwork model embed`.
//!
//! Input keys: `<modality>` f32 `(B, H, W, T, C)` (already normalised), optional `<modality>_mask` integer
//! `(B, H, W, T, S)` (0 present, 3 missing) and `timestamps` integer `(B, T, 3)` = day, month 0–11, year.
//! Output keys: `tokens.<modality>` `(B, h, w, T, S, D)` and `pooled` `(B, h, w, D)`, both f32.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};

use crate::checkpoint::ModelFiles;
use crate::config::EncoderConfig;
use crate::device::{compute_dtype, parse_device};
use crate::encoder::{Encoder, EncoderInput, ModalityInput};
use crate::error::{Error, Result};
use crate::modality::Modality;

/// Arguments of [`embed_file`].
#[derive(Debug, Clone)]
pub struct EmbedArgs {
    /// Model directory or weights file.
    pub model: PathBuf,
    /// Input safetensors.
    pub input: PathBuf,
    /// Output safetensors.
    pub output: PathBuf,
    /// Patch size 1–8.
    pub patch_size: usize,
    /// `cpu`, `cuda:N` or `auto`.
    pub device: String,
    /// Samples per forward pass.
    pub batch_size: usize,
}

/// What [`embed_file`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedSummary {
    /// Samples embedded.
    pub samples: usize,
    /// Output shapes by key.
    pub shapes: BTreeMap<String, Vec<usize>>,
}

/// Reads and validates an input file into an [`EncoderInput`] on the CPU.
pub fn read_input(path: &Path, cfg: &EncoderConfig, patch_size: usize) -> Result<EncoderInput> {
    let tensors =
        candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| Error::CheckpointRead {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    parse_input(tensors, cfg, patch_size)
}

/// Validates named tensors as an encoder input (see the module docs for the keys).
pub fn parse_input(
    mut tensors: HashMap<String, Tensor>,
    cfg: &EncoderConfig,
    patch_size: usize,
) -> Result<EncoderInput> {
    let timestamps = tensors.remove("timestamps").ok_or_else(|| {
        Error::InvalidInput(
            "missing timestamps: expected key `timestamps` (B, T, 3) = day, month 0-11, year"
                .into(),
        )
    })?;
    let mut data = BTreeMap::new();
    let mut masks = BTreeMap::new();
    let mut keys: Vec<String> = tensors.keys().cloned().collect();
    keys.sort();
    for key in keys {
        let Some(t) = tensors.remove(&key) else {
            continue;
        };
        let (name, is_mask) = match key.strip_suffix("_mask") {
            Some(n) => (n, true),
            None => (key.as_str(), false),
        };
        let m = crate::modality::parse_modality(name)?;
        if is_mask {
            masks.insert(m, t);
        } else {
            if t.dtype() != DType::F32 {
                return Err(Error::DType {
                    what: key.clone(),
                    expected: "F32".into(),
                    got: format!("{:?}", t.dtype()),
                });
            }
            data.insert(m, t);
        }
    }
    if let Some(m) = masks.keys().find(|m| !data.contains_key(m)) {
        return Err(Error::InvalidInput(format!(
            "{m}_mask given without {m} data"
        )));
    }
    if !matches!(
        timestamps.dtype(),
        DType::U8 | DType::U32 | DType::I16 | DType::I32 | DType::I64
    ) {
        return Err(Error::DType {
            what: "timestamps".into(),
            expected: "an integer type".into(),
            got: format!("{:?}", timestamps.dtype()),
        });
    }
    let ts = timestamps.dims();
    if ts.len() != 3 || ts[2] != 3 {
        return Err(Error::Shape {
            what: "timestamps".into(),
            expected: "(B, T, 3)".into(),
            got: ts.to_vec(),
        });
    }
    if let Some(first) = data.values().next() {
        let d = first.dims();
        if d.len() == 5 && (ts[0] != d[0] || ts[1] != d[3]) {
            return Err(Error::Shape {
                what: "timestamps".into(),
                expected: format!("({}, {}, 3) matching the data's B and T", d[0], d[3]),
                got: ts.to_vec(),
            });
        }
    }
    let months = timestamps.i((.., .., 1))?.to_dtype(DType::I64)?;
    let modalities = data
        .into_iter()
        .map(|(m, data)| {
            let mask = masks.remove(&m);
            (m, ModalityInput { data, mask })
        })
        .collect();
    let input = EncoderInput { modalities, months };
    input.validate(cfg, patch_size)?;
    input.check_divisible(patch_size)?;
    Ok(input)
}

fn slice_batch(input: &EncoderInput, start: usize, len: usize) -> Result<EncoderInput> {
    let modalities = input
        .modalities
        .iter()
        .map(|(&m, i)| {
            Ok((
                m,
                ModalityInput {
                    data: i.data.narrow(0, start, len)?,
                    mask: i
                        .mask
                        .as_ref()
                        .map(|k| k.narrow(0, start, len))
                        .transpose()?,
                },
            ))
        })
        .collect::<Result<BTreeMap<_, _>>>()?;
    Ok(EncoderInput {
        modalities,
        months: input.months.narrow(0, start, len)?,
    })
}

/// Embeds every sample of `input` in batches; returns the output tensors (f32, CPU) by key.
pub fn embed(
    encoder: &Encoder,
    input: &EncoderInput,
    patch_size: usize,
    batch_size: usize,
) -> Result<HashMap<String, Tensor>> {
    let dims = input.validate(encoder.config(), patch_size)?;
    let batch_size = batch_size.max(1);
    let mut tokens: BTreeMap<Modality, Vec<Tensor>> = BTreeMap::new();
    let mut pooled = Vec::new();
    let mut start = 0;
    while start < dims.b {
        let len = batch_size.min(dims.b - start);
        let out = encoder.forward(&slice_batch(input, start, len)?, patch_size)?;
        pooled.push(
            out.pooled()?
                .to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?,
        );
        for (m, t) in out.tokens {
            tokens
                .entry(m)
                .or_default()
                .push(t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?);
        }
        start += len;
    }
    let mut out = HashMap::new();
    for (m, parts) in tokens {
        out.insert(format!("tokens.{m}"), Tensor::cat(&parts, 0)?);
    }
    out.insert("pooled".to_string(), Tensor::cat(&pooled, 0)?);
    Ok(out)
}

/// Loads the model, validates the input file, embeds it and writes the output file.
pub fn embed_file(args: &EmbedArgs) -> Result<EmbedSummary> {
    let device = parse_device(&args.device)?;
    let (cfg, sd) = ModelFiles::resolve(&args.model)?.load()?;
    let input = read_input(&args.input, &cfg, args.patch_size)?;
    let encoder = Encoder::load(&cfg, &sd, compute_dtype(&device), &device)?;
    let out = embed(&encoder, &input, args.patch_size, args.batch_size)?;
    let samples = out.get("pooled").map_or(0, |p| p.dims()[0]);
    let shapes = out
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    if let Some(parent) = args.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    candle_core::safetensors::save(&out, &args.output).map_err(|e| Error::Io {
        path: args.output.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(EmbedSummary { samples, shapes })
}
