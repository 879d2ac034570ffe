//! Encoder throughput on the CPU (fp32): Nano and Base at p = 8 and 4 on Sentinel-2 64×64, T = 4, batch 2.
//!
//! Each shape runs in its own child process so that its peak memory can be read. Output lines
//! `RESULT rust <size> <p> <ms/forward> <tokens/s> <peak MiB>` are what `scripts/bench-olmoearth.sh` parses.
//! Run: `cargo bench -p olmoearth --bench encoder` (optionally `-- nano 8` for one shape, or
//! `-- base 4 128 12 1` for another input: H = W = 128, T = 12, batch 1).

#[path = "bench_common.rs"]
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

fn run_one(shape: Shape) {
    let (size, p) = (shape.size, shape.patch_size);
    let dev = Device::Cpu;
    let enc = bench_common::encoder(size, DType::F32, &dev);
    // Larger shapes than the standard ones (minutes per forward) get one timed forward, no warm-up.
    let large = shape.batch * shape.hw * shape.hw * shape.t > 2 * 64 * 64 * 4;
    let min_iters = if large { 1 } else { 3 };
    let t = time_forward(&enc, shape, &dev, min_iters, Duration::from_secs(5), !large);
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
    if let [size, p, rest @ ..] = args.as_slice() {
        let num = |i: usize, default: usize| -> usize {
            rest.get(i)
                .map_or(default, |v| v.parse().expect("a whole number"))
        };
        run_one(Shape {
            size: size.parse().expect("size"),
            patch_size: p.parse().expect("patch size"),
            hw: num(0, 64),
            t: num(1, 4),
            batch: num(2, 2),
        });
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
