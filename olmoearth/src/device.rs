//! Device selection (`cpu`, `cuda:N`, `auto`) and the compute dtype per device.

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// Parses `cpu`, `cuda`, `cuda:N` or `auto` (the first CUDA device when one is usable, else the CPU).
pub fn parse_device(spec: &str) -> Result<Device> {
    let err = |reason: String| Error::Device {
        spec: spec.to_string(),
        reason,
    };
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                Device::new_cuda(0).or(Ok(Device::Cpu))
            } else {
                Ok(Device::Cpu)
            }
        }
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map_err(|_| err(format!("{n:?} is not a device ordinal")))?,
                None => 0,
            };
            if !candle_core::utils::cuda_is_available() {
                return Err(err(
                    "this build has no CUDA support (build with --features cuda)".into(),
                ));
            }
            Device::new_cuda(ordinal).map_err(|e| err(e.to_string()))
        }
        _ => Err(err("expected cpu, cuda:N or auto".into())),
    }
}

/// The kind of `device` in words: `cuda` or `cpu`.
#[must_use]
pub fn kind_name(device: &Device) -> &'static str {
    if device.is_cuda() { "cuda" } else { "cpu" }
}

/// The compute dtype: bf16 on GPUs that compute in it natively (compute capability 8.0 or newer:
/// A100, L4, H100, RTX 30xx and later), f32 on older ones (a T4 or a V100 has no bf16 arithmetic)
/// and on the CPU.
pub fn compute_dtype(device: &Device) -> DType {
    match compute_capability(device) {
        Some((major, _)) if major >= 8 => DType::BF16,
        _ => DType::F32,
    }
}

/// The CUDA compute capability `(major, minor)` of a GPU device; `None` on the CPU, in a build without
/// CUDA, or when the driver does not say.
pub fn compute_capability(device: &Device) -> Option<(i32, i32)> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        return d.cuda_stream().context().compute_capability().ok();
    }
    let _ = device;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_strings() {
        assert!(parse_device("cpu").is_ok_and(|d| d.is_cpu()));
        assert!(parse_device("auto").is_ok());
        assert!(matches!(parse_device("tpu"), Err(Error::Device { .. })));
        assert!(matches!(parse_device("cuda:x"), Err(Error::Device { .. })));
        if !candle_core::utils::cuda_is_available() {
            assert!(parse_device("cuda:0").is_err());
        }
        assert_eq!(compute_dtype(&Device::Cpu), DType::F32);
        assert_eq!(kind_name(&Device::Cpu), "cpu");
        assert_eq!(compute_capability(&Device::Cpu), None);
    }
}
