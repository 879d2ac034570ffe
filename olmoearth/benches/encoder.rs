//! Encoder throughput on the CPU (fp32): Nano and Base at p = 8 and 4 on Sentinel-2 64×64, T = 4, batch 2.
//!
//! Each shape runs in its own child process so that its peak memory can be read. Output lines
//! `RESULT rust <size> <p> <ms/forward> <tokens/s> <peak MiB>` are what `scripts/bench-olmoearth.sh` parses.
//! Run: `cargo bench -p olmoearth --bench encoder` (optionally `-- nano 8` for one shape).

#[path = "bench_common.rs"]
#[allow(dead_code)]
mod bench_common;

use std::process::Command;
use std::time::Duration;

use bench_common::{Shape, peak_rss_mib, time_forward};
use candle_core::{DType, Device};
use olmoearth::ModelSize;

const SHAPES: [(ModelSize, usize); 4] = [
    (ModelSize::Nano, 8),
    (ModelSize::Nano, 4),
    (ModelSize::Base, 8),
    (ModelSize::Base, 4),
];

fn run_one(size: ModelSize, p: usize) {
    let shape = Shape {
        size,
        patch_size: p,
        batch: 2,
        hw: 64,
        t: 4,
    };
    let dev = Device::Cpu;
    let enc = bench_common::encoder(size, DType::F32, &dev);
    let t = time_forward(&enc, shape, &dev, 3, Duration::from_secs(5));
    println!(
        "RESULT rust {} {p} {:.2} {:.1} {:.1}  # {} tokens/forward, {} iterations",
        size.name(),
        t.ms_per_forward,
        t.tokens_per_s,
        peak_rss_mib(),
        t.tokens,
        t.iters
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let [size, p] = args.as_slice() {
        let size: ModelSize = size.parse().expect("size");
        let p: usize = p.parse().expect("patch size");
        run_one(size, p);
        return;
    }
    let exe = std::env::current_exe().expect("current exe");
    println!("olmoearth encoder benchmark: S2 64x64, T=4, batch 2, fp32 CPU, random weights");
    for (size, p) in SHAPES {
        let status = Command::new(&exe)
            .arg(size.name())
            .arg(p.to_string())
            .status()
            .expect("child");
        assert!(status.success(), "{size} p={p} failed");
    }
}
