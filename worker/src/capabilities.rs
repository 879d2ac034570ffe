//! What a worker can do: cores, memory, GPU (from `nvidia-smi` when present), candle device, version.
//!
//! The candle device is `cuda:0` only when the binary was built with CUDA (`olmoearth`'s `cuda`
//! feature) and the GPU initialises; otherwise the worker computes on the CPU, reports `cpu`, and
//! says why a GPU it sees goes unused (`gpu_unused`, logged once at start).

use serde_json::{Value, json};
use std::process::Command;

/// A GPU as `nvidia-smi` reports it.
#[derive(Debug, Clone)]
struct Gpu {
    name: String,
    memory_mib: u64,
    /// `8.0`, `9.0`, …; `None` from drivers that cannot report it.
    compute_capability: Option<String>,
}

fn nvidia_smi(query: &str) -> Option<String> {
    let out = Command::new("nvidia-smi")
        .args([
            format!("--query-gpu={query}").as_str(),
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn gpus() -> Vec<Gpu> {
    // Older drivers refuse `compute_cap`: ask again without it.
    if let Some(text) = nvidia_smi("name,memory.total,compute_cap") {
        return parse_gpus(&text, true);
    }
    nvidia_smi("name,memory.total").map_or_else(Vec::new, |t| parse_gpus(&t, false))
}

/// `nvidia-smi` CSV lines: `name, memory MiB[, compute capability]`.
fn parse_gpus(text: &str, with_capability: bool) -> Vec<Gpu> {
    text.lines()
        .filter_map(|l| {
            let (rest, capability) = if with_capability {
                let (rest, cap) = l.rsplit_once(',')?;
                (rest, Some(cap.trim().to_owned()))
            } else {
                (l, None)
            };
            let (name, mem) = rest.rsplit_once(',')?;
            Some(Gpu {
                name: name.trim().to_owned(),
                memory_mib: mem.trim().parse().ok()?,
                compute_capability: capability.filter(|c| !c.is_empty() && c != "[N/A]"),
            })
        })
        .collect()
}

/// The device the worker computes on, and why a GPU it sees goes unused: `cuda:0` only when the
/// binary has CUDA and the device initialises (`init` tries it).
fn candle_device(
    gpus: &[Gpu],
    init: impl FnOnce() -> Result<(), String>,
) -> (&'static str, Option<String>) {
    if gpus.is_empty() {
        return ("cpu", None);
    }
    match init() {
        Ok(()) => ("cuda:0", None),
        Err(reason) => ("cpu", Some(reason)),
    }
}

/// Whether CUDA device 0 initialises in this binary.
fn init_cuda() -> Result<(), String> {
    match olmoearth::device::parse_device("cuda:0") {
        Ok(_) => Ok(()),
        Err(olmoearth::error::Error::Device { reason, .. })
            if reason.contains("no CUDA support") =>
        {
            Err("this worker's binary was built without CUDA (build with --features cuda)".into())
        }
        Err(e) => Err(format!("the GPU did not initialise: {e}")),
    }
}

fn memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The capabilities document stored in the registry.
#[must_use]
pub fn detect() -> Value {
    describe(&gpus(), init_cuda)
}

fn describe(gpus: &[Gpu], init: impl FnOnce() -> Result<(), String>) -> Value {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let (device, unused) = candle_device(gpus, init);
    if let Some(reason) = &unused {
        tracing::warn!(gpu = %gpus[0].name, "the GPU goes unused, computing on the CPU: {reason}");
    }
    json!({
        "cores": cores,
        "memory_bytes": memory_bytes(),
        "gpus": gpus.iter().map(|g| json!({"name": g.name, "memory_mib": g.memory_mib,
            "compute_capability": g.compute_capability})).collect::<Vec<_>>(),
        "gpu_name": gpus.first().map(|g| g.name.clone()),
        "gpu_memory_mib": gpus.first().map(|g| g.memory_mib),
        "gpu_compute_capability": gpus.first().and_then(|g| g.compute_capability.clone()),
        "candle_device": device,
        "gpu_unused": unused,
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// `gpu` when the worker computes on a GPU, else `cpu` (a GPU the binary cannot use does not count).
#[must_use]
pub fn default_pool(capabilities: &Value) -> &'static str {
    if capabilities["candle_device"]
        .as_str()
        .is_some_and(|d| d.starts_with("cuda"))
    {
        "gpu"
    } else {
        "cpu"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a100() -> Gpu {
        Gpu {
            name: "NVIDIA A100-SXM4-80GB".into(),
            memory_mib: 81_920,
            compute_capability: Some("8.0".into()),
        }
    }

    #[test]
    fn a_gpu_the_binary_cannot_use_is_reported_unused_and_the_worker_joins_the_cpu_pool() {
        // This build (no `cuda` feature) cannot use a GPU even when nvidia-smi lists one.
        let caps = describe(&[a100()], init_cuda);
        match init_cuda() {
            Ok(()) => assert_eq!(caps["candle_device"], "cuda:0"),
            Err(reason) => {
                assert_eq!(caps["candle_device"], "cpu");
                assert_eq!(caps["gpu_unused"], reason.as_str());
                assert_eq!(default_pool(&caps), "cpu");
                if !cfg_cuda() {
                    assert!(reason.contains("built without CUDA"), "{reason}");
                }
            }
        }
        assert_eq!(caps["gpu_name"], "NVIDIA A100-SXM4-80GB");
        assert_eq!(caps["gpu_compute_capability"], "8.0");
        // A GPU that fails to initialise is not used either, and says why.
        let caps = describe(&[a100()], || {
            Err("the GPU did not initialise: no driver".into())
        });
        assert_eq!(caps["candle_device"], "cpu");
        assert_eq!(default_pool(&caps), "cpu");
        // One that initialises is the worker's device and puts it in the GPU pool.
        let caps = describe(&[a100()], || Ok(()));
        assert_eq!(caps["candle_device"], "cuda:0");
        assert!(caps["gpu_unused"].is_null());
        assert_eq!(default_pool(&caps), "gpu");
        // No GPU: the CPU, with nothing to explain.
        let caps = describe(&[], || panic!("no GPU to initialise"));
        assert_eq!(caps["candle_device"], "cpu");
        assert!(caps["gpu_unused"].is_null());
    }

    /// Whether this binary has CUDA at all (a CUDA build on a machine without a GPU fails to
    /// initialise instead).
    fn cfg_cuda() -> bool {
        !matches!(
            olmoearth::device::parse_device("cuda:0"),
            Err(olmoearth::error::Error::Device { reason, .. }) if reason.contains("no CUDA support")
        )
    }

    #[test]
    fn nvidia_smi_lines_are_read_with_and_without_the_compute_capability() {
        let g = parse_gpus(
            "NVIDIA H100 80GB HBM3, 81559, 9.0\nTesla T4, 15360, 7.5\n",
            true,
        );
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(g[0].memory_mib, 81_559);
        assert_eq!(g[1].compute_capability.as_deref(), Some("7.5"));
        let g = parse_gpus("Tesla, Inc. K80, 11441\n", false);
        assert_eq!(g[0].name, "Tesla, Inc. K80");
        assert_eq!(g[0].compute_capability, None);
    }
}
