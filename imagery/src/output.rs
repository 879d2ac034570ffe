//! Window tensors: safetensors encoding (and decoding, for consumers and tests) and PNG previews.
//!
//! A file holds, per modality `m`, `m` f32 `(H,W,T,C)` and `m_mask` u8 `(H,W,T,S)`, plus `timestamps` i32
//! `(T,3)`. The metadata map carries `window_id`, `crs`, `transform` (JSON array), `bins` and, per
//! modality, `m.bands` and `m.scenes` (JSON array of scene ids per bin).

use std::collections::HashMap;

use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::composite::{Composited, MASK_PRESENT, TimeBin};
use crate::error::{Error, Result};
use crate::grid::WindowSpec;
use crate::modality::Modality;

/// One modality's tensors of one window.
#[derive(Debug, Clone)]
pub struct ModalityTensor {
    /// Modality.
    pub modality: Modality,
    /// The composite.
    pub composite: Composited,
    /// Scene ids used, per bin.
    pub scenes: Vec<Vec<String>>,
}

/// All tensors of one window.
#[derive(Debug, Clone)]
pub struct WindowTensors {
    /// The window.
    pub window: WindowSpec,
    /// Time bins (the shared T axis).
    pub bins: Vec<TimeBin>,
    /// Per modality.
    pub modalities: Vec<ModalityTensor>,
}

/// Encodes a window as safetensors; `only` restricts the file to one modality.
pub fn encode_safetensors(w: &WindowTensors, only: Option<Modality>) -> Result<Vec<u8>> {
    let (h, wd, t) = (w.window.size as usize, w.window.size as usize, w.bins.len());
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "groundwork-window/1".to_string());
    meta.insert("window_id".to_string(), w.window.id.clone());
    meta.insert("crs".to_string(), w.window.crs.clone());
    meta.insert("transform".to_string(), json(&w.window.geotransform)?);
    meta.insert("bins".to_string(), json(&w.bins)?);
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let ts: Vec<u8> = w
        .bins
        .iter()
        .flat_map(|b| b.timestamp())
        .flat_map(i32::to_le_bytes)
        .collect();
    buffers.push(("timestamps".into(), Dtype::I32, vec![t, 3], ts));
    for m in w
        .modalities
        .iter()
        .filter(|m| only.is_none_or(|o| o == m.modality))
    {
        let name = m.modality.name();
        let c = m.modality.bands().len();
        let s = m.modality.band_sets().len();
        let data: Vec<u8> = m
            .composite
            .data
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        buffers.push((name.to_string(), Dtype::F32, vec![h, wd, t, c], data));
        buffers.push((
            format!("{name}_mask"),
            Dtype::U8,
            vec![h, wd, t, s],
            m.composite.mask.clone(),
        ));
        meta.insert(format!("{name}.bands"), m.modality.bands().join(","));
        meta.insert(format!("{name}.scenes"), json(&m.scenes)?);
    }
    let views = buffers
        .iter()
        .map(|(n, dt, shape, bytes)| {
            TensorView::new(*dt, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Encode {
                    what: format!("tensor {n} of window {}", w.window.id),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(meta)).map_err(|e| Error::Encode {
        what: format!("window {}", w.window.id),
        reason: e.to_string(),
    })
}

fn json<T: Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Encode {
        what: "metadata".into(),
        reason: e.to_string(),
    })
}

/// A decoded tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodedTensor<T> {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<T>,
}

/// Reads an f32 tensor from safetensors bytes.
pub fn read_f32(bytes: &[u8], name: &str) -> Result<DecodedTensor<f32>> {
    read_raw(bytes, name, Dtype::F32).map(|(shape, b)| DecodedTensor {
        shape,
        data: b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    })
}

/// Reads a u8 tensor from safetensors bytes.
pub fn read_u8(bytes: &[u8], name: &str) -> Result<DecodedTensor<u8>> {
    read_raw(bytes, name, Dtype::U8).map(|(shape, b)| DecodedTensor { shape, data: b })
}

/// Reads an i32 tensor from safetensors bytes.
pub fn read_i32(bytes: &[u8], name: &str) -> Result<DecodedTensor<i32>> {
    read_raw(bytes, name, Dtype::I32).map(|(shape, b)| DecodedTensor {
        shape,
        data: b
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    })
}

/// The metadata map of safetensors bytes.
pub fn read_metadata(bytes: &[u8]) -> Result<HashMap<String, String>> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| Error::Encode {
        what: "safetensors header".into(),
        reason: e.to_string(),
    })?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

fn read_raw(bytes: &[u8], name: &str, dtype: Dtype) -> Result<(Vec<usize>, Vec<u8>)> {
    let err = |reason: String| Error::Encode {
        what: format!("tensor {name}"),
        reason,
    };
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| err(e.to_string()))?;
    let t = st.tensor(name).map_err(|e| err(e.to_string()))?;
    if t.dtype() != dtype {
        return Err(err(format!("dtype {:?}, expected {dtype:?}", t.dtype())));
    }
    Ok((t.shape().to_vec(), t.data().to_vec()))
}

/// An RGB preview PNG: Sentinel-2 true colour (B04, B03, B02; 0–3000 DN), else Sentinel-1 false colour
/// (VV, VH, VV−VH), else Landsat (B4, B3, B2). Each pixel shows its latest present bin; black where none.
pub fn preview_png(w: &WindowTensors) -> Result<Vec<u8>> {
    let n = w.window.size as usize;
    let t_n = w.bins.len();
    let mut rgb = vec![0u8; n * n * 3];
    if let Some(m) = w.modalities.first() {
        let c_n = m.modality.bands().len();
        let s_n = m.modality.band_sets().len();
        let scale =
            |v: f32, lo: f32, hi: f32| (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0) as u8;
        for p in 0..n * n {
            let Some(t) = (0..t_n)
                .rev()
                .find(|t| m.composite.mask[(p * t_n + t) * s_n] == MASK_PRESENT)
            else {
                continue;
            };
            let v = |c: usize| m.composite.data[(p * t_n + t) * c_n + c];
            let px = match m.modality {
                Modality::Sentinel2L2a => [
                    scale(v(2), 0.0, 3000.0),
                    scale(v(1), 0.0, 3000.0),
                    scale(v(0), 0.0, 3000.0),
                ],
                Modality::Sentinel1 => [
                    scale(v(0), -25.0, 0.0),
                    scale(v(1), -30.0, -5.0),
                    scale(v(0) - v(1), 0.0, 15.0),
                ],
                Modality::Landsat => [
                    scale(v(4), 5000.0, 20000.0),
                    scale(v(3), 5000.0, 20000.0),
                    scale(v(2), 5000.0, 20000.0),
                ],
            };
            rgb[p * 3..p * 3 + 3].copy_from_slice(&px);
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, n as u32, n as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let err = |e: png::EncodingError| Error::Encode {
            what: format!("preview of window {}", w.window.id),
            reason: e.to_string(),
        };
        let mut writer = enc.write_header().map_err(err)?;
        writer.write_image_data(&rgb).map_err(err)?;
        writer.finish().map_err(err)?;
    }
    Ok(out)
}
