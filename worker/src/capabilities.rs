//! What a worker can do: cores, memory, GPU (from `nvidia-smi` when present), candle device, version.

use serde_json::{Value, json};
use std::process::Command;

/// A GPU as `nvidia-smi` reports it.
#[derive(Debug, Clone)]
struct Gpu {
    name: String,
    memory_mib: u64,
}

fn gpus() -> Vec<Gpu> {
    let Ok(out) = Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output()
    else {
        return Vec::new();
    };
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, mem) = l.rsplit_once(',')?;
            Some(Gpu {
                name: name.trim().to_owned(),
                memory_mib: mem.trim().parse().ok()?,
            })
        })
        .collect()
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
    let gpus = gpus();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    json!({
        "cores": cores,
        "memory_bytes": memory_bytes(),
        "gpus": gpus.iter().map(|g| json!({"name": g.name, "memory_mib": g.memory_mib})).collect::<Vec<_>>(),
        "gpu_name": gpus.first().map(|g| g.name.clone()),
        "gpu_memory_mib": gpus.first().map(|g| g.memory_mib),
        "candle_device": if gpus.is_empty() { "cpu" } else { "cuda:0" },
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// `gpu` when a GPU is found, else `cpu`.
#[must_use]
pub fn default_pool(capabilities: &Value) -> &'static str {
    if capabilities["gpu_name"].is_string() {
        "gpu"
    } else {
        "cpu"
    }
}
